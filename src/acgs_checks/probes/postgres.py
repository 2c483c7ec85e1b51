"""PostgreSQL probe: one read-only connection per database, every statistic in one pass.

Safety, because operators run this against production, often through a transaction pooler:

* the suite leaves no trace on any connection but its own. Nothing is set for the session:
  every query runs in its own ``BEGIN READ ONLY`` transaction that first bounds itself with
  ``SET LOCAL`` (``set_config(..., true)``) statement, lock and idle-in-transaction timeouts,
  which end with the transaction. Behind PgBouncer in transaction mode the next client of
  the same server connection finds it exactly as it was, and every one of the suite's
  queries carries its own time bounds, whichever server connection it lands on;
* no prepared statements (they would outlive the transaction on a pooled server connection);
* each host of the connection string gets its own connect timeout, and the pass a deadline;
* only catalog and statistics views are read: no DDL, no DML, no function with side effects.

A query the role may not run (or that the server version lacks) is recorded in
``errors``; the rest of the snapshot still stands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from acgs_checks import kinds
from acgs_checks.environment import Database, display_url
from acgs_checks.probes.slow_log import slow_log
from acgs_checks.records import JsonRecord
from acgs_checks.redaction import mask_sql_literals

if TYPE_CHECKING:  # the client library loads when a database or pooler is probed, not with the plugin
    import psycopg

APPLICATION_NAME = "acgs-checks"
ROW_LIMIT = 500

_ACTIVITY = f"""
SELECT pid, usename AS user, application_name, client_addr::text AS client, state,
       wait_event_type, wait_event, backend_type,
       extract(epoch FROM now() - query_start)::float8 AS query_seconds,
       extract(epoch FROM now() - state_change)::float8 AS state_seconds,
       extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds,
       left(query, 1000) AS query
FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
ORDER BY query_start NULLS LAST
LIMIT {ROW_LIMIT}
"""

_CONNECTIONS = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS backends,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved
"""

# waitstart arrived in PostgreSQL 14; older servers fall back to the statement start.
_LOCK_WAITS = f"""
SELECT w.pid, w.usename AS user, w.application_name,
       extract(epoch FROM now() - coalesce({{waitstart}}, w.query_start))::float8 AS wait_seconds,
       l.locktype, l.mode, l.relation::regclass::text AS relation, left(w.query, 300) AS query,
       pg_blocking_pids(w.pid) AS blocking_pids
FROM pg_stat_activity w
JOIN pg_locks l ON l.pid = w.pid AND NOT l.granted
WHERE w.pid <> pg_backend_pid()
ORDER BY wait_seconds DESC
LIMIT {ROW_LIMIT}
"""

_BLOCKERS = """
SELECT pid, usename AS user, application_name, state,
       extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds, left(query, 300) AS query
FROM pg_stat_activity WHERE pid = ANY(%s)
"""

_BUFFER_CACHE = """
SELECT blks_hit::float8 AS hits, blks_read::float8 AS reads,
       extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))::float8 AS since_seconds
FROM pg_stat_database WHERE datname = current_database()
"""

_XID_AGE = """
SELECT datname AS database, age(datfrozenxid)::float8 AS xid_age, mxid_age(datminmxid)::float8 AS mxid_age
FROM pg_database WHERE datallowconn ORDER BY age(datfrozenxid) DESC
"""

_REPLICAS = f"""
SELECT application_name, client_addr::text AS client, state, sync_state,
       extract(epoch FROM replay_lag)::float8 AS replay_lag_seconds,
       extract(epoch FROM write_lag)::float8 AS write_lag_seconds,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS replay_lag_bytes
FROM pg_stat_replication LIMIT {ROW_LIMIT}
"""

_RECEIVER = """
SELECT (SELECT status FROM pg_stat_wal_receiver) AS receiver_status, pg_is_wal_replay_paused() AS replay_paused,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 AS replay_backlog_bytes,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS since_last_replay_seconds
"""

# User tables only: pg_stat_user_tables leaves out pg_catalog and information_schema,
# so a fresh database's never-analyzed catalogs are not flagged.
_MAINTENANCE = f"""
SELECT schemaname AS schema, relname AS table, n_live_tup::float8 AS live_rows,
       n_dead_tup::float8 AS dead_rows, n_mod_since_analyze::float8 AS changed_since_analyze,
       extract(epoch FROM now() - greatest(last_vacuum, last_autovacuum))::float8 AS since_vacuum_seconds,
       extract(epoch FROM now() - greatest(last_analyze, last_autoanalyze))::float8 AS since_analyze_seconds
FROM pg_stat_user_tables
ORDER BY n_mod_since_analyze + n_dead_tup DESC
LIMIT {ROW_LIMIT}
"""

