"""Helpers for the self-tests: run the suite as a user would, read what it wrote."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import redis

from acgs_checks import kinds
from acgs_checks import scratch as sandbox_processes
from acgs_checks.sandbox.servers import PostgresServer, RedisServer, free_port
from servers import RealServers, serving, url_of

ROOT = Path(__file__).resolve().parent.parent
# The probe kinds bring their environment sections ([[hosts]], ...) when discovered, as a run discovers them.
kinds.discover()


# One folder per self-test run, made when the run's session starts by the process that starts it
# (the xdist controller, before its workers) and removed when that process exits; the workers, and
# this file imported again in-process (pytester), inherit it through the environment instead of
# making folders of their own that nobody would remove (xdist workers end without running atexit).
# Not at import: pytest also imports this file when a run from the checkout's root re-executes
# itself (`--env PATH`), and the exec would skip atexit. Never the checkout. In it:
# * hypothesis/: Hypothesis's caches (not .hypothesis/ in the checkout);
# * pycache/: the bytecode of every suite run a self-test starts (a child python), compiled and
#   assertion-rewritten once per self-test run: with PYTHONDONTWRITEBYTECODE each child would
#   compile ~200 modules again, seconds per run.
def _make_run_folder() -> None:
    if "ACGS_SELFTEST_DIR" in os.environ:
        return
    run_dir = tempfile.mkdtemp(prefix="acgs-selftest-")
    os.environ["ACGS_SELFTEST_DIR"] = run_dir
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = os.path.join(run_dir, "hypothesis")
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(run_dir, "pycache")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, pkill) ends a self-test run like Ctrl-C: fixtures still stop their servers
    and remove their folders (in the xdist workers too, which load this file)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)


# No self-test writes into the checkout: every file under it (but caches, the venv and node_modules)
# is remembered when the run starts (in the xdist controller, before workers) and compared at the end.
_NOT_WATCHED = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                ".tox"}
_CHECKOUT = pytest.StashKey[dict[str, int]]()


def _checkout_files() -> dict[str, int]:
    found: dict[str, int] = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _NOT_WATCHED and not d.endswith(".egg-info")]
        for name in files:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                found[os.path.relpath(path, ROOT)] = os.stat(path).st_mtime_ns
    return found


@pytest.hookimpl(tryfirst=True)  # before xdist starts its workers, which inherit the run's folder
def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        _make_run_folder()
        session.config.stash[_CHECKOUT] = _checkout_files()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long self-tests first: xdist hands tests out in this order, so a minute-long test that starts last
    would be the run's tail, alone on one worker."""
    items.sort(key=lambda item: item.get_closest_marker("early") is None)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.config.stash.get(_CHECKOUT, None)
    if before is None:
        return
    after = _checkout_files()
    written = sorted(p for p, mtime in after.items() if before.get(p) != mtime)
    if written:
        sys.stderr.write("self-tests wrote into the checkout: " + ", ".join(written[:20]) + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    allure_dir: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def results(self) -> dict[str, dict[str, Any]]:
        """Allure test results by test name (``test_service_health[auth]``)."""
        found: dict[str, dict[str, Any]] = {}
        for path in self.allure_dir.glob("*-result.json"):
            data = json.loads(path.read_text())
            found[data["name"]] = data
        return found

    def statuses(self) -> dict[str, str]:
        return {name: data["status"] for name, data in self.results().items()}

    def failed(self) -> set[str]:
        return {name for name, status in self.statuses().items() if status == "failed"}

    def assert_blocked_only_by_failures(self) -> None:
        """A case skipped as blocked points to a case that failed in the same run, every time."""
        results = self.results()
        for name, data in results.items():
            message = str(data.get("statusDetails", {}).get("message", "")).removeprefix("Skipped: ")
            if data["status"] != "skipped" or not message.startswith("blocked:"):
                continue
            see = message.rsplit("; see ", 1)[-1].strip()
            assert see in results, f"{name} is blocked by {see}, which did not run: {message}"
            blocker = results[see]
            waived = str(blocker.get("statusDetails", {}).get("message", "")).removeprefix("Skipped: ")
            # A failure under a waiver still failed: it is reported as skipped, saying so.
            assert blocker["status"] == "failed" or (blocker["status"] == "skipped" and waived.startswith("waived")), \
                f"{name} is blocked by {see}, which did not fail"

    def all_files_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.allure_dir.rglob("*") if p.is_file())


def label(result: dict[str, Any], name: str) -> list[str]:
    return [item["value"] for item in result["labels"] if item["name"] == name]


RunSuite = Callable[..., Run]


@pytest.fixture
def run_suite(tmp_path: Path) -> RunSuite:
    """Run ``python -m pytest ARGS`` in the suite's folder, with CI and ACGS_ENV cleared."""
    counter = iter(range(1000))

    def run(*args: str, environ: dict[str, str] | None = None, cwd: Path = ROOT,
            alluredir: bool = True, timeout: float = 180, report_defaults: bool = False,
            as_written: bool = False) -> Run:
        allure_dir = tmp_path / f"allure-{next(counter)}"
        if not as_written:
            # "--env PATH" outside the suite makes the suite start itself again (see settings.py): a second
            # interpreter start per run. The self-tests join it, "--env=PATH", except where that form is
            # under test (as_written=True, and the quick start's own step).
            args = _joined(args)
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "ACGS_ENV", "PYTEST_ADDOPTS")}
        env.update(environ or {})
        # The suite's runs do without the self-tests' hypothesis plugin (importing it costs a second).
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args]
        if alluredir:
            command.append(f"--alluredir={allure_dir}")
        # Nothing a self-test runs may write into the checkout: every report goes to tmp_path
        # (report_defaults keeps the suite's own defaults, for a run in a copy of the suite).
        if not report_defaults and not any(a.startswith("--junitxml") for a in args):
            command.append(f"--junitxml={allure_dir}-junit.xml")
        if not report_defaults and not any(a.startswith("--summary-json") for a in args):
            command.append(f"--summary-json={allure_dir}-summary.json")
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        run = Run(done.returncode, done.stdout, done.stderr, allure_dir)
        if alluredir and allure_dir.is_dir():
            # Every run of every self-test, every sandbox fault included, keeps this promise.
            run.assert_blocked_only_by_failures()
        return run

    return run


