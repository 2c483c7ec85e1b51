"""pytest glue: options, markers, target parametrization, shared probes, exit codes.

Everything here is wiring; what is measured lives in ``probes``, what is judged in
``checks/``, and what the runbook says in ``runbook``, ``severity`` and ``thresholds``.
"""

from __future__ import annotations

import atexit
import datetime
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import allure
import pytest

from acgs_checks import __version__, environment, runbook, verdict
from acgs_checks.environment import Cache, Database, Environment, Pooler, Service
from acgs_checks.errors import ConfigError
from acgs_checks.probes import http
from acgs_checks.probes._record import JsonRecord
from acgs_checks.probes.targets import KINDS, NOT_MEASURED, PROBE_FIXTURES, applicable, probe_selected
from acgs_checks.reporting import allure_files, evidence, outputs
from acgs_checks.sandbox import Sandbox, faults
from acgs_checks.sandbox.servers import SandboxError
from acgs_checks.severity import SEVERITY_MARKERS, Severity
from acgs_checks.shared import SharedResults

if TYPE_CHECKING:
    # Loaded lazily in the fixtures: a health-only run never imports the database/cache clients.
    from acgs_checks.probes.cache import CacheSnapshot
    from acgs_checks.probes.postgres import PgSnapshot, PoolerSnapshot
    from acgs_checks.probes.slo import BusinessSnapshot, SloSnapshot, SourceStatus

REVIEW_DAYS = {
    "daily": "the 09:00 UTC morning health check",
    "monday": "the Monday security review",
    "wednesday": "the Wednesday performance review",
    "friday": "the Friday backup verification",
}
AREAS = {
    "health": "service health endpoints",
    "database": "PostgreSQL and its connection pool",
    "cache": "Redis",
    "slo": "latency and error-rate objectives",
    "security": "authentication, TLS and access",
    "performance": "performance trends and slow queries",
    "backup": "backups and restoration",
    "infra": "hosts: CPU, memory, disk, network",
    "business": "compliance score and policy evaluation",
}
ENV_VAR = "ACGS_ENV"
TARGET_ARGS = KINDS  # the parametrized argument names: service, database, pooler, cache


@dataclass(frozen=True)
class Settings:
    """The run's options, resolved once in pytest_configure."""

    env_spec: str
    fail_on: Severity
    faults: tuple[faults.Fault, ...]
    review: str | None          # the review day --review selects (daily + that day), if any
    review_label: str           # how metrics and summaries name this run: daily, monday, ... or adhoc
    summary_path: Path
    textfile: Path | None
    pushgateway: str
    webhook: str
    coverage: bool


@dataclass
class RunState:
    settings: Settings
    environment: Environment
    sandbox: Sandbox | None = None
    shared_dir: Path | None = None
    owns_shared_dir: bool = False
    results: SharedResults = field(default_factory=lambda: SharedResults(None))
    selected: dict[str, set[str]] = field(default_factory=dict)
    records: dict[str, outputs.CheckRecord] = field(default_factory=dict)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    coverage: dict[str, list[str]] = field(default_factory=dict)
    delivery_problems: list[str] = field(default_factory=list)
    rootpath: Path = Path()


