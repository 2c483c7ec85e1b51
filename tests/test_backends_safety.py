"""Safe against production: read-only sessions, one connection per target, least privilege, no secrets.

These use the machine's own PostgreSQL and Redis, passed in by .ci/run as
ACGS_TEST_PG_DSN (a superuser DSN) and ACGS_TEST_REDIS_URL; without them they skip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

from acgs_checks.environment import Database
from acgs_checks.probes import aio, postgres
from conftest import RunSuite
from servers import CountingForwarder

PG_DSN = os.environ.get("ACGS_TEST_PG_DSN", "")
REDIS_URL = os.environ.get("ACGS_TEST_REDIS_URL", "")
needs_servers = pytest.mark.skipif(
    not (PG_DSN and REDIS_URL),
    reason="set ACGS_TEST_PG_DSN and ACGS_TEST_REDIS_URL to the machine's PostgreSQL and Redis (.ci/run does)")
pytestmark = [needs_servers, pytest.mark.needs_system_servers]


def _with(url: str, *, user: str, password: str, path: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=path if path is not None else parts.path))


@dataclass
class Monitor:
    """A throw-away database, a pg_monitor role and a Redis ACL user on the machine's servers."""

    database: str
    pg_dsn: str
    redis_url: str
    pg_password: str
    redis_password: str
    admin_dsn: str


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    suffix = uuid.uuid4().hex[:8]
    database, role, acl_user = f"acgs_checks_{suffix}", f"acgs_monitor_{suffix}", f"acgs_monitor_{suffix}"
    pg_password, redis_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{pg_password}' IN ROLE pg_monitor")
        admin.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
    admin_dsn = urlunsplit(urlsplit(PG_DSN)._replace(path=f"/{database}"))
    cache = redis.Redis.from_url(REDIS_URL)
    cache.execute_command("ACL", "SETUSER", acl_user, "on", f">{redis_password}", "resetkeys", "-@all",
                          "+ping", "+info")
    try:
        yield Monitor(database, _with(PG_DSN, user=role, password=pg_password, path=f"/{database}"),
                      _with(REDIS_URL, user=acl_user, password=redis_password), pg_password, redis_password, admin_dsn)
    finally:
        cache.execute_command("ACL", "DELUSER", acl_user)
        cache.close()
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def env_text(m: Monitor, thresholds: str = "") -> str:
    return (f'name = "machine"\n[defaults]\ncache_window_seconds = 0.5\n'
            f'[[databases]]\nname = "primary"\ndsn = "{m.pg_dsn}"\n'
            f'[[caches]]\nname = "main"\nurl = "{m.redis_url}"\n' + thresholds)


def test_least_privilege_accounts_pass_the_daily_suite(
        run_suite: RunSuite, monitor: Monitor, write_env: Callable[[str], Path]) -> None:
    # Some lookups before the run, none during it: the hit rate falls back to the cumulative figure.
    app = redis.Redis.from_url(REDIS_URL)
    app.set("acgs-checks-test:key", "v")
    for _ in range(50):
        app.get("acgs-checks-test:key")
    app.delete("acgs-checks-test:key")
    app.close()
    run = run_suite("-m", "(daily or wednesday) and (database or cache)", "--env", str(write_env(env_text(monitor))))
    assert run.returncode == 0, run.output
    statuses = run.statuses()
    assert statuses.pop("test_replication_lag[primary]") == "skipped"
    # Buffer cache is judged only with enough reads; a fresh database may have too few.
    statuses.pop("test_buffer_cache_hit_ratio[primary]")
    assert set(statuses.values()) == {"passed"}, run.output
    assert len(statuses) == 13
    assert "pooler" not in " ".join(run.statuses())  # no poolers configured: those checks do not apply


def test_sessions_are_read_only_with_timeouts() -> None:
    target = Database(name="machine", title="machine", dsn=PG_DSN, timeout_seconds=1.5)

    async def attempt() -> tuple[list[dict[str, object]], dict[str, str], list[dict[str, object]]]:
        conn = await postgres.read_only_session(target)
        errors: dict[str, str] = {}
        try:
            inside = await postgres.run_query(
                conn, errors, "settings", "SELECT current_setting('statement_timeout') AS s, "
                "current_setting('lock_timeout') AS l, current_setting('application_name') AS a", timeout=1.5)
            await postgres.run_query(conn, errors, "write", "CREATE TEMP TABLE acgs_checks_must_not_exist (x int)",
                                  timeout=1.5)
            await conn.set_autocommit(True)
            # Outside the suite's own transactions the session is exactly as the server made it.
            cursor = await conn.execute("SELECT current_setting('statement_timeout') AS s, "
                                        "current_setting('default_transaction_read_only') AS ro")
            outside = list(await cursor.fetchall())
            return inside, errors, outside
        finally:
            await conn.close()

    inside, errors, outside = aio.run(attempt)
    assert inside == [{"s": "1500ms", "l": "1500ms", "a": "acgs-checks"}]
    # Even with a superuser DSN, the probe's transactions refuse to write.
    assert "read-only transaction" in errors["write"]
    assert outside == [{"s": "0", "ro": "off"}]