# The weekly reviews' reads: all catalog and statistics views, each cheap.
_SECURITY = """
SELECT current_setting('ssl') AS ssl, current_setting('password_encryption') AS password_encryption
"""
# pg_hba_file_rules is readable by superusers only unless granted (see the security check's fix).
_HBA = f"""
SELECT line_number, type, database, user_name, address, netmask, auth_method, error
FROM pg_hba_file_rules ORDER BY line_number LIMIT {ROW_LIMIT}
"""
_STATEMENTS_SCHEMA = ("SELECT extnamespace::regnamespace::text AS schema FROM pg_extension "
                      "WHERE extname = 'pg_stat_statements'")
# Top 10 by mean (among statements called often enough to judge) and top 10 by total time.
_STATEMENTS = """
(SELECT 'mean' AS ranked_by, queryid::text, left(query, 300) AS query, calls::float8, mean_exec_time::float8 AS mean_ms,
        total_exec_time::float8 AS total_ms, rows::float8
 FROM {schema}.pg_stat_statements WHERE calls >= %(min_calls)s ORDER BY mean_exec_time DESC LIMIT 10)
UNION ALL
(SELECT 'total', queryid::text, left(query, 300), calls::float8, mean_exec_time::float8, total_exec_time::float8,
        rows::float8
 FROM {schema}.pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10)
"""
# Every query of a pass, by the name its failure is recorded under in ``errors``.
PASS_QUERIES = ("select 1", "server", "activity", "connections", "lock waits", "blockers", "buffer cache",
                "xid age", "replicas", "wal receiver", "maintenance", "security settings", "hba rules",
                "statements")


@dataclass(frozen=True)
class PgSnapshot(JsonRecord):
    """What one pass over a database saw. ``reachable`` False means only ``error`` is set."""

    target: str
    url: str
    answered: bool
    error: str = ""
    connect_seconds: float | None = None
    select1_seconds: float | None = None
    elapsed_seconds: float = 0.0
    server: dict[str, Any] = field(default_factory=dict)
    activity: list[dict[str, Any]] = field(default_factory=list)
    connections: dict[str, Any] = field(default_factory=dict)
    lock_waits: list[dict[str, Any]] = field(default_factory=list)
    blockers: list[dict[str, Any]] = field(default_factory=list)
    buffer_cache: dict[str, Any] = field(default_factory=dict)
    xid_age: list[dict[str, Any]] = field(default_factory=list)
    replicas: list[dict[str, Any]] = field(default_factory=list)
    receiver: dict[str, Any] = field(default_factory=dict)
    maintenance: list[dict[str, Any]] = field(default_factory=list)
    security: dict[str, Any] = field(default_factory=dict)       # ssl, password_encryption
    hba_rules: list[dict[str, Any]] = field(default_factory=list)
    statements: list[dict[str, Any]] = field(default_factory=list)  # pg_stat_statements: top by mean and total
    # Without pg_stat_statements: statements over log_min_duration_statement in the server log, read on a host.
    slow_log: list[dict[str, Any]] = field(default_factory=list)
    slow_log_source: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    denied: str = ""   # access was refused: the credential or grant to check


# libpq's messages for a refused login, and what to check for each.
_DENIED = (
    ("password authentication failed", "the user and password in the DSN"),
    ("no password supplied", "the DSN: the server wants a password and none was given"),
    ("pg_hba.conf", "pg_hba.conf: a rule must allow this user and database from this client address"),
    ("does not exist", "that the role exists: CREATE ROLE <user> LOGIN PASSWORD '...' IN ROLE pg_monitor"),
    ("is not permitted to log in", "the role's LOGIN attribute: ALTER ROLE <user> LOGIN"),
    ("permission denied for database", "the CONNECT grant: GRANT CONNECT ON DATABASE <db> TO <user>"),
    ("certificate authentication failed", "client_cert/client_key (or sslcert/sslkey) and the certificate's CN"),
    ("too many connections for role", "the role's CONNECTION LIMIT"),
)
_READ_ONLY_SESSION = ("target_session_attrs=read-write refuses every session whose default_transaction_read_only is "
                      "on, and the monitoring role sets it on purpose; use target_session_attrs=primary (libpq 14 "
                      "or newer), which asks the server whether it is a standby instead")


def connect_timeout(timeout: float) -> int:
    """libpq's connect_timeout for one host: whole seconds, at least 2 (libpq's own floor)."""
    return max(2, math.ceil(timeout))


