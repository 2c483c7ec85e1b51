"""Latency, error-rate and traffic numbers per service, from one of three sources.

* ``prometheus``: PromQL instant queries against the Prometheus HTTP API over a window.
* ``synthetic``: the suite sends N bounded requests to the service's SLO endpoint and
  computes percentiles from the samples (linear interpolation, see ``metrics.percentile``).
* ``scrape``: two scrapes of the service's own ``/metrics`` a window apart; quantiles from
  the bucket increases with Prometheus's ``histogram_quantile`` rules.

Each returns an :class:`SloSnapshot`: measured values by key (p50, p95, p99, error_rate,
client_error_rate, request_rate, active_connections), each with the text of its source.
``None`` means no data, which the checks treat as a failure, never a pass.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from acgs_checks import metrics
from acgs_checks.environment import BusinessMetric, Prometheus, Service, SloSettings, display_url
from acgs_checks.probes import http
from acgs_checks.probes._record import JsonRecord

DEFAULT_QUERIES = {
    "p50": 'histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket{selector}[{window}])))',
    "p95": 'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{selector}[{window}])))',
    "p99": 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{selector}[{window}])))',
    # "or vector(0)": a service that never failed has no 5xx series at all, which is 0 %, not "no data";
    # with no requests at all the denominator stays empty and the result is no data, as it should.
    "error_rate": '(sum(rate(http_requests_total{selector,status=~"5.."}[{window}])) or vector(0)) '
                  '/ sum(rate(http_requests_total{selector}[{window}]))',
    "client_error_rate": '(sum(rate(http_requests_total{selector,status=~"4.."}[{window}])) or vector(0)) '
                         '/ sum(rate(http_requests_total{selector}[{window}]))',
    "request_rate": "sum(rate(http_requests_total{selector}[{window}]))",
    "active_connections": "sum(http_requests_in_flight{selector})",
}
DEFAULT_BUSINESS_QUERIES = {
    "compliance": "avg(acgs_constitutional_compliance_score)",
    "policy_success": '(sum(rate(acgs_policy_evaluations_total{result="success"}[{window}])) or vector(0)) '
                      "/ sum(rate(acgs_policy_evaluations_total[{window}]))",
}
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True)
class SloSnapshot(JsonRecord):
    """What one source said about one service. ``reachable`` False: the source itself failed."""

    target: str
    source: str
    window: str
    reachable: bool = True
    error: str = ""
    values: dict[str, float | None] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    # Quantiles the histogram cannot express: key -> [top finite bound, observations beyond it, total].
    ceilings: dict[str, list[float]] = field(default_factory=dict)
    # Quantiles made of requests that timed out: the true latency is at least this much.
    at_least: dict[str, float] = field(default_factory=dict)
    note: str = ""
    connections: int = 0  # synthetic: connections the sampler opened (keep-alive reuses them)


def shown(url: str) -> str:
    return display_url(url)


@dataclass(frozen=True)
class SourceStatus(JsonRecord):
    """Whether a metrics source (Prometheus) answers at all."""

    target: str
    url: str
    reachable: bool
    error: str = ""
    denied: str = ""   # access was refused: the credential to check


@dataclass(frozen=True)
class BusinessSnapshot(JsonRecord):
    target: str
    source: str
    value: float | None = None
    error: str = ""
    reachable: bool = True
    denied: str = ""


DENIED_STATUSES = (401, 403)
PROMETHEUS_DENIED = "[prometheus] username/password or bearer_token (or user:password@ in its url)"


def render(template: str, *, selector: str, window: str) -> str:
    """Fill the service's label matcher and the window into a PromQL template.

    ``metric{selector}`` becomes ``metric{service="auth"}``, ``metric{selector,status=~"5.."}``
    becomes ``metric{service="auth",status=~"5.."}``, and ``[{window}]`` becomes ``[5m]``.
    """
    text = template.replace("{selector}", "{" + selector + "}").replace("{selector,", "{" + selector + ",")
    return text.replace("{window}", window)


def service_queries(service: Service, prometheus: Prometheus, window: str) -> dict[str, str]:
    templates = {**DEFAULT_QUERIES, **dict(prometheus.queries), **dict(service.queries)}
    return {key: render(text, selector=service.selector, window=window) for key, text in templates.items()}


# --- Prometheus -------------------------------------------------------------------------------

def _auth_headers(prometheus: Prometheus) -> tuple[tuple[str, str], ...]:
    if prometheus.bearer_token:
        return (("Authorization", f"Bearer {prometheus.bearer_token}"),)
    if prometheus.username:
        token = base64.b64encode(f"{prometheus.username}:{prometheus.password}".encode()).decode()
        return (("Authorization", f"Basic {token}"),)
    return ()


async def _api(prometheus: Prometheus, path: str) -> tuple[http.HttpResult, Any]:
    result, body = await http.exchange(
        prometheus.url.rstrip("/") + path, target="prometheus", timeout=prometheus.timeout_seconds,
        headers=_auth_headers(prometheus), tls=prometheus.tls, body_limit=4 * 1024 * 1024)
    document: Any = None
    if result.reachable and body:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
    return result, document


async def _instant(prometheus: Prometheus, promql: str) -> tuple[dict[str, Any] | None, str]:
    """An instant query's ``data`` object, or None and what went wrong."""
    result, document = await _api(prometheus, "/api/v1/query?query=" + quote(promql, safe=""))
    if not result.reachable:
        return None, result.detail
    if not isinstance(document, dict) or document.get("status") != "success":
        reason = document.get("error") if isinstance(document, dict) else f"HTTP {result.status}"
        return None, f"query failed: {reason}"
    data = document.get("data")
    return (data, "") if isinstance(data, dict) else (None, "query failed: no data object in the answer")


