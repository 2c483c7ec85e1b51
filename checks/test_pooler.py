"""Monitor Key Metrics: database connection pool usage, as PgBouncer sees it.

Read from the admin console with SHOW POOLS, SHOW DATABASES and SHOW CONFIG
(a PgBouncer ``stats_users`` account is enough).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from acgs_checks.environment import Environment
from acgs_checks.verdict import breached, judge, measure, no_data, require_answer

if TYPE_CHECKING:  # the client libraries load only when such checks run
    from acgs_checks.probes.pooler import PoolerSnapshot

pytestmark = [pytest.mark.daily, pytest.mark.database]


@pytest.mark.p0
@pytest.mark.runbook("daily.database-health.connectivity", "alerts.critical.database-connection-failures")
@pytest.mark.reachability
def test_pooler_reachable(pooler_probe: PoolerSnapshot) -> None:
    """The PgBouncer admin console accepts a connection and answers SHOW POOLS."""
    seen = pooler_probe
    require_answer(seen, f"connect {seen.url}")
    if "SHOW POOLS" in seen.errors:
        breached(f"{seen.target}: SHOW POOLS failed: {seen.errors['SHOW POOLS']}",
                 "the monitoring user to be in stats_users or admin_users")
    measure(f"{seen.target}: SHOW POOLS answered ({len(seen.pools)} pool(s))", "SHOW POOLS to succeed")


@pytest.mark.p1
@pytest.mark.runbook("daily.key-metrics.pool-usage")
@pytest.mark.trended
def test_pool_saturation(pool: PoolerSnapshot, acgs_environment: Environment) -> None:
    """No client waits for a server connection, and active server connections stay below {pool_usage_max_percent:g}
    % of the pool."""
    for command in ("deadline", "SHOW POOLS", "SHOW DATABASES", "SHOW CONFIG"):
        if command in pool.errors:
            no_data(f"{pool.target}: {command} on {pool.url} failed: {pool.errors[command]}")
    limit = acgs_environment.thresholds.pool_usage_max_percent
    sizes = {row["name"]: row.get("pool_size") for row in pool.databases}
    default = int(pool.config.get("default_pool_size", "20") or 20)
    problems = []
    busiest = 0.0
    for row in pool.pools:
        if row.get("database") == "pgbouncer":
            continue  # the admin console's own pseudo-pool
        where = f"{row['database']}/{row['user']}"
        size = sizes.get(row["database"]) or default
        if row.get("cl_waiting"):
            problems.append(f"{where}: {row['cl_waiting']} client(s) waiting, longest {row.get('maxwait', 0)} s")
        share = 100.0 * (row.get("sv_active") or 0) / size
        busiest = max(busiest, share)
        if share >= limit:
            problems.append(f"{where}: {row.get('sv_active')} of {size} server connections active = {share:.0f} %")
    if problems:
        breached(f"{pool.target}: " + "; ".join(problems), f"no waiting clients and active < {limit:g} % of pool_size",
                 value=busiest, threshold=limit)
    measure(f"{pool.target}: no client waiting; busiest pool {busiest:.0f} % active",
            f"no waiting clients and active < {limit:g} % of pool_size", value=busiest, threshold=limit)


@pytest.mark.p2
@pytest.mark.runbook("daily.key-metrics.pool-usage")
@pytest.mark.capacity("PgBouncer max_client_conn reached")
def test_pooler_client_connections(pool: PoolerSnapshot, acgs_environment: Environment) -> None:
    """Client connections (active, waiting, idle in all pools) stay below {pool_usage_max_percent:g} % of
    max_client_conn."""
    for command in ("deadline", "SHOW POOLS", "SHOW CONFIG"):
        if command in pool.errors:
            no_data(f"{pool.target}: {command} on {pool.url} failed: {pool.errors[command]}")
    limit = acgs_environment.thresholds.pool_usage_max_percent
    configured = pool.config.get("max_client_conn", "")
    if not configured.isdigit() or int(configured) <= 0:
        no_data(f"{pool.target}: SHOW CONFIG gave no max_client_conn ({configured!r})")
    clients = sum(int(row.get(k) or 0) for row in pool.pools if row.get("database") != "pgbouncer"
                  for k in ("cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req"))
    share = 100.0 * clients / int(configured)
    judge(share >= limit, f"{pool.target}: {clients} client connection(s) of max_client_conn {configured} = "
          f"{share:.1f} %", f"< {limit:g} % of max_client_conn", value=share, threshold=limit)
