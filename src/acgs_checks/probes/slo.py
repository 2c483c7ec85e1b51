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
import math
import re
import time
from dataclasses import dataclass, field

from acgs_checks import kinds, verdict
from acgs_checks.environment import Environment, Prometheus, Service, SloSettings, dialect, display_url
from acgs_checks.maths import metrics
from acgs_checks.probes import dialects, http
from acgs_checks.probes.prometheus import blocked_by_source, buckets, query, reachable_once, scrape_health
from acgs_checks.records import JsonRecord

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True)
class SloSnapshot(JsonRecord):
    """What one source said about one service. ``reachable`` False: the source itself failed."""

    target: str
    source: str
    window: str
    answered: bool = True
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
    denied: str = ""  # the target refused the suite: the credential or grant to check
    dialect: str = ""  # the metric names read (Prometheus and scrape sources)


def render(template: str, *, selector: str, window: str) -> str:
    """Fill the service's label matcher and the window into a PromQL template.

    ``metric{selector}`` becomes ``metric{service="auth"}``, ``metric{selector,status=~"5.."}``
    becomes ``metric{service="auth",status=~"5.."}``, and ``[{window}]`` becomes ``[5m]``.
    """
    text = template.replace("{selector}", "{" + selector + "}").replace("{selector,", "{" + selector + ",")
    return text.replace("{window}", window)


def service_queries(service: Service, prometheus: Prometheus | None, window: str) -> dict[str, str]:
    """The PromQL of each SLO number of one service: its metric dialect's, then the [prometheus] queries, then the
    service's own. The checks evaluate these, and the generated alert rules (acgs_checks.alerting) compare the same
    text. A number the dialect cannot express (no status label: no error rate) is absent."""
    configured = dict(prometheus.queries.items()) if prometheus is not None else {}
    templates = {**configured, **dict(service.queries.items())}
    found = dialect.resolve(service, prometheus).promql(window)
    found.update({key: render(text, selector=service.selector, window=window) for key, text in templates.items()})
    return found


SLO_KEYS = ("p50", "p95", "p99", "error_rate", "client_error_rate", "request_rate", "active_connections")


async def from_prometheus(service: Service, prometheus: Prometheus, settings: SloSettings, *,
                          apdex_t: float, job: kinds.Job | None = None) -> SloSnapshot:
    speaks = dialect.resolve(service, prometheus)
    queries = service_queries(service, prometheus, settings.window)
    answers = await asyncio.gather(*(query(prometheus, text) for text in queries.values()))
    values: dict[str, float | None] = {key: None for key in SLO_KEYS}
    values.update({key: value for key, (value, _) in zip(queries, answers, strict=True)})
    errors = {key: error for key, (_, error) in zip(queries, answers, strict=True) if error}
    errors.update({key: speaks.missing(key) for key in SLO_KEYS if key not in queries})
    sources = dict(queries)
    # The buckets tell whether a default quantile hit the top bucket, and give Apdex.
    defaults = {key for key in QUANTILES
                if dict(service.queries.items()).get(key, dict(prometheus.queries.items()).get(key)) is None}
    ceilings: dict[str, list[float]] = {}
    bucket_query = speaks.buckets_promql(settings.window)
    found = await buckets(prometheus, bucket_query) if speaks.histogram else []
    for key in defaults:
        capped = metrics.beyond_top_bucket(QUANTILES[key], found)
        if capped is not None:
            ceilings[key] = list(capped)
    _apdex(values, sources, errors, metrics.apdex_from_buckets(found, apdex_t), bucket_query)
    if not speaks.histogram:
        errors["apdex"] = speaks.missing("apdex")
    note = ""
    if any(values[key] is None for key in ("p95", "error_rate", "request_rate")) and job is not None:
        # Nothing for a target Prometheus cannot scrape: its own view says why, and that is the message.
        scraped = await scrape_health(job, prometheus, service.selector)
        if scraped:
            errors = {key: scraped if values.get(key) is None else why for key, why in errors.items()}
            note = scraped
        elif any(why.startswith("no data for") for why in errors.values()):
            hint = await _hint(prometheus, service, speaks)
            errors = {key: f"{why}; {hint}" if why.startswith("no data for") else why for key, why in errors.items()}
    return SloSnapshot(target=service.name, source=f"Prometheus {display_url(prometheus.url)}",
                       window=settings.window, values=values, sources=sources, errors=errors, ceilings=ceilings,
                       note=note, dialect=speaks.summary())


