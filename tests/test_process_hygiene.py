"""Nothing outlives a run: SIGTERM and SIGHUP stop the sandbox, and a later run reaps what SIGKILL left.

Each test gives its runs a scratch folder of their own (ACGS_SANDBOX_TMPDIR), so it can see
exactly what they leave, even while other self-tests run sandboxes of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from acgs_checks import scratch as processes
from acgs_checks.sandbox import servers
from conftest import ROOT


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A scratch folder the postgres account can reach (tmp_path's parents are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="acgs-hygiene-", dir=processes.scratch_folder()))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        servers.reap_leftovers(str(folder))
        shutil.rmtree(folder, ignore_errors=True)


def _left(scratch: Path) -> tuple[list[str], set[int]]:
    """Folders left in the scratch folder, and processes still naming it or serving from it."""
    folders = sorted(p.name for p in scratch.iterdir())
    return folders, servers.processes_of(scratch)


def _wait_for_backends(scratch: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        names = [p.name for p in scratch.iterdir()]
        if any(n.startswith("acgs-sandbox-pg-") and "template" not in n for n in names) and any(
                n.startswith("acgs-sandbox-redis-") for n in names):
            time.sleep(0.5)  # the servers are starting or running now
            return
        time.sleep(0.05)
    raise AssertionError("the sandbox backends did not start")


def _environ(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ACGS_ENV", "PYTEST_ADDOPTS")}
    env["ACGS_SANDBOX_TMPDIR"] = str(scratch)
    return env


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_during_a_run_stops_every_sandbox_server(tmp_path: Path, scratch: Path,
                                                          signum: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "daily", f"--alluredir={tmp_path / 'a'}",
         f"--junitxml={tmp_path / 'j.xml'}", f"--summary-json={tmp_path / 's.json'}",
         "--sandbox-fault", "db:long-query"],
        cwd=ROOT, env=_environ(scratch), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_backends(scratch, process)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2, output  # interrupted, as with Ctrl-C
    assert "Traceback" not in output
    folders, processes = _left(scratch)
    assert folders == [], output
    assert processes == set(), output


def test_timeout_term_after_three_seconds_leaves_nothing(tmp_path: Path, scratch: Path) -> None:
    """The command from the issue, as written: timeout -s TERM 3 pytest -m daily."""
    done = subprocess.run(
        ["timeout", "-s", "TERM", "3", sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "daily",
         f"--alluredir={tmp_path / 'a'}", f"--junitxml={tmp_path / 'j.xml'}", f"--summary-json={tmp_path / 's.json'}"],
        cwd=ROOT, env=_environ(scratch), capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode in (0, 2, 124), done.stdout + done.stderr
    deadline = time.monotonic() + 10
    while _left(scratch) != ([], set()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _left(scratch) == ([], set()), done.stdout + done.stderr


def test_a_new_run_reaps_what_a_killed_run_left(tmp_path: Path, scratch: Path) -> None:
    env_file = tmp_path / "sandbox.toml"
    process = subprocess.Popen([sys.executable, "-m", "acgs_checks.sandbox", "--write", str(env_file)],
                               env=_environ(scratch), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not env_file.exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    # The environment file holds passwords: private from the start.
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    process.kill()  # SIGKILL: no cleanup at all
    process.wait(timeout=10)
    folders, processes = _left(scratch)
    assert folders, "a killed sandbox leaves its folders"
    assert processes, "and its servers"

    removed = servers.reap_leftovers(str(scratch))
    assert sorted(p.name for p in removed) == folders
    deadline = time.monotonic() + 10
    while _left(scratch) != ([], set()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _left(scratch) == ([], set())


def test_reaping_leaves_a_live_run_alone(scratch: Path) -> None:
    server = servers.RedisServer(port=servers.free_port())
    os.environ["ACGS_SANDBOX_TMPDIR"] = str(scratch)
    try:
        server.start()
        assert servers.reap_leftovers(str(scratch)) == []  # its owner (this process) is alive
        assert _left(scratch)[1], "the server still runs"
    finally:
        del os.environ["ACGS_SANDBOX_TMPDIR"]
        server.stop()
    assert _left(scratch) == ([], set())
