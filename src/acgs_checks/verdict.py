"""How a check says no: one line, no traceback; and how it stands aside for a failed dependency."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import allure
import pytest

from acgs_checks.records import Answer
from acgs_checks.redaction import clip

UNREACHABLE_TAG = "(target unreachable)"
ACCESS_DENIED = "access denied:"
NO_DATA = "no data:"
INSUFFICIENT_PRIVILEGE = "insufficient privilege:"
PROBE_ERROR = "probe error:"
WAIVED = "waived"
IN_MAINTENANCE = "in maintenance"
BLOCKED = "blocked"
NOT_APPLICABLE = "not applicable"
WARMING_UP = "warming up"
# What kind of failure a one-line message is: the Allure category, summary.json and JUnit say the same.
ACCESS_DENIED_KIND = "access denied"
UNREACHABLE_KIND = "target unreachable"
NO_DATA_KIND = "no data"
PRIVILEGE_KIND = "insufficient privilege"
# A setup step never taken (the alert rules never deployed): a failure the doctor names, with its fix.
NOT_SET_UP = "not set up:"
PROBE_ERROR_KIND = "probe error"
BREACH_KIND = "threshold breached"


def fail(message: str) -> NoReturn:
    """Fail the check with exactly ``message`` (no Python traceback in the report)."""
    pytest.fail(_clean(message), pytrace=False)


def unreachable(message: str, *, denied: str = "") -> NoReturn:
    """The target did not answer; or, with ``denied`` (what to check), it answered and refused us.

    A refusal is its own kind: on-call checks credentials and grants, not the network.
    """
    if denied:
        fail(f"{ACCESS_DENIED} {message}; check {denied}")
    fail(f"{message} {UNREACHABLE_TAG}")


def require_answer(seen: Answer, asked: str) -> None:
    """A reachability case's judgement, the same for every kind: the target did not answer ``asked`` (unreachable),
    or refused the suite (denied, naming what to check)."""
    if not seen.answered:
        unreachable(f"{seen.target}: {asked} → {seen.error}", denied=seen.denied)


def require_read(seen: Answer, what: str, *, fix: str = "") -> None:
    """A read the case needs and did not get: insufficient privilege with the grant that fixes it, else no data."""
    if not seen.answered:
        if seen.denied:
            insufficient_privilege(f"{seen.target}: {what}: {seen.error}; fix: {seen.denied}")
        no_data(f"{seen.target}: {what}: {seen.error}{fix}")


def no_data(message: str) -> NoReturn:
    """The input could not be read (a failed, timed-out or denied read): a failure, never a pass."""
    fail(f"{NO_DATA} {message}")


def insufficient_privilege(message: str) -> NoReturn:
    """The role may run the query but cannot see what the check needs; ``message`` names the grant."""
    fail(f"{INSUFFICIENT_PRIVILEGE} {message}")


def failure_kind(message: str) -> str:
    """The kind of a failure message: access denied, target unreachable, no data, threshold breached."""
    if message.startswith(ACCESS_DENIED):
        return ACCESS_DENIED_KIND
    if INSUFFICIENT_PRIVILEGE in message:
        return PRIVILEGE_KIND
    if message.startswith(PROBE_ERROR):
        return PROBE_ERROR_KIND
    if UNREACHABLE_TAG in message:
        return UNREACHABLE_KIND
    if message.startswith(NO_DATA):
        return NO_DATA_KIND
    if "(expected " in message:
        return BREACH_KIND
    return "other"


def first_line(exc: BaseException) -> str:
    """An outcome's one line, without pytest's "Failed: " prefix (for messages that quote a failure)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].removeprefix("Failed: ")


def skip_kind(message: str) -> str:
    """The kind of a skip: waived, in maintenance, blocked, not applicable, warming up (or "")."""
    for kind in (WAIVED, IN_MAINTENANCE, BLOCKED, NOT_APPLICABLE, WARMING_UP):
        if message.startswith(kind):
            return kind
    return ""


class Breach(pytest.fail.Exception):  # type: ignore[name-defined,misc]  # pytest's Failed outcome
    """A threshold breach: the failure, carrying the measured value and the threshold as data."""

    def __init__(self, message: str, *, value: float | None, threshold: float | None) -> None:
        super().__init__(msg=message, pytrace=False)
        self.value = value
        self.threshold = threshold

    def numbers(self) -> dict[str, float]:
        """For summary.json and JUnit properties."""
        found = {"measured": self.value, "threshold": self.threshold}
        return {k: v for k, v in found.items() if v is not None}


# Reported as pytest reports its own Failed outcome ("Failed: message"), as pytest does for Failed itself;
# otherwise every breach's one line began "acgs_checks.verdict.Breach: " in the terminal, JUnit and summary.json.
Breach.__module__ = "builtins"
Breach.__qualname__ = Breach.__name__ = "Failed"


