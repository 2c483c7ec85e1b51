"""Prometheus alert rules from the runbook's thresholds: the same PromQL and the same thresholds the checks evaluate.

Each :class:`AlertSpec` mirrors one check: its query comes from the declaration the check's probe evaluates
(:func:`acgs_checks.probes.slo.service_queries`, :func:`acgs_checks.probes.host.promql`, the business metrics), its
threshold is the environment's (overrides included), and its severity is the check's marker (a self-test holds
them equal). What has no PromQL form in the suite is listed, with why, in the file's comment block.

``for:`` durations (documented in docs/reports-and-alerting.md, "Alert rules"): a rule must hold that long before it
fires, so one scrape's blip never pages.

* service down: 1m (two or more failed scrapes at the usual 15 to 30 s interval);
* P0 rates and latencies: 2m (the query already averages over the SLO window; 2m rides out one bad scrape);
* P1 rates, latencies and the business metrics: 5m / 15m (one SLO window; the business figures move slowly);
* host CPU and memory: 10m (the check samples over a window too; a build or a backup spikes for minutes);
* disks: 5m critical, 15m warning; inodes 15m; the request-rate floor 15m.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from acgs_checks.environment import Environment, Service, dialect
from acgs_checks.policy.runbook import Requirement
from acgs_checks.policy.severity import Severity
from acgs_checks.policy.thresholds import Thresholds
from acgs_checks.probes.business import business_metrics
from acgs_checks.probes.host import Host, promql
from acgs_checks.probes.slo import service_queries

PREFIX = "Acgs"
LABEL_SOURCE = "acgs_checks"  # every generated rule carries generator="acgs_checks": the drift check's mark


@dataclass(frozen=True)
class AlertSpec:
    """One alert: the check it mirrors, its query key, the comparison, the threshold (a Thresholds field) and the
    scale from the threshold's unit to the query's (a percent threshold against a ratio query: 0.01)."""

    name: str
    check: str
    runbook: str
    severity: Severity
    key: str
    op: str
    threshold: str
    scale: float
    hold: str
    unit: str  # how $value is shown: percent-of-ratio, percent, seconds, per-second
    summary: str


SERVICE_ALERTS = (
    AlertSpec("ErrorRateCritical", "test_error_rate_critical", "alerts.critical.error-rate", Severity.P0,
              "error_rate", ">", "error_rate_critical_percent", 0.01, "2m", "percent-of-ratio",
              "5xx error rate above the critical line"),
    AlertSpec("ErrorRateWarning", "test_error_rate_warning", "alerts.warning.error-rate", Severity.P1,
              "error_rate", ">=", "error_rate_warning_percent", 0.01, "5m", "percent-of-ratio",
              "5xx error rate at or above the runbook's target"),
    AlertSpec("P99LatencyCritical", "test_p99_latency_critical", "alerts.critical.p99", Severity.P0,
              "p99", ">", "p99_critical_seconds", 1.0, "2m", "seconds", "P99 latency above the critical line"),
    AlertSpec("P99LatencyTarget", "test_p99_latency_target", "daily.key-metrics.response-times", Severity.P1,
              "p99", ">=", "p99_warning_seconds", 1.0, "5m", "seconds", "P99 latency at or above the daily target"),
    AlertSpec("P95LatencyWarning", "test_p95_latency", "alerts.warning.p95", Severity.P1,
              "p95", ">=", "p95_warning_seconds", 1.0, "5m", "seconds", "P95 latency at or above the target"),
    AlertSpec("RequestRateFloor", "test_request_rate_floor", "monitoring.application.request-rate", Severity.P2,
              "request_rate", "<", "request_rate_min_per_second", 1.0, "15m", "per-second",
              "request rate below the floor"),
)
HOST_ALERTS = (
    AlertSpec("HostCpuHigh", "test_host_cpu", "alerts.warning.cpu", Severity.P1,
              "cpu_percent", ">", "cpu_max_percent", 1.0, "10m", "percent", "CPU utilisation above the line"),
    AlertSpec("HostMemoryHigh", "test_host_memory", "alerts.warning.memory", Severity.P1,
              "memory_percent", ">", "memory_max_percent", 1.0, "10m", "percent", "memory use above the line"),
    AlertSpec("HostDiskCritical", "test_host_disk_critical", "alerts.critical.disk", Severity.P0,
              "disk", ">", "disk_critical_percent", 1.0, "5m", "percent", "a filesystem above the critical line"),
    AlertSpec("HostDiskWarning", "test_host_disk_usage", "monitoring.infra.disk", Severity.P1,
              "disk", ">", "disk_warning_percent", 1.0, "15m", "percent", "a filesystem above the warning line"),
    AlertSpec("HostInodesHigh", "test_host_inodes", "monitoring.infra.disk", Severity.P1,
              "inodes", ">", "inodes_max_percent", 1.0, "15m", "percent", "a filesystem's inodes above the line"),
)
SATISFACTION = AlertSpec("ApdexLow", "test_user_satisfaction_apdex", "monitoring.business.user-satisfaction",
                         Severity.P2, "apdex", "<", "apdex_min_percent", 0.01, "15m", "percent-of-ratio",
                         "Apdex score below the minimum")
CACHE_HIT_RATE = AlertSpec("CacheHitRateLow", "test_cache_hit_rate", "alerts.warning.cache-hit-rate", Severity.P1,
                           "hit_rate", "<=", "cache_hit_rate_min_percent", 0.01, "15m", "percent-of-ratio",
                           "cache hit rate at or below the minimum")
BUSINESS_ALERTS = (
    AlertSpec("ComplianceScoreLow", "test_constitutional_compliance", "monitoring.business.compliance",
              Severity.P1, "compliance", "<=", "compliance_min_percent", 0.01, "15m", "percent-of-ratio",
              "constitutional compliance score at or below the minimum"),
    AlertSpec("PolicySuccessLow", "test_policy_evaluation_success", "monitoring.business.policy-success",
              Severity.P1, "policy_success", "<=", "policy_success_min_percent", 0.01, "15m", "percent-of-ratio",
              "policy evaluation success rate at or below the minimum"),
)
# The health check's PromQL form is the service dialect's service_down: blackbox_exporter's probe of the same URL
# (module http_2xx; the rule needs a blackbox job probing each health URL), or Prometheus's own up of the service's
# selector (init chooses from what Prometheus has; docs/reports-and-alerting.md says so).
SERVICE_DOWN = AlertSpec("ServiceDown", "test_service_health", "alerts.critical.service-down", Severity.P0,
                         "service_down", "==", "", 1.0, "1m", "", "the health endpoint does not answer")
ALL = (SERVICE_DOWN, *SERVICE_ALERTS, SATISFACTION, CACHE_HIT_RATE, *HOST_ALERTS, *BUSINESS_ALERTS)
# The Apdex rule reads the service dialect's latency histogram at T and 4T; PromQL cannot interpolate inside a
# bucket, so the rule needs T and 4T to be bucket bounds (the check interpolates, and says so). Bounds are written
# "2" by Go clients and "2.0" by Python ones: the matchers accept both.

# The checks with no PromQL form in the suite, and why (the file's comment block says so).
NOT_ALERTABLE = {
    "database and pooler checks": "read over their own connections (SQL, SHOW POOLS), not PromQL; exporters "
                                  "name pool metrics differently, so no rule is generated for them",
    "cache checks other than the hit rate": "read from INFO; the hit rate has a rule when the cache has a "
                                            "prometheus_selector (redis_exporter)",
    "TLS certificates": "read from the handshake; blackbox_exporter's probe_ssl_earliest_cert_expiry can alert",
    "backups, WAL archiving, the restore drill, DR documents": "read from the backup tool and files on Fridays",
    "logs, log rotation, host services": "read on the host (testinfra), not exported as metrics",
    "security review (failed logins, access anomalies, alerts firing, settings)": "weekly reviews of logs and "
                                                                                 "configuration",
    "trends and capacity": "week-on-week comparisons over the history store",
}


def _show(spec: AlertSpec) -> str:
    """How the alert's description shows $value, in the unit the threshold is written in."""
    return {"percent-of-ratio": "{{ $value | humanizePercentage }}", "percent": "{{ printf \"%.1f\" $value }} %",
            "seconds": "{{ printf \"%.3f\" $value }} s", "per-second": "{{ printf \"%.2f\" $value }}/s"}.get(
        spec.unit, "{{ $value }}")