STATE = pytest.StashKey[RunState]()
EVIDENCE = pytest.StashKey[list[Callable[[], None]]]()
VERDICTS = pytest.StashKey[list[Callable[[], None]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("acgs_checks", type="bool", default=False,
                  help="arm the acgs-checks plugin for this rootdir (the suite's pyproject sets it)")
    group = parser.getgroup("acgs-checks", "ACGS-2 runbook checks")
    group.addoption(
        "--env", dest="acgs_env", default=None, metavar="NAME|PATH",
        help=f"environment to check: NAME for fixtures/environments/NAME.toml, a path, "
        f"or 'sandbox' (default; also from ${ENV_VAR}). Required when CI is set.",
    )
    group.addoption(
        "--fail-on", dest="acgs_fail_on", default="P3", metavar="P0|P1|P2|P3",
        help="only failures at or above this severity make the exit code non-zero (default P3)",
    )
    group.addoption(
        "--review", dest="acgs_review", default=None, metavar="today|daily|monday|wednesday|friday",
        help="select the daily checks plus that review day's (today: the UTC weekday; ACGS_TODAY=YYYY-MM-DD fixes it)",
    )
    group.addoption("--summary-json", dest="acgs_summary", default=None, metavar="PATH",
                    help="where to write the machine-readable summary (default reports/summary.json)")
    group.addoption("--metrics-textfile", dest="acgs_textfile", default=None, metavar="PATH",
                    help="also write the results as a node_exporter textfile (atomically)")
    group.addoption("--pushgateway", dest="acgs_pushgateway", default=None, metavar="URL",
                    help="also push the results to this Prometheus Pushgateway, grouped by env and review")
    group.addoption("--notify-webhook", dest="acgs_webhook", default=None, metavar="URL",
                    help="POST the failures at or above --fail-on (Alertmanager webhook JSON with a Slack text)")
    group.addoption("--runbook-coverage", dest="acgs_coverage", action="store_true",
                    help="print each runbook requirement with the checks that cover it, and run nothing")
    group.addoption(
        "--sandbox-fault", dest="acgs_faults", action="append", default=[],
        metavar="TARGET:FAULT[=ARG]",
        help=f"inject a fault into the sandbox; repeatable. {faults.describe()}",
    )


def _ci_is_set() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def _resolve_settings(config: pytest.Config) -> Settings:
    spec = config.getoption("acgs_env") or os.environ.get(ENV_VAR, "").strip()
    if not spec:
        # The coverage map runs no check, so it needs no environment, in CI or not.
        if _ci_is_set() and not config.getoption("acgs_coverage"):
            raise ConfigError(
                source="--env", key="", problem="CI is set but no environment was given",
                fix=f"pass --env NAME|PATH or set {ENV_VAR}; a pipeline never checks the sandbox by accident",
            )
        spec = environment.SANDBOX
    try:
        fail_on = Severity.parse(config.getoption("acgs_fail_on"))
    except ValueError as exc:
        raise ConfigError(source="--fail-on", key="", problem=str(exc),
                          fix="pass --fail-on P0, P1, P2 or P3") from None
    parsed = faults.parse_all(config.getoption("acgs_faults"))
    if parsed and spec != environment.SANDBOX:
        raise ConfigError(source="--sandbox-fault", key="", problem=f"faults apply only to the sandbox, "
                          f"but the environment is {spec!r}", fix="drop --sandbox-fault or use --env sandbox")
    review = _resolve_review(config.getoption("acgs_review"))
    markexpr = (config.getoption("markexpr", "") or "").strip()
    label = review or (markexpr if markexpr in REVIEW_DAYS else "adhoc")
    textfile = config.getoption("acgs_textfile")
    return Settings(
        env_spec=spec, fail_on=fail_on, faults=parsed, review=review, review_label=label,
        summary_path=Path(config.getoption("acgs_summary") or config.rootpath / "reports" / "summary.json"),
        textfile=Path(textfile) if textfile else None,
        pushgateway=_http_url("--pushgateway", config.getoption("acgs_pushgateway")),
        webhook=_http_url("--notify-webhook", config.getoption("acgs_webhook")),
        coverage=bool(config.getoption("acgs_coverage")),
    )


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TODAY_VAR = "ACGS_TODAY"


def _resolve_review(value: str | None) -> str | None:
    """``today`` is the UTC weekday (``ACGS_TODAY=YYYY-MM-DD`` fixes the date, for tests and replays)."""
    if not value:
        return None
    choice = value.strip().lower()
    if choice == "today":
        fixed = os.environ.get(TODAY_VAR, "").strip()
        try:
            day = datetime.date.fromisoformat(fixed) if fixed else datetime.datetime.now(datetime.UTC).date()
        except ValueError:
            raise ConfigError(source=TODAY_VAR, key="", problem=f"{fixed!r} is not a date",
                              fix="write YYYY-MM-DD, or unset it") from None
        weekday = WEEKDAYS[day.weekday()]
        return weekday if weekday in REVIEW_DAYS else "daily"
    if choice not in REVIEW_DAYS:
        raise ConfigError(source="--review", key="", problem=f"{value!r} is not a review",
                          fix="pass --review today, daily, monday, wednesday or friday")
    return choice


def _http_url(option: str, value: str | None) -> str:
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(source=option, key="", problem=f"{environment.display_url(value)!r} is not an http(s) URL",
                          fix=f"pass {option} http://host:port/...")
    return value


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not _is_worker(config) and config.getoption("dist", "no") != "no"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for day, meaning in REVIEW_DAYS.items():
        config.addinivalue_line("markers", f"{day}: review day; runs in {meaning}")
    for severity in Severity:
        config.addinivalue_line(
            "markers", f"{severity.marker}: severity {severity.name}, {severity.response.meaning}")
    for area, meaning in AREAS.items():
        config.addinivalue_line("markers", f"{area}: runbook area: {meaning}")
    config.addinivalue_line(
        "markers", "runbook(*requirement_ids): the runbook requirements this check covers, e.g. "
        "runbook('daily.service-health'); the first one places it in the report")

    if not config.getini("acgs_checks"):
        _rerun_if_path_option_moved_rootdir(config)
        # Installed but not armed (another project, or the suite's own self-tests).
        used = [o for o, d in (("--env", "acgs_env"), ("--sandbox-fault", "acgs_faults"))
                if config.getoption(d)]
        if used:
            raise pytest.UsageError(
                f"{config.inipath or config.rootpath}: acgs_checks: {', '.join(used)} given, but the "
                "acgs-checks plugin is not armed here; fix: run from the suite's folder, or set "
                "acgs_checks = true in the pytest configuration")
        return
    if config.getoption("help", False):
        return  # --help starts nothing and needs no environment, in CI or not
    # Allure results go to reports/allure-results unless --alluredir says otherwise;
    # that default folder holds the latest run only.
    coverage_only = config.getoption("acgs_coverage")
    if (config.getoption("allure_report_dir", None) is None and hasattr(config.option, "allure_report_dir")
            and not coverage_only):
        config.option.allure_report_dir = str(config.rootpath / "reports" / "allure-results")
        config.option.clean_alluredir = True
    if _is_worker(config):
        config.option.clean_alluredir = False  # the controller cleaned it before workers started
    if getattr(config.option, "xmlpath", None) is None and not coverage_only:
        config.option.xmlpath = str(config.rootpath / "reports" / "junit.xml")
    try:
        settings = _resolve_settings(config)
        state = _start_environment(config, settings)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    state.rootpath = config.rootpath
    config.stash[STATE] = state
    verdict.set_redactor(state.environment.redact)
    config.pluginmanager.register(_Recorder(state), "acgs-recorder")
    if _is_xdist_controller(config):
        config.pluginmanager.register(_XdistController(state), "acgs-xdist-controller")


PATH_OPTIONS = ("--env", "--alluredir", "--metrics-textfile", "--summary-json")
_RERUN_GUARD = "ACGS_CHECKS_RERUN"


def _armed_suite_above(folder: Path) -> Path | None:
    for candidate in (folder, *folder.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError):
                return None
            options = data.get("tool", {}).get("pytest", {}).get("ini_options", {})
            return candidate if options.get("acgs_checks") in (True, "true") else None
    return None


def _rerun_if_path_option_moved_rootdir(config: pytest.Config) -> None:
    """``--env /elsewhere/prod.toml`` must work as ``--env=/elsewhere/prod.toml`` does.

    pytest picks its rootdir before plugins add their options, so a separate option
    value that is an existing path counts as a test path and can move the rootdir
    away from the suite. When that happened, run once more with ``--env=PATH``.
    """
    args = list(config.invocation_params.args)
    if os.environ.get(_RERUN_GUARD) or _armed_suite_above(config.invocation_params.dir) is None:
        return
    fixed: list[str] = []
    changed = False
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in PATH_OPTIONS and index + 1 < len(args):
            fixed.append(f"{arg}={args[index + 1]}")
            changed = True
            index += 2
            continue
        fixed.append(arg)
        index += 1
    if changed:
        sys.stdout.flush()
        sys.stderr.flush()
        os.environ[_RERUN_GUARD] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "pytest", *fixed])  # noqa: S606 - same interpreter, same args