async def _hint(prometheus: Prometheus, service: Service, speaks: dialect.Dialect) -> str:
    """The fix for series that are not there: what the target does expose that looks like request metrics (by shape,
    :mod:`acgs_checks.probes.dialects`), as the line to paste; or that it exposes nothing of that shape."""
    found = await dialects.learn(prometheus, service.selector)
    if not found.seen:
        return (f"fix: Prometheus holds no series at all for {{{service.selector}}}: check the service's "
                "prometheus_selector against the target's job and instance labels")
    differs = any(found.table.get(key, value) != value for key, value in (("histogram", speaks.histogram),
                                                                           ("counter", speaks.counter)))
    if found.usable and differs:
        return (f"fix: the target exposes {found.evidence}; in the [[services]] entry {service.name!r} write "
                f"{found.paste()}")
    return (f"fix: nothing {{{service.selector}}} exposes looks like request metrics (it has: "
            f"{', '.join(found.seen[:12])}); write its metrics table by hand (docs/metric-dialects.md)")


def _apdex(values: dict[str, float | None], sources: dict[str, str], errors: dict[str, str], found: metrics.Apdex,
           source: str) -> None:
    """The Apdex score into the snapshot: the value, its source with how T and 4T were read, or why not."""
    values["apdex"] = found.score
    sources["apdex"] = f"{source}; {found.note}"
    if found.score is None:
        errors["apdex"] = found.note


# --- synthetic sampling ------------------------------------------------------------------------

async def from_samples(service: Service, settings: SloSettings, *, apdex_t: float) -> SloSnapshot:
    """Send up to ``samples`` requests, ``concurrency`` at a time, none started after ``max_seconds``."""
    started = time.monotonic()
    results: list[http.HttpResult] = []
    queue = iter(range(settings.samples))
    # Keep-alive by default: at most one connection per request in flight, reused, as real clients do.
    pool = http.Pool(settings.concurrency) if settings.keepalive else None

    async def worker() -> None:
        for _ in queue:
            if time.monotonic() - started > settings.max_seconds:
                return
            result, _ = await http.exchange(service.slo_url, target=service.name,
                                            timeout=settings.request_timeout_seconds,
                                            headers=tuple(service.headers.items()), tls=service.tls, pool=pool)
            results.append(result)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(settings.concurrency, settings.samples)))))
    finally:
        if pool is not None:
            await pool.aclose()
    duration = time.monotonic() - started
    connections = pool.opened if pool is not None else len(results)
    endpoint = f"GET {display_url(service.slo_url)}"
    source = f"{len(results)} synthetic requests to {endpoint}"
    # Every request failing is a measurement too (100 % errors), not a reason to look away.
    note = f"every request failed: {results[0].detail}" if results and all(not r.answered for r in results) else ""
    statuses: dict[str, int] = {}
    for r in results:
        key = str(r.status) if r.answered else r.outcome
        statuses[key] = statuses.get(key, 0) + 1
    # The server's time: from the request's last byte to the answer's first byte reaching the loop,
    # without the connect (or TLS) the sampler chose to make, and without the client's own parsing,
    # which a busy machine would add. A request that timed out took at least the timeout.
    latencies = [_latency(r) if r.answered else r.timeout_seconds for r in results]
    bad = [not r.answered or (r.status or 0) >= 500 for r in results]
    failed = sum(bad)
    client = sum(1 for r in results if r.answered and 400 <= (r.status or 0) < 500)
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
    apdex_errors: dict[str, str] = {}
    _apdex(values, sources, apdex_errors, metrics.apdex_from_samples(latencies, bad, apdex_t), source)
    # A quantile that lands on a timed-out request is only known to be at least the timeout.
    timed_out = any(r.outcome in (http.TIMEOUT, http.CONNECT_TIMEOUT, http.TLS_TIMEOUT) for r in results)
    at_least = {key: settings.request_timeout_seconds for key in QUANTILES
                if timed_out and (values[key] or 0.0) >= settings.request_timeout_seconds}
    return SloSnapshot(target=service.name, source=source, window=f"{duration:.1f} s", values=values,
                       sources=sources, samples=len(results), statuses=statuses, at_least=at_least, note=note,
                       connections=connections, errors=apdex_errors)


