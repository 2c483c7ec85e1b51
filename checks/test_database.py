"""Morning health check, step 2: the database (runbook: Database Health Check, Monitor Key Metrics).

Every case reads one snapshot taken over one read-only connection per database
(see ``acgs_checks.probes.postgres``). When the database cannot be reached, the
connectivity case fails and every other case here is skipped as blocked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from acgs_checks.environment import Environment
from acgs_checks.verdict import (
    breached,
    insufficient_privilege,
    judge,
    measure,
    no_data,
    not_applicable,
    require_answer,
)

if TYPE_CHECKING:  # the client libraries load only when such checks run
    from acgs_checks.probes.postgres import PgSnapshot

pytestmark = [pytest.mark.daily, pytest.mark.database]

XID_LIMIT = 2**31  # transaction IDs wrap around here
IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")


def _who(row: dict[str, Any]) -> str:
    app = f", application {row['application_name']!r}" if row.get("application_name") else ""
    return f"pid {row['pid']} (user {row.get('user')}{app})"


def _statement(row: dict[str, Any]) -> str:
    text = " ".join(str(row.get("query") or "").split())
    return text[:80] + ("…" if len(text) > 80 else "")


def _first(rows: list[str], more: int) -> str:
    return "; ".join(rows) + (f"; and {more} more" if more else "")


def _read(db: PgSnapshot, *queries: str, sessions: bool = False) -> None:
    """Fail unless the queries this case needs were read, and (``sessions``) other sessions are visible.

    A failed, timed-out or cut-off query leaves an empty list, which must never pass for
    "nothing found". Without pg_read_all_stats (pg_monitor has it) PostgreSQL hides other
    sessions' state, query and backend type, so an empty answer would mean nothing either.
    """
    for name in ("server", *queries) if sessions else queries:
        if name in db.errors:
            no_data(f"{db.target}: the {name} query on {db.url} failed: {db.errors[name]}")
    if sessions and not db.server.get("sees_all_sessions"):
        role = db.server.get("user", "the role")
        insufficient_privilege(f"{db.target}: role {role} cannot see other sessions' state, query and type in "
                               f"pg_stat_activity (grant pg_monitor: GRANT pg_monitor TO {role})")


@pytest.mark.p0
@pytest.mark.runbook("daily.database-health.connectivity", "alerts.critical.database-connection-failures")
@pytest.mark.reachability
def test_database_connectivity(database_probe: PgSnapshot) -> None:
    """The database accepts a connection and answers SELECT 1 (check_database_health.py in the runbook)."""
    seen = database_probe
    require_answer(seen, f"connect {seen.url}")
    if seen.errors.get("select 1", "").startswith("not read"):
        no_data(f"{seen.target}: SELECT 1 on {seen.url}: {seen.errors['select 1']}")
    if "select 1" in seen.errors:
        breached(f"{seen.target}: SELECT 1 on {seen.url} failed: {seen.errors['select 1']}", "SELECT 1 to succeed")
    measure(f"{seen.target}: SELECT 1 on {seen.url} answered", "SELECT 1 to succeed")


@pytest.mark.p1
@pytest.mark.runbook("daily.database-health.long-queries")
def test_no_long_running_queries(db: PgSnapshot, acgs_environment: Environment) -> None:
    """No statement has been running longer than the long-query threshold ({long_query_seconds:g} s).

    Backends waiting for a lock are left to the lock-wait check, which names their blocker.
    """
    _read(db, "activity", sessions=True)
    limit = acgs_environment.thresholds.long_query_seconds
    running = [row for row in db.activity
               if row.get("state") not in (None, "idle", *IDLE_IN_TRANSACTION) and row.get("wait_event_type") != "Lock"]
    long = [row for row in running if (row.get("query_seconds") or 0) > limit]
    if long:
        shown = [f"{_who(r)} running {r['query_seconds']:.1f} s: {_statement(r)}" for r in long[:3]]
        breached(f"{db.target}: {len(long)} statement(s) running longer than {limit:g} s: "
                 + _first(shown, len(long) - 3 if len(long) > 3 else 0), f"none longer than {limit:g} s",
                 value=max(r["query_seconds"] for r in long), threshold=limit)
    longest = max((r.get("query_seconds") or 0 for r in running), default=0.0)
    measure(f"{db.target}: longest running statement {longest:.1f} s ({len(running)} active)",
            f"none longer than {limit:g} s", value=longest, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("daily.database-health.idle-in-transaction")
def test_no_idle_in_transaction_sessions(db: PgSnapshot, acgs_environment: Environment) -> None:
    """No session sits idle inside an open transaction longer than {idle_in_transaction_seconds:g} s."""
    _read(db, "activity", sessions=True)
    limit = acgs_environment.thresholds.idle_in_transaction_seconds
    waiting = [row for row in db.activity if row.get("state") in IDLE_IN_TRANSACTION]
    idle = [row for row in waiting if (row.get("state_seconds") or 0) > limit]
    if idle:
        shown = [f"{_who(r)} idle in transaction for {r['state_seconds']:.1f} s "
                 f"(transaction open {r.get('transaction_seconds') or 0:.1f} s), last: {_statement(r)}"
                 for r in idle[:3]]
        breached(f"{db.target}: {len(idle)} session(s) idle in transaction: "
                 + _first(shown, len(idle) - 3 if len(idle) > 3 else 0), f"none idle longer than {limit:g} s",
                 value=max(r["state_seconds"] for r in idle), threshold=limit)
    longest = max((r.get("state_seconds") or 0 for r in waiting), default=0.0)
    measure(f"{db.target}: longest idle in transaction {longest:.1f} s ({len(waiting)} session(s))",
            f"none idle longer than {limit:g} s", value=longest, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("daily.key-metrics.pool-usage")
@pytest.mark.capacity("max_connections reached")
def test_connection_usage(db: PgSnapshot, acgs_environment: Environment) -> None:
    """Client backends stay below {pool_usage_max_percent:g} % of the usable slots (max_connections minus reserved
    ones)."""
    _read(db, "connections", sessions=True)
    c = db.connections
    usable = c["max_connections"] - c["superuser_reserved"] - c.get("reserved", 0)
    share = 100.0 * c["backends"] / usable
    limit = acgs_environment.thresholds.pool_usage_max_percent
    judge(share >= limit, f"{db.target}: {c['backends']} of {usable} usable connections in use = {share:.1f} % "
          f"(max_connections {c['max_connections']} - {c['superuser_reserved']} superuser-reserved"
          + (f" - {c['reserved']} reserved" if c.get("reserved") else "") + ")", f"< {limit:g} %",
          value=share, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("daily.database-health.locks")
def test_no_blocked_lock_waits(db: PgSnapshot, acgs_environment: Environment) -> None:
    """No backend has waited for a lock longer than {lock_wait_seconds:g} s; the message names the blocker."""
    _read(db, "lock waits", sessions=True)
    if any(w.get("blocking_pids") for w in db.lock_waits):
        _read(db, "blockers")
    limit = acgs_environment.thresholds.lock_wait_seconds
    blockers = {row["pid"]: row for row in db.blockers}
    waits = [w for w in db.lock_waits if (w.get("wait_seconds") or 0) > limit]
    if waits:
        shown = []
        for w in waits[:3]:
            held_by = ", ".join(
                f"{_who(blockers[pid])} ({blockers[pid].get('state')}, transaction open "
                f"{blockers[pid].get('transaction_seconds') or 0:.1f} s)" if pid in blockers else f"pid {pid}"
                for pid in w.get("blocking_pids") or [])
            shown.append(f"{_who(w)} has waited {w['wait_seconds']:.1f} s for {w.get('mode')} on "
                         f"{w.get('relation') or w.get('locktype')}, blocked by {held_by or 'unknown'}")
        breached(f"{db.target}: {len(waits)} blocked lock wait(s): "
                 + _first(shown, len(waits) - 3 if len(waits) > 3 else 0), f"no wait longer than {limit:g} s",
                 value=max(w["wait_seconds"] for w in waits), threshold=limit)
    longest = max((w.get("wait_seconds") or 0 for w in db.lock_waits), default=0.0)
    measure(f"{db.target}: longest lock wait {longest:.1f} s ({len(db.lock_waits)} waiting)",
            f"no wait longer than {limit:g} s", value=longest, threshold=limit)


@pytest.mark.p2
@pytest.mark.runbook("daily.database-health.buffer-cache")
@pytest.mark.trended
def test_buffer_cache_hit_ratio(db: PgSnapshot, acgs_environment: Environment) -> None:
    """At least {buffer_cache_hit_min_percent:g} % of block reads are served from shared buffers (blks_hit / (blks_hit +
    blks_read))."""
    _read(db, "buffer cache")
    hits, reads = db.buffer_cache.get("hits"), db.buffer_cache.get("reads")
    if hits is None or reads is None:
        no_data(f"{db.target}: pg_stat_database has no row for this database")
    if hits + reads < 1000:
        pytest.skip(f"{db.target}: only {hits + reads:.0f} block reads since the statistics reset; too few to judge")
    ratio = 100.0 * hits / (hits + reads)
    limit = acgs_environment.thresholds.buffer_cache_hit_min_percent
    judge(ratio < limit, f"{db.target}: buffer cache hit ratio {ratio:.2f} % ({hits:.0f} hits, {reads:.0f} reads)",
          f"≥ {limit:g} %", value=ratio, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("daily.database-health.wraparound")
def test_transaction_id_age(db: PgSnapshot, acgs_environment: Environment) -> None:
    """The oldest unfrozen transaction ID stays below {xid_age_max_percent:g} % of the 2^31 wraparound limit."""
    _read(db, "xid age")
    if not db.xid_age:
        no_data(f"{db.target}: pg_database returned no database that allows connections")
    oldest = max(db.xid_age, key=lambda row: row["xid_age"])
    share = 100.0 * oldest["xid_age"] / XID_LIMIT
    limit = acgs_environment.thresholds.xid_age_max_percent
    judge(share >= limit, f"{db.target}: database {oldest['database']} has transaction-ID age {oldest['xid_age']:.0f} "
          f"= {share:.1f} % of the 2^31 wraparound limit", f"< {limit:g} %", value=share, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("daily.database-health.replication")
@pytest.mark.trended
def test_replication_lag(db: PgSnapshot, acgs_environment: Environment) -> None:
    """Replicas stream and replay within {replication_lag_max_seconds:g} s (on a primary with replicas, or a
    replica)."""
    limit = acgs_environment.thresholds.replication_lag_max_seconds
    _read(db, "wal receiver" if db.server.get("in_recovery") else "replicas", sessions=True)
    if db.server.get("in_recovery"):
        receiver = db.receiver
        if receiver.get("receiver_status") != "streaming":
            breached(f"{db.target}: replica's WAL receiver is {receiver.get('receiver_status') or 'not running'}",
                     "streaming")
        backlog = receiver.get("replay_backlog_bytes") or 0
        behind = receiver.get("since_last_replay_seconds") or 0
        if receiver.get("replay_paused") and backlog > 0:
            breached(f"{db.target}: replica's replay is paused with {backlog:.0f} bytes received and not applied",
                     "replay running")
        judge(backlog > 0 and behind > limit,
              f"{db.target}: replica {backlog:.0f} bytes behind, last replay {behind:.1f} s ago",
              f"replay within {limit:g} s", value=behind if backlog > 0 else 0.0, threshold=limit)
        return
    if not db.replicas:
        not_applicable(f"{db.target} is a primary with no replicas attached")
    problems = []
    for replica in db.replicas:
        name = replica.get("application_name") or replica.get("client") or "replica"
        lag = replica.get("replay_lag_seconds") or 0
        if replica.get("state") != "streaming":
            problems.append(f"{name} is {replica.get('state')}")
        elif lag > limit:
            problems.append(f"{name} replays {lag:.1f} s behind ({replica.get('replay_lag_bytes') or 0:.0f} bytes)")
    if problems:
        breached(f"{db.target}: " + "; ".join(problems), f"every replica streaming, replay lag ≤ {limit:g} s")
    worst = max((r.get("replay_lag_seconds") or 0 for r in db.replicas), default=0.0)
    measure(f"{db.target}: {len(db.replicas)} replica(s) streaming, largest replay lag {worst:.1f} s",
            f"every replica streaming, replay lag ≤ {limit:g} s", value=worst, threshold=limit)
