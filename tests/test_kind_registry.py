"""A new probe kind is the documented recipe (docs/architecture.md, "Adding a probe kind"), in a copy of the project.

The copy gets a ``tcp`` kind (a TCP connect to each ``[[ports]]`` entry): a probe module in
``src/acgs_checks/probes/``, a checks module in ``checks/``, its runbook line in ``runbook.toml``, and the
schema regenerated with ``acgs-checks schema``. Nothing else is edited: the environment file takes the new
section (and refuses a typo in it), the cases are parametrized per target, the probe runs in the one
concurrent pass, its dependents are skipped as blocked by the case marked ``reachability``, and its
evidence lands in Allure. Run against a real loopback port, one open and one refused.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, RunSuite, copy_suite

PROBE_MODULE = '''
import asyncio
import time
from dataclasses import dataclass

from acgs_checks import kinds
from acgs_checks.environment import Target
from acgs_checks.records import JsonRecord


class Port(Target):
    """A TCP port that must accept connections."""

    host: str
    port: int


@dataclass(frozen=True)
class TcpResult(JsonRecord):
    target: str
    address: str
    answered: bool
    error: str = ""
    denied: str = ""
    connect_seconds: float = 0.0


async def probe(port: Port, job: kinds.Job) -> TcpResult:
    address = f"{port.host}:{port.port}"
    start = time.perf_counter()
    try:
        async with asyncio.timeout(port.timeout_seconds):
            _, writer = await asyncio.open_connection(port.host, port.port)
    except (OSError, TimeoutError) as exc:
        return TcpResult(port.name, address, False, f"{type(exc).__name__}: {exc}")
    writer.close()
    return TcpResult(port.name, address, True, connect_seconds=time.perf_counter() - start)


TCP = kinds.register(kinds.ProbeKind(
    name="tcp", section="ports", record=TcpResult, probe=probe, param="port", fixture="tcp_probe",
    targets=lambda env: env.section("ports"), entry=Port, gate=kinds.Gate(fixture="open_port"),
    doc="a TCP connect to each [[ports]] entry",
))
'''

CHECKS_MODULE = '''
import pytest

from acgs_checks.verdict import breached, require_answer

pytestmark = [pytest.mark.daily, pytest.mark.infra]


@pytest.mark.p0
@pytest.mark.runbook("daily.ports")
@pytest.mark.reachability
def test_port_open(tcp_probe):
    require_answer(tcp_probe, f"connect {tcp_probe.address}")


@pytest.mark.p2
@pytest.mark.runbook("daily.ports")
def test_port_connects_quickly(open_port):
    if open_port.connect_seconds > 1.0:
        breached(f"{open_port.target}: connect took {open_port.connect_seconds:.3f} s", "(expected < 1 s)")
'''

REQUIREMENT = '''
[[requirement]]
id = "daily.ports"
epic = "Daily Operations"
feature = "Morning Health Check (09:00 UTC)"
story = "Ports accept connections"
automated = true
remediation = "Start the service that owns the port."
'''


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def test_a_kind_added_by_the_readme_recipe_runs_like_the_built_in_ones(run_suite: RunSuite, tmp_path: Path,
                                                                       listening: int) -> None:
    suite_copy = copy_suite(tmp_path / "project")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", suite_copy / "src", ignore=ignore)
    package = suite_copy / "src" / "acgs_checks"
    recipe = {"PYTHONPATH": str(suite_copy / "src")}  # the copy's package, not the installed one

    # 1. the probe module, 2. the checks module, 3. the runbook line; 4. the schema, regenerated (a new section).
    (package / "probes" / "tcp.py").write_text(PROBE_MODULE)
    (suite_copy / "checks" / "test_ports.py").write_text(CHECKS_MODULE)
    runbook_map = package / "policy" / "runbook.toml"
    runbook_map.write_text(runbook_map.read_text() + REQUIREMENT)
    schema = subprocess.run([sys.executable, "-m", "acgs_checks.cli", "schema"], capture_output=True, text=True,
                            check=True, timeout=60, env={**os.environ, **recipe}, cwd=suite_copy)
    assert '"ports"' in schema.stdout  # the new section is in the published schema
    (suite_copy / "fixtures" / "environments" / "env.schema.json").write_text(schema.stdout)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = unused.getsockname()[1]  # bound, never listening: refused
        env = suite_copy / "ports.toml"
        env.write_text(f'name = "ports"\n[defaults]\ntimeout_seconds = 1\n'
                       f'[[ports]]\nname = "open"\nhost = "127.0.0.1"\nport = {listening}\n'
                       f'[[ports]]\nname = "shut"\nhost = "127.0.0.1"\nport = {closed}\n')
        run = run_suite("-m", "daily and infra", f"--env={env}", cwd=suite_copy, environ=recipe)
    assert run.returncode == 1, run.output
    statuses = run.statuses()
    assert statuses == {"test_port_open[open]": "passed", "test_port_open[shut]": "failed",
                        "test_port_connects_quickly[open]": "passed", "test_port_connects_quickly[shut]": "skipped"}
    shut = run.results()["test_port_connects_quickly[shut]"]
    assert "blocked: shut is unreachable; see test_port_open[shut]" in shut["statusDetails"]["message"]
    evidence = [a for a in run.results()["test_port_open[open]"]["attachments"] if a["name"] == "evidence"]
    assert len(evidence) == 1
    assert json.loads((run.allure_dir / evidence[0]["source"]).read_text())["address"] == f"127.0.0.1:{listening}"

    # The new section is part of the schema: a misspelt key in it is refused like any other, with exit 4.
    env.write_text('name = "ports"\n[[ports]]\nname = "open"\nhost = "127.0.0.1"\nprot = 1\n')
    bad = run_suite("-m", "daily and infra", f"--env={env}", cwd=suite_copy, environ=recipe)
    assert bad.returncode == 4, bad.output
    assert "ports[open].prot: unknown key" in bad.stderr
    assert "ports[open].port: missing required key" in bad.stderr
