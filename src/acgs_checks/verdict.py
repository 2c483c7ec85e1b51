"""How a check says no: one line, no traceback; and how it stands aside for a failed dependency."""

from __future__ import annotations

from typing import NoReturn

import pytest

UNREACHABLE_TAG = "(target unreachable)"


def fail(message: str) -> NoReturn:
    """Fail the check with exactly ``message`` (no Python traceback in the report)."""
    pytest.fail(message, pytrace=False)


def unreachable(message: str) -> NoReturn:
    fail(f"{message} {UNREACHABLE_TAG}")


def breached(measured: str, expected: str) -> NoReturn:
    """``measured`` says what was seen and where; ``expected`` the threshold it broke."""
    fail(f"{measured} (expected {expected})")


def blocked(target: str, reason: str, *, see: str) -> NoReturn:
    """Skip a dependent case: one alarm for one broken target, not one per check."""
    pytest.skip(f"blocked: {target} {reason}; see {see}")