def _finite(measured: str, expected: str, value: float | None) -> None:
    """A non-finite measured value (+Inf, -Inf, NaN) is no data, whatever the comparison would say: ``inf``
    is above every floor and NaN compares false against every line, so either could pass a check."""
    if value is not None and not math.isfinite(value):
        no_data(f"{measured}: the measured value is {value} (not a finite number; expected {expected})")


def breached(measured: str, expected: str, *, value: float | None = None, threshold: float | None = None) -> NoReturn:
    """``measured`` says what was seen and where; ``expected`` the threshold it broke.

    ``value`` and ``threshold`` are the same numbers as data, for machine-readable summaries.
    """
    _finite(measured, expected, value)
    raise Breach(_clean(f"{measured} (expected {expected})"), value=value, threshold=threshold)


@dataclass(frozen=True)
class Measurement:
    """What a passing check measured, against which threshold: shown like a failure's message, in green."""

    text: str
    value: float | None = None
    threshold: float | None = None


_measured: list[Measurement] = []


def judge(broken: bool, measured: str, expected: str, *, value: float | None = None,
          threshold: float | None = None) -> None:
    """Fail with ``measured (expected ...)`` when ``broken``; otherwise keep the same line as the pass's evidence.

    Every case, passing or not, so carries its value and threshold into the report and its history.
    """
    _finite(measured, expected, value)
    if broken:
        breached(measured, expected, value=value, threshold=threshold)
    measure(measured, expected, value=value, threshold=threshold)


def measure(measured: str, expected: str, *, value: float | None = None, threshold: float | None = None) -> None:
    """Record what a passing check measured, in the words a failure would use (the last one recorded counts)."""
    _finite(measured, expected, value)
    _measured.append(Measurement(_clean(f"{measured} (expected {expected})"), value, threshold))


def take_measurement() -> Measurement | None:
    """The plugin reads (and clears) what the case that just ran recorded."""
    found = _measured[-1] if _measured else None
    _measured.clear()
    return found


BLOCKED_BY_LABEL = "blocked_by"


_selected: set[str] = set()


def set_selected(names: set[str]) -> None:
    """The plugin hands over the names of the cases selected in this run."""
    _selected.clear()
    _selected.update(names)


def blocked(target: str, reason: str, *, see: str) -> NoReturn:
    """Skip a dependent case: one alarm for one broken target, not one per check.

    ``see`` names the failing case; the report links the skipped case to it. A skip is only
    honest when that case runs (and fails, from the same probe result) in this run: when it
    is not selected, this case fails with the reason itself.
    """
    if _selected and see not in _selected:
        fail(f"{target} {reason} ({see}, which would report it, is not selected in this run)")
    allure.dynamic.label(BLOCKED_BY_LABEL, see)
    pytest.skip(_clean(f"blocked: {target} {reason}; see {see}"))


_reachability: dict[tuple[str, str], str] = {}


def set_reachability(cases: dict[tuple[str, str], str]) -> None:
    """The run hands over, per (kind, target), the selected case marked ``reachability`` that reports it."""
    _reachability.clear()
    _reachability.update(cases)


def blocked_by(kind: str, target: str, reason: str, *, subject: str = "") -> NoReturn:
    """Skip as blocked by the case of ``kind`` for ``target`` marked ``reachability`` (found by marker, never
    named); when no such case is selected in this run, fail with the reason itself."""
    see = _reachability.get((kind, target))
    who = subject or target
    if see is None:
        fail(f"{who} {reason} (no case that reports whether {kind} {target!r} answered is selected in this run)")
    blocked(who, reason, see=see)


def not_applicable(reason: str) -> NoReturn:
    """Skip a case that does not apply to this target (e.g. replication on a standalone server)."""
    pytest.skip(_clean(f"not applicable: {reason}"))


def warming_up(reason: str) -> NoReturn:
    """Skip a review whose history is still younger than its window: never a pass, never a page. ``reason`` says
    how many runs are recorded since when, and when the first verdict is expected."""
    pytest.skip(_clean(f"{WARMING_UP}: {reason}"))


_redact: list[Callable[[str], str]] = []


def set_redactor(redact: Callable[[str], str]) -> None:
    """The plugin installs the environment's redaction, so no message can carry a secret."""
    _redact[:] = [redact]


def clean(message: str) -> str:
    """``message`` with every secret the environment knows replaced."""
    return _clean(message)


# A check's one line, whatever a target put into it (a driver's error quoting a megabyte): cut after redaction.
MESSAGE_LIMIT = 4000


def _clean(message: str) -> str:
    for redact in _redact:
        message = redact(message)
    return clip(message, MESSAGE_LIMIT)