def _start_environment(config: pytest.Config, settings: Settings) -> RunState:
    if _is_worker(config):
        shared = Path(config.workerinput["acgs_shared_dir"])  # type: ignore[attr-defined]
        mapping = config.workerinput.get("acgs_sandbox")  # type: ignore[attr-defined]
        env = (environment.from_mapping(mapping, source="sandbox", environ={}) if mapping
               else environment.load(settings.env_spec, rootdir=config.rootpath))
        return RunState(settings, env, shared_dir=shared, results=SharedResults(shared))
    sandbox = None
    if settings.env_spec == environment.SANDBOX:
        sandbox = Sandbox(settings.faults)
        _stop_on_signals(sandbox)
        try:
            sandbox.start()
        except BaseException:
            sandbox.stop()
            raise
        env = sandbox.environment()
    else:
        env = environment.load(settings.env_spec, rootdir=config.rootpath)
    state = RunState(settings, env, sandbox=sandbox)
    if _is_xdist_controller(config):
        state.shared_dir = Path(tempfile.mkdtemp(prefix="acgs-run-"))
        state.owns_shared_dir = True
        if sandbox is not None:
            # Workers cannot start the controller's servers on demand: start them now.
            _start_backends(sandbox)
    return state


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _stop_on_signals(sandbox: Sandbox) -> None:
    """SIGTERM (timeout, CI aborts, Kubernetes) and SIGHUP end the run like Ctrl-C does.

    pytest then unwinds and pytest_unconfigure stops every sandbox server and removes its
    folders; without this the servers would outlive the run. A second signal during that
    cleanup is ignored, so the cleanup finishes.
    """
    def interrupt(signum: int, _frame: object) -> None:
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    if threading.current_thread() is threading.main_thread():
        for each in STOP_SIGNALS:
            _previous_handlers.setdefault(each, signal.signal(each, interrupt))
    atexit.register(sandbox.stop)