def _limit(spec: AlertSpec, thresholds: Thresholds) -> tuple[float, str]:
    written = float(getattr(thresholds, spec.threshold))
    unit = {"percent-of-ratio": " %", "percent": " %", "seconds": " s", "per-second": "/s"}.get(spec.unit, "")
    return written * spec.scale, f"{written:g}{unit}"


# Where the alerts' runbook_url points: the team's published runbook (--runbook-url), else the shipped map.
DEFAULT_RUNBOOK_URL = "runbook.toml"


@dataclass(frozen=True)
class Source:
    """What every rule is made from: the environment, the runbook's requirements, where the runbook is published."""

    env: Environment
    requirements: dict[str, Requirement]
    runbook_url: str = DEFAULT_RUNBOOK_URL


def _rule(spec: AlertSpec, expr: str, source: Source, *, target_label: str, target: str,
          limit_text: str) -> dict[str, Any]:
    env = source.env
    requirement = source.requirements.get(spec.runbook)
    where = f"{target_label} {target}"
    description = (f"{where}: {spec.summary}: {_show(spec)} (threshold {spec.op} {limit_text}; check "
                   f"{spec.check}[{target}] in acgs-checks)") if spec.threshold else (
        f"{where}: {spec.summary} (check {spec.check}[{target}] in acgs-checks)")
    return {
        "alert": PREFIX + spec.name,
        "expr": expr,
        "for": spec.hold,
        "labels": {"severity": spec.severity.marker, "runbook": spec.runbook, "env": env.name,
                   target_label: target, "generator": LABEL_SOURCE},
        "annotations": {
            "summary": f"{where}: {spec.summary}",
            "description": description,
            "runbook_url": f"{source.runbook_url}#{spec.runbook}",
            "response": spec.severity.response.summary(),
            **({"remediation": requirement.remediation} if requirement and requirement.remediation else {}),
        },
    }


