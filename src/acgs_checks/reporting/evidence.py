"""Evidence attachments: what a probe saw, redacted, in the check's Allure entry."""

from __future__ import annotations

import json
from typing import Any

import allure

from acgs_checks.environment import Environment


def _attach_redacted(name: str, data: Any, environment: Environment) -> None:
    """Redacted value by value before it is serialised (an escaped form of a secret cannot slip past), and
    the text once more after, for anything the serialiser itself produced."""
    text = json.dumps(environment.redact_tree(data), indent=2, default=str, ensure_ascii=False)
    allure.attach(environment.redact(text), name=name,
                  attachment_type=allure.attachment_type.JSON)


def attach_json(name: str, data: dict[str, Any], environment: Environment) -> None:
    """A probe snapshot as a JSON attachment, redacted."""
    _attach_redacted(name, data, environment)