_previous_handlers: dict[signal.Signals, Any] = {}


def _restore_signals() -> None:
    """Hand the signals back as they were (pytest may run again in the same process, as pytester does)."""
    if threading.current_thread() is threading.main_thread():
        for each, handler in _previous_handlers.items():
            signal.signal(each, handler)
    _previous_handlers.clear()


def _start_backends(sandbox: Sandbox) -> None:
    """A sandbox that cannot start is the machine's problem, not a failed check: stop with exit 4."""
    try:
        sandbox.start_backends()
    except SandboxError as exc:
        pytest.exit(f"sandbox: {exc}; fix: install PostgreSQL and Redis, or the bundled "
                    "servers: pip install -e \".[sandbox]\"", returncode=pytest.ExitCode.USAGE_ERROR)


class _XdistController:
    """Hands workers the sandbox's environment and the folder where probe results meet."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["acgs_shared_dir"] = str(self.state.shared_dir)
        if self.state.sandbox is not None:
            node.workerinput["acgs_sandbox"] = self.state.sandbox.as_mapping()


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.sandbox is not None:
        if threading.current_thread() is threading.main_thread():
            for each in STOP_SIGNALS:
                signal.signal(each, signal.SIG_IGN)
        try:
            state.sandbox.stop()
        finally:
            _restore_signals()
    if state.owns_shared_dir and state.shared_dir is not None:
        shutil.rmtree(state.shared_dir, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(STATE, None)
    if state is None:
        return []
    env = state.environment
    where = "embedded sandbox" if state.sandbox else env.source
    lines = [
        f"acgs-checks {__version__}: environment '{env.name}' ({where}), "
        + ", ".join(f"{len(env.targets(kind))} {kind}s" for kind in KINDS)
        + f", timeout {env.defaults.timeout_seconds:g} s, fail-on {state.settings.fail_on.name}",
    ]
    if state.settings.faults:
        lines.append("sandbox faults: " + ", ".join(map(str, state.settings.faults)))
    overrides = env.thresholds.overrides()
    if overrides:
        lines.append("thresholds overridden: " + ", ".join(f"{k}={v:g}" for k, v in overrides.items()))
    results_dir = config.getoption("allure_report_dir", None)
    if results_dir:
        lines.append(f"allure results: {results_dir}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Targets the testinfra way: one case per target of the environment, its name as the id."""
    state = metafunc.config.stash.get(STATE, None)
    if state is None:
        return
    for kind in TARGET_ARGS:
        if kind in metafunc.fixturenames:
            targets = state.environment.targets(kind)
            metafunc.parametrize(kind, targets, ids=[t.name for t in targets], scope="function")


def _is_check(item: pytest.Item, rootpath: Path) -> bool:
    if item.get_closest_marker("runbook") is not None:
        return True
    try:
        return item.path.relative_to(rootpath).parts[0] == "checks"
    except (ValueError, IndexError):
        return False


