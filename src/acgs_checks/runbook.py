"""Runbook requirements that checks declare with ``@pytest.mark.runbook("ID")``.

Each requirement names where it sits in the runbook (epic / feature / story in Allure)
and the remediation to follow when its check fails. The text is this project's summary:
where the runbook gives a procedure (service restart, database and cache maintenance) it
is referenced; where it is silent, the remediation is the suite's own advice.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_RESTART = (
    "Restart the failing service gracefully "
    "(`docker-compose -f docker-compose.production.yml restart <service_name>`); "
    "where downtime is not acceptable, use the rolling restart "
    "(`./scripts/operations/rolling_restart.sh`). Then re-run this check to verify the fix."
)
DAILY = ("Daily Operations", "Morning Health Check (09:00 UTC)")
CRITICAL = ("Monitoring and Alerting", "Critical Alerts")
WARNING = ("Monitoring and Alerting", "Warning Alerts")
KEY_METRICS = ("Daily Operations", "Monitor Key Metrics")


@dataclass(frozen=True)
class Requirement:
    id: str
    epic: str
    feature: str
    story: str
    remediation: str


def _r(requirement_id: str, place: tuple[str, str], story: str, remediation: str) -> Requirement:
    return Requirement(requirement_id, place[0], place[1], story, remediation)


REQUIREMENTS: dict[str, Requirement] = {
    r.id: r for r in (
        _r("daily.service-health", DAILY, "Service Health Verification", SERVICE_RESTART),
        _r("alerts.critical.service-down", CRITICAL, "Service down (any core service)", SERVICE_RESTART),
        _r("daily.database-health.connectivity", DAILY, "Database Health Check: connectivity",
           "Check the database host and network (`pg_isready -h HOST -p PORT`), the PostgreSQL server log "
           "and whether it is in recovery; restart PostgreSQL or fail over to a replica, then restart the "
           "services whose connection pools gave up."),
        _r("alerts.critical.database-connection-failures", CRITICAL, "Database connection failures",
           "Treat as service down: restore database connectivity first (see the connectivity check)."),
        _r("daily.database-health.long-queries", DAILY, "Database Health Check: long-running queries",
           "Find the statement in pg_stat_activity (pid in the message), ask its owner, then "
           "`SELECT pg_cancel_backend(pid)`; only if that fails, `SELECT pg_terminate_backend(pid)`. "
           "Review the query plan before it runs again."),
        _r("daily.database-health.idle-in-transaction", DAILY, "Database Health Check: idle transactions",
           "An open transaction holds locks and blocks vacuum. Find the application by its "
           "application_name and client address; fix the code path that forgets to commit; end the session "
           "with `SELECT pg_terminate_backend(pid)` if it is stuck. Consider idle_in_transaction_session_timeout."),
        _r("daily.database-health.locks", DAILY, "Database Health Check: lock waits",
           "Look at the blocking pid named in the message: let it finish, or cancel it "
           "(`SELECT pg_cancel_backend(blocking_pid)`). Repeated lock waits point at long transactions or DDL "
           "during traffic."),
        _r("daily.database-health.buffer-cache", DAILY, "Database Health Check: buffer cache hit ratio",
           "Look for sequential scans of large tables (pg_stat_user_tables.seq_scan) and missing indexes; "
           "review shared_buffers against the working set."),
        _r("daily.database-health.wraparound", DAILY, "Database Health Check: transaction-ID age",
           "Run `VACUUM (FREEZE, VERBOSE)` on the oldest tables of the named database in a quiet window; "
           "check that autovacuum is not blocked by long transactions or prepared transactions."),
        _r("daily.database-health.replication", DAILY, "Database Health Check: replication",
           "Check the replica's WAL receiver and network; compare pg_current_wal_lsn() with the replay LSN; "
           "if a replica cannot catch up, rebuild it from a fresh base backup."),
        _r("daily.key-metrics.pool-usage", KEY_METRICS, "Database connection pool usage (< 80 %)",
           "Find who holds the connections (pg_stat_activity by application_name, or SHOW POOLS in PgBouncer); "
           "end idle sessions, fix connection leaks, or raise the pool size with the database's max_connections."),
        _r("maintenance.database", ("Common Maintenance Tasks", "Database Maintenance"), "Vacuum and analyze",
           "Run the runbook's maintenance: `psql -h HOST -U acgs_user -d acgs_production -c \"VACUUM ANALYZE;\"` "
           "(or per table), and check why autovacuum did not run (its thresholds, long transactions)."),
        _r("daily.cache-performance.reachable", DAILY, "Cache Performance Check: Redis reachable",
           "Check the Redis host, `redis-cli -h HOST PING`, its log and memory; restart Redis, then the services "
           "that lost their cache connections."),
        _r("daily.key-metrics.cache-hit-rate", KEY_METRICS, "Cache hit rates (> 85 %)",
           "Look for a deploy that changed cache keys or TTLs, a recent flush, or evictions; warm the cache, and "
           "see the cache maintenance tasks (`redis-cli INFO memory`)."),
        _r("alerts.warning.cache-hit-rate", WARNING, "Cache hit rate < 85 %",
           "See the cache hit-rate check."),
        _r("daily.cache-performance.memory", DAILY, "Cache Performance Check: memory",
           "Inspect `redis-cli INFO memory`; delete stale keys by pattern (`redis-cli DEL \"cache_key_pattern*\"`), "
           "shorten TTLs, or raise maxmemory. `FLUSHALL` only with caution: it empties the whole cache."),
        _r("daily.cache-performance.evictions", DAILY, "Cache Performance Check: evictions",
           "Keys are being evicted for lack of memory: raise maxmemory or reduce what is cached; check the "
           "maxmemory-policy fits the workload."),
        _r("daily.cache-performance.connections", DAILY, "Cache Performance Check: rejected connections",
           "Redis refused clients at maxclients: find the clients (`CLIENT LIST`), fix connection leaks or "
           "raise maxclients."),
        _r("daily.cache-performance.fragmentation", DAILY, "Cache Performance Check: fragmentation",
           "High fragmentation wastes memory: enable activedefrag, or schedule a restart in a maintenance window."),
    )
}


def get(requirement_id: str) -> Requirement | None:
    return REQUIREMENTS.get(requirement_id)


_SLO_REMEDIATION = (
    "Find what changed: a deploy, traffic growth, a slow dependency (database and cache checks in the same "
    "report). Roll back a bad deploy; scale out or restart the service (graceful restart, or "
    "`./scripts/operations/rolling_restart.sh`); review the slow query log. Then re-run the check."
)
_ERROR_REMEDIATION = (
    "Read the service's logs for the failing requests, check its dependencies (database, cache, other services), "
    "roll back a bad deploy, and restart the service if it is wedged (graceful or rolling restart)."
)
REQUIREMENTS.update({r.id: r for r in (
    _r("daily.key-metrics.response-times", KEY_METRICS, "Response times (P95 < 2 s, P99 < 5 s)", _SLO_REMEDIATION),
    _r("alerts.warning.p95", WARNING, "Response time P95 > 2 s", _SLO_REMEDIATION),
    _r("alerts.critical.p99", CRITICAL, "Response time P99 > 10 s", _SLO_REMEDIATION),
    _r("daily.key-metrics.error-rates", KEY_METRICS, "Error rates (< 1 %)", _ERROR_REMEDIATION),
    _r("alerts.warning.error-rate", WARNING, "Error rate > 1 %", _ERROR_REMEDIATION),
    _r("alerts.critical.error-rate", CRITICAL, "Error rate > 5 %", _ERROR_REMEDIATION),
    _r("monitoring.application.client-errors", ("Monitoring and Alerting", "Application Metrics"),
       "Error rate (4xx responses)",
       "A rise in 4xx usually means a client or an integration sends bad requests (or auth broke): look at "
       "the access logs by client and path."),
    _r("monitoring.application.request-rate", ("Monitoring and Alerting", "Application Metrics"),
       "Request rate (requests/second) and active connections",
       "A service with no traffic is often cut off rather than idle: check the load balancer, DNS and the "
       "service's registration; compare with yesterday's rate."),
    _r("monitoring.metrics-source", ("Monitoring and Alerting", "Key Metrics to Monitor"),
       "The metrics source answers",
       "Without Prometheus no alert can fire: check the Prometheus server, its storage and its network path; "
       "until it is back, run the suite with synthetic sampling (`[slo] source = \"synthetic\"`)."),
    _r("monitoring.business.compliance", ("Monitoring and Alerting", "Business Metrics"),
       "Constitutional compliance score (> 95 %)",
       "Review the recent decisions of the Constitutional AI service that scored low, the principles and "
       "policies changed lately, and roll back a policy change that lowered the score."),
    _r("monitoring.business.policy-success", ("Monitoring and Alerting", "Business Metrics"),
       "Policy evaluation success rate (> 99 %)",
       "Look at the failing policy evaluations in the Policy Governance service's logs: a broken policy "
       "bundle, a missing dependency or timeouts; roll back the last policy deployment if it coincides."),
)})
