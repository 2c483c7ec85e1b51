"""The probe pass: every selected target of every registered kind, probed in one concurrent pass.

It costs about the slowest target's bound, not the sum. In one process it runs in a background
thread (:class:`ProbePass`), each record available as soon as its target answered; under xdist the
first worker runs it whole (:func:`probe_selected`) and the others read its results.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import traceback
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from acgs_checks.environment import Environment
from acgs_checks.kinds import Job, ProbeError, ProbeKind, discover
from acgs_checks.probes import aio, http_client
from acgs_checks.records import JsonRecord


def _guarded(name: str, job: Callable[[], Awaitable[JsonRecord]]) -> Callable[[], Awaitable[JsonRecord]]:
    async def run() -> JsonRecord:
        try:
            return await job()
        except Exception as exc:  # noqa: BLE001 - one probe's exception must not take every other check down
            return ProbeError(target=name, probe_error=f"{type(exc).__name__}: {exc}",
                              traceback=traceback.format_exc(limit=20))

    return run


Results = dict[str, dict[str, dict[str, Any]]]
Deliver = Callable[[str, str, dict[str, Any]], None]


async def _pass(env: Environment, selected: Mapping[str, set[str]], deliver: Deliver) -> None:
    """Probe the named targets of each kind concurrently; hand each record over (as JSON) once it is in."""
    kinds = discover()
    semaphore = asyncio.Semaphore(max(1, env.defaults.concurrency))
    shared: dict[str, asyncio.Task[Any]] = {}
    tasks: dict[tuple[str, str], asyncio.Task[JsonRecord]] = {}

    async def one(kind: ProbeKind[Any, Any], target: Any) -> JsonRecord:
        earlier = tasks.get((kind.after, target.name)) if kind.after else None
        # Waited for outside the semaphore: a job holding a slot never waits on one without.
        before = await asyncio.shield(earlier) if earlier is not None else None
        async with semaphore:
            record: JsonRecord = await kind.probe(target, Job(env, before, shared))
            return record

    async def delivered(kind: ProbeKind[Any, Any], target: Any) -> JsonRecord:
        record = await _guarded(target.name, lambda: one(kind, target))()
        deliver(kind.name, target.name, record.to_json())
        return record

    order = sorted(kinds.values(), key=lambda k: bool(k.after))  # what others wait for starts first
    for kind in order:
        wanted = selected.get(kind.name, set())
        for target in kind.targets(env):
            if target.name in wanted:
                tasks[(kind.name, target.name)] = asyncio.ensure_future(delivered(kind, target))
    await asyncio.gather(*tasks.values())
    for task in shared.values():
        task.cancel()


def probe_selected(env: Environment, selected: Mapping[str, set[str]]) -> Results:
    """Probe the named targets of each kind, all in one concurrent pass; results as JSON, by kind and name."""
    out: Results = {name: {} for name in discover()}

    def keep(kind: str, name: str, record: dict[str, Any]) -> None:
        out[kind][name] = record

    aio.run(lambda: _pass(env, selected, keep))
    return out


class ProbePass:
    """The same pass in a background thread, each record available as soon as its target answered.

    Cases of targets that answered run while a hanging target still waits out its timeout, so a
    run costs about one timeout plus start-up, not one timeout plus the time to report every case.
    """

    def __init__(self, env: Environment, selected: Mapping[str, set[str]]) -> None:
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._arrivals: list[tuple[str, str]] = []  # the records' keys, in the order they came in
        self._changed = threading.Condition()
        self._finished = False
        self._error = ""
        # Records in, and the end of the pass: a case that was not ready can only become ready when this grows.
        self.changes = 0
        # What the pass reads from the process environment is read here, in the main thread.
        http_client.PROXIES.set(urllib.request.getproxies_environment())
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run, env, selected), name="acgs-probe-pass",
                                        daemon=True)
        self._thread.start()

    def _run(self, env: Environment, selected: Mapping[str, set[str]]) -> None:
        try:
            aio.run(lambda: _pass(env, selected, self._deliver))
        except BaseException as exc:  # noqa: BLE001 - reported to every case still waiting, never lost
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._changed:
                self._finished = True
                self.changes += 1
                self._changed.notify_all()

    def _deliver(self, kind: str, name: str, record: dict[str, Any]) -> None:
        with self._changed:
            self._records[(kind, name)] = record
            self._arrivals.append((kind, name))
            self.changes += 1
            self._changed.notify_all()

    def wait_until_finished(self) -> None:
        with self._changed:
            while not self._finished:
                self._changed.wait(0.1)

    def missing(self, keys: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
        """The first of ``keys`` whose record is not in yet; None when all are, or the pass ended."""
        with self._changed:
            if self._finished:
                return None
            return next((key for key in keys if key not in self._records), None)

    @property
    def finished(self) -> bool:
        with self._changed:
            return self._finished

    def delivered(self, since: int) -> tuple[list[tuple[str, str]], int]:
        """The records that came in after the first ``since`` (in order), and how many have come in."""
        with self._changed:
            return self._arrivals[since:], len(self._arrivals)

    def wait_for_change(self, seconds: float) -> None:
        with self._changed:
            if not self._finished:
                self._changed.wait(seconds)

    def record(self, kind: str, name: str) -> dict[str, Any]:
        """This target's record, waiting for it (short waits, so Ctrl-C and SIGTERM still get through)."""
        with self._changed:
            while (kind, name) not in self._records and not self._finished:
                self._changed.wait(0.1)
            if (kind, name) in self._records:
                return self._records[(kind, name)]
        return ProbeError(target=name, probe_error=f"the probe pass ended without it ({self._error or 'no record'})",
                          traceback="").to_json()


class Finished:
    """Results that are all in already (read from the run's shared folder under xdist)."""

    def __init__(self, results: Results) -> None:
        self.results = results

    def record(self, kind: str, name: str) -> dict[str, Any]:
        return self.results[kind][name]
