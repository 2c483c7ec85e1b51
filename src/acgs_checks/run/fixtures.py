"""The fixtures checks use, derived from the probe-kind registry, and the verdicts they hand to the call phase.

Each kind gives a probe fixture (``database_probe``: the typed snapshot, reachable or not) and,
when it declares a gate, a gate fixture (``db``: the snapshot, or the case skipped as blocked or
failed as no data). A fixture never raises in setup: its evidence and its verdict are given in
the call phase, as the case's own, at the case's own severity.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable, Generator
from typing import Any

import allure
import pytest

from acgs_checks import kinds, verdict
from acgs_checks.environment import Environment, Waiver, maintenance
from acgs_checks.kinds import ProbeKind
from acgs_checks.records import JsonRecord
from acgs_checks.run import cases, probing, retries
from acgs_checks.run.selection import is_check
from acgs_checks.run.state import STATE, RunState, armed, start_backends

# Kinds whose probes need the sandbox's database and cache servers started first.
_BACKEND_KINDS = ("database", "pooler", "cache", "cache_security", "failed_logins", "backup")


@pytest.fixture(scope="session")
def acgs_environment(pytestconfig: pytest.Config) -> Environment:
    """The environment under check (validated, thresholds resolved)."""
    return armed(pytestconfig).environment


def _sandbox_backends(state: RunState) -> None:
    """The sandbox's PostgreSQL, PgBouncer and Redis, started before a pass that probes them."""
    if state.sandbox is not None and any(state.selected.get(k) for k in _BACKEND_KINDS):
        start_backends(state.sandbox)


def start_pass(state: RunState) -> probing.ProbePass:
    """The one concurrent pass over every selected target, started once, in the background."""
    if state.probe_pass is None:
        _sandbox_backends(state)
        state.probe_pass = probing.ProbePass(state.environment, state.selected)
    return state.probe_pass


@pytest.fixture(scope="session")
def probe_results(pytestconfig: pytest.Config) -> cases.Records:
    """Every selected target probed once, concurrently, shared by every check (and xdist worker).

    In one process each record is there as soon as its target answered; under xdist the first
    worker probes everything and the others read its results (one connection per target).
    """
    state = armed(pytestconfig)
    if state.shared_dir is None:
        return start_pass(state)

    def compute() -> probing.Results:
        _sandbox_backends(state)
        return probing.probe_selected(state.environment, state.selected)

    return probing.Finished(state.results.get("probes", compute))


def runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Allure parameters and evidence, added while the test result is the active one."""
    state = item.config.stash.get(STATE, None)
    if state is not None and is_check(item, item.config.rootpath):
        # The environment is a parameter so that two environments keep two histories.
        allure.dynamic.parameter("environment", state.environment.name)
        callspec = getattr(item, "callspec", None)
        for param in kinds.params():
            if callspec is not None and param in callspec.params:
                allure.dynamic.parameter(param, callspec.params[param].name)
        for attach in item.stash.get(cases.EVIDENCE, []):
            attach()
        verdict.take_measurement()  # nothing left over from an earlier case
        try:
            for decide in item.stash.get(cases.VERDICTS, []):
                decide()  # raises: the case fails or is skipped before its body runs
            return (yield)
        except pytest.skip.Exception as exc:
            if str(exc.msg).startswith("blocked:"):  # its target's own failure is in maintenance: so is this
                _in_maintenance(item, state, exc)
            raise
        except (pytest.fail.Exception, Exception) as exc:  # noqa: BLE001 - retried, then re-raised unless it passes
            try:
                retries.retry(item, state, exc)  # returns when a later attempt passes (reported as flaky)
            except (pytest.fail.Exception, Exception) as final:
                _in_maintenance(item, state, final)
                _waive(item, state.environment.waivers, state.settings.today, final)
                raise
            return None
    return (yield)


def case_targets(item: pytest.Item) -> list[str]:
    """The names of the targets a case checks (its parametrized targets)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return []
    return [str(getattr(callspec.params[p], "name", "")) for p in kinds.params() if p in callspec.params]


