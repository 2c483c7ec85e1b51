"""The Prometheus HTTP API: instant queries, whether it answers at all, and the ``metrics_source`` kind.

Every request is one bounded exchange (the Prometheus ``timeout_seconds``); credentials go in
an Authorization header built from the environment and are redacted from every output.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from acgs_checks import kinds, redaction
from acgs_checks.environment import Prometheus, display_url
from acgs_checks.maths import metrics
from acgs_checks.probes import http
from acgs_checks.records import JsonRecord


def shown(url: str) -> str:
    return display_url(url)


@dataclass(frozen=True)
class SourceStatus(JsonRecord):
    """Whether a metrics source (Prometheus) answers at all."""

    target: str
    url: str
    answered: bool
    error: str = ""
    denied: str = ""   # access was refused: the credential to check


DENIED_STATUSES = (401, 403)
PROMETHEUS_DENIED = "[prometheus] username/password or bearer_token (or user:password@ in its url)"


# --- Prometheus -------------------------------------------------------------------------------

def _auth_headers(prometheus: Prometheus) -> tuple[tuple[str, str], ...]:
    if prometheus.bearer_token:
        return (("Authorization", f"Bearer {prometheus.bearer_token}"),)
    if prometheus.username:
        token = base64.b64encode(f"{prometheus.username}:{prometheus.password}".encode()).decode()
        return (("Authorization", f"Basic {token}"),)
    return ()


# An answer larger than this is not read (100 k series of a vector are about 10 MiB): the query must aggregate.
ANSWER_LIMIT = 4 * 1024 * 1024
# What a Prometheus error says is kept up to this many characters.
ERROR_LIMIT = 300


async def api(prometheus: Prometheus, path: str) -> tuple[http.HttpResult, Any]:
    """One bounded GET of the API: the result, and the JSON document (None when none could be read whole)."""
    result, document, _why = await api_document(prometheus, path)
    return result, document


async def api_document(prometheus: Prometheus, path: str) -> tuple[http.HttpResult, Any, str]:
    """One bounded GET of the API: the result, the JSON document or None, and why there is none."""
    result, body = await http.exchange(
        prometheus.url.rstrip("/") + path, target="prometheus", timeout=prometheus.timeout_seconds,
        headers=_auth_headers(prometheus), tls=prometheus.tls, body_limit=ANSWER_LIMIT)
    if not result.answered:
        return result, None, result.detail
    document, why = http.json_body(result, body)
    return result, document, why


def _failure(result: http.HttpResult, document: Any, why: str) -> str:
    """What a failed API answer said: Prometheus's own errorType and error, or what came back instead."""
    if isinstance(document, dict) and document.get("status") == "error":
        kind = redaction.clip(str(document.get("errorType") or "error"), 40)
        said = redaction.clip(str(document.get("error") or ""), ERROR_LIMIT)
        return f"query failed: HTTP {result.status} {kind}: {said}"
    if why:
        return f"query failed: HTTP {result.status}, {why}"
    if not isinstance(document, dict):
        return f"query failed: HTTP {result.status}, expected a JSON object, got {type(document).__name__}"
    return f"query failed: HTTP {result.status}, status {redaction.clip(repr(document.get('status')), 40)}"


async def _instant(prometheus: Prometheus, promql: str, at: float | None = None) -> tuple[dict[str, Any] | None, str]:
    """An instant query's ``data`` object (evaluated now, or at the Unix time ``at``), or None and what went wrong."""
    when = "" if at is None else f"&time={at:.3f}"
    result, document, why = await api_document(prometheus, "/api/v1/query?query=" + quote(promql, safe="") + when)
    if not result.answered:
        return None, result.detail
    if not isinstance(document, dict) or document.get("status") != "success":
        return None, _failure(result, document, why)
    data = document.get("data")
    return (data, "") if isinstance(data, dict) else (None, "query failed: no data object in the answer")


def _sample(series: Any) -> float:
    """The value of one series of an instant answer (``[time, "value"]``); ValueError when it is not one."""
    try:
        return metrics.parse_value(str(series["value"][1]))
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a sample: {redaction.clip(repr(series), 80)}") from exc


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
    if not isinstance(found, list):
        return None, f"query failed: result of {promql} is not a list"
    if len(found) > 1:
        return None, f"{len(found)} series for {promql}; the query must return one (aggregate it)"
    try:
        value = _sample(found[0])
    except ValueError as exc:
        return None, f"query failed: {promql}: {redaction.clip(str(exc), ERROR_LIMIT)}"
    if math.isnan(value):
        return None, f"no data for {promql} (NaN: nothing was observed in the window)"
    if math.isinf(value):
        return None, f"no data for {promql} ({value:+}: not a measurable value)"
    return value, ""


async def vector(prometheus: Prometheus, promql: str, at: float | None = None) -> tuple[
        list[tuple[dict[str, str], float]], str]:
    """An instant query's series as (labels, value); NaN series are left out. Empty is no data."""
    data, error = await _instant(prometheus, promql, at)
    if data is None:
        return [], error
    found = []
    result = data.get("result") or []
    if not isinstance(result, list):
        return [], f"query failed: result of {promql} is not a list"
    for series in result:
        try:
            value = _sample(series)
            labels = {str(k): str(v) for k, v in (series.get("metric") or {}).items()}
        except (ValueError, AttributeError) as exc:
            return [], f"query failed: {promql}: {redaction.clip(str(exc), ERROR_LIMIT)}"
        if math.isinf(value):  # one series at ±Inf makes the whole answer unusable, not one series fewer
            return [], f"no data for {promql} (series {redaction.clip(str(labels), 120)} is {value:+})"
        if not math.isnan(value):
            found.append((labels, value))
    return found, "" if found else f"no data for {promql}"