def _check_markers(item: pytest.Item, requirements: dict[str, runbook.Requirement]) -> tuple[
        list[str], Severity | None, runbook.Requirement | None]:
    """What is wrong with a check's markers, and its severity and requirement when nothing is."""
    names = {m.name for m in item.iter_markers()}
    problems: list[str] = []
    severities = sorted(names & SEVERITY_MARKERS.keys())
    days = sorted(names & REVIEW_DAYS.keys())
    if len(severities) != 1:
        problems.append("needs exactly one severity marker (p0, p1, p2 or p3), has "
                        + (", ".join(severities) or "none"))
    if len(days) != 1:
        problems.append("needs exactly one review-day marker (daily, monday, wednesday or friday), has "
                        + (", ".join(days) or "none"))
    requirement = None
    mark = item.get_closest_marker("runbook")
    if mark is None or not mark.args:
        problems.append("needs @pytest.mark.runbook('REQUIREMENT-ID')")
    else:
        unknown = [a for a in mark.args if not isinstance(a, str) or a not in requirements]
        if unknown:
            problems.append(f"runbook marker names unknown requirement(s) {unknown}; known: "
                            + ", ".join(sorted(requirements)))
        else:
            requirement = requirements[mark.args[0]]
    return problems, SEVERITY_MARKERS[severities[0]] if len(severities) == 1 else None, requirement


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse checks without one severity and one review day; label the rest for Allure."""
    state = config.stash.get(STATE, None)
    if state is None:
        return
    errors: list[str] = []
    try:
        requirements = runbook.load(runbook.map_path(config.rootpath))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    with_allure = config.pluginmanager.hasplugin("allure_pytest")
    for item in items:
        if not _is_check(item, config.rootpath):
            continue
        problems, severity, requirement = _check_markers(item, requirements)
        if problems:
            errors.append(f"{item.nodeid}: " + "; ".join(problems))
            continue
        assert severity is not None
        assert requirement is not None
        names = {m.name for m in item.iter_markers()}
        ids = [str(a) for a in item.get_closest_marker("runbook").args]  # type: ignore[union-attr]
        item.user_properties.extend([
            ("severity", severity.name), ("review_day", next(d for d in REVIEW_DAYS if d in names)),
            ("area", next((a for a in AREAS if a in names), "")), ("runbook", ",".join(ids)),
            ("environment", state.environment.name),
        ])
        for rid in ids:
            check = f"{item.nodeid.split('::')[0]}::{getattr(item, 'originalname', item.name)}"
            if check not in state.coverage.setdefault(rid, []):
                state.coverage[rid].append(check)
        if with_allure:
            doc = getattr(getattr(item, "function", None), "__doc__", None)
            for mark in allure_files.markers_for(requirement, severity, state.environment, doc):
                item.add_marker(mark)
    if errors:
        raise pytest.UsageError("invalid checks:\n  " + "\n  ".join(dict.fromkeys(errors)))
    if state.settings.coverage:
        # Only the map is wanted: report it (pytest_terminal_summary) and run nothing.
        config.hook.pytest_deselected(items=list(items))
        items[:] = []
        return
    review = state.settings.review
    if review is not None:
        days = {"daily", review}
        chosen = [i for i in items if not _is_check(i, config.rootpath)
                  or {m.name for m in i.iter_markers()} & days]
        if len(chosen) != len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
            items[:] = chosen
    # Checks of a kind the environment has none of (say, no poolers) do not apply: leave them out
    # rather than report pytest's "empty parameter set" skip for each.
    missing = {kind for kind in TARGET_ARGS if not state.environment.targets(kind)}
    missing |= {f for f in PROBE_FIXTURES if not applicable(state.environment, f)}
    if missing:
        keep = [i for i in items if not missing & set(getattr(i, "fixturenames", ()))]
        dropped = [i for i in items if missing & set(getattr(i, "fixturenames", ()))]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which targets the selected checks need, so only those get probed."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    verdict.set_selected({item.name for item in session.items})
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for fixture in set(getattr(item, "fixturenames", ())) & PROBE_FIXTURES.keys():
            kind, arg = PROBE_FIXTURES[fixture]
            name = arg[1:] if arg.startswith("=") else getattr(params.get(arg), "name", None)
            if name is not None:
                state.selected.setdefault(kind, set()).add(name)


def _armed(config: pytest.Config) -> RunState:
    state = config.stash.get(STATE, None)
    if state is None:
        pytest.fail("acgs-checks is not armed here: set acgs_checks = true in the pytest configuration",
                    pytrace=False)
    return state


@pytest.fixture(scope="session")
def acgs_environment(pytestconfig: pytest.Config) -> Environment:
    """The environment under check (validated, thresholds resolved)."""
    return _armed(pytestconfig).environment


@pytest.fixture(scope="session")
def probe_results(pytestconfig: pytest.Config) -> dict[str, dict[str, dict[str, Any]]]:
    """Every selected target probed once, concurrently, shared by every check (and xdist worker)."""
    state = _armed(pytestconfig)
    env = state.environment
    selected = state.selected

    def compute() -> dict[str, dict[str, dict[str, Any]]]:
        if state.sandbox is not None and any(selected.get(k) for k in ("database", "pooler", "cache")):
            _start_backends(state.sandbox)
        return probe_selected(env, selected)

    return state.results.get("probes", compute)


def _attach_during_call(request: pytest.FixtureRequest, attach: Callable[[], None]) -> None:
    """Fixtures run in setup, where Allure files attachments under the fixture; defer to the call."""
    request.node.stash.setdefault(EVIDENCE, []).append(attach)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Allure parameters and evidence, added while the test result is the active one."""
    state = item.config.stash.get(STATE, None)
    if state is not None and _is_check(item, item.config.rootpath):
        # The environment is a parameter so that two environments keep two histories.
        allure.dynamic.parameter("environment", state.environment.name)
        callspec = getattr(item, "callspec", None)
        for arg in TARGET_ARGS:
            if callspec is not None and arg in callspec.params:
                allure.dynamic.parameter(arg, callspec.params[arg].name)
        for attach in item.stash.get(EVIDENCE, []):
            attach()
        for decide in item.stash.get(VERDICTS, []):
            decide()  # raises: the case fails or is skipped before its body runs
    return (yield)


R = TypeVar("R", bound=JsonRecord)