def _compare(spec: AlertSpec, query: str, limit: float) -> str:
    return f"({query}) {spec.op} {limit:g}"


def service_rules(source: Source) -> list[dict[str, Any]]:
    env = source.env
    rules = []
    for service in env.services:
        queries = service_queries(service, env.prometheus, env.slo.window)
        speaks = dialect.resolve(service, env.prometheus)
        rules.append(_rule(SERVICE_DOWN, f"{down_signal(service, speaks)} == 0", source,
                           target_label="service", target=service.name, limit_text=""))
        for spec in SERVICE_ALERTS:
            limit, shown = _limit(spec, env.thresholds)
            if (spec.key == "request_rate" and limit <= 0) or spec.key not in queries:
                continue  # no floor configured (the check only reports the rate), or the dialect has no status
            rules.append(_rule(spec, _compare(spec, queries[spec.key], limit), source,
                               target_label="service", target=service.name, limit_text=shown))
        t = env.thresholds.apdex_t_seconds
        if "p95" not in dict(service.queries.items()) and speaks.histogram and not speaks.lacks_bounds(t, 4 * t):
            # The dialect's histogram, with T and 4T among its bounds (or its bounds unknown): Apdex has a PromQL form.
            limit, shown = _limit(SATISFACTION, env.thresholds)
            rules.append(_rule(SATISFACTION, _compare(SATISFACTION, _apdex(speaks, env), limit), source,
                               target_label="service", target=service.name, limit_text=shown))
    for cache in env.caches:
        if cache.prometheus_selector:
            limit, shown = _limit(CACHE_HIT_RATE, env.thresholds)
            sel, window = cache.prometheus_selector, env.slo.window
            hits, misses = (f"sum(rate(redis_keyspace_hits_total{{{sel}}}[{window}]))",
                            f"sum(rate(redis_keyspace_misses_total{{{sel}}}[{window}]))")
            rules.append(_rule(CACHE_HIT_RATE, _compare(CACHE_HIT_RATE, f"{hits} / ({hits} + {misses})", limit),
                               source, target_label="cache", target=cache.name, limit_text=shown))
    return rules


def _bound(value: float) -> str:
    """The ``le`` matcher of a bucket bound, as Go ("2") or Python ("2.0") clients write it."""
    return f'le=~"{value:g}|{value:g}[.]0+"' if value == int(value) else f'le="{value:g}"'


def down_signal(service: Service, speaks: dialect.Dialect) -> str:
    """The series that says a service is up (1) or down (0), as its dialect chooses."""
    if speaks.service_down == "up":
        return f"up{{{speaks.selector}}}"
    health = service.health_url.replace("\\", "\\\\").replace('"', '\\"')
    return f'{speaks.service_down}{{instance="{health}"}}'  # blackbox_exporter's series of the health URL


def _apdex(speaks: dialect.Dialect, env: Environment) -> str:
    t = env.thresholds.apdex_t_seconds
    window = env.slo.window

    def within(bound: str) -> str:
        return f"sum(rate({speaks.buckets}{{{speaks.selector},{bound}}}[{window}]))"

    total = within('le="+Inf"')
    return f"({within(_bound(t))} + {within(_bound(4 * t))}) / 2 / {total}"


