"""A service's metric dialect, decided once: the one place where request and business metric names live.

ACGS-2's services name their metrics their own way (``auth_service_request_duration_seconds`` with no labels,
``acgs_http_requests_total{status_code}``, ...). Every consumer (the PromQL source, the scrape source, the quantiles,
error and request rates, Apdex, the business metrics, the generated alert rules, their promtool tests and the drift
check) takes the names from a :class:`Dialect`, resolved here from the service's ``metrics`` table, then
``[prometheus.metrics]``, then :data:`DEFAULTS`. ``acgs-checks init`` writes the table from what Prometheus holds
(:mod:`acgs_checks.probes.dialects`); docs/metric-dialects.md says how it decides.

A self-test (tests/test_dialects.py) fails when any other module of the package spells one of these default names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acgs_checks.environment.metric_names import PrometheusMetrics
from acgs_checks.environment.model import Prometheus, Service

# The request-count sentinel: "count requests with the histogram's own _count series".
HISTOGRAM_COUNT = "histogram_count"

# The names a service speaks unless its environment says otherwise (the sandbox's older, generic dialect and the
# common client libraries' shape).
DEFAULTS: dict[str, str] = {
    "histogram": "http_request_duration_seconds",
    "counter": "http_requests_total",
    "status_label": "status",
    "in_flight": "http_requests_in_flight",
    "service_down": "probe_success",
}
# The business metrics' names unless [prometheus.metrics] gives ACGS-2's own (init writes what it finds).
BUSINESS_DEFAULTS: dict[str, str] = {
    "compliance_score": "acgs_constitutional_compliance_score",
    "policy_evaluations": "acgs_policy_evaluations_total",
    "policy_result_label": "result",
    "policy_success_value": "success",
    "policy_successful": "",
    "policy_failed": "",
}
# Where each field of a dialect comes from, as a reader of a message sees it.
FIELDS = ("histogram", "counter", "status_label", "in_flight", "service_down")
# Which fields of the dialect each check reads (the check catalog prints it; a self-test holds it to the checks).
READS: dict[str, tuple[str, ...]] = {
    "test_p95_latency": ("histogram", "selector"),
    "test_p99_latency_target": ("histogram", "selector"),
    "test_p99_latency_critical": ("histogram", "selector"),
    "test_user_satisfaction_apdex": ("histogram", "selector"),
    "test_error_rate_warning": ("counter", "status_label", "selector"),
    "test_error_rate_critical": ("counter", "status_label", "selector"),
    "test_client_error_share": ("counter", "status_label", "selector"),
    "test_request_rate_floor": ("counter", "in_flight", "selector"),
    "test_constitutional_compliance": ("compliance_score",),
    "test_policy_evaluation_success": ("policy_evaluations", "policy_result_label", "policy_success_value",
                                       "policy_successful", "policy_failed"),
    "test_alert_rules_match_the_runbook": ("histogram", "counter", "status_label", "service_down", "selector"),
}
# Labels Prometheus attaches to every series of a target: a service's own /metrics never carries them.
TARGET_LABELS = frozenset({"job", "instance"})


@dataclass(frozen=True)
class Dialect:
    """The names one service's request metrics go by, and the selector that picks its series."""

    histogram: str
    counter: str            # a counter's name, or HISTOGRAM_COUNT
    status_label: str       # "": the metrics carry no status (no error rate can be read)
    in_flight: str          # "": no in-flight gauge
    service_down: str       # probe_success | up
    selector: str
    origin: dict[str, str]  # field -> where its value came from: "service", "[prometheus.metrics]" or "default"
    bounds: tuple[float, ...] = ()  # the histogram's finite bucket bounds when known (init learns them); () unknown

    @property
    def buckets(self) -> str:
        return f"{self.histogram}_bucket"

    @property
    def requests(self) -> str:
        """The series that counts requests ("" when the dialect has none)."""
        if self.counter == HISTOGRAM_COUNT:
            return f"{self.histogram}_count" if self.histogram else ""
        return self.counter

    def summary(self) -> str:
        """One line for messages and evidence: the names, and the selector."""
        status = f"{{{self.status_label}}}" if self.status_label else " (no status label)"
        return f"histogram {self.histogram}, requests {self.requests}{status}, selector {{{self.selector}}}"

    def promql(self, window: str) -> dict[str, str]:
        """The PromQL of each SLO number; a number the dialect cannot express is left out (the probe says why)."""
        sel, w = self.selector, window
        found: dict[str, str] = {}
        if self.histogram:
            quantile = f"sum by (le) (rate({self.buckets}{{{sel}}}[{w}]))"
            found.update({key: f"histogram_quantile({q}, {quantile})" for key, q in (("p50", 0.5), ("p95", 0.95),
                                                                                     ("p99", 0.99))})
        total = f"sum(rate({self.requests}{{{sel}}}[{w}]))"
        if self.requests:
            found["request_rate"] = total
        if self.status_label and self.requests:
            # "or vector(0)": a service that never failed has no 5xx series at all, which is 0 %, not "no data";
            # with no requests at all the denominator stays empty and the result is no data, as it should.
            for key, klass in (("error_rate", "5"), ("client_error_rate", "4")):
                found[key] = (f'(sum(rate({self.requests}{{{sel},{self.status_label}=~"{klass}.."}}[{w}])) '
                              f"or vector(0)) / {total}")
        if self.in_flight:
            found["active_connections"] = f"sum({self.in_flight}{{{sel}}})"
        return found

    def lacks_bounds(self, *bounds: float) -> list[float]:
        """Of ``bounds``, those that are no bucket bound of the histogram (when its bounds are known)."""
        return [b for b in bounds if self.bounds and not any(abs(b - x) <= 1e-9 * max(1.0, b) for x in self.bounds)]

    def buckets_promql(self, window: str) -> str:
        return f"sum by (le) (rate({self.buckets}{{{self.selector}}}[{window}]))"

    def missing(self, key: str) -> str:
        """Why the dialect has no query for ``key``, with the line that gives it one."""
        if key in ("p50", "p95", "p99", "apdex") and not self.histogram:
            return ("the service's metric dialect names no request-duration histogram (init found none); fix: set "
                    'metrics = { histogram = "<name without _bucket>" } in its [[services]] entry')
        if key in ("error_rate", "client_error_rate", "request_rate") and not self.requests:
            return ("the service's metric dialect names no request counter and no histogram; fix: set "
                    'metrics = { counter = "<name>_total" } in its [[services]] entry')
        if key in ("error_rate", "client_error_rate"):
            return ("the metric dialect names no status label, so no error rate can be read from "
                    f"{self.requests}; fix: set status_label in the service's metrics table")
        if key == "active_connections":
            return "the metric dialect names no in-flight gauge (evidence only)"
        return f"the metric dialect has no query for {key}"


