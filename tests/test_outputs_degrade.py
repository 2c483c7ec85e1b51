"""Outputs degrade, checks never stop; runs that share a reports folder never mix; a stopped run says so.

Real filesystems: a read-only folder and a full one (a small tmpfs, mounted when the self-tests run as
root, as CI does), and real concurrent runs of the suite sharing one reports folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import ROOT, RunSuite
from hostile import Hostile, raw_json, serving

ROOT_USER = os.geteuid() == 0
HEALTHY = b'{"status": "ok"}'


def _slow(seconds: float) -> Callable[..., None]:
    def handle(conn: object, server: Hostile) -> None:
        time.sleep(seconds)
        raw_json(HEALTHY)(conn, server)  # type: ignore[arg-type]

    return handle


def _env(write_env: Callable[[str], Path], url: str, timeout: float = 5.0) -> Path:
    return write_env(f'name = "outputs"\n[defaults]\ntimeout_seconds = {timeout:g}\n'
                     f'[[services]]\nname = "auth"\nurl = "{url}"\n')


def _outputs(folder: Path) -> list[str]:
    return [f"--alluredir={folder / 'allure-results'}", f"--junitxml={folder / 'junit.xml'}",
            f"--summary-json={folder / 'summary.json'}", f"--metrics-textfile={folder / 'acgs.prom'}"]


@contextlib.contextmanager
def _mounted(folder: Path, *options: str) -> Iterator[Path]:
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "acgs-test-reports", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[Path]:
    if ROOT_USER:  # root ignores permission bits: a read-only filesystem
        with _mounted(folder, "ro", "size=1m") as mounted:
            yield mounted
        return
    folder.mkdir()
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def test_a_read_only_reports_folder_costs_the_outputs_only(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                           tmp_path: Path) -> None:
    with serving(raw_json(HEALTHY)) as service, _read_only(tmp_path / "reports") as reports:
        run = run_suite("-m", "daily and health", "--env", str(_env(write_env, service.url)), *_outputs(reports),
                        alluredir=False)
    assert "Traceback" not in run.output, run.output
    assert "INTERNALERROR" not in run.output, run.output
    assert run.returncode == 6, run.output  # every check passed; the outputs were not written
    assert "P0: 0 failed, 1 passed" in run.stdout, run.stdout  # the verdicts still reached the terminal
    for output in ("summary", "allure results", "junit", "metrics textfile"):
        assert f"could not write: {output}: {reports}" in run.stdout, (output, run.stdout)
    assert "[errno 30]" in run.stdout or "[errno 13]" in run.stdout


def test_under_xdist_the_workers_lost_files_count_too(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                      tmp_path: Path) -> None:
    """The workers write the Allure files: what they could not write reaches the controller's line and exit."""
    with serving(raw_json(HEALTHY)) as service, _read_only(tmp_path / "reports") as reports:
        run = run_suite("-m", "daily and health", "--env", str(_env(write_env, service.url)), "-n", "2",
                        f"--alluredir={reports / 'allure-results'}", f"--junitxml={tmp_path / 'junit.xml'}",
                        f"--summary-json={tmp_path / 'summary.json'}", alluredir=False)
    assert "Traceback" not in run.output, run.output
    assert run.returncode == 6, run.output
    assert f"could not write: allure results: {reports / 'allure-results'}" in run.stdout, run.stdout
    assert "could not write: junit" not in run.stdout  # what could be written was


def test_a_failure_keeps_exit_1_when_outputs_are_lost_too(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                          tmp_path: Path) -> None:
    with serving(raw_json(b'{"status": "down"}')) as service, _read_only(tmp_path / "reports") as reports:
        run = run_suite("-m", "daily and health", "--env", str(_env(write_env, service.url)), *_outputs(reports),
                        alluredir=False)
    assert run.returncode == 1, run.output
    assert "FAILED P0 checks/test_service_health.py::test_service_health[auth]" in run.stdout


