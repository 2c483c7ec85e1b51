"""The probe-kind registry: a kind is declared once, in its probe module, and everything else derives from it.

A :class:`ProbeKind` says which environment section its targets come from, how to probe one
target (async and bounded), the typed record a probe returns, the case that blocks its
dependents, and how its evidence is attached. From the declarations the plugin derives its
fixtures, what to probe for the selected cases, the shared (xdist) results, blocked-skips and
Allure evidence; :func:`probe_selected` runs every selected target of every kind in one
concurrent pass, which costs about the slowest target's bound, not the sum.

Adding a kind: a module in :mod:`acgs_checks.probes` that calls :func:`register`, and a module
of checks under ``checks/``. Nothing else.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import pkgutil
import threading
import traceback
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from acgs_checks.environment import Environment, Target
from acgs_checks.probes._record import JsonRecord


class Named(Protocol):
    """A target: anything with a name (the environment's models)."""

    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=JsonRecord)
T = TypeVar("T", bound=Named)
# A verdict decided from a snapshot, given later (in the case's call phase): raises skip or fail.
Decision = Callable[[], None]


@dataclass(frozen=True)
class ProbeError(JsonRecord):
    """A probe that raised: a bug or an input it could not handle. Only its own target's cases fail."""

    target: str
    probe_error: str
    traceback: str


class Job:
    """What a probe gets besides its target: the environment, an earlier kind's result, shared pre-checks."""

    def __init__(self, env: Environment, before: JsonRecord | None, shared: dict[str, asyncio.Task[Any]]) -> None:
        self.env = env
        self.before = before  # the ``after`` kind's record for the same target, when that kind ran too
        self._shared = shared

    async def once(self, key: str, factory: Callable[[], Awaitable[Any]]) -> Any:
        """One coroutine per run for every job that asks by ``key`` (say, whether Prometheus answers)."""
        if key not in self._shared:
            self._shared[key] = asyncio.ensure_future(factory())
        return await asyncio.shield(self._shared[key])


@dataclass(frozen=True)
class Gate(Generic[R]):
    """The fixture checks use when they need a usable snapshot, and what makes it unusable.

    ``decide`` returns None when the snapshot can be judged, or a decision (blocked, with the
    blocking case named; or no data) given in the case's call phase, at the case's own severity.
    With ``fixture`` empty the decision applies to the kind's probe fixture itself.
    """

    decide: Callable[[R, Environment], Decision | None]
    fixture: str = ""
    doc: str = ""


@dataclass(frozen=True)
class ProbeKind(Generic[T, R]):
    """One kind of probe, declared once: targets of type T, records of type R."""

    name: str                     # the kind: "database"
    section: str                  # the environment section its targets come from: "databases"
    record: type[R]               # the typed result record
    probe: Callable[[T, Job], Awaitable[R]]  # one target, bounded; never raises for a sick target
    # Targets: parametrized kinds name the argument (one case per target: ``database``); fixed kinds
    # map each probe fixture to a fixed target name (``compliance_probe`` -> ``compliance``).
    param: str = ""
    fixture: str = ""             # the probe fixture of a parametrized kind: "database_probe"
    fixed: Mapping[str, str] = field(default_factory=dict)
    targets: Callable[[Environment], Sequence[T]] = lambda env: ()
    gate: Gate[R] | None = None
    after: str = ""               # a kind whose result for the same target this probe waits for
    # The model of one entry when the kind brings a new section (``[[hosts]]``): the environment
    # model and its JSON Schema gain the section; None when the section is a built-in one.
    entry: type[Target] | None = None
    evidence: Callable[[R, Environment], None] | None = None
    # Whether the probe measures latency itself (synthetic sampling): then no case runs while the
    # pass is in flight, so the run's own reporting cannot slow down what it is timing.
    timing: Callable[[Environment], bool] = lambda env: False
    doc: str = ""

    def names(self, env: Environment) -> list[str]:
        return [t.name for t in self.targets(env)]

    def fixtures(self) -> dict[str, str]:
        """Probe fixture -> target argument (``=name`` for a fixed target)."""
        if self.param:
            return {self.fixture: self.param}
        return {fixture: f"={target}" for fixture, target in self.fixed.items()}


REGISTRY: dict[str, ProbeKind[Any, Any]] = {}