def _decide_during_call(request: pytest.FixtureRequest, decide: Callable[[], None]) -> None:
    """A fixture's verdict (blocked, no data, probe error) is given in the call phase, as the test's own.

    Raised in setup, pytest would report a failure as an error ("broken" in Allure) and run no
    hook in between; given here, it is the case's failure or skip at its own severity. The first
    verdict registered wins, so a probe error is never hidden behind what follows from it.
    """
    request.node.stash.setdefault(VERDICTS, []).append(decide)


def _observed(request: pytest.FixtureRequest, kind: str, name: str,
              results: dict[str, dict[str, dict[str, Any]]], record: type[R]) -> R:
    """The probe's record of one target, with its evidence; a probe that raised fails only this target's cases."""
    env = _armed(request.config).environment
    data = results[kind][name]
    if "probe_error" in data:
        _attach_during_call(request, lambda: evidence.attach_json("probe error", data, env))
        _decide_during_call(request, lambda: verdict.fail(
            f"{verdict.PROBE_ERROR} {name}: the {kind} probe raised {data['probe_error']} (traceback in the evidence)"))
        return record.empty(name)
    _attach_during_call(request, lambda: evidence.attach_json("evidence", data, env))
    return record.from_json(data)


@pytest.fixture
def health(request: pytest.FixtureRequest, service: Service,
           probe_results: dict[str, dict[str, dict[str, Any]]]) -> http.HttpResult:
    """This service's health probe result, with its evidence attached to the report."""
    data = probe_results["service"][service.name]
    if "probe_error" in data:
        return _observed(request, "service", service.name, probe_results, http.HttpResult)
    result = http.HttpResult.from_json(data)
    env = _armed(request.config).environment
    _attach_during_call(request, lambda: evidence.attach_http(result, env))
    return result


def _blocked(request: pytest.FixtureRequest, target: str, reason: str, *, see: str) -> None:
    _decide_during_call(request, lambda: verdict.blocked(target, reason, see=see))


def _why_blocked(denied: str) -> str:
    return "refused access" if denied else "is unreachable"


@pytest.fixture
def database_probe(request: pytest.FixtureRequest, database: Database,
                   probe_results: dict[str, dict[str, dict[str, Any]]]) -> PgSnapshot:
    """What one read-only pass over this database saw, reachable or not."""
    from acgs_checks.probes.postgres import PgSnapshot  # noqa: PLC0415 - lazy, see TYPE_CHECKING

    return _observed(request, "database", database.name, probe_results, PgSnapshot)


@pytest.fixture
def db(request: pytest.FixtureRequest, database_probe: PgSnapshot) -> PgSnapshot:
    """The database's snapshot; the case is skipped as blocked when the database is unreachable."""
    if not database_probe.reachable:
        _blocked(request, database_probe.target, _why_blocked(database_probe.denied),
                 see=f"test_database_connectivity[{database_probe.target}]")
    return database_probe


@pytest.fixture
def pooler_probe(request: pytest.FixtureRequest, pooler: Pooler,
                 probe_results: dict[str, dict[str, dict[str, Any]]]) -> PoolerSnapshot:
    """What the PgBouncer admin console reported, reachable or not."""
    from acgs_checks.probes.postgres import PoolerSnapshot  # noqa: PLC0415 - lazy, see TYPE_CHECKING

    return _observed(request, "pooler", pooler.name, probe_results, PoolerSnapshot)


@pytest.fixture
def pool(request: pytest.FixtureRequest, pooler_probe: PoolerSnapshot) -> PoolerSnapshot:
    """The pooler's snapshot; skipped as blocked when its admin console is unreachable."""
    if not pooler_probe.reachable:
        _blocked(request, pooler_probe.target, _why_blocked(pooler_probe.denied),
                 see=f"test_pooler_reachable[{pooler_probe.target}]")
    return pooler_probe


@pytest.fixture
def cache_probe(request: pytest.FixtureRequest, cache: Cache,
                probe_results: dict[str, dict[str, dict[str, Any]]]) -> CacheSnapshot:
    """PING and the two INFO samples of this cache, reachable or not."""
    from acgs_checks.probes.cache import CacheSnapshot  # noqa: PLC0415 - lazy, see TYPE_CHECKING

    return _observed(request, "cache", cache.name, probe_results, CacheSnapshot)


@pytest.fixture
def redis_info(request: pytest.FixtureRequest, cache_probe: CacheSnapshot) -> CacheSnapshot:
    """The cache's snapshot; skipped as blocked when Redis is unreachable, failed as no data when INFO failed."""
    seen = cache_probe
    if not seen.reachable:
        _blocked(request, seen.target, _why_blocked(seen.denied), see=f"test_cache_reachable[{seen.target}]")
    if "info" in seen.errors:
        _decide_during_call(request, lambda: verdict.no_data(
            f"{seen.target}: INFO on {seen.url} failed: {seen.errors['info']}"))
    return seen