@pytest.mark.skipif(not ROOT_USER, reason="a full filesystem is a small tmpfs, which only root can mount")
def test_a_full_reports_folder_leaves_nothing_half_written(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                           tmp_path: Path) -> None:
    with serving(raw_json(HEALTHY)) as service, _mounted(tmp_path / "reports", "size=64k") as reports:
        (reports / "summary.json").write_text('{"status": "finished", "checks": ["an earlier run"]}')
        with contextlib.suppress(OSError), (reports / "filler").open("wb") as filler:
            filler.write(b"\0" * (128 * 1024))  # until the filesystem is full
        run = run_suite("-m", "daily and health", "--env", str(_env(write_env, service.url)), *_outputs(reports),
                        alluredir=False)
        left = sorted(p.name for p in reports.rglob("*") if p.is_file())
        summary = (reports / "summary.json").read_text()
    assert "Traceback" not in run.output, run.output
    assert "INTERNALERROR" not in run.output, run.output
    assert run.returncode == 6, run.output
    assert "No space left on device" in run.stdout, run.stdout
    assert not [name for name in left if name.endswith(".tmp")], left  # no half-written file stays
    json.loads(summary)  # whole: the earlier one, or this run's, never a part


def _wait_for_lock(folder: Path, pid: int, seconds: float = 60) -> None:
    lock = folder / ".acgs-run.lock"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if lock.read_text().startswith(f"{pid} "):
                return
        time.sleep(0.05)
    raise AssertionError(f"run {pid} never took {lock}")


def _start(args: list[str], cwd: Path = ROOT) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ACGS_ENV", "PYTEST_ADDOPTS")}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                             *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_sharing_a_reports_folder_take_turns(write_env: Callable[[str], Path], tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    # The first run holds the folder for 8 s: long enough for the second to start on a busy machine.
    with serving(_slow(8.0)) as service:
        env_file = _env(write_env, service.url, timeout=15)
        # --clean-alluredir, as a scheduled job that shares a folder uses it: each run's results alone.
        shared = [*_outputs(reports), "--clean-alluredir"]
        first = _start(["-m", "daily and health", "--env", str(env_file), *shared])
        try:
            _wait_for_lock(reports, first.pid)
            second = _start(["-m", "daily and health", "--env", str(env_file), *shared])
            out2, err2 = second.communicate(timeout=120)
            out1, err1 = first.communicate(timeout=120)
        finally:
            for process in (first, locals().get("second")):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    assert f"acgs-checks: waiting for the run pid {first.pid} " in err2, err2
    assert f"the run pid {first.pid} " in err2
    assert "finished; this run goes on" in err2
    # The folder holds the second run only: its summary, and one run's Allure results, not two mixed.
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["pid"] == second.pid
    results = [json.loads(p.read_text()) for p in (reports / "allure-results").glob("*-result.json")]
    names = [r["name"] for r in results]
    assert "test_service_health[auth]" in names
    assert len(names) == len(set(names)) == len(summary["checks"])


def test_a_stopped_run_says_it_was_interrupted(write_env: Callable[[str], Path], tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "summary.json").write_text(json.dumps({"status": "finished", "exit_status": 0, "checks": []}))
    with serving(_slow(30.0)) as service:
        env_file = _env(write_env, service.url, timeout=40)
        run = _start(["-m", "daily and health", "--env", str(env_file), *_outputs(reports)])
        try:
            _wait_for_lock(reports, run.pid)
            # The earlier run's verdict is gone as soon as this run holds the folder.
            deadline = time.monotonic() + 30
            while json.loads((reports / "summary.json").read_text())["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(1.0)
            run.send_signal(signal.SIGTERM)
            out, err = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert run.returncode == 2, out + err
    assert "Traceback" not in out + err
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["exit_status"] == 2
    assert 'name="acgs_run_status" value="interrupted"' in (reports / "junit.xml").read_text()
    assert "run.status=interrupted" in (reports / "allure-results" / "environment.properties").read_text()
