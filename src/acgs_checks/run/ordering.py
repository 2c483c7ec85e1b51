"""Cases run as their targets' records come in, so a hanging target's timeout overlaps the others' reporting.

In one process (no xdist), the probe pass starts when the run starts, in the background. The
loop runs next the first case (in collection order) whose records are all in, and waits only
when none is; the cases of a target that hangs run last, once its timeout has passed. Under
xdist, or when nothing is probed, pytest's own loop runs the cases in collection order. While a
probe that times requests itself (synthetic SLO sampling) is in flight, no case runs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from acgs_checks import kinds
from acgs_checks.run.fixtures import start_pass
from acgs_checks.run.probing import ProbePass
from acgs_checks.run.state import STATE, is_worker


def runtestloop(session: pytest.Session) -> bool | None:
    """pytest's run loop, in readiness order; None hands over to pytest's own loop."""
    config = session.config
    state = config.stash.get(STATE, None)
    if (state is None or is_worker(config) or config.getoption("dist", "no") != "no"
            or config.option.collectonly or not state.needs or session.testsfailed):
        return None
    probes = start_pass(state)
    if any(kind.timing(state.environment) for name, kind in kinds.discover().items() if state.selected.get(name)):
        probes.wait_until_finished()  # sampling times requests itself: nothing else runs meanwhile
    pending = list(session.items)
    current = _take(pending, lambda item: probes.ready(state.needs.get(item.nodeid, ())), probes)
    while current is not None:
        # The next case is not known yet (it is whichever is ready first): teardown keeps only what
        # every pending case shares, so whichever runs next finds the setup it expects.
        nextitem = _unrelated(current, pending)
        current.config.hook.pytest_runtest_protocol(item=current, nextitem=nextitem)
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        current = _take(pending, lambda item: probes.ready(state.needs.get(item.nodeid, ())), probes)
    return True


def _take(pending: list[pytest.Item], ready: Callable[[pytest.Item], bool],
          probes: ProbePass) -> pytest.Item | None:
    """The first pending case whose records are in, waiting for more records while none is."""
    while pending:
        for index, item in enumerate(pending):
            if ready(item):
                return pending.pop(index)
        probes.wait_for_change(0.1)
    return None


def _unrelated(current: pytest.Item, pending: list[pytest.Item]) -> pytest.Item | None:
    """A pending case from another module than ``current`` (or any pending one when all share it)."""
    module = current.nodeid.split("::", 1)[0]
    for item in pending:
        if item.nodeid.split("::", 1)[0] != module:
            return item
    return pending[0] if pending else None