# --- scraping /metrics -------------------------------------------------------------------------

_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"\s*')


def _latency(result: http.HttpResult) -> float:
    if result.response_seconds is not None:
        return result.response_seconds
    return result.elapsed_seconds - (result.connect_seconds or 0.0)


def _selector_labels(selector: str) -> dict[str, str]:
    labels = {}
    for part in selector.split(","):
        match = _MATCHER.fullmatch(part)
        if match is None:
            raise ValueError(f"only name=\"value\" matchers work with the scrape source: {selector!r}")
        labels[match.group(1)] = match.group(2)
    return labels


async def from_scrapes(service: Service, settings: SloSettings, *, apdex_t: float,
                       job: kinds.Job | None = None) -> SloSnapshot:
    """Two scrapes ``scrape_window_seconds`` apart; the increases between them decide."""
    source = f"GET {display_url(service.metrics_url)} twice, {settings.scrape_window_seconds:g} s apart"
    window = f"{settings.scrape_window_seconds:g} s"
    samples = []
    for index in range(2):
        if index:
            await asyncio.sleep(settings.scrape_window_seconds)
        result, body = await http.exchange(service.metrics_url, target=service.name,
                                           timeout=service.timeout_seconds, headers=tuple(service.headers.items()),
                                           tls=service.tls,
                                           body_limit=8 * 1024 * 1024)
        if not result.answered or result.status != 200:
            return SloSnapshot(target=service.name, source=source, window=window, answered=False,
                               error=f"GET {result.url} → {result.detail or result.status}")
        try:
            samples.append(metrics.parse_text(body.decode("utf-8", errors="replace")))
        except ValueError as exc:
            return SloSnapshot(target=service.name, source=source, window=window, answered=False,
                               error=f"GET {result.url} → not the Prometheus text format ({exc})")
    before, after = samples
    speaks = dialect.resolve(service, None if job is None else job.env.prometheus)
    # A service's own /metrics is all its own: the selector's target labels (job, instance: Prometheus attaches
    # them) are not in it; any other matcher of prometheus_selector narrows the series.
    try:
        selector = {k: v for k, v in (_selector_labels(service.prometheus_selector) if service.prometheus_selector
                                      else {}).items() if k not in dialect.TARGET_LABELS}
    except ValueError as exc:
        return SloSnapshot(target=service.name, source=source, window=window, answered=False, error=str(exc))
    return _from_two(service.name, before, after, speaks, selector, source=source, window=window,
                     seconds=settings.scrape_window_seconds, apdex_t=apdex_t)


def _from_two(target: str, before: list[metrics.Sample], after: list[metrics.Sample], speaks: dialect.Dialect,
              selector: dict[str, str], *, source: str, window: str, seconds: float, apdex_t: float) -> SloSnapshot:
    """The SLO numbers from two scrapes, read with the service's dialect; a series that is not there is no data."""
    names = {s.name for s in after if metrics.matches(s.labels, selector)}
    seen = ", ".join(sorted(names)[:8]) or "no series"
    absent: dict[str, str] = {}
    values: dict[str, float | None] = {key: None for key in SLO_KEYS}
    ceilings: dict[str, list[float]] = {}
    if speaks.buckets in names:
        buckets = metrics.bucket_deltas(before, after, speaks.buckets, selector)
        for key, q in QUANTILES.items():
            quantile = metrics.histogram_quantile(q, buckets)
            values[key] = None if math.isnan(quantile) else quantile
            capped = metrics.beyond_top_bucket(q, buckets)
            if capped is not None:
                ceilings[key] = list(capped)
    else:
        buckets = []
        absent.update({key: f"no {speaks.buckets} series in {source} (it has: {seen})" for key in QUANTILES})
    if speaks.requests in names:
        total = metrics.counter_delta(before, after, speaks.requests, selector)
        if speaks.status_label:
            errors = metrics.counter_delta(before, after, speaks.requests, selector, where=speaks.status_label,
                                           pattern="5..")
            client = metrics.counter_delta(before, after, speaks.requests, selector, where=speaks.status_label,
                                           pattern="4..")
            values["error_rate"] = errors / total if total else None
            values["client_error_rate"] = client / total if total else None
        values["request_rate"] = total / seconds if seconds else None
    else:
        total = 0.0
        absent.update({key: f"no {speaks.requests} series in {source} (it has: {seen})"
                       for key in ("error_rate", "client_error_rate", "request_rate")})
    if speaks.in_flight:
        in_flight = [s.value for s in after if s.name == speaks.in_flight and metrics.matches(s.labels, selector)]
        values["active_connections"] = sum(in_flight) if in_flight else None
    missing = {key: absent.get(key) or _gap(speaks, key) or f"no data in {source}"
               for key, value in values.items() if value is None}
    # Each number names the series of the dialect it was read from.
    status = f'{{{speaks.status_label}=~"5.."}}' if speaks.status_label else ""
    series = {**dict.fromkeys(QUANTILES, speaks.buckets), "error_rate": f"{speaks.requests}{status}",
              "client_error_rate": f"{speaks.requests}{status.replace('5..', '4..')}",
              "request_rate": speaks.requests, "active_connections": speaks.in_flight}
    sources = {key: f"{source} ({series[key]})" if series.get(key) else source for key in values}
    _apdex(values, sources, missing, metrics.apdex_from_buckets(buckets, apdex_t), f"{speaks.buckets} increases")
    return SloSnapshot(target=target, source=source, window=window, values=values, sources=sources,
                       errors=missing, samples=int(total), ceilings=ceilings, dialect=speaks.summary())


