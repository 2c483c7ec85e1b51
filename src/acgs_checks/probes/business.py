"""The runbook's business metrics (constitutional compliance, policy evaluation success), and their kind.

Each comes from a PromQL query or a JSON endpoint and a dotted field path; the value is kept
as a ratio (0..1) whatever unit the source speaks, and a value its unit cannot hold is no data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from acgs_checks import kinds, redaction
from acgs_checks.environment import BusinessMetric, Environment, Prometheus, dialect, display_url
from acgs_checks.probes import http
from acgs_checks.probes.prometheus import DENIED_STATUSES, blocked_by_source, query, reachable_once
from acgs_checks.records import JsonRecord


@dataclass(frozen=True)
class BusinessSnapshot(JsonRecord):
    target: str
    source: str
    value: float | None = None
    error: str = ""
    answered: bool = True
    denied: str = ""


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
    """The configured business metrics; with none configured but a Prometheus, the queries of its metric dialect
    (``[prometheus.metrics]``: the compliance gauge and the policy evaluation counters)."""
    if business or prometheus is None:
        return business
    return tuple(BusinessMetric(name=name, query=text)
                 for name, text in dialect.business(prometheus.metrics).queries().items())


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
                                       headers=tuple(metric.headers.items()), tls=metric.tls)
    if not result.answered or (result.status or 0) >= 400:
        denied = (f"the headers configured in [business.{metric.name}] (a token) and the endpoint's access rules"
                  if result.status in DENIED_STATUSES else "")
        return BusinessSnapshot(metric.name, source, None, f"GET {result.url} → {result.detail or result.status}",
                                answered=False, denied=denied)
    document, why = http.json_body(result, body)
    if why:
        return BusinessSnapshot(metric.name, source, None, f"GET {result.url} → {why}")
    try:
        raw = _field(document, metric.field)
        value = float(raw)
    except (ValueError, KeyError, TypeError) as exc:
        return BusinessSnapshot(metric.name, source, None,
                                f"no usable value at field {metric.field!r} ({redaction.clip(str(exc), 200)})")
    if not math.isfinite(value):
        return BusinessSnapshot(metric.name, source, None, f"field {metric.field!r} is {value} (not a finite number)")
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


def targets(env: Environment) -> tuple[BusinessMetric, ...]:
    return business_metrics(env.business.metrics(), env.prometheus)


async def probe(metric: BusinessMetric, job: kinds.Job) -> BusinessSnapshot:
    prometheus = job.env.prometheus
    if metric.query and prometheus is not None:
        down, _ = await reachable_once(job, prometheus)
        if down:
            return BusinessSnapshot(metric.name, f"PromQL {metric.query}", None, down, answered=False)
    return await business_metric(metric, prometheus, job.env.slo.window)


def _gate(seen: BusinessSnapshot, env: Environment) -> kinds.Blocked | None:
    del env
    if not seen.answered and seen.source.startswith("PromQL"):
        return blocked_by_source(seen.target, seen.error)
    return None


BUSINESS = kinds.register(kinds.ProbeKind(
    name="business", section="business", record=BusinessSnapshot, probe=probe, targets=targets,
    fixed={"compliance_probe": "compliance", "policy_success_probe": "policy_success"},
    gate=kinds.Gate(_gate), grant="read access to the metric URLs, or to the Prometheus API",
    doc="the compliance score and the policy evaluation success rate, as ratios",
))