async def prometheus_reachable(prometheus: Prometheus) -> tuple[str, str]:
    """("", "") when the API answers; otherwise why not (one line), and for a refusal what to check."""
    result, document = await api(prometheus, "/api/v1/status/buildinfo")
    if not result.answered:
        return f"GET {result.url} → {result.detail}", ""
    if result.status in DENIED_STATUSES:
        return f"GET {result.url} → HTTP {result.status} {result.reason}".rstrip(), PROMETHEUS_DENIED
    if result.status != 200 or not isinstance(document, dict):
        return f"GET {result.url} → HTTP {result.status} (expected 200 with JSON)", ""
    return "", ""


async def buckets(prometheus: Prometheus, promql: str) -> list[tuple[float, float]]:
    """(le, rate) pairs of a ``sum by (le)`` query; empty when it gives nothing usable."""
    data, _error = await _instant(prometheus, promql)
    found: list[tuple[float, float]] = []
    for series in (data or {}).get("result") or []:
        try:
            rate = _sample(series)
            found.append((metrics.parse_value(series["metric"]["le"]), rate))
        except (KeyError, ValueError, TypeError, IndexError):
            return []
        if not math.isfinite(rate):
            return []
    return found


async def reachable_once(job: kinds.Job, prometheus: Prometheus) -> tuple[str, str]:
    """Whether Prometheus answers, asked once per run however many probes need to know."""
    result: tuple[str, str] = await job.once("prometheus-reachable", lambda: prometheus_reachable(prometheus))
    return result


async def probe_source(prometheus: Prometheus, job: kinds.Job) -> SourceStatus:
    down, denied = await reachable_once(job, prometheus)
    return SourceStatus(target="prometheus", url=shown(prometheus.url), answered=not down, error=down, denied=denied)


METRICS_SOURCE = kinds.register(kinds.ProbeKind(
    name="metrics_source", section="prometheus", record=SourceStatus, probe=probe_source,
    fixed={"metrics_source_probe": "prometheus"},
    targets=lambda env: (env.prometheus,) if env.prometheus is not None else (),
    grant="read access to the Prometheus API",
    doc="whether the Prometheus HTTP API answers",
))


def blocked_by_source(target: str, error: str) -> kinds.Blocked:
    """The decision for a number that needed Prometheus when Prometheus did not answer: the metrics source's
    reachability case reports it."""
    return kinds.Blocked("metrics_source", "prometheus", f"has no data ({error})", subject=target)




# --- Prometheus's own view of its targets ------------------------------------------------------

_EQUALS = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*')
# Prometheus's targets are read up to this many (a fleet's worth); the answer is capped as every other.
TARGETS_LIMIT = 20_000


def label_value(value: str) -> str:
    """A PromQL label value inside double quotes (what :func:`equality_matchers` reads back)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def equality_matchers(selector: str) -> dict[str, str]:
    """The ``name="value"`` matchers of a selector (others are left out: they cannot name one target)."""
    found = {}
    for part in selector.split(","):
        match = _EQUALS.fullmatch(part)
        if match is not None:
            found[match.group(1)] = match.group(2).replace('\\"', '"').replace("\\\\", "\\")
    return found


async def scrape_targets(prometheus: Prometheus) -> tuple[list[dict[str, Any]], str]:
    """Prometheus's active targets (one bounded GET), or [] and what went wrong."""
    result, document, why = await api_document(prometheus, "/api/v1/targets?state=active")
    if not result.answered:
        return [], result.detail
    if not isinstance(document, dict) or document.get("status") != "success":
        return [], why or f"HTTP {result.status}: not a Prometheus targets answer"
    data = document.get("data")
    active = data.get("activeTargets") if isinstance(data, dict) else None
    if not isinstance(active, list):
        return [], "the answer has no data.activeTargets list"
    return [t for t in active[:TARGETS_LIMIT] if isinstance(t, dict)], ""


def down_reason(targets: list[dict[str, Any]], selector: str) -> str:
    """``Prometheus cannot scrape <instance>: <lastError>`` for the targets the selector names that are down, or ""
    (none named, or all up). Only the selector's job/instance matchers name a target."""
    wanted = {k: v for k, v in equality_matchers(selector).items() if k in ("job", "instance")}
    if not wanted:
        return ""
    down = []
    for target in targets:
        labels = target.get("labels")
        if not isinstance(labels, dict) or any(str(labels.get(k)) != v for k, v in wanted.items()):
            continue
        if target.get("health") != "up":
            instance = redaction.clip(str(labels.get("instance", "?")), 120)
            error = redaction.clip(str(target.get("lastError") or f"health {target.get('health')!s}"), ERROR_LIMIT)
            down.append(f"Prometheus cannot scrape {instance}: {redaction.mask_text(error)}")
    return "; ".join(down[:3])


async def scrape_health(job: kinds.Job, prometheus: Prometheus, selector: str) -> str:
    """Why Prometheus holds nothing for ``selector``, when its own targets say so (read once per run), or ""."""
    targets, _error = await job.once("prometheus-targets", lambda: scrape_targets(prometheus))
    return down_reason(targets, selector)
