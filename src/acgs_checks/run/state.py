"""The run's state: the environment under check, the sandbox, xdist sharing, signals and cleanup."""

from __future__ import annotations

import atexit
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from acgs_checks import __version__, environment, kinds
from acgs_checks.environment import Environment
from acgs_checks.reporting import access, outputs
from acgs_checks.run import probing, reports
from acgs_checks.run.settings import Settings
from acgs_checks.run.worker_results import SharedResults
from acgs_checks.sandbox import Sandbox
from acgs_checks.sandbox.servers import SandboxError


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
    # --acgs-doctor: per target, what each case could read (made once at the session's end, printed after).
    doctor: list[access.TargetAccess] = field(default_factory=list)
    rootpath: Path = Path()
    # Per case, the (kind, target) records it reads; and the streaming pass of a one-process run.
    needs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    probe_pass: probing.ProbePass | None = None
    # Every check collected, before any selection: name -> (review day, area, markers, the environment
    # section it lacks or ""). For the one line that says why a run selected nothing.
    catalog: dict[str, tuple[str, str, frozenset[str], str]] = field(default_factory=dict)
    # (kind, target) -> the selected case marked ``reachability`` that reports whether that target answered:
    # what a blocked case names (kinds.Blocked), found by marker, never by a name written in a probe.
    reachability: dict[tuple[str, str], str] = field(default_factory=dict)
    # Every selected case and its level, so an interrupted run can say which never ran ("?" under xdist: the
    # controller learns only the ids its workers collected).
    planned: dict[str, str] = field(default_factory=dict)
    selection_done: bool = False  # the selection hook finished (an interrupted collection plans nothing)


STATE = pytest.StashKey[RunState]()



def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def is_xdist_controller(config: pytest.Config) -> bool:
    return not is_worker(config) and config.getoption("dist", "no") != "no"


def armed(config: pytest.Config) -> RunState:
    state = config.stash.get(STATE, None)
    if state is None:
        pytest.fail("acgs-checks is not armed here: set acgs_checks = true in the pytest configuration",
                    pytrace=False)
    return state


def start_environment(config: pytest.Config, settings: Settings,
                      claim_outputs: Callable[[], None] = lambda: None) -> RunState:
    """The run's environment, validated (a bad file stops here), then ``claim_outputs`` (the reports folder's
    lock: a run that stops on its input never waits for it), then the sandbox, if it is the one checked."""
    kinds.discover()  # the probe kinds bring their environment sections before any file is read
    if is_worker(config):
        shared = Path(config.workerinput["acgs_shared_dir"])  # type: ignore[attr-defined]
        mapping = config.workerinput.get("acgs_sandbox")  # type: ignore[attr-defined]
        env = (environment.from_mapping(mapping, source="sandbox", environ={}) if mapping
               else environment.load(settings.env_spec, rootdir=config.rootpath))
        return RunState(settings, env, shared_dir=shared, results=SharedResults(shared))
    # A sandbox that cannot be (an unknown fault) or a file that does not validate stops here, before the lock.
    sandbox = Sandbox(settings.faults) if settings.env_spec == environment.SANDBOX else None
    loaded = None if sandbox is not None else environment.load(settings.env_spec, rootdir=config.rootpath)
    claim_outputs()
    _interrupt_on_signals()
    if sandbox is not None:
        atexit.register(sandbox.stop)
        try:
            sandbox.start()
        except BaseException:
            sandbox.stop()
            raise
        loaded = sandbox.environment()
    assert loaded is not None
    state = RunState(settings, loaded, sandbox=sandbox)
    if is_xdist_controller(config):
        state.shared_dir = Path(tempfile.mkdtemp(prefix="acgs-run-"))
        state.owns_shared_dir = True
        if sandbox is not None:
            # Workers cannot start the controller's servers on demand: start them now.
            start_backends(sandbox)
    return state


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _interrupt_on_signals() -> None:
    """SIGTERM (timeout, CI aborts, Kubernetes) and SIGHUP end the run like Ctrl-C does.

    pytest then unwinds: summary.json says the run was interrupted, with what it had judged, and
    pytest_unconfigure stops every sandbox server and removes its folders (without this the servers
    would outlive the run). A second signal during that cleanup is ignored, so the cleanup finishes.
    """
    def interrupt(signum: int, _frame: object) -> None:
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    if threading.current_thread() is threading.main_thread():
        for each in STOP_SIGNALS:
            _previous_handlers.setdefault(each, signal.signal(each, interrupt))


_previous_handlers: dict[signal.Signals, Any] = {}


def _restore_signals() -> None:
    """Hand the signals back as they were (pytest may run again in the same process, as pytester does)."""
    if threading.current_thread() is threading.main_thread():
        for each, handler in _previous_handlers.items():
            signal.signal(each, handler)
    _previous_handlers.clear()


def start_backends(sandbox: Sandbox) -> None:
    """A sandbox that cannot start is the machine's problem, not a failed check: stop with exit 4."""
    try:
        sandbox.start_backends()
    except SandboxError as exc:
        pytest.exit(f"sandbox: {exc}; fix: install PostgreSQL and Redis, or the bundled "
                    "servers: pip install -e \".[sandbox]\"", returncode=pytest.ExitCode.USAGE_ERROR)


class XdistController:
    """Hands workers the sandbox's environment and the folder where probe results meet."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["acgs_shared_dir"] = str(self.state.shared_dir)
        if self.state.sandbox is not None:
            node.workerinput["acgs_sandbox"] = self.state.sandbox.as_mapping()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """What a worker could not write (its Allure files) counts for the run: named, and exit 6."""
        reports.CURRENT.merge(list(getattr(node, "workeroutput", {}).get("acgs_output_problems", [])))


def unconfigure(config: pytest.Config) -> None:
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
    else:
        _restore_signals()
    if state.owns_shared_dir and state.shared_dir is not None:
        shutil.rmtree(state.shared_dir, ignore_errors=True)


def report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(STATE, None)
    if state is None:
        return []
    env = state.environment
    where = "embedded sandbox" if state.sandbox else env.source
    lines = [
        f"acgs-checks {__version__}: environment '{env.name}' ({where}), "
        + ", ".join(f"{len(kind.targets(env))} {kind.section}" for kind in kinds.params().values())
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