def test_one_connection_per_target_per_run(run_suite: RunSuite, monitor: Monitor,
                                           write_env: Callable[[str], Path]) -> None:
    def sessions() -> int:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            row = admin.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                                [monitor.database]).fetchone()
            assert row is not None
            return int(row[0])

    # The database is this test's own, so its session count is this run's; the machine's Redis is
    # shared (by every self-test, and by a second suite run at the same time): count at a forwarder.
    parts = urlsplit(monitor.redis_url)
    forwarder = CountingForwarder(parts.hostname or "127.0.0.1", parts.port or 6379)
    counted = dataclasses.replace(monitor, redis_url=urlunsplit(
        parts._replace(netloc=f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{forwarder.port}")))
    before_pg = sessions()
    try:
        run = run_suite("-m", "(daily or wednesday) and (database or cache)", "-n", "2",
                        "--env", str(write_env(env_text(counted))))
    finally:
        forwarder.close()
    assert run.returncode == 0, run.output
    assert sessions() - before_pg == 1
    assert forwarder.accepted == 1


def test_no_secret_in_any_output(run_suite: RunSuite, monitor: Monitor, write_env: Callable[[str], Path]) -> None:
    # Impossible thresholds make every judged case fail, so messages and evidence carry the DSNs' places.
    impossible = ("[thresholds]\npool_usage_max_percent = 0.0001\ncache_memory_max_percent = 0.0001\n"
                  "xid_age_max_percent = 0.0000001\n")
    unreachable = f'[[databases]]\nname = "gone"\ndsn = "postgresql://x:{monitor.pg_password}@127.0.0.1:9/none"\n'
    text = env_text(monitor, "") + unreachable + impossible
    run = run_suite("-v", "-m", "daily and (database or cache)", "--env", str(write_env(text)))
    assert run.returncode == 1, run.output
    assert {"test_connection_usage[primary]", "test_cache_memory[main]", "test_transaction_id_age[primary]",
            "test_database_connectivity[gone]"} <= run.failed()
    everything = run.output + run.all_files_text()
    assert monitor.pg_password not in everything
    assert monitor.redis_password not in everything
    assert "***@127.0.0.1" in everything


def test_maintenance_flags_a_neglected_table_but_never_catalogs(
        run_suite: RunSuite, monitor: Monitor, write_env: Callable[[str], Path]) -> None:
    env_file = write_env(env_text(monitor))
    fresh = run_suite("-m", "wednesday and database", "--env", str(env_file))
    assert fresh.returncode == 0, fresh.output  # a fresh database: catalogs such as pg_authid are not flagged
    with psycopg.connect(monitor.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE neglected (id int) WITH (autovacuum_enabled = off)")
        admin.execute("INSERT INTO neglected SELECT generate_series(1, 5000)")
        admin.execute("DELETE FROM neglected WHERE id <= 2000")
    run = run_suite("-m", "wednesday and database", "--env", str(env_file))
    assert run.returncode == 1, run.output
    message = run.results()["test_tables_vacuumed_and_analyzed[primary]"]["statusDetails"]["message"]
    assert "public.neglected: 7000 rows changed, last analyze never" in message
    assert "public.neglected: 2000 dead rows, last vacuum never" in message
    assert "pg_catalog" not in message


def test_thresholds_can_fail_every_judged_metric(run_suite: RunSuite, monitor: Monitor,
                                                 write_env: Callable[[str], Path]) -> None:
    strict = ("[thresholds]\nbuffer_cache_hit_min_percent = 100\ncache_fragmentation_max_ratio = 0.01\n"
              "cache_fragmentation_min_excess_mib = 0.0001\nxid_age_max_percent = 0.0000001\n")
    with psycopg.connect(monitor.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE warm AS SELECT generate_series(1, 20000) AS id")
        for _ in range(5):
            admin.execute("SELECT count(*) FROM warm").fetchone()
    run = run_suite("-m", "daily and (database or cache)", "--env", str(write_env(env_text(monitor, strict))))
    results = run.results()
    assert {"test_transaction_id_age[primary]", "test_cache_fragmentation[main]"} <= run.failed(), run.output
    assert "% of the 2^31 wraparound limit" in results["test_transaction_id_age[primary]"]["statusDetails"]["message"]
    assert "mem_fragmentation_ratio" in results["test_cache_fragmentation[main]"]["statusDetails"]["message"]
    assert "buffer cache hit ratio" in results["test_buffer_cache_hit_ratio[primary]"]["statusDetails"]["message"]


@pytest.mark.parametrize(("setting", "shown"), [("masked", False), ("raw", True)])
def test_sql_literals_of_other_sessions_are_masked_unless_asked(setting: str, shown: bool) -> None:
    """A real long-running statement carrying a secret: its text reaches the snapshot with '…' instead."""
    secret = f"acgs-literal-{uuid.uuid4().hex[:10]}"
    running = psycopg.connect(PG_DSN, autocommit=True)
    pid = running.info.backend_pid
    worker = threading.Thread(target=_run_quietly, args=(running, f"SELECT pg_sleep(30), '{secret}', 4242"),
                              daemon=True)
    worker.start()
    try:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active'", [pid]).fetchone():
                time.sleep(0.05)
        target = Database(name="machine", title="machine", dsn=PG_DSN, timeout_seconds=2)
        seen = aio.run(lambda: postgres.probe_database(target, sql_literals=setting))
        mine = [row for row in seen.activity if row.get("pid") == pid]
        assert len(mine) == 1, seen.activity
        assert (secret in json.dumps(seen.to_json())) is shown
        if not shown:
            assert mine[0]["query"] == "SELECT pg_sleep(…), '…', …"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", [pid])
        worker.join(timeout=10)
        running.close()


def _run_quietly(conn: psycopg.Connection[Any], sql: str) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.execute(sql)
