"""The sandbox on its own: a real stack to poke at with curl, psql and redis-cli."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis

from acgs_checks import environment
from conftest import ROOT, RunSuite


@pytest.fixture
def standalone(standalone_sandbox: Callable[..., Path]) -> Path:
    return standalone_sandbox()


def test_standalone_serves_a_real_stack(standalone: Path) -> None:
    env = environment.load(str(standalone), rootdir=ROOT)
    assert [s.name for s in env.services] == [
        "auth", "constitutional-ai", "policy-governance", "governance-synthesis"]
    with urllib.request.urlopen(env.service("auth").health_url, timeout=5) as response:
        assert json.loads(response.read())["status"] == "pass"
    with urllib.request.urlopen(env.service("auth").url + "/metrics", timeout=5) as response:
        metrics = response.read().decode()
    # ACGS-2's auth dialect: prometheus_client with a prefix, and a latency histogram with no labels.
    assert 'auth_service_requests_total{method="GET",endpoint="/health",status="200"} 1.0' in metrics
    assert 'auth_service_request_duration_seconds_bucket{le="+Inf"}' in metrics

    # The environment's accounts are the least-privilege monitoring ones.
    with psycopg.connect(env.databases[0].dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT current_database(), current_user, current_setting('default_transaction_read_only'),"
                           " pg_has_role('pg_monitor', 'member'), rolsuper FROM pg_roles WHERE rolname = current_user"
                           ).fetchone()
        assert row == ("acgs_production", "acgs_monitor", "on", True, False)
    client = redis.Redis.from_url(env.caches[0].url, socket_timeout=5)
    assert client.ping() is True
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("acgs:policy:1")
    assert env.poolers[0].dsn.endswith("/pgbouncer")


def test_one_probe_per_service_per_run_even_under_xdist(standalone: Path, run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "-n", "2", "--env", str(standalone))
    assert run.returncode == 0, run.output
    env = environment.load(str(standalone), rootdir=ROOT)
    for svc in env.services:
        with urllib.request.urlopen(svc.url + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        counter = svc.metrics.counter  # each service's own dialect (the sandbox's file names it)
        health_lines = [line.rsplit(" ", 1)[1] for line in metrics.splitlines()
                        if line.startswith(f"{counter}{{") and 'endpoint="/health"' in line]
        assert health_lines == ["1.0"], metrics


def test_unknown_fault_is_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "acgs_checks.sandbox", "--fault", "auth:melt"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 4
    assert done.stderr.strip().count("\n") == 0
    assert "unknown fault 'melt'" in done.stderr
