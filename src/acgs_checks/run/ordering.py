"""Cases run as their targets' records come in, so a hanging target's timeout overlaps the others' reporting.

In one process (no xdist), the probe pass starts when the run starts, in the background. The
loop runs next the first case (in collection order) whose records are all in, and waits only
when none is; the cases of a target that hangs run last, once its timeout has passed. Under
xdist, or when nothing is probed, pytest's own loop runs the cases in collection order. While a
probe that times requests itself (synthetic SLO sampling) is in flight, no case runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable

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
    pending = Pending(session.items, lambda item: probes.missing(state.needs.get(item.nodeid, ())), probes)
    current = pending.take()
    while current is not None:
        # The next case is not known yet (it is whichever is ready first): teardown keeps only what
        # every pending case shares, so whichever runs next finds the setup it expects.
        nextitem = pending.unrelated(current)
        current.config.hook.pytest_runtest_protocol(item=current, nextitem=nextitem)
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        current = pending.take()
    return True


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


class Pending:
    """The cases still to run, in collection order, grouped by module; linear over a whole run.

    A case is checked for readiness when it comes up. One that is not ready waits under the first record it
    lacks, and is checked again only when that record came in (or the pass ended), so a hanging target's cases
    are never rescanned for other targets' records: each case is checked at most once per record it needs, plus
    once. The next case of another module (for teardown) is found among the modules, not among the cases.
    """

    def __init__(self, items: list[pytest.Item], missing: Callable[[pytest.Item], Hashable | None],
                 probes: ProbePass) -> None:
        self._missing, self._probes = missing, probes
        self._order = {id(item): index for index, item in enumerate(items)}
        self._fresh: deque[pytest.Item] = deque(items)        # not checked yet, in collection order
        self._woken: deque[pytest.Item] = deque()             # their missing record came in: check again
        self._blocked: dict[Hashable, list[pytest.Item]] = {}  # the record a case waits for -> the cases
        self._cursor = 0                                      # records delivered so far, as seen here
        self._by_module: dict[str, deque[pytest.Item]] = {}  # every pending case (lazily pruned of taken ones)
        for item in items:
            self._by_module.setdefault(_module(item), deque()).append(item)
        self._taken: set[int] = set()

    def take(self) -> pytest.Item | None:
        """The next case whose records are in, waiting for more records while none is."""
        while True:
            changes = self._probes.changes
            self._wake()
            for queue in (self._woken, self._fresh):
                while queue:
                    item = queue.popleft()
                    key = self._missing(item)
                    if key is None:
                        return self._took(item)
                    self._blocked.setdefault(key, []).append(item)
            if not self._blocked:
                return None
            if self._probes.changes == changes:
                self._probes.wait_for_change(0.1)

    def _wake(self) -> None:
        delivered, self._cursor = self._probes.delivered(self._cursor)
        keys: list[Hashable] = list(delivered)
        if self._probes.finished:  # every case left can run now (a missing record fails it with the reason)
            keys = list(self._blocked)
        woken = [item for key in keys for item in self._blocked.pop(key, ())]
        if woken:
            self._woken.extend(sorted(woken, key=lambda item: self._order[id(item)]))

    def _took(self, item: pytest.Item) -> pytest.Item:
        self._taken.add(id(item))
        return item

    def unrelated(self, current: pytest.Item) -> pytest.Item | None:
        """A pending case from another module than ``current`` (or any pending one when all share it)."""
        module = _module(current)
        fallback = None
        for name, queue in self._by_module.items():
            while queue and id(queue[0]) in self._taken:
                queue.popleft()
            if queue:
                if name != module:
                    return queue[0]
                fallback = fallback or queue[0]
        return fallback