_PATH_OPTIONS = ("--env", "--alluredir", "--metrics-textfile", "--summary-json")


def _joined(args: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    pending = ""
    for arg in args:
        if pending:
            out.append(f"{pending}={arg}")
            pending = ""
        elif arg in _PATH_OPTIONS:
            pending = arg
        else:
            out.append(arg)
    return (*out, *([pending] if pending else []))


def copy_suite(folder: Path) -> Path:
    """The suite's checks, runbook map and configuration in ``folder``, armed like the real one."""
    shutil.copytree(ROOT / "checks", folder / "checks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "fixtures", folder / "fixtures")
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    return folder


@pytest.fixture
def suite_copy(tmp_path: Path) -> Path:
    """A copy of the suite of this test's own, for runs that write into the suite's folder."""
    return copy_suite(tmp_path / "suite")


@pytest.fixture(scope="module")
def armed_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the suite shared by a module's in-process (pytester) runs, which write elsewhere."""
    return copy_suite(tmp_path_factory.mktemp("suite"))


@pytest.fixture
def servers() -> Iterator[RealServers]:
    """Real HTTP(S) servers on loopback, in this process, for the probe's edge cases."""
    with RealServers() as real:
        yield real


@pytest.fixture
def write_env(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "env.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def standalone_sandbox(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Start ``python -m acgs_checks.sandbox`` with faults; returns the environment file it wrote."""
    processes: list[subprocess.Popen[str]] = []

    def start(*faults: str, backends: bool = True, dialects: dict[str, str] | None = None) -> Path:
        env_file = tmp_path / f"sandbox-{len(processes)}.toml"
        args = [sys.executable, "-m", "acgs_checks.sandbox", "--write", str(env_file)]
        args += [a for fault in faults for a in ("--fault", fault)]
        args += [a for service, name in (dialects or {}).items() for a in ("--dialect", f"{service}={name}")]
        if not backends:
            args.append("--no-backends")
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        deadline = time.monotonic() + 60
        while not env_file.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert env_file.exists(), process.stderr.read() if process.stderr else ""
        return env_file

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[functools.partial[str]]:
    """Serve a folder over real HTTP on loopback (for the generated HTML report)."""
    with contextlib.ExitStack() as running:

        def start(folder: Path) -> str:
            handler = functools.partial(_QuietFiles, directory=str(folder))
            return url_of(running.enter_context(serving(handler)))

        yield functools.partial(start)


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[PostgresServer, str, Path, int]]:
    """A sandbox PostgreSQL and a real streaming standby of it: (primary, standby DSN, its folder, its port)."""
    primary = PostgresServer(port=free_port())
    primary.start()
    assert primary.bindir is not None
    assert primary.workdir is not None
    folder = sandbox_processes.workdir_for("acgs-test-standby-")
    port = free_port()
    try:
        sandbox_processes.run(str(primary.bindir / "pg_basebackup"), "-h", str(primary.workdir),
                              "-p", str(primary.port), "-U", "postgres", "-D", str(folder / "data"), "-R",
                              "-X", "stream", "-c", "fast", "--no-sync")
        sandbox_processes.run(str(primary.bindir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"),
                              "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c hot_standby=on "
                              "-c dynamic_shared_memory_type=mmap", "-w", "start")
        standby_dsn = primary.dsn.replace(f":{primary.port}/", f":{port}/")
        yield primary, standby_dsn, folder, port
    finally:
        with contextlib.suppress(Exception):
            sandbox_processes.run(str(primary.bindir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)
        primary.stop()


@contextlib.contextmanager
def accounts(sql: tuple[str, ...], acl: tuple[str, ...]) -> Iterator[tuple[PostgresServer, RedisServer, str]]:
    """Real PostgreSQL and Redis started alone with the accounts a test needs: ``sql`` run as the superuser, ``acl``
    an ACL SETUSER rule list; ``{password}`` in either is one fresh password, handed over with the servers."""
    pg, cache = PostgresServer(port=free_port()), RedisServer(port=free_port())
    pg.start()
    cache.start()
    password = secrets.token_urlsafe(12)
    try:
        for statement in sql:
            pg.psql(statement.format(password=password))
        admin = redis.Redis.from_url(cache.admin_url)
        admin.execute_command("ACL", "SETUSER", *(rule.format(password=password) for rule in acl))
        admin.close()
        yield pg, cache, password
    finally:
        cache.stop()
        pg.stop()


@pytest.fixture(scope="module")
def narrow() -> Iterator[tuple[PostgresServer, RedisServer, str]]:
    """Real PostgreSQL and Redis with the narrowest accounts: a role with pg_monitor only (no pg_hba_file_rules), a
    database without pg_stat_statements, a Redis user with +ping +info only (no ACL LOG); and their password."""
    with accounts(("CREATE ROLE narrow LOGIN PASSWORD '{password}' IN ROLE pg_monitor",
                   "CREATE DATABASE plain"),  # no pg_stat_statements in it
                  ("narrow", "on", ">{password}", "resetkeys", "-@all", "+ping", "+info")) as servers:
        yield servers