def connect_budget(target: Database) -> float:
    """The bound on connecting: every host of the connection string gets its own connect timeout."""
    return float(connect_timeout(target.timeout_seconds) * target.hosts)


def connect_error(exc: BaseException, target: Database) -> tuple[str, str]:
    """(what went wrong, and when access was refused the credential or grant to check)."""
    if isinstance(exc, TimeoutError):
        return f"no connection within {connect_budget(target):g} s ({target.hosts} host(s), " \
               f"{connect_timeout(target.timeout_seconds)} s each)", ""
    text = str(exc).strip() or type(exc).__name__
    lines = text.splitlines()
    attempts = [line.removeprefix("- ") for line in lines if line.startswith("- host:")]
    message = "; ".join(attempts) if attempts else lines[0]
    if not message.startswith("connection failed"):
        message = f"connection failed: {message}"
    if "session is read-only" in text:
        return f"{message} ({_READ_ONLY_SESSION})", ""
    for needle, check in _DENIED:
        if needle in text and not (needle == "does not exist" and 'role "' not in text):
            return message, check
    return message, ""


async def open_connection(target: Database, **options: Any) -> psycopg.AsyncConnection[dict[str, Any]]:
    """Connect with the DSN as given, plus the TLS parameters the environment adds beside it."""
    import psycopg  # noqa: PLC0415 - see TYPE_CHECKING above
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415
    from psycopg.rows import dict_row  # noqa: PLC0415

    conninfo = make_conninfo(target.dsn, **dict(target.connect_params)) if target.connect_params else target.dsn
    return await psycopg.AsyncConnection.connect(
        conninfo, connect_timeout=connect_timeout(target.timeout_seconds),
        row_factory=dict_row, prepare_threshold=None, **options,
    )


async def read_only_session(db: Database) -> psycopg.AsyncConnection[dict[str, Any]]:
    """A connection on which psycopg opens every transaction with BEGIN READ ONLY; nothing else is set."""
    conn = await open_connection(db, autocommit=False)
    await conn.set_read_only(True)
    return conn


# Bounds and a name for one transaction only: is_local = true is SET LOCAL, gone at COMMIT or ROLLBACK.
# Not even application_name is a startup parameter: PgBouncer would hand it on to the next client.
_TRANSACTION_BOUNDS = ("SELECT set_config('statement_timeout', %(t)s, true), set_config('lock_timeout', %(t)s, true), "
                       "set_config('idle_in_transaction_session_timeout', %(idle)s, true), "
                       f"set_config('application_name', '{APPLICATION_NAME}', true)")


async def run_query(conn: psycopg.AsyncConnection[dict[str, Any]], errors: dict[str, str], name: str,
                 sql: str, params: Sequence[Any] | dict[str, Any] | None = None, *,
                 timeout: float) -> list[dict[str, Any]]:
    import psycopg  # noqa: PLC0415 - see TYPE_CHECKING above

    millis = max(1, int(timeout * 1000))
    try:
        async with conn.transaction():
            await conn.execute(_TRANSACTION_BOUNDS, {"t": f"{millis}ms", "idle": f"{millis * 2}ms"})
            cursor = await conn.execute(sql, params)
            return list(await cursor.fetchall())
    except psycopg.Error as exc:
        errors[name] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return []


def _masked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Other sessions' SQL text with its literals masked (see redaction.mask_sql_literals)."""
    for row in rows:
        if isinstance(row.get("query"), str):
            row["query"] = mask_sql_literals(row["query"])
    return rows


def jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (float(v) if hasattr(v, "as_integer_ratio") and not isinstance(v, int | bool) else v)
             for k, v in row.items()} for row in rows]