@pytest.fixture
def slo_probe(request: pytest.FixtureRequest, service: Service,
              probe_results: dict[str, dict[str, dict[str, Any]]]) -> SloSnapshot:
    """This service's latency and error numbers from the environment's SLO source."""
    from acgs_checks.probes.slo import SloSnapshot  # noqa: PLC0415 - lazy, see TYPE_CHECKING

    return _observed(request, "slo", service.name, probe_results, SloSnapshot)


@pytest.fixture
def slo(request: pytest.FixtureRequest, slo_probe: SloSnapshot, acgs_environment: Environment) -> SloSnapshot:
    """The numbers. Blocked only by what failed for the same reason: the metrics source, or the
    health probe that stopped the sampling; anything else the source could not read is no data."""
    seen = slo_probe
    if not seen.reachable:
        if acgs_environment.slo.source == "prometheus":
            _blocked(request, seen.target, f"has no SLO data ({seen.error})", see="test_metrics_source_reachable")
        elif seen.error.startswith(NOT_MEASURED):
            _blocked(request, seen.target, f"has no SLO data ({seen.error})",
                     see=f"test_service_health[{seen.target}]")
        else:
            _decide_during_call(request, lambda: verdict.no_data(
                f"{seen.target}: {seen.error} (source: {seen.source})"))
    return seen


@pytest.fixture
def metrics_source_probe(request: pytest.FixtureRequest,
                         probe_results: dict[str, dict[str, dict[str, Any]]]) -> SourceStatus:
    """Whether the Prometheus HTTP API answers."""
    from acgs_checks.probes.slo import SourceStatus  # noqa: PLC0415 - lazy, see TYPE_CHECKING

    return _observed(request, "metrics_source", "prometheus", probe_results, SourceStatus)


def _business(request: pytest.FixtureRequest, name: str,
              probe_results: dict[str, dict[str, dict[str, Any]]]) -> BusinessSnapshot:
    from acgs_checks.probes.slo import BusinessSnapshot  # noqa: PLC0415 - lazy, see TYPE_CHECKING

    seen = _observed(request, "business", name, probe_results, BusinessSnapshot)
    if not seen.reachable and seen.source.startswith("PromQL"):
        _blocked(request, name, f"has no data ({seen.error})", see="test_metrics_source_reachable")
    return seen


@pytest.fixture
def compliance_probe(request: pytest.FixtureRequest,
                     probe_results: dict[str, dict[str, dict[str, Any]]]) -> BusinessSnapshot:
    """The constitutional compliance score (as a ratio) and where it came from."""
    return _business(request, "compliance", probe_results)


@pytest.fixture
def policy_success_probe(request: pytest.FixtureRequest,
                         probe_results: dict[str, dict[str, dict[str, Any]]]) -> BusinessSnapshot:
    """The policy evaluation success rate (as a ratio) and where it came from."""
    return _business(request, "policy_success", probe_results)


class _Recorder:
    """One record per check from the reports, workers' included (controller side)."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if "severity" not in props and report.when != "call" and report.outcome == "passed":
            return
        record = self.state.records.get(report.nodeid)
        if record is None:
            record = outputs.CheckRecord(
                id=report.nodeid, name=report.nodeid.rsplit("::", 1)[-1], outcome="passed",
                severity=str(props.get("severity", "")), review_day=str(props.get("review_day", "")),
                area=str(props.get("area", "")), runbook=[r for r in str(props.get("runbook", "")).split(",") if r])
            self.state.records[report.nodeid] = record
        if report.when == "call":
            record.duration_seconds = report.duration
        if "measured" in props:
            record.measured = float(props["measured"])  # type: ignore[arg-type]
        if "threshold" in props:
            record.threshold = float(props["threshold"])  # type: ignore[arg-type]
        if record.outcome == "failed" or (report.passed and report.when != "call"):
            return
        record.outcome = report.outcome
        if report.failed or report.skipped:
            longrepr = report.longrepr
            if isinstance(longrepr, tuple):
                message = str(longrepr[2])
            else:
                crash = getattr(longrepr, "reprcrash", None)
                message = crash.message if crash is not None else str(longrepr)
            record.message = message.removeprefix("Failed: ").removeprefix("Skipped: ").strip().splitlines()[0] \
                if message.strip() else ""
            if report.failed:
                record.kind = verdict.failure_kind(record.message)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Carry a breach's numbers (value and threshold) into the report, for summary.json and JUnit."""
    report = yield
    if call.when == "call":
        found: list[tuple[str, object]] = list(verdict.take_measurement().items())
        if report.failed and call.excinfo is not None:
            found.append(("failure_kind", verdict.failure_kind(str(call.excinfo.value))))
        # The report carries them to the controller; the item too, since JUnit writes the properties
        # of the teardown report, which pytest builds from the item.
        report.user_properties.extend(found)
        item.user_properties.extend(found)
    return report


