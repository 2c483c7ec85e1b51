"""The run loop's order: ready cases first, a hanging target's cases last, and linear cost in the cases.

The pending-case queue is plain logic over the probe pass's change counter; here the pass is a small
stand-in whose records come in when the test says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acgs_checks.run.ordering import Pending


@dataclass
class Case:
    nodeid: str


class Pass:
    """What Pending reads of the probe pass: a change counter, the records in order, and a wait that lets records
    come in. Here a case's record is keyed by its own id."""

    def __init__(self, arrivals: list[set[str]]) -> None:
        self.changes = 0
        self.ready: set[str] = set()
        self.order: list[str] = []
        self.arrivals = arrivals  # what comes in at each wait
        self.finished = False

    def wait_for_change(self, seconds: float) -> None:
        del seconds
        if self.arrivals:
            came = self.arrivals.pop(0)
            self.ready |= came
            self.order += sorted(came)
        else:
            self.finished = True
        self.changes += 1

    def delivered(self, since: int) -> tuple[list[str], int]:
        return self.order[since:], len(self.order)


def _run(cases: list[Case], probes: Pass) -> tuple[list[str], int]:
    calls = 0

    def missing(case: Any) -> str | None:
        nonlocal calls
        calls += 1
        return None if probes.finished or case.nodeid in probes.ready else case.nodeid

    pending = Pending(cases, missing, probes)  # type: ignore[arg-type]
    order = []
    while (case := pending.take()) is not None:
        order.append(case.nodeid)
    return order, calls


def test_ready_cases_run_first_and_the_rest_once_their_records_are_in() -> None:
    cases = [Case(f"checks/test_{m}.py::test_x[{i}]") for m in ("a", "b") for i in range(3)]
    probes = Pass([{cases[1].nodeid}, {cases[4].nodeid}])
    probes.ready = {cases[0].nodeid, cases[3].nodeid}
    order, _ = _run(cases, probes)
    assert order[:2] == [cases[0].nodeid, cases[3].nodeid]
    assert order[2:4] == [cases[1].nodeid, cases[4].nodeid]
    assert sorted(order) == sorted(c.nodeid for c in cases)  # the pass ended: every case ran, once


def test_a_hanging_target_costs_linear_time() -> None:
    """2,000 cases, 200 of which wait for a target that answers only when the pass ends: each case is checked
    a bounded number of times (it was 200 checks for every other case)."""
    cases = [Case(f"checks/test_{i % 9}.py::test_x[{i}]") for i in range(2000)]
    probes = Pass([])
    probes.ready = {c.nodeid for i, c in enumerate(cases) if i % 10}
    order, calls = _run(cases, probes)
    assert len(order) == len(set(order)) == 2000
    assert calls <= 2 * len(cases)


def test_the_next_case_of_another_module_is_found_among_modules() -> None:
    cases = [Case(f"checks/test_a.py::test_x[{i}]") for i in range(3)] + [Case("checks/test_b.py::test_y")]
    probes = Pass([])
    probes.ready = {c.nodeid for c in cases}
    pending = Pending(cases, lambda case: None, probes)  # type: ignore[arg-type]
    first = pending.take()
    assert first is cases[0]
    assert pending.unrelated(first) is cases[3]
    for _ in range(3):
        pending.take()
    assert pending.unrelated(cases[3]) is None


def test_records_arriving_one_by_one_do_not_rescan_a_hanging_targets_cases() -> None:
    """The bench's shape: 2,000 cases, their records arriving one at a time, 200 cases waiting for a target that
    answers only when the pass ends. Each case is checked once per record it waited for, plus once (it was about
    100 checks per case: every arrival rescanned the hanging target's cases)."""
    cases = [Case(f"checks/test_{i % 9}.py::test_x[{i}]") for i in range(2000)]
    answering = [c.nodeid for i, c in enumerate(cases) if i % 10]
    probes = Pass([{nodeid} for nodeid in answering])
    order, calls = _run(cases, probes)
    assert len(order) == len(set(order)) == 2000
    assert order[-200:] == [c.nodeid for i, c in enumerate(cases) if not i % 10]  # the hanging target's, last
    assert calls <= 2 * len(cases) + 200