async def probe_database(  # noqa: PLR0915 - one pass, every read in order
        db: Database, *, sql_literals: str = "masked", min_calls: float = 10) -> PgSnapshot:
    """One connection, every statistic the database checks need; never raises for a sick server.

    Other sessions' SQL text (activity, lock waits, blockers) is kept with its literals masked
    unless ``sql_literals`` is ``"raw"``: a production statement's values never reach a report.
    """
    import psycopg  # noqa: PLC0415 - see TYPE_CHECKING above

    url = display_url(db.dsn)
    start = time.perf_counter()
    errors: dict[str, str] = {}
    try:
        async with asyncio.timeout(connect_budget(db) + 0.5):
            conn = await read_only_session(db)
    except (OSError, psycopg.Error, TimeoutError) as exc:
        error, denied = connect_error(exc, db)
        return PgSnapshot(target=db.name, url=url, answered=False, error=error, denied=denied,
                          elapsed_seconds=round(time.perf_counter() - start, 6))
    connected = time.perf_counter()
    fields: dict[str, Any] = {}
    done: set[str] = set()

    async def query(name: str, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        rows = await run_query(conn, errors, name, sql, params, timeout=db.timeout_seconds)
        done.add(name)
        return rows if sql_literals == "raw" else _masked(rows)

    try:
        # The whole pass gets one more timeout's worth of time; statement_timeout bounds each query.
        async with asyncio.timeout(db.timeout_seconds * 2):
            t0 = time.perf_counter()
            await query("select 1", "SELECT 1")
            fields["select1_seconds"] = round(time.perf_counter() - t0, 6)
            server = await query("server", """
                SELECT current_setting('server_version') AS version, pg_is_in_recovery() AS in_recovery,
                       extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime_seconds,
                       current_database() AS database, current_user AS user,
                       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
                           OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS sees_all_sessions""")
            fields["server"] = server[0] if server else {}
            fields["activity"] = jsonable(await query("activity", _ACTIVITY))
            connections = await query("connections", _CONNECTIONS)
            fields["connections"] = connections[0] if connections else {}
            waits = await query("lock waits", _LOCK_WAITS.format(waitstart="l.waitstart"))
            if "lock waits" in errors:
                del errors["lock waits"]
                waits = await query("lock waits", _LOCK_WAITS.format(waitstart="NULL::timestamptz"))
            fields["lock_waits"] = jsonable(waits)
            blocking = sorted({pid for w in waits for pid in (w.get("blocking_pids") or [])})
            if blocking:
                fields["blockers"] = jsonable(await query("blockers", _BLOCKERS, [blocking]))
            cache = await query("buffer cache", _BUFFER_CACHE)
            fields["buffer_cache"] = cache[0] if cache else {}
            fields["xid_age"] = jsonable(await query("xid age", _XID_AGE))
            if fields["server"].get("in_recovery"):
                receiver = await query("wal receiver", _RECEIVER)
                fields["receiver"] = receiver[0] if receiver else {}
            else:
                fields["replicas"] = jsonable(await query("replicas", _REPLICAS))
            fields["maintenance"] = jsonable(await query("maintenance", _MAINTENANCE))
            security = await query("security settings", _SECURITY)
            fields["security"] = security[0] if security else {}
            fields["hba_rules"] = jsonable(await query("hba rules", _HBA))
            schema = await query("statements", _STATEMENTS_SCHEMA)
            if schema:
                fields["statements"] = jsonable(await query("statements", _STATEMENTS.format(
                    schema=schema[0]["schema"]), {"min_calls": int(min_calls)}))
            elif "statements" not in errors:
                errors["statements"] = "pg_stat_statements is not installed in this database"
    except TimeoutError:
        errors["deadline"] = f"the pass did not finish within {db.timeout_seconds * 2:g} s"
        # Whatever the deadline cut off was not read: say so, so no check mistakes it for "nothing found".
        for name in set(PASS_QUERIES) - done:
            errors.setdefault(name, f"not read: {errors['deadline']}")
    finally:
        await conn.close()
    return PgSnapshot(
        target=db.name, url=url, answered=True, connect_seconds=round(connected - start, 6),
        elapsed_seconds=round(time.perf_counter() - start, 6), errors=errors, **fields,
    )


# --- the kinds ----------------------------------------------------------------------------------

async def _probe_database(db: Database, job: kinds.Job) -> PgSnapshot:
    seen = await probe_database(db, sql_literals=job.env.defaults.sql_literals,
                                min_calls=job.env.thresholds.slow_query_min_calls)
    if seen.answered and "statements" in seen.errors and db.log_host and db.log_path:
        rows, source, error = await slow_log(db, job.env)
        errors = dict(seen.errors)
        if error:
            errors["slow log"] = error
        return dataclasses.replace(seen, slow_log=rows, slow_log_source=source, errors=errors)
    return seen


DATABASE = kinds.register(kinds.ProbeKind(
    name="database", section="databases", record=PgSnapshot, param="database", fixture="database_probe",
    probe=_probe_database, targets=lambda env: env.databases,
    gate=kinds.Gate(fixture="db", doc="the snapshot; blocked when the database is unreachable"),
    grant=("CREATE ROLE acgs_monitor LOGIN PASSWORD '...' IN ROLE pg_monitor; ALTER ROLE acgs_monitor SET "
           "default_transaction_read_only = on"),
    doc="one read-only pass over a PostgreSQL database",
))
