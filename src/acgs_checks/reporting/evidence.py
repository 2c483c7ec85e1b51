"""Evidence attachments: what a probe saw, redacted, in the check's Allure entry."""

from __future__ import annotations

import json
from typing import Any

import allure

from acgs_checks.environment import Environment
from acgs_checks.probes.http import HttpResult


def attach_http(result: HttpResult, environment: Environment) -> None:
    """Status, timings and headers as one JSON attachment; the body excerpt as text."""
    facts = {
        "url": result.url,
        "outcome": result.outcome,
        "detail": result.detail,
        "status": result.status,
        "reason": result.reason,
        "timings_seconds": {
            "connect": result.connect_seconds,
            "first_byte": result.first_byte_seconds,
            "total": result.elapsed_seconds,
            "timeout": result.timeout_seconds,
        },
        # Per phase, as blackbox_exporter's probe_http_duration_seconds{phase=...} names them.
        "phases_seconds": result.phases,
        "health": {"normalised": result.health, "field": result.health_field,
                   "value": result.health_value},
        "headers": dict(result.headers),
        "body_bytes": result.body_bytes,
        # In the one attachment: a file per case is what a run of hundreds of targets pays for.
        "body_excerpt": result.body_excerpt,
    }
    _attach_redacted("evidence", facts, environment)


def _attach_redacted(name: str, data: Any, environment: Environment) -> None:
    """Redacted value by value before it is serialised (an escaped form of a secret cannot slip past), and
    the text once more after, for anything the serialiser itself produced."""
    text = json.dumps(environment.redact_tree(data), indent=2, default=str, ensure_ascii=False)
    allure.attach(environment.redact(text), name=name,
                  attachment_type=allure.attachment_type.JSON)


def attach_json(name: str, data: dict[str, Any], environment: Environment) -> None:
    """A probe snapshot as a JSON attachment, redacted."""
    _attach_redacted(name, data, environment)
