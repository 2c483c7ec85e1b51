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
import importlib
import pkgutil
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
    doc: str = ""

    def names(self, env: Environment) -> list[str]:
        return [t.name for t in self.targets(env)]

    def fixtures(self) -> dict[str, str]:
        """Probe fixture -> target argument (``=name`` for a fixed target)."""
        if self.param:
            return {self.fixture: self.param}
        return {fixture: f"={target}" for fixture, target in self.fixed.items()}


REGISTRY: dict[str, ProbeKind[Any, Any]] = {}


def register(kind: ProbeKind[T, R]) -> ProbeKind[T, R]:
    if kind.name in REGISTRY and REGISTRY[kind.name] is not kind:
        raise ValueError(f"probe kind {kind.name!r} is declared twice")
    if kind.param and not kind.fixture:
        raise ValueError(f"probe kind {kind.name!r} names a parameter but no probe fixture")
    REGISTRY[kind.name] = kind
    return kind


def discover() -> dict[str, ProbeKind[Any, Any]]:
    """Import every probe module (each registers its kinds) and return the registry."""
    from acgs_checks import probes  # noqa: PLC0415

    for module in pkgutil.iter_modules(probes.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{probes.__name__}.{module.name}")
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


def probe_selected(env: Environment, selected: Mapping[str, set[str]]) -> Results:
    """Probe the named targets of each kind, all in one concurrent pass; results as JSON, by kind and name."""
    from acgs_checks.probes import _aio  # noqa: PLC0415

    kinds = discover()

    async def all_of() -> list[tuple[str, JsonRecord]]:
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

        def start(kind: ProbeKind[Any, Any], target: Any) -> Callable[[], Awaitable[JsonRecord]]:
            return _guarded(target.name, lambda: one(kind, target))

        order = sorted(kinds.values(), key=lambda k: bool(k.after))  # what others wait for starts first
        for kind in order:
            wanted = selected.get(kind.name, set())
            for target in kind.targets(env):
                if target.name in wanted:
                    tasks[(kind.name, target.name)] = asyncio.ensure_future(start(kind, target)())
        done = await asyncio.gather(*tasks.values())
        for task in shared.values():
            task.cancel()
        return [(kind_name, record) for (kind_name, _), record in zip(tasks, done, strict=True)]

    out: Results = {name: {} for name in kinds}
    for kind_name, record in _aio.run(all_of):
        out[kind_name][getattr(record, "target", "")] = record.to_json()
    return out


__all__ = ["Decision", "Gate", "Job", "ProbeError", "ProbeKind", "R", "applicable", "by_fixture", "discover",
           "params", "probe_selected", "register"]
