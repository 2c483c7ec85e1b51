"""How a check says no: one line, no traceback; and how it stands aside for a failed dependency."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import allure
import pytest

UNREACHABLE_TAG = "(target unreachable)"


def fail(message: str) -> NoReturn:
    """Fail the check with exactly ``message`` (no Python traceback in the report)."""
    pytest.fail(_clean(message), pytrace=False)


def unreachable(message: str) -> NoReturn:
    fail(f"{message} {UNREACHABLE_TAG}")


def breached(measured: str, expected: str) -> NoReturn:
    """``measured`` says what was seen and where; ``expected`` the threshold it broke."""
    fail(f"{measured} (expected {expected})")


BLOCKED_BY_LABEL = "blocked_by"


def blocked(target: str, reason: str, *, see: str) -> NoReturn:
    """Skip a dependent case: one alarm for one broken target, not one per check.

    ``see`` names the failing case; the report links the skipped case to it.
    """
    allure.dynamic.label(BLOCKED_BY_LABEL, see)
    pytest.skip(_clean(f"blocked: {target} {reason}; see {see}"))


def not_applicable(reason: str) -> NoReturn:
    """Skip a case that does not apply to this target (e.g. replication on a standalone server)."""
    pytest.skip(_clean(f"not applicable: {reason}"))


_redact: list[Callable[[str], str]] = []


def set_redactor(redact: Callable[[str], str]) -> None:
    """The plugin installs the environment's redaction, so no message can carry a secret."""
    _redact[:] = [redact]


def _clean(message: str) -> str:
    for redact in _redact:
        message = redact(message)
    return message