def host_rules(source: Source) -> list[dict[str, Any]]:
    env = source.env
    rules = []
    hosts: list[Host] = [h for h in env.section("hosts") if h.prometheus_selector]
    for host in hosts:
        queries = promql(host, env.slo.window)
        for spec in HOST_ALERTS:
            limit, shown = _limit(spec, env.thresholds)
            rules.append(_rule(spec, _compare(spec, queries[spec.key], limit), source,
                               target_label="host", target=host.name, limit_text=shown))
    return rules


def business_rules(source: Source) -> list[dict[str, Any]]:
    env = source.env
    rules = []
    by_key = {spec.key: spec for spec in BUSINESS_ALERTS}
    for metric in business_metrics(env.business.metrics(), env.prometheus):
        spec = by_key.get(metric.name)
        if spec is None or not metric.query:
            continue  # a JSON endpoint has no PromQL form
        limit, shown = _limit(spec, env.thresholds)
        query = metric.query.replace("{window}", env.slo.window)
        if metric.unit == "percent":
            query = f"({query}) / 100"
        rules.append(_rule(spec, _compare(spec, query, limit), source, target_label="metric",
                           target=metric.name, limit_text=shown))
    return rules


# severity -> (how long an alert fires before the secondary hears of it, or "" for never)
ESCALATE_AFTER = {"p0": "15m", "p1": "2h", "p2": "1d"}


def escalation_rules(source: Source) -> list[dict[str, Any]]:
    """One rule per escalating severity, on ``ALERTS``: the alert's own labels, plus ``escalation``. Alertmanager
    routes these to the secondary (acgs_checks.alerting.routes); it cannot delay an escalation itself."""
    del source
    return [{
        "alert": f"{PREFIX}Escalate{severity.upper()}",
        "expr": f'ALERTS{{alertstate="firing",generator="{LABEL_SOURCE}",severity="{severity}",escalation=""}}',
        "for": after,
        "labels": {"escalation": "secondary", "escalated_alert": "{{ $labels.alertname }}",
                   "generator": LABEL_SOURCE},
        "annotations": {"summary": f"{{{{ $labels.alertname }}}} has fired for {after}: escalated to the secondary",
                        "description": f"A {severity.upper()} alert unresolved after {after} reaches the secondary "
                                       "on-call, as the runbook's escalation timeline says."},
    } for severity, after in ESCALATE_AFTER.items()]


GROUPS: tuple[tuple[str, Callable[[Source], list[dict[str, Any]]]], ...] = (
    ("acgs-health-and-slo", service_rules), ("acgs-infra", host_rules), ("acgs-business", business_rules),
    ("acgs-escalation", escalation_rules))


def rule_groups(source: Source) -> list[dict[str, Any]]:
    """The rule groups of one environment, one per runbook area; empty groups are left out."""
    groups = []
    for name, build in GROUPS:
        rules = build(source)
        if rules:
            groups.append({"name": name, "rules": rules})
    return groups


def apdex_gaps(env: Environment) -> list[str]:
    """The services whose Apdex rule is left out: T or 4T is no bucket bound of their histogram (PromQL cannot
    count the users between two bounds; the check interpolates and says so)."""
    t, gaps = env.thresholds.apdex_t_seconds, []
    for service in env.services:
        speaks = dialect.resolve(service, env.prometheus)
        missing = speaks.lacks_bounds(t, 4 * t) if speaks.histogram else []
        if missing:
            gaps.append(f"{PREFIX}{SATISFACTION.name} for {service.name}: "
                        + " and ".join(f"{b:g} s" for b in missing) + f" is no bucket bound of {speaks.histogram} "
                        f"(T = {t:g} s, 4T = {4 * t:g} s); test_user_satisfaction_apdex[{service.name}] still "
                        "judges it")
    return gaps


def header(env: Environment) -> str:
    lines = [f"Prometheus alert rules for environment {env.name!r}, generated by acgs-checks alert-rules from the",
             "runbook's thresholds (overrides included). Do not edit by hand: regenerate, and the daily",
             "drift check compares the deployed rules with these.", "",
             "Checks with no PromQL form here (the suite checks them on its own schedule):"]
    lines += [f"  - {what}: {why}" for what, why in NOT_ALERTABLE.items()]
    lines += [f"  - {gap}" for gap in apdex_gaps(env)]
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)
