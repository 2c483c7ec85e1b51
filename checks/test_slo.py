"""Monitor Key Metrics and the alert thresholds: latency, error rates and traffic per service.

The numbers come from the environment's SLO source: Prometheus (PromQL over a window),
synthetic sampling by the suite itself, or two scrapes of the service's /metrics.
Warning and critical are separate cases with the runbook's severities. A value the
source could not provide is a failure ("no data"), never a pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from acgs_checks.environment import Environment
from acgs_checks.verdict import breached, fail, judge, measure, no_data, not_applicable, require_answer

if TYPE_CHECKING:  # the probe modules load only when such checks run
    from acgs_checks.probes.prometheus import SourceStatus
    from acgs_checks.probes.slo import SloSnapshot

pytestmark = [pytest.mark.daily, pytest.mark.slo]


RATES = ("error_rate", "client_error_rate")


def _value(slo: SloSnapshot, key: str) -> float:
    """The measured value, or a failure that says which query or sample gave no data, or why its unit is wrong."""
    value = slo.values.get(key)
    if value is None:
        # The source first, then what went wrong: a fix the error names stays at the end of the line.
        no_data(f"{slo.target}: no {key} over a {slo.window} window (source: {slo.sources.get(key, slo.source)}): "
                f"{slo.errors.get(key) or 'the source returned nothing'}")
    if (key in RATES and not 0 <= value <= 1) or value < 0:
        fail(f"{slo.target}: unit: {key} {value:g} {_where(slo, key)} cannot be right "
             f"({'a share must lie in 0..1' if key in RATES else 'a count or duration cannot be negative'})")
    return value


def _where(slo: SloSnapshot, key: str) -> str:
    return f"over a {slo.window} window; source: {slo.sources.get(key, slo.source)}"


def _judge(slo: SloSnapshot, key: str, label: str, limit: float, unit: str, *, at_limit_fails: bool) -> None:
    """Fail when the value breaks the line. ``at_limit_fails``: a target such as "P95 < 2 s" (2.0 fails);
    otherwise an alert line such as "P99 > 10 s" (10.0 passes). See docs/judging.md, "Where the line falls".
    """
    value = _value(slo, key)
    bound = f"{limit * 100:g} %" if unit == "%" else f"{limit:g} s"
    expected = f"< {bound}" if at_limit_fails else f"≤ {bound}"
    capped = slo.ceilings.get(key)
    timed_out = slo.at_least.get(key)
    # The data only says the quantile lies above a floor (the histogram's top bucket, or the request
    # timeout). A floor below the line cannot show the value is below it: that fails too.
    floor = capped[0] if capped is not None else timed_out
    if floor is not None and (floor < limit or (floor == limit and not at_limit_fails)):
        why = (f"it lies above the histogram's top finite bucket le={floor:g} ({capped[1]:.0f} of {capped[2]:.4g} "
               "observations beyond it)" if capped is not None else
               f"it is made of requests that timed out at the {floor:g} s request timeout")
        breached(f"{slo.target}: {label} cannot be measured below {limit:g} s: {why} {_where(slo, key)}",
                 expected, value=floor, threshold=limit)
    broken = value >= limit if at_limit_fails else value > limit
    shown = f"{value * 100:.2f} %" if unit == "%" else f"{value:.3f} s"
    if capped is not None or key in slo.at_least:
        shown = f"at least {shown}" + (" (requests timed out)" if key in slo.at_least else
                                       " (above the histogram's top finite bucket)")
    note = f" ({slo.note})" if slo.note else ""
    judge(broken, f"{slo.target}: {label} {shown} {_where(slo, key)}{note}", expected, value=value, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("daily.key-metrics.response-times", "alerts.warning.p95")
@pytest.mark.trended(promql="p95")
def test_p95_latency(slo: SloSnapshot, acgs_environment: Environment) -> None:
    """P95 response time stays below {p95_warning_seconds:g} s, the runbook's target (at or above it: warning alert)."""
    _judge(slo, "p95", "P95 latency", acgs_environment.thresholds.p95_warning_seconds, "s", at_limit_fails=True)


