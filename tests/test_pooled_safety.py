"""Behind a transaction pooler the suite leaves no trace on the application's server connection.

A real PgBouncer in ``pool_mode = transaction`` with ``pool_size = 1`` sits in front of a
real PostgreSQL. The suite runs through it with the application's own role (what
``dsn = "${DATABASE_URL}"`` gives), then the application connects through the same pool,
gets the very same server connection, and must find it exactly as PostgreSQL's defaults
left it, and able to write.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from acgs_checks.environment import Database
from acgs_checks.probes import aio, postgres
from acgs_checks.sandbox.servers import PgBouncerServer, PostgresServer, free_port, pgbouncer_binary
from conftest import RunSuite

pytestmark = pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed (.ci/run installs it)")

APP = "acgs_app"


@dataclass
class Pooled:
    postgres: PostgresServer
    bouncer: PgBouncerServer
    app_dsn: str


@pytest.fixture
def pooled() -> Iterator[Pooled]:
    server = PostgresServer(port=free_port())
    server.start()
    password = secrets.token_urlsafe(16)
    bouncer = PgBouncerServer(port=free_port(), postgres=server, pool_size=1, server_user=None,
                              users={APP: password}, settings="server_lifetime = 86400\nserver_idle_timeout = 0\n")
    try:
        # An application's own role: it owns its table and writes to it; no monitoring grants at all.
        server.psql(f"CREATE ROLE {APP} LOGIN PASSWORD '{password}'")
        server.psql(f"CREATE TABLE acgs.app_writes (id serial PRIMARY KEY, note text); "
                    f"ALTER TABLE acgs.app_writes OWNER TO {APP}; GRANT USAGE ON SCHEMA acgs TO {APP}")
        bouncer.start()
        yield Pooled(server, bouncer, f"postgresql://{APP}:{password}@127.0.0.1:{bouncer.port}/{server.database}")
    finally:
        bouncer.stop()
        server.stop()


def _as_application(dsn: str) -> dict[str, str]:
    """What the application finds on its pooled connection, and whether it can write."""
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as app:
        seen = {name: str(app.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in ("default_transaction_read_only", "transaction_read_only", "statement_timeout",
                             "lock_timeout", "idle_in_transaction_session_timeout", "application_name")}
        seen["pid"] = str(app.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        seen["prepared"] = str(app.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0])  # type: ignore[index]
        app.execute("INSERT INTO acgs.app_writes (note) VALUES ('after the checks')")
    return seen


def test_the_application_finds_its_pooled_connection_untouched(
        run_suite: RunSuite, write_env: Callable[[str], Path], pooled: Pooled) -> None:
    before = _as_application(pooled.app_dsn)
    env_file = write_env('name = "pooled"\n[[databases]]\nname = "primary"\ndsn = "${DATABASE_URL}"\n')
    run = run_suite("-m", "daily and database", "--env", str(env_file), environ={"DATABASE_URL": pooled.app_dsn})
    assert run.statuses()["test_database_connectivity[primary]"] == "passed", run.output
    assert run.statuses()["test_no_long_running_queries[primary]"] != "skipped", run.output

    after = _as_application(pooled.app_dsn)
    assert after["pid"] == before["pid"], "pool_size = 1: the application must get the server connection back"
    assert after == before
    assert after["default_transaction_read_only"] == "off"
    assert after["statement_timeout"] == "0"
    assert after["lock_timeout"] == "0"
    assert after["prepared"] == "0"
    with psycopg.connect(pooled.postgres.superuser_conninfo) as admin:
        rows = admin.execute("SELECT count(*) FROM acgs.app_writes").fetchone()
    assert rows is not None
    assert rows[0] == 2


def test_every_query_carries_its_own_bounds_through_the_pooler(pooled: Pooled) -> None:
    """The bounds are set inside each transaction, so they hold on whichever server connection it lands."""
    target = Database(name="primary", title="primary", dsn=pooled.app_dsn, timeout_seconds=0.5)

    async def probe() -> tuple[list[dict[str, object]], dict[str, str]]:
        conn = await postgres.read_only_session(target)
        errors: dict[str, str] = {}
        try:
            settings = await postgres.run_query(
                conn, errors, "settings", "SELECT current_setting('statement_timeout') AS statement, "
                "current_setting('lock_timeout') AS lock, current_setting('transaction_read_only') AS read_only",
                timeout=0.5)
            await postgres.run_query(conn, errors, "sleep", "SELECT pg_sleep(5)", timeout=0.5)
            await postgres.run_query(conn, errors, "write", "INSERT INTO acgs.app_writes (note) VALUES ('x')",
                                  timeout=0.5)
            return settings, errors
        finally:
            await conn.close()

    settings, errors = aio.run(probe)
    assert settings == [{"statement": "500ms", "lock": "500ms", "read_only": "on"}]
    assert "canceling statement due to statement timeout" in errors["sleep"]
    assert "read-only transaction" in errors["write"]