def _origin(kind: ProbeKind[Any, Any]) -> str:
    return f"{getattr(kind.probe, '__module__', '')}.{getattr(kind.probe, '__qualname__', '')}"


def register(kind: ProbeKind[T, R]) -> ProbeKind[T, R]:
    earlier = REGISTRY.get(kind.name)
    # The same module imported again (pytest's in-process runs restore sys.modules) declares it anew: the
    # newer declaration replaces the older. Another module declaring the same name is a mistake.
    if earlier is not None and earlier is not kind and _origin(earlier) != _origin(kind):
        raise ValueError(f"probe kind {kind.name!r} is declared twice")
    if kind.param and not kind.fixture:
        raise ValueError(f"probe kind {kind.name!r} names a parameter but no probe fixture")
    REGISTRY[kind.name] = kind
    return kind


_DISCOVERED: list[bool] = []


def discover() -> dict[str, ProbeKind[Any, Any]]:
    """Import every probe module (each registers its kinds) once, and return the registry.

    Kinds registered later (by a project's conftest.py) join the same registry.
    """
    if not _DISCOVERED:
        from acgs_checks import probes  # noqa: PLC0415

        for module in pkgutil.iter_modules(probes.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{probes.__name__}.{module.name}")
        _DISCOVERED.append(True)
    return REGISTRY


def added_sections() -> tuple[tuple[str, type[Target]], ...]:
    """The environment sections registered kinds bring, for the environment model."""
    return tuple(sorted({(k.section, k.entry) for k in discover().values() if k.entry is not None},
                        key=lambda pair: pair[0]))


def by_fixture() -> dict[str, tuple[ProbeKind[Any, Any], str]]:
    """Every probe fixture: its kind and its target argument (``=name`` for fixed targets)."""
    return {fixture: (kind, arg) for kind in discover().values() for fixture, arg in kind.fixtures().items()}


def params() -> dict[str, ProbeKind[Any, Any]]:
    """The parametrized target arguments (service, database, ...), each with the first kind that declares it."""
    found: dict[str, ProbeKind[Any, Any]] = {}
    for kind in discover().values():
        if kind.param:
            found.setdefault(kind.param, kind)
    return found


def applicable(env: Environment, fixture: str) -> bool:
    """Whether checks using this probe fixture apply to the environment at all."""
    kind, arg = by_fixture()[fixture]
    names = kind.names(env)
    return arg[1:] in names if arg.startswith("=") else bool(names)


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
    from acgs_checks.probes import _aio  # noqa: PLC0415

    out: Results = {name: {} for name in discover()}

    def keep(kind: str, name: str, record: dict[str, Any]) -> None:
        out[kind][name] = record

    _aio.run(lambda: _pass(env, selected, keep))
    return out


class ProbePass:
    """The same pass in a background thread, each record available as soon as its target answered.

    Cases of targets that answered run while a hanging target still waits out its timeout, so a
    run costs about one timeout plus start-up, not one timeout plus the time to report every case.
    """

    def __init__(self, env: Environment, selected: Mapping[str, set[str]]) -> None:
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._changed = threading.Condition()
        self._finished = False
        self._error = ""
        # What the pass reads from the process environment is read here, in the main thread.
        from acgs_checks.probes import http  # noqa: PLC0415
        http.PROXIES.set(urllib.request.getproxies_environment())
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run, env, selected), name="acgs-probe-pass",
                                        daemon=True)
        self._thread.start()

    def _run(self, env: Environment, selected: Mapping[str, set[str]]) -> None:
        from acgs_checks.probes import _aio  # noqa: PLC0415

        try:
            _aio.run(lambda: _pass(env, selected, self._deliver))
        except BaseException as exc:  # noqa: BLE001 - reported to every case still waiting, never lost
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    def _deliver(self, kind: str, name: str, record: dict[str, Any]) -> None:
        with self._changed:
            self._records[(kind, name)] = record
            self._changed.notify_all()

    def wait_until_finished(self) -> None:
        with self._changed:
            while not self._finished:
                self._changed.wait(0.1)

    def ready(self, keys: Iterable[tuple[str, str]]) -> bool:
        with self._changed:
            return self._finished or all(key in self._records for key in keys)

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


__all__ = ["Decision", "Finished", "Gate", "Job", "ProbeError", "ProbeKind", "ProbePass", "R", "applicable",
           "by_fixture", "discover", "params", "probe_selected", "register"]