async def query(prometheus: Prometheus, promql: str) -> tuple[float | None, str]:
    """An instant query: (the single value or None, what went wrong). Empty or NaN is no data."""
    data, error = await _instant(prometheus, promql)
    if data is None:
        return None, error
    found = data.get("result")
    if data.get("resultType") == "scalar":
        found = [{"value": found}]
    if not found:
        return None, f"no data for {promql}"
    if len(found) > 1:
        return None, f"{len(found)} series for {promql}; the query must return one (aggregate it)"
    value = float(found[0]["value"][1])
    if math.isnan(value):
        return None, f"no data for {promql} (NaN: nothing was observed in the window)"
    return value, ""


async def prometheus_reachable(prometheus: Prometheus) -> tuple[str, str]:
    """("", "") when the API answers; otherwise why not (one line), and for a refusal what to check."""
    result, document = await _api(prometheus, "/api/v1/status/buildinfo")
    if not result.reachable:
        return f"GET {result.url} → {result.detail}", ""
    if result.status in DENIED_STATUSES:
        return f"GET {result.url} → HTTP {result.status} {result.reason}".rstrip(), PROMETHEUS_DENIED
    if result.status != 200 or not isinstance(document, dict):
        return f"GET {result.url} → HTTP {result.status} (expected 200 with JSON)", ""
    return "", ""


BUCKETS_QUERY = "sum by (le) (rate(http_request_duration_seconds_bucket{selector}[{window}]))"


async def _buckets(prometheus: Prometheus, promql: str) -> list[tuple[float, float]]:
    """(le, rate) pairs of a ``sum by (le)`` query; empty when it gives nothing usable."""
    data, _error = await _instant(prometheus, promql)
    found: list[tuple[float, float]] = []
    for series in (data or {}).get("result") or []:
        try:
            found.append((metrics.parse_value(series["metric"]["le"]), float(series["value"][1])))
        except (KeyError, ValueError, TypeError, IndexError):
            return []
    return found


async def from_prometheus(service: Service, prometheus: Prometheus, settings: SloSettings) -> SloSnapshot:
    queries = service_queries(service, prometheus, settings.window)
    answers = await asyncio.gather(*(query(prometheus, text) for text in queries.values()))
    values = {key: value for key, (value, _) in zip(queries, answers, strict=True)}
    errors = {key: error for key, (_, error) in zip(queries, answers, strict=True) if error}
    # With the default quantile queries, the same buckets tell whether a quantile hit the top bucket.
    defaults = {key for key in QUANTILES
                if dict(service.queries).get(key, dict(prometheus.queries).get(key)) is None}
    ceilings: dict[str, list[float]] = {}
    if defaults:
        buckets = await _buckets(prometheus, render(BUCKETS_QUERY, selector=service.selector, window=settings.window))
        for key in defaults:
            capped = metrics.beyond_top_bucket(QUANTILES[key], buckets)
            if capped is not None:
                ceilings[key] = list(capped)
    return SloSnapshot(target=service.name, source=f"Prometheus {display_url(prometheus.url)}",
                       window=settings.window, values=values, sources=queries, errors=errors, ceilings=ceilings)


