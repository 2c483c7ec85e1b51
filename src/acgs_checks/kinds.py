"""The probe-kind registry: a kind is declared once, in its probe module, and everything else derives from it.

A :class:`ProbeKind` says which environment section its targets come from, how to probe one
target (async and bounded), the typed record a probe returns, the case that blocks its
dependents, and how its evidence is attached. From the declarations the plugin derives its
fixtures, what to probe for the selected cases, the shared (xdist) results, blocked-skips and
Allure evidence. The pass that probes them lives in :mod:`acgs_checks.run.probing`: this module only
declares.

Adding a kind: a module in :mod:`acgs_checks.probes` that calls :func:`register`, and a module
of checks under ``checks/``. Nothing else.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from acgs_checks.environment import Environment, Target
from acgs_checks.environment.loader import add_section
from acgs_checks.records import Answer, JsonRecord


class Named(Protocol):
    """A target: anything with a name (the environment's models)."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class Fixed:
    """A fixed target: the one thing a kind checks in the environment (``alerts``, ``access``, ``history``)."""

    name: str


R = TypeVar("R", bound=JsonRecord)
T = TypeVar("T", bound=Named)
# A verdict decided from a snapshot, given later (in the case's call phase): raises skip or fail.
Decision = Callable[[], None]


@dataclass(frozen=True)
class Blocked:
    """A dependent case skipped because a target did not answer; the case that reports it fails in the same run.

    That case is not named here: the run finds it by its marker (``@pytest.mark.reachability``), as the case of
    ``kind`` for ``target``. When it is not selected in the run, the dependent case fails with ``reason`` itself.
    """

    kind: str
    target: str
    reason: str
    subject: str = ""  # who the message is about when it is not ``target`` (a service blocked by Prometheus)


def unanswered(kind: str, seen: Answer) -> Blocked | None:
    """The gate every kind gets: blocked by its own reachability case when its target did not answer."""
    if seen.answered:
        return None
    return Blocked(kind, seen.target, "refused access" if seen.denied else "is unreachable")


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

    ``decide`` returns None when the snapshot can be judged, :class:`Blocked`, or a decision (no data, say)
    given in the case's call phase, at the case's own severity. Without one, the kind's gate is
    :func:`unanswered`. With ``fixture`` empty the decision applies to the kind's probe fixture itself.
    """

    decide: Callable[[R, Environment], Decision | Blocked | None] | None = None
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
    # What the case's evidence attachment shows, JSON-shaped (default: the record itself); the run redacts it.
    evidence: Callable[[R], Any] | None = None
    # Whether the probe measures latency itself (synthetic sampling): then no case runs while the
    # pass is in flight, so the run's own reporting cannot slow down what it is timing.
    timing: Callable[[Environment], bool] = lambda env: False
    doc: str = ""
    grant: str = ""  # the narrowest access its probe needs (the check catalog shows it beside each check)

    def names(self, env: Environment) -> list[str]:
        return [t.name for t in self.targets(env)]

    def fixtures(self) -> dict[str, str]:
        """Probe fixture -> target argument (``=name`` for a fixed target)."""
        if self.param:
            return {self.fixture: self.param}
        return {fixture: f"={target}" for fixture, target in self.fixed.items()}


REGISTRY: dict[str, ProbeKind[Any, Any]] = {}
CONTRACT = ("target", "answered", "error", "denied")  # acgs_checks.records.Answer


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
    lacking = [name for name in CONTRACT if not hasattr(kind.record, name)
               and name not in getattr(kind.record, "__dataclass_fields__", {})]
    if lacking:
        raise ValueError(f"probe kind {kind.name!r}: its record {kind.record.__name__} lacks {', '.join(lacking)} "
                         "(every record says whether its target answered: acgs_checks.records.Answer)")
    REGISTRY[kind.name] = kind
    if kind.entry is not None:
        add_section(kind.section, kind.entry)
    return kind


_DISCOVERED: list[bool] = []
PROBES_PACKAGE = "acgs_checks.probes"


def discover() -> dict[str, ProbeKind[Any, Any]]:
    """Import every probe module (each registers its kinds) once, and return the registry.

    Kinds registered later (by a project's conftest.py) join the same registry.
    """
    if not _DISCOVERED:
        # By name, as plugins are found: the registry depends on no probe module, the probe modules on it.
        package = importlib.import_module(PROBES_PACKAGE)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{PROBES_PACKAGE}.{module.name}")
        _DISCOVERED.append(True)
    return REGISTRY


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


__all__ = ["Blocked", "Decision", "Fixed", "Gate", "Job", "ProbeError", "ProbeKind", "R", "applicable", "by_fixture",
           "discover", "params", "register", "unanswered"]