def _summary(state: RunState, exit_status: int) -> outputs.RunSummary:
    return outputs.RunSummary(
        environment=state.environment.name, review=state.settings.review_label,
        fail_on=state.settings.fail_on.name, started=state.started_ms / 1000, finished=time.time(),
        exit_status=exit_status, checks=sorted(state.records.values(), key=lambda r: r.id))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None or _is_worker(config):
        return
    settings = state.settings
    if settings.coverage:
        session.exitstatus = pytest.ExitCode.OK
        return
    failures = [r for r in state.records.values() if r.outcome == "failed"]
    # A failure of a test that carries no severity is never waived.
    waivable = all(r.severity and not Severity.parse(r.severity).at_or_above(settings.fail_on) for r in failures)
    if exitstatus == pytest.ExitCode.TESTS_FAILED and failures and waivable:
        session.exitstatus = pytest.ExitCode.OK
    results_dir = config.getoption("allure_report_dir", None)
    if results_dir:
        allure_files.write_launch_files(
            Path(results_dir), state.environment, fail_on=settings.fail_on,
            faults=[str(f) for f in settings.faults])
        allure_files.link_blocked_results(Path(results_dir), since_ms=state.started_ms)
    if not state.records:
        return
    summary = _summary(state, int(session.exitstatus))
    outputs.write_summary(settings.summary_path, summary)
    if settings.textfile is not None:
        outputs.write_textfile(settings.textfile, summary)
    problems = []
    if settings.pushgateway:
        problems.append(outputs.push(settings.pushgateway, summary))
    if settings.webhook and summary.failures_at_or_above(settings.fail_on):
        problems.append(outputs.notify(settings.webhook, outputs.webhook_payload(summary, settings.fail_on)))
    state.delivery_problems = [state.environment.redact(p) for p in problems if p]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or _is_worker(config):
        return
    tr = terminalreporter
    if state.settings.coverage:
        _print_coverage(tr, state)
        return
    if not state.records:
        return
    summary = _summary(state, exitstatus)
    tr.section("acgs-checks summary")
    for severity, row in summary.counts().items():
        if any(row.values()):
            tr.write_line(f"{severity}: {row['failed']} failed, {row['passed']} passed, {row['skipped']} skipped")
    failures = sorted((r for r in summary.checks if r.outcome == "failed"),
                      key=lambda r: (r.severity or "P9", r.id))
    for record in failures:
        tr.write_line(f"FAILED {record.severity or '--'} {record.id}: {record.message}")
    denied = [r for r in failures if r.kind == verdict.ACCESS_DENIED_KIND]
    if denied:
        tr.write_line(f"access denied: {len(denied)} check(s) were refused by their target; check credentials "
                      "and grants, not the network: " + ", ".join(r.name for r in denied), yellow=True)
    rated = [Severity.parse(r.severity) for r in failures if r.severity]
    if rated:
        worst = min(rated)
        tr.write_line(f"{worst.name} failing: {worst.response.summary()}", bold=True, red=True)
        fail_on = state.settings.fail_on
        waived = [s for s in rated if not s.at_or_above(fail_on)]
        if waived:
            tr.write_line(f"--fail-on {fail_on.name}: {len(waived)} failure(s) below {fail_on.name} "
                          "are reported but do not fail the run")
    written = [f"summary {state.settings.summary_path}"]
    if state.settings.textfile is not None:
        written.append(f"metrics {state.settings.textfile}")
    tr.write_line("wrote " + ", ".join(written))
    for problem in state.delivery_problems:
        tr.write_line(f"could not deliver: {problem}", yellow=True)


def _print_coverage(tr: Any, state: RunState) -> None:
    coverage = state.coverage
    requirements = runbook.load(runbook.map_path(state.rootpath))
    covered = [rid for rid in requirements if coverage.get(rid)]
    tr.section("runbook coverage")
    tr.write_line(f"{len(covered)} of {len(requirements)} requirements have checks "
                  f"({runbook.map_path(state.rootpath)})")
    for rid, requirement in requirements.items():
        checks = coverage.get(rid, [])
        mark = "x" if checks else " "
        place = f"{requirement.epic} > {requirement.feature} > {requirement.story}"
        note = ""
        if requirement.automated and not checks:
            note = "  LOST ITS CHECKS (the map says automated)"
        elif not requirement.automated and not checks:
            note = "  not automated"
        elif checks and not requirement.automated:
            note = "  has checks, but the map says automated = false"
        tr.write_line(f"[{mark}] {rid}: {place}{note}")
        for check in checks:
            tr.write_line(f"      {check}")