def resolve(service: Service, prometheus: Prometheus | None) -> Dialect:
    """The dialect of ``service``: its own metrics table, then [prometheus.metrics], then the defaults."""
    own = service.metrics.given()
    shared = prometheus.metrics.given() if prometheus is not None else {}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key in FIELDS:
        if key in own:
            values[key], origin[key] = own[key], "service"
        elif key in shared:
            values[key], origin[key] = shared[key], "[prometheus.metrics]"
        else:
            values[key], origin[key] = DEFAULTS[key], "default"
    bounds = own.get("buckets") if "histogram" in own or "buckets" in own else shared.get("buckets")
    return Dialect(selector=service.selector, origin=origin, bounds=tuple(bounds or ()), **values)


@dataclass(frozen=True)
class BusinessNames:
    compliance_score: str
    policy_evaluations: str
    policy_result_label: str
    policy_success_value: str
    policy_successful: str
    policy_failed: str

    def queries(self) -> dict[str, str]:
        """The business metrics' default PromQL ({window} is filled in by the probe)."""
        if self.policy_successful and self.policy_failed:
            ok = f"sum(rate({self.policy_successful}[{{window}}]))"
            bad = f"sum(rate({self.policy_failed}[{{window}}]))"
            policy = f"({ok} or vector(0)) / (({ok} or vector(0)) + ({bad} or vector(0)))"
        else:
            policy = (f'(sum(rate({self.policy_evaluations}{{{self.policy_result_label}="{self.policy_success_value}"}}'
                      f"[{{window}}])) or vector(0)) / sum(rate({self.policy_evaluations}[{{window}}]))")
        return {"compliance": f"avg({self.compliance_score})", "policy_success": policy}


def business(metrics: PrometheusMetrics | None) -> BusinessNames:
    given = metrics.given() if metrics is not None else {}
    return BusinessNames(**{key: given.get(key, default) for key, default in BUSINESS_DEFAULTS.items()})
