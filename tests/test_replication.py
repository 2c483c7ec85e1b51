"""Replication lag against a real streaming standby of a sandbox PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from acgs_checks.sandbox.servers import PostgresServer
from conftest import RunSuite


def test_streaming_replica_passes_then_paused_replay_fails(
        run_suite: RunSuite, write_env: Callable[[str], Path],
        primary_and_standby: tuple[PostgresServer, str, Path, int]) -> None:
    primary, standby_dsn, folder, port = primary_and_standby
    env_file = write_env(
        'name = "replicated"\n'
        f'[[databases]]\nname = "primary"\ndsn = "{primary.dsn}"\n'
        f'[[databases]]\nname = "replica"\ndsn = "{standby_dsn}"\n'
        "[thresholds]\nreplication_lag_max_seconds = 1\n")
    healthy = run_suite("-m", "daily", "-k", "replication", "--env", str(env_file))
    assert healthy.returncode == 0, healthy.output
    assert set(healthy.statuses().values()) == {"passed"}
    assert len(healthy.statuses()) == 2

    with psycopg.connect(f"host={folder} port={port} user=postgres dbname=postgres", autocommit=True) as standby:
        standby.execute("SELECT pg_wal_replay_pause()")
    with psycopg.connect(primary.superuser_conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE churn AS SELECT generate_series(1, 1000) AS id")
        time.sleep(2.5)
        conn.execute("INSERT INTO churn SELECT generate_series(1, 1000)")
        time.sleep(0.5)
    lagging = run_suite("-m", "daily", "-k", "replication", "--env", str(env_file))
    assert lagging.returncode == 1, lagging.output
    assert lagging.failed() == {"test_replication_lag[primary]", "test_replication_lag[replica]"}
    results = lagging.results()
    on_replica = results["test_replication_lag[replica]"]["statusDetails"]["message"]
    assert "replica: replica's replay is paused with" in on_replica
    assert "(expected replay running)" in on_replica
    on_primary = results["test_replication_lag[primary]"]["statusDetails"]["message"]
    assert "s behind (" in on_primary
    assert "(expected every replica streaming, replay lag ≤ 1 s)" in on_primary
