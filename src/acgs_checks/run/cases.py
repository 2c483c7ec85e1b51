"""What a case is given: its targets' records, their evidence and the verdicts its fixtures decided.

A fixture never raises in setup: its evidence and its verdict are kept here and given in the call
phase, as the case's own, at the case's own severity (:mod:`acgs_checks.run.fixtures` for the first
attempt, :mod:`acgs_checks.run.retries` for the next ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

import pytest

from acgs_checks import kinds, verdict
from acgs_checks.kinds import ProbeKind
from acgs_checks.records import Answer, JsonRecord
from acgs_checks.reporting import evidence
from acgs_checks.run.state import armed

EVIDENCE = pytest.StashKey[list[Callable[[], None]]]()
VERDICTS = pytest.StashKey[list[Callable[[], None]]]()
class Records(Protocol):
    """Where a case's record comes from: the run's pass (streaming or finished), or a retry's attempt."""

    def record(self, kind: str, name: str) -> dict[str, Any]: ...


def attach_during_call(request: pytest.FixtureRequest, attach: Callable[[], None]) -> None:
    """Fixtures run in setup, where Allure files attachments under the fixture; defer to the call."""
    request.node.stash.setdefault(EVIDENCE, []).append(attach)


def decide_during_call(request: pytest.FixtureRequest, decide: Callable[[], None]) -> None:
    """A fixture's verdict (blocked, no data, probe error) is given in the call phase, as the test's own.

    Raised in setup, pytest would report a failure as an error ("broken" in Allure) and run no
    hook in between; given here, it is the case's failure or skip at its own severity. The first
    verdict registered wins, so a probe error is never hidden behind what follows from it.
    """
    request.node.stash.setdefault(VERDICTS, []).append(decide)


def observed(request: pytest.FixtureRequest, kind: ProbeKind[Any, Any], name: str,
             results: Records) -> JsonRecord:
    """The probe's typed record of one target, with its evidence; a probe that raised fails only this target's cases."""
    env = armed(request.config).environment
    data = results.record(kind.name, name)
    if "probe_error" in data:
        attach_during_call(request, lambda: evidence.attach_json("probe error", data, env))
        decide_during_call(request, lambda: verdict.fail(
            f"{verdict.PROBE_ERROR} {name}: the {kind.name} probe raised {data['probe_error']} "
            "(traceback in the evidence)"))
        blank: JsonRecord = kind.record.empty(name)
        return blank
    record: JsonRecord = kind.record.from_json(data)
    shown = data if kind.evidence is None else kind.evidence(record)
    attach_during_call(request, lambda: evidence.attach_json("evidence", shown, env))
    return record


def gated(request: pytest.FixtureRequest, kind: ProbeKind[Any, Any], record: JsonRecord) -> JsonRecord:
    if kind.gate is not None:  # after a probe error, which was registered first and wins
        state = armed(request.config)
        decision = (kind.gate.decide(record, state.environment) if kind.gate.decide is not None
                    else kinds.unanswered(kind.name, cast("Answer", record)))
        if isinstance(decision, kinds.Blocked):
            decision = _blocked(decision, state.reachability, request.node.name)
        if decision is not None:
            decide_during_call(request, decision)
    return record


def _blocked(blocked: kinds.Blocked, reachability: dict[tuple[str, str], str], own: str) -> kinds.Decision | None:
    """Skipped as blocked by the selected case marked ``reachability`` for that kind and target; failed with the
    reason when no such case runs (a skip is only honest when the blocker fails in the same run)."""
    if reachability.get((blocked.kind, blocked.target)) == own:  # the reachability case itself judges the record
        return None
    return lambda: verdict.blocked_by(blocked.kind, blocked.target, blocked.reason, subject=blocked.subject)