# --- synthetic sampling ------------------------------------------------------------------------

async def from_samples(service: Service, settings: SloSettings) -> SloSnapshot:
    """Send up to ``samples`` requests, ``concurrency`` at a time, none started after ``max_seconds``."""
    started = time.monotonic()
    results: list[http.HttpResult] = []
    queue = iter(range(settings.samples))
    # Keep-alive by default: at most one connection per request in flight, reused, as real clients do.
    pool = http.Pool() if settings.keepalive else None

    async def worker() -> None:
        for _ in queue:
            if time.monotonic() - started > settings.max_seconds:
                return
            result, _ = await http.exchange(service.slo_url, target=service.name,
                                            timeout=settings.request_timeout_seconds, headers=service.headers,
                                            tls=service.tls, pool=pool)
            results.append(result)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(settings.concurrency, settings.samples)))))
    finally:
        if pool is not None:
            pool.close()
    duration = time.monotonic() - started
    connections = pool.opened if pool is not None else len(results)
    endpoint = f"GET {display_url(service.slo_url)}"
    source = f"{len(results)} synthetic requests to {endpoint}"
    # Every request failing is a measurement too (100 % errors), not a reason to look away.
    note = f"every request failed: {results[0].detail}" if results and all(not r.reachable for r in results) else ""
    statuses: dict[str, int] = {}
    for r in results:
        key = str(r.status) if r.reachable else r.outcome
        statuses[key] = statuses.get(key, 0) + 1
    # Timing around the exchange only: from the request to the end of the body, without the connect
    # (or TLS) the sampler chose to make. A request that timed out took at least the timeout.
    latencies = [r.elapsed_seconds - (r.connect_seconds or 0.0) if r.reachable else r.timeout_seconds
                 for r in results]
    failed = sum(1 for r in results if not r.reachable or (r.status or 0) >= 500)
    client = sum(1 for r in results if r.reachable and 400 <= (r.status or 0) < 500)
    values: dict[str, float | None] = {key: metrics.percentile(latencies, q) if latencies else None
                                       for key, q in QUANTILES.items()}
    values.update({
        "error_rate": failed / len(results) if results else None,
        "client_error_rate": client / len(results) if results else None,
        "request_rate": len(results) / duration if results and duration > 0 else None,
        "active_connections": float(max(1, min(settings.concurrency, settings.samples))),
    })
    sources = {key: source for key in values}
    sources["active_connections"] = "the sampler's own concurrency"
    # A quantile that lands on a timed-out request is only known to be at least the timeout.
    timed_out = any(r.outcome in (http.TIMEOUT, http.CONNECT_TIMEOUT, http.TLS_TIMEOUT) for r in results)
    at_least = {key: settings.request_timeout_seconds for key in QUANTILES
                if timed_out and (values[key] or 0.0) >= settings.request_timeout_seconds}
    return SloSnapshot(target=service.name, source=source, window=f"{duration:.1f} s", values=values,
                       sources=sources, samples=len(results), statuses=statuses, at_least=at_least, note=note,
                       connections=connections)


# --- scraping /metrics -------------------------------------------------------------------------

_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"\s*')


def _selector_labels(selector: str) -> dict[str, str]:
    labels = {}
    for part in selector.split(","):
        match = _MATCHER.fullmatch(part)
        if match is None:
            raise ValueError(f"only name=\"value\" matchers work with the scrape source: {selector!r}")
        labels[match.group(1)] = match.group(2)
    return labels