def _in_maintenance(item: pytest.Item, state: RunState, exc: BaseException) -> None:
    """A failure (or blocked skip) of a target inside a [[maintenance]] window becomes a skip that says so."""
    said = maintenance.in_maintenance(state.environment.maintenance, case_targets(item), state.settings.now)
    if not said:
        return
    raise pytest.skip.Exception(verdict.clean(f"{said}; {verdict.first_line(exc)}"), _use_item_location=True) \
        from exc


def _waive(item: pytest.Item, waivers: tuple[Waiver, ...], today: datetime.date, exc: BaseException) -> None:
    """A failure an active waiver covers becomes a skip that says so (and no longer counts for --fail-on)."""
    waiver = next((w for w in waivers if w.active(today) and w.matches(item.name)), None)
    if waiver is None:
        return
    raise pytest.skip.Exception(verdict.clean(
        f"{verdict.WAIVED} until {waiver.expires} by {waiver.owner}: {waiver.reason} "
        f"(the failure: {verdict.first_line(exc)})"),
        _use_item_location=True) from exc


def _signature(*names: str) -> inspect.Signature:
    return inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])


def _probe_fixture(kind: ProbeKind[Any, Any], fixture: str, arg: str) -> Callable[..., Any]:
    """``database_probe(request, database, probe_results)``: the snapshot, reachable or not."""
    gate_here = kind.gate is not None and not kind.gate.fixture

    def probe(_holder: object, request: pytest.FixtureRequest, probe_results: cases.Records,
              **target: Any) -> JsonRecord:
        name = arg[1:] if arg.startswith("=") else target[arg].name
        record = cases.observed(request, kind, name, probe_results)
        return cases.gated(request, kind, record) if gate_here else record

    names = ("request", "probe_results") if arg.startswith("=") else ("request", arg, "probe_results")
    names = ("self", *names)  # a method of the per-run plugin class (see kind_fixtures)
    probe.__signature__ = _signature(*names)  # type: ignore[attr-defined]  # pytest reads the argument names here
    probe.__name__ = probe.__qualname__ = fixture
    probe.__doc__ = f"{kind.doc[:1].upper()}{kind.doc[1:]} ({kind.name} probe), reachable or not."
    return pytest.fixture(name=fixture)(probe)


def _gate_fixture(kind: ProbeKind[Any, Any]) -> Callable[..., Any]:
    """``db(request, database_probe)``: the snapshot, or the case skipped as blocked (or failed as no data)."""
    assert kind.gate is not None

    def gate(_holder: object, request: pytest.FixtureRequest, **probe: Any) -> JsonRecord:
        record: JsonRecord = probe[kind.fixture]
        return cases.gated(request, kind, record)

    gate.__signature__ = _signature("self", "request", kind.fixture)  # type: ignore[attr-defined]
    gate.__name__ = gate.__qualname__ = kind.gate.fixture
    gate.__doc__ = f"{kind.gate.doc[:1].upper()}{kind.gate.doc[1:]} ({kind.name})."
    return pytest.fixture(name=kind.gate.fixture)(gate)


def generated() -> dict[str, Callable[..., Any]]:
    """Every kind's probe and gate fixtures, by name."""
    found: dict[str, Callable[..., Any]] = {}
    for kind in kinds.discover().values():
        for fixture, arg in kind.fixtures().items():
            found[fixture] = _probe_fixture(kind, fixture, arg)
        if kind.gate is not None and kind.gate.fixture:
            found[kind.gate.fixture] = _gate_fixture(kind)
    return found


def kind_fixtures() -> object:
    """A plugin object holding the generated fixtures, registered once the kinds are known (configure).

    pytest reads fixtures from the plugin's class, so each run gets a class of its own.
    """
    return type("KindFixtures", (), {"__doc__": kind_fixtures.__doc__, **generated()})()