@pytest.mark.p1
@pytest.mark.runbook("daily.key-metrics.response-times")
@pytest.mark.trended
def test_p99_latency_target(slo: SloSnapshot, acgs_environment: Environment) -> None:
    """P99 response time stays below the daily target of {p99_warning_seconds:g} s."""
    _judge(slo, "p99", "P99 latency", acgs_environment.thresholds.p99_warning_seconds, "s", at_limit_fails=True)


@pytest.mark.p0
@pytest.mark.runbook("alerts.critical.p99")
def test_p99_latency_critical(slo: SloSnapshot, acgs_environment: Environment) -> None:
    """P99 response time stays at or below {p99_critical_seconds:g} s (above it: critical alert)."""
    _judge(slo, "p99", "P99 latency", acgs_environment.thresholds.p99_critical_seconds, "s", at_limit_fails=False)


@pytest.mark.p1
@pytest.mark.runbook("daily.key-metrics.error-rates", "alerts.warning.error-rate")
@pytest.mark.trended(promql="error_rate")
def test_error_rate_warning(slo: SloSnapshot, acgs_environment: Environment) -> None:
    """The share of 5xx responses stays below {error_rate_warning_percent:g} %, the runbook's target (at or above
    it: warning alert)."""
    _judge(slo, "error_rate", "5xx error rate", acgs_environment.thresholds.error_rate_warning_percent / 100, "%",
           at_limit_fails=True)


@pytest.mark.p0
@pytest.mark.runbook("alerts.critical.error-rate")
def test_error_rate_critical(slo: SloSnapshot, acgs_environment: Environment) -> None:
    """The share of 5xx responses stays at or below {error_rate_critical_percent:g} % (above it: critical alert)."""
    _judge(slo, "error_rate", "5xx error rate", acgs_environment.thresholds.error_rate_critical_percent / 100, "%",
           at_limit_fails=False)


@pytest.mark.p3
@pytest.mark.runbook("monitoring.application.client-errors")
def test_client_error_share(slo: SloSnapshot, acgs_environment: Environment) -> None:
    """4xx responses are evidence; above {client_error_max_percent:g} % they are worth a look (P3)."""
    _judge(slo, "client_error_rate", "4xx share", acgs_environment.thresholds.client_error_max_percent / 100, "%",
           at_limit_fails=False)


@pytest.mark.p2
@pytest.mark.runbook("monitoring.application.request-rate")
def test_request_rate_floor(slo: SloSnapshot, acgs_environment: Environment) -> None:
    """The service receives traffic: request rate above the floor (active connections are evidence)."""
    if "synthetic requests" in slo.source:
        not_applicable(f"{slo.target}: synthetic sampling sends its own traffic, so it cannot see the real rate")
    floor = acgs_environment.thresholds.request_rate_min_per_second
    rate = _value(slo, "request_rate")
    connections = slo.values.get("active_connections")
    extra = f", active connections {connections:g}" if connections is not None else ""
    judge(rate <= floor, f"{slo.target}: request rate {rate:.3f} req/s{extra} {_where(slo, 'request_rate')}",
          f"> {floor:g} req/s", value=rate, threshold=floor)


@pytest.mark.p2
@pytest.mark.runbook("monitoring.business.user-satisfaction")
@pytest.mark.trended
def test_user_satisfaction_apdex(slo: SloSnapshot, acgs_environment: Environment) -> None:
    """The service's Apdex score stays at or above {apdex_min_percent:g} % (satisfied within
    {apdex_t_seconds:g} s, tolerating within four times that; failed requests frustrate)."""
    t = acgs_environment.thresholds
    score = _value(slo, "apdex")
    if score > 1:
        fail(f"{slo.target}: unit: Apdex {score:g} {_where(slo, 'apdex')} cannot be right (a score lies in 0..1)")
    limit = t.apdex_min_percent / 100
    judge(score < limit, f"{slo.target}: Apdex {score:.3f} with T = {t.apdex_t_seconds:g} s {_where(slo, 'apdex')}",
          f"≥ {limit:.2f}", value=score, threshold=limit)


@pytest.mark.p0
@pytest.mark.runbook("monitoring.metrics-source")
@pytest.mark.reachability
def test_metrics_source_reachable(metrics_source_probe: SourceStatus) -> None:
    """The Prometheus HTTP API answers; without it no latency or error alert can be judged."""
    seen = metrics_source_probe
    require_answer(seen, "the metrics source")
    measure(f"metrics source {seen.url} answered", "the Prometheus HTTP API to answer")
