"""Helpers for the self-tests: run the suite as a user would, read what it wrote."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from servers import RealServers

ROOT = Path(__file__).resolve().parent.parent


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
            alluredir: bool = True, timeout: float = 180) -> Run:
        allure_dir = tmp_path / f"allure-{next(counter)}"
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "ACGS_ENV", "PYTEST_ADDOPTS")}
        env.update(environ or {})
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
        if alluredir:
            command.append(f"--alluredir={allure_dir}")
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        return Run(done.returncode, done.stdout, done.stderr, allure_dir)

    return run


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

    def start(*faults: str, backends: bool = True) -> Path:
        env_file = tmp_path / f"sandbox-{len(processes)}.toml"
        args = [sys.executable, "-m", "acgs_checks.sandbox", "--write", str(env_file)]
        args += [a for fault in faults for a in ("--fault", fault)]
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


@pytest.fixture
def serve() -> Iterator[functools.partial[str]]:
    """Serve a folder over real HTTP on loopback (for the generated HTML report)."""
    servers: list[ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None  # type: ignore[method-assign]
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield functools.partial(start)
    for server in servers:
        server.shutdown()
        server.server_close()