async def from_scrapes(service: Service, settings: SloSettings) -> SloSnapshot:
    """Two scrapes ``scrape_window_seconds`` apart; the increases between them decide."""
    source = f"GET {display_url(service.metrics_url)} twice, {settings.scrape_window_seconds:g} s apart"
    window = f"{settings.scrape_window_seconds:g} s"
    samples = []
    for index in range(2):
        if index:
            await asyncio.sleep(settings.scrape_window_seconds)
        result, body = await http.exchange(service.metrics_url, target=service.name,
                                           timeout=service.timeout_seconds, headers=service.headers,
                                           tls=service.tls,
                                           body_limit=8 * 1024 * 1024)
        if not result.reachable or result.status != 200:
            return SloSnapshot(target=service.name, source=source, window=window, reachable=False,
                               error=f"GET {result.url} → {result.detail or result.status}")
        try:
            samples.append(metrics.parse_text(body.decode("utf-8", errors="replace")))
        except ValueError as exc:
            return SloSnapshot(target=service.name, source=source, window=window, reachable=False,
                               error=f"GET {result.url} → not the Prometheus text format ({exc})")
    before, after = samples
    # A service's own /metrics is all its own: no selector unless prometheus_selector narrows it.
    try:
        selector = _selector_labels(service.prometheus_selector) if service.prometheus_selector else {}
    except ValueError as exc:
        return SloSnapshot(target=service.name, source=source, window=window, reachable=False, error=str(exc))
    buckets = metrics.bucket_deltas(before, after, "http_request_duration_seconds_bucket", selector)
    total = metrics.counter_delta(before, after, "http_requests_total", selector)
    values: dict[str, float | None] = {}
    ceilings: dict[str, list[float]] = {}
    for key, q in QUANTILES.items():
        quantile = metrics.histogram_quantile(q, buckets)
        values[key] = None if math.isnan(quantile) else quantile
        capped = metrics.beyond_top_bucket(q, buckets)
        if capped is not None:
            ceilings[key] = list(capped)
    errors = metrics.counter_delta(before, after, "http_requests_total", selector, where="status", pattern="5..")
    client = metrics.counter_delta(before, after, "http_requests_total", selector, where="status", pattern="4..")
    values["error_rate"] = errors / total if total else None
    values["client_error_rate"] = client / total if total else None
    values["request_rate"] = total / settings.scrape_window_seconds if settings.scrape_window_seconds else None
    in_flight = [s.value for s in after if s.name == "http_requests_in_flight" and metrics.matches(s.labels, selector)]
    values["active_connections"] = sum(in_flight) if in_flight else None
    missing = {key: f"no data in {source}" for key, value in values.items() if value is None}
    return SloSnapshot(target=service.name, source=source, window=window, values=values,
                       sources={key: source for key in values}, errors=missing, samples=int(total), ceilings=ceilings)


# --- business metrics --------------------------------------------------------------------------

def _field(document: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(document, dict) and part in document:
            document = document[part]
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            raise KeyError(part)
    return document


def business_metrics(business: tuple[BusinessMetric, ...], prometheus: Prometheus | None) -> tuple[BusinessMetric, ...]:
    """The configured business metrics; with none configured but a Prometheus, the default queries."""
    if business or prometheus is None:
        return business
    return tuple(BusinessMetric(name=name, query=text) for name, text in DEFAULT_BUSINESS_QUERIES.items())


async def business_metric(metric: BusinessMetric, prometheus: Prometheus | None, window: str) -> BusinessSnapshot:
    """One business metric as a ratio (0..1), from its query or its JSON endpoint."""
    scale = 0.01 if metric.unit == "percent" else 1.0
    if metric.query:
        assert prometheus is not None
        text = metric.query.replace("{window}", window)
        value, error = await query(prometheus, text)
        unit = _unit_problem(value, metric.unit)
        return BusinessSnapshot(metric.name, f"PromQL {text}", None if value is None or unit else value * scale,
                                unit or error)
    source = f"GET {display_url(metric.url)} field {metric.field}"
    result, body = await http.exchange(metric.url, target=metric.name, timeout=metric.timeout_seconds,
                                       headers=metric.headers, tls=metric.tls)
    if not result.reachable or (result.status or 0) >= 400:
        denied = (f"the headers configured in [business.{metric.name}] (a token) and the endpoint's access rules"
                  if result.status in DENIED_STATUSES else "")
        return BusinessSnapshot(metric.name, source, None, f"GET {result.url} → {result.detail or result.status}",
                                reachable=False, denied=denied)
    try:
        raw = _field(json.loads(body), metric.field)
        value = float(raw)
    except (ValueError, KeyError, TypeError) as exc:
        return BusinessSnapshot(metric.name, source, None, f"no usable value at field {metric.field!r} ({exc})")
    unit = _unit_problem(value, metric.unit)
    if unit:
        return BusinessSnapshot(metric.name, source, None, unit)
    return BusinessSnapshot(metric.name, source, value * scale)


def _unit_problem(value: float | None, unit: str) -> str:
    """A value its unit cannot hold (a "ratio" of 90, a percent of 140, anything negative) is no measurement."""
    if value is None or math.isnan(value):
        return ""
    top = 1.0 if unit == "ratio" else 100.0
    if not 0 <= value <= top:
        other = 'unit = "percent"' if unit == "ratio" and 0 <= value <= 100 else "the source"
        return f"unit: {value:g} cannot be a {unit} (0..{top:g}); check {other}"
    return ""
