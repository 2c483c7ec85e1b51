"""Opt-in retries that reveal flapping instead of hiding it.

A case under a ``[[retries]]`` policy that fails is tried again, after a backoff, with its
targets probed again: once per attempt, and that attempt's record is shared by every case of
the target that retries. A pass on a later attempt is reported as flaky (Allure's flaky flag,
the summary, ``acgs_check_flaky``); a case that fails every attempt fails as before, its
message saying so. Skips are never retried.
"""

from __future__ import annotations

import time
from typing import Any

import allure
import pytest

from acgs_checks import kinds, verdict
from acgs_checks.environment import Retry
from acgs_checks.kinds import ProbeKind
from acgs_checks.run import cases, probing
from acgs_checks.run.state import RunState

FLAKY = "flaky"
# (run, kind, target, attempt) -> that attempt's record, as JSON (per process: per xdist worker). The
# run's start keys it too, so runs in one process (pytester, an IDE) never read each other's attempts.
_ATTEMPTS: dict[tuple[int, str, str, int], dict[str, Any]] = {}


def policy(item: pytest.Item, state: RunState) -> Retry | None:
    area = dict(item.user_properties).get("area", "")
    return state.environment.retry_for(item.name, str(area))


def _targets(item: pytest.Item) -> list[tuple[str, ProbeKind[Any, Any], str]]:
    """The case's probe fixtures with their kind and target name."""
    found = []
    for fixture, (kind, arg) in kinds.by_fixture().items():
        if fixture not in item.funcargs:  # type: ignore[attr-defined]
            continue
        name = arg[1:] if arg.startswith("=") else item.callspec.params[arg].name  # type: ignore[attr-defined]
        found.append((fixture, kind, name))
    return found


class _Attempt:
    """The records of one attempt, probed on first use and shared across cases (the ``Records`` protocol)."""

    def __init__(self, state: RunState, attempt: int) -> None:
        self.state, self.attempt = state, attempt

    def record(self, kind: str, name: str) -> dict[str, Any]:
        key = (self.state.started_ms, kind, name, self.attempt)
        if key not in _ATTEMPTS:
            declared = kinds.discover()[kind]
            selected = {kind: {name}} | ({declared.after: {name}} if declared.after else {})
            _ATTEMPTS[key] = probing.probe_selected(self.state.environment, selected)[kind][name]
        return _ATTEMPTS[key]


def _refresh(item: pytest.Item, state: RunState, attempt: int) -> None:
    """Give the case this attempt's records (its probe and gate fixtures), evidence and verdicts."""
    item.stash[cases.EVIDENCE] = []
    item.stash[cases.VERDICTS] = []
    request = item._request  # type: ignore[attr-defined]  # the case's own fixture request
    records = _Attempt(state, attempt)
    for fixture, kind, name in _targets(item):
        record = cases.observed(request, kind, name, records)
        item.funcargs[fixture] = record  # type: ignore[attr-defined]
        if kind.gate is not None:
            gated = cases.gated(request, kind, record)
            item.funcargs[kind.gate.fixture or fixture] = gated  # type: ignore[attr-defined]
    for attach in item.stash.get(cases.EVIDENCE, []):
        attach()
    for decide in item.stash.get(cases.VERDICTS, []):
        decide()


def retry(item: pytest.Item, state: RunState, failure: BaseException) -> None:
    """Try a failed case again under its policy; return when an attempt passes, else raise the last failure."""
    rule = policy(item, state)
    if rule is None or not _targets(item):
        raise failure
    messages = [verdict.first_line(failure)]
    with allure.step(f"attempt 1 of {rule.attempts} failed: {messages[0]}"):
        pass
    for attempt in range(2, rule.attempts + 1):
        time.sleep(rule.wait_before(attempt))
        try:
            with allure.step(f"attempt {attempt} of {rule.attempts}, after {rule.wait_before(attempt):g} s "
                             "(targets probed again)"):
                verdict.take_measurement()
                _refresh(item, state, attempt)
                item.runtest()
        except pytest.skip.Exception:
            raise  # blocked or not applicable on this attempt: a skip, as on a first attempt
        except (pytest.fail.Exception, Exception) as exc:  # noqa: BLE001 - any failure of the attempt counts
            failure = exc
            messages.append(verdict.first_line(exc))
            continue
        said = (f"flaky: passed on attempt {attempt} of {rule.attempts}; "
                + "; ".join(f"attempt {n} failed: {m}" for n, m in enumerate(messages, 1)))
        item.user_properties.append((FLAKY, verdict.clean(said)))
        return
    note = f" (failed all {rule.attempts} attempts)"
    if isinstance(failure, verdict.Breach):
        raise verdict.Breach(str(failure.msg) + note, value=failure.value, threshold=failure.threshold) from None
    if isinstance(failure, pytest.fail.Exception):
        verdict.fail(str(failure.msg) + note)
    raise failure