def _gap(speaks: dialect.Dialect, key: str) -> str:
    """Why a number is absent because of the dialect itself (no status label, no in-flight gauge), or ""."""
    if (key in ("error_rate", "client_error_rate") and not speaks.status_label) or (
            key == "active_connections" and not speaks.in_flight):
        return speaks.missing(key)
    return ""


# --- the kind -----------------------------------------------------------------------------------

# How an SLO result says its service's health probe failed, so sampling left it alone.
NOT_MEASURED = "not measured:"


async def probe(service: Service, job: kinds.Job) -> SloSnapshot:
    """The numbers from the environment's source.

    With Prometheus, first ask (once per run) whether it answers at all. Sampling or scraping
    waits for the service's health probe when that runs too, and leaves a service that did not
    answer alone: its health case already fails, and sampling a dead service would only wait
    out the request timeout many times over.
    """
    env, settings = job.env, job.env.slo
    if settings.source == "prometheus" and env.prometheus is not None:
        down, _ = await reachable_once(job, env.prometheus)
        if down:
            return SloSnapshot(target=service.name, source=f"Prometheus {display_url(env.prometheus.url)}",
                               window=settings.window, answered=False, error=down)
        return await from_prometheus(service, env.prometheus, settings, apdex_t=env.thresholds.apdex_t_seconds,
                                     job=job)
    health = job.before
    if isinstance(health, http.HttpResult) and not health.answered:
        return SloSnapshot(target=service.name, source=settings.source, window="-", answered=False,
                           error=f"{NOT_MEASURED} {health.detail}")
    if settings.source == "scrape":
        return await from_scrapes(service, settings, apdex_t=env.thresholds.apdex_t_seconds, job=job)
    return await from_samples(service, settings, apdex_t=env.thresholds.apdex_t_seconds)


def _gate(seen: SloSnapshot, env: Environment) -> kinds.Decision | kinds.Blocked | None:
    """Blocked only by what failed for the same reason: the metrics source, or the health probe that
    stopped the sampling; anything else the source could not read is no data."""
    if seen.answered:
        return None
    if env.slo.source == "prometheus":
        return blocked_by_source(seen.target, seen.error)
    if seen.error.startswith(NOT_MEASURED):
        return kinds.Blocked("service", seen.target, f"has no SLO data ({seen.error})")
    return lambda: verdict.no_data(f"{seen.target}: {seen.error} (source: {seen.source})")


SLO = kinds.register(kinds.ProbeKind(
    name="slo", section="slo", record=SloSnapshot, probe=probe, param="service", fixture="slo_probe",
    targets=lambda env: env.services, after="service", timing=lambda env: env.slo.source == "synthetic",
    gate=kinds.Gate(_gate, fixture="slo", doc="the numbers; blocked when the metrics source or the health probe "
                    "failed, no data when the source could not read them"),
    grant="network access to the SLO URL (synthetic) or to /metrics (scrape), or read access to the Prometheus API",
    doc="latency, error and traffic numbers per service",
))
