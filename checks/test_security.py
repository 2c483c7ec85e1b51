"""Monday security review: failed logins, access anomalies, security settings and firing alerts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from acgs_checks.environment import Environment
from acgs_checks.maths import trends
from acgs_checks.verdict import (
    breached,
    insufficient_privilege,
    judge,
    measure,
    no_data,
    not_applicable,
    require_answer,
    require_read,
)

if TYPE_CHECKING:
    from acgs_checks.environment import Database
    from acgs_checks.environment.weekly import FailedLoginSource
    from acgs_checks.probes.access_stats import AccessStats
    from acgs_checks.probes.cache_access import CacheAccess
    from acgs_checks.probes.failed_logins import FailedLogins
    from acgs_checks.probes.firing_alerts import FiringAlerts
    from acgs_checks.probes.postgres import PgSnapshot

pytestmark = [pytest.mark.monday, pytest.mark.security]


def _top(counts: dict[str, float], n: int = 5) -> str:
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:.0f}" for k, v in ranked) or "none"


@pytest.mark.p1
@pytest.mark.runbook("monday.failed-authentication")
@pytest.mark.grant("Redis source: ACL SETUSER acgs_monitor +acl|log",
                   "PostgreSQL log on a host: read access to the log file (e.g. group adm)",
                   "PromQL source: read access to the Prometheus API")
def test_failed_logins(failed_logins_probe: FailedLogins, source: FailedLoginSource) -> None:
    """Failed logins of the last 24 h from this source stay at or below its max."""
    seen = failed_logins_probe
    require_read(seen, seen.source)
    note = f"; {seen.note}" if seen.note else ""
    judge(seen.total > source.max, f"{seen.target}: {seen.total:.0f} failed login(s) in 24 h from {seen.source}; "
          f"by user: {_top(seen.by_user)}; by client: {_top(seen.by_client)}{note}",
          f"≤ {source.max:g}", value=seen.total, threshold=source.max)


@pytest.mark.p2
@pytest.mark.runbook("monday.access-log-anomalies")
def test_access_log_anomalies(access_probe: AccessStats, acgs_environment: Environment) -> None:
    """The last 24 h look like the 7 days before: volume and status-class shares within median ± k·MAD,
    and no unknown client among the top ones."""
    seen = access_probe
    settings = acgs_environment.security
    require_read(seen, f"access statistics from {seen.source}")
    days_with_traffic = sum(1 for d in seen.days[1:] if d["total"] > 0)
    if seen.days[0]["total"] <= 0 or days_with_traffic < 3:
        no_data(f"{seen.source}: {seen.days[0]['total']:.0f} request(s) in the last 24 h and {days_with_traffic} "
                "earlier day(s) with traffic; at least 3 are needed to compare")
    findings, compared = trends.access_anomalies(seen.days, k=settings.anomaly_k,
                                                 min_requests=settings.anomaly_min_requests, top=settings.top_clients)
    expected = f"within median ± {settings.anomaly_k:g}·MAD of {days_with_traffic} earlier day(s), no new top client"
    if findings:
        breached(f"access ({seen.source}): " + "; ".join(findings), expected, value=float(len(findings)), threshold=0)
    measure(f"access ({seen.source}): {'; '.join(compared)}", expected, value=0, threshold=0)


@pytest.mark.p1
@pytest.mark.runbook("monday.security-settings")
def test_redis_refuses_anonymous(cache_access_probe: CacheAccess) -> None:
    """A connection without credentials is refused (NOAUTH)."""
    seen = cache_access_probe
    require_answer(seen, seen.url)
    judge(seen.anonymous != "refused", f"{seen.target}: unauthenticated {seen.reply} on {seen.url}",
          "the connection to be refused (NOAUTH)")


def _setting(db: PgSnapshot, key: str) -> str:
    if "security settings" in db.errors:
        no_data(f"{db.target}: reading the settings failed: {db.errors['security settings']}")
    return str(db.security.get(key, ""))


@pytest.mark.p1
@pytest.mark.runbook("monday.security-settings")
def test_postgres_ssl_on(db: PgSnapshot, database: Database) -> None:
    """PostgreSQL accepts TLS connections (ssl = on), unless the environment says TLS ends elsewhere."""
    if not database.tls_required:
        not_applicable(f"{db.target}: tls_required = false (TLS ends elsewhere); ssl = "
                       f"{db.security.get('ssl', 'not read')}")
    value = _setting(db, "ssl")
    judge(value != "on", f"{db.target}: ssl = {value}", "ssl = on")


@pytest.mark.p1
@pytest.mark.runbook("monday.security-settings")
def test_postgres_password_encryption(db: PgSnapshot) -> None:
    """New passwords are stored as SCRAM (password_encryption = scram-sha-256), not MD5."""
    value = _setting(db, "password_encryption")
    judge(value != "scram-sha-256", f"{db.target}: password_encryption = {value}",
          "password_encryption = scram-sha-256")


_LOCAL = ("127.0.0.1", "::1", "localhost", "samehost")


@pytest.mark.p1
@pytest.mark.runbook("monday.security-settings")
@pytest.mark.grant("GRANT SELECT ON pg_hba_file_rules TO acgs_monitor",
                   "GRANT EXECUTE ON FUNCTION pg_hba_file_rules() TO acgs_monitor")
def test_postgres_no_remote_trust(db: PgSnapshot) -> None:
    """No pg_hba.conf rule lets a non-local address in without a password (trust)."""
    if "hba rules" in db.errors:
        error = db.errors["hba rules"]
        if "permission denied" in error:
            insufficient_privilege(
                f"{db.target}: pg_hba_file_rules: {error}; fix: GRANT SELECT ON pg_hba_file_rules TO <role>; "
                "GRANT EXECUTE ON FUNCTION pg_hba_file_rules() TO <role> (as a superuser)")
        no_data(f"{db.target}: reading pg_hba_file_rules failed: {error}")
    if not db.hba_rules:
        no_data(f"{db.target}: pg_hba_file_rules returned no rule")
    broken = [r for r in db.hba_rules if r.get("error")]
    remote_trust = [r for r in db.hba_rules if r.get("auth_method") == "trust" and r.get("type") != "local"
                    and str(r.get("address") or "") not in _LOCAL]
    shown = "; ".join(f"line {r['line_number']}: {r['type']} {r.get('database')} {r.get('user_name')} "
                      f"{r.get('address')}/{r.get('netmask') or ''} trust" for r in remote_trust)
    if broken:
        shown += "; unreadable rules: " + "; ".join(f"line {r['line_number']}: {r['error']}" for r in broken)
    judge(bool(remote_trust or broken), f"{db.target}: {len(db.hba_rules)} rule(s) read"
          + (f"; {shown}" if shown else ", none trusts a non-local address"), "no trust rule for a non-local address")


def _alerts(seen: FiringAlerts, severities: tuple[str, ...]) -> list[dict[str, object]]:
    require_read(seen, f"firing alerts from {seen.source}")
    return [a for a in seen.alerts if a["severity"] in severities]


def _others(seen: FiringAlerts) -> str:
    return f"; {seen.others} of other environments, not judged" if seen.others else ""


def _shown(found: list[dict[str, object]]) -> str:
    def one(a: dict[str, object]) -> str:
        labels = {k: v for k, v in dict(a["labels"]).items() if k not in ("alertname", "severity")}  # type: ignore[call-overload]
        since = a.get("firing_seconds")
        age = f", firing {float(since) / 3600:.1f} h" if isinstance(since, int | float) else ""
        return f"{a['name']} {labels}{age}"

    return "; ".join(one(a) for a in found[:10]) + (f"; and {len(found) - 10} more" if len(found) > 10 else "")


# Severity labels differ between rule sets: these count as critical, and these as warnings.
CRITICAL_LABELS = ("critical", "page", "p0")
WARNING_LABELS = ("warning", "warn", "p1", "p2")


@pytest.mark.p0
@pytest.mark.runbook("monday.security-alerts")
def test_no_critical_alerts_firing(alerts_probe: FiringAlerts) -> None:
    """No alert labelled severity=critical (or page, P0) is firing (unsilenced)."""
    found = _alerts(alerts_probe, CRITICAL_LABELS)
    judge(bool(found), f"{len(found)} critical alert(s) firing ({alerts_probe.source}; {len(alerts_probe.alerts)} "
          f"firing in all for {{{alerts_probe.matchers}}}{_others(alerts_probe)})" + (f": {_shown(found)}" if found
                                                                                    else ""),
          "none", value=len(found), threshold=0)


@pytest.mark.p2
@pytest.mark.runbook("monday.security-alerts")
def test_no_warning_alerts_firing(alerts_probe: FiringAlerts) -> None:
    """No alert labelled severity=warning (or P1, P2) is firing (unsilenced)."""
    found = _alerts(alerts_probe, WARNING_LABELS)
    judge(bool(found), f"{len(found)} warning alert(s) firing ({alerts_probe.source}, for "
          f"{{{alerts_probe.matchers}}}{_others(alerts_probe)})" + (f": {_shown(found)}" if found else ""), "none",
          value=len(found), threshold=0)
