"""The alert rules a live Prometheus holds (``/api/v1/rules?type=alert``), for the daily drift check.

Read-only, one bounded GET; the monitoring account needs read access to the rules API only. The comparison with
the rules the runbook makes is :mod:`acgs_checks.alerting.drift`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from acgs_checks import kinds
from acgs_checks.kinds import Fixed
from acgs_checks.probes import prometheus as prom
from acgs_checks.records import JsonRecord


@dataclass(frozen=True)
class DeployedRules(JsonRecord):
    """Each alerting rule as Prometheus reports it: name, query (its own printing), duration (s), labels."""

    target: str
    source: str
    answered: bool
    error: str = ""
    denied: str = ""
    rules: list[dict[str, Any]] = field(default_factory=list)


async def probe_rules(target: Fixed, job: kinds.Job) -> DeployedRules:
    env = job.env
    assert env.prometheus is not None
    source = f"Prometheus {prom.shown(env.prometheus.url)} /api/v1/rules"
    result, document, unread = await prom.api_document(env.prometheus, "/api/v1/rules?type=alert")
    groups = ((document or {}).get("data") or {}).get("groups") if isinstance(document, dict) else None
    if not result.answered or not isinstance(groups, list):
        denied = "read access to Prometheus' /api/v1/rules for the monitoring account" \
            if result.status in (401, 403) else ""
        return DeployedRules(target.name, source, answered=False, denied=denied,
                             error=result.detail or f"HTTP {result.status}, {unread or 'expected the rules API JSON'}")
    rules = [{"name": str(rule.get("name", "")), "query": str(rule.get("query", "")),
              "duration": _duration(rule.get("duration")), "labels": _labels(rule.get("labels")),
              "group": str(group.get("name", ""))}
             for group in groups if isinstance(group, dict)
             for rule in _list(group.get("rules")) if isinstance(rule, dict) and rule.get("type") == "alerting"]
    return DeployedRules(target.name, source, answered=True, rules=rules)


# What Prometheus said is read by its shape: anything else is kept as "not what the runbook says", never raised on.
def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _labels(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _duration(value: Any) -> float:
    """Seconds; a value that is not a finite number of seconds is -1, which no generated rule has."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return -1.0
    return float(value)


RULES = kinds.register(kinds.ProbeKind(
    name="deployed_rules", section="prometheus", record=DeployedRules, probe=probe_rules,
    fixed={"deployed_rules_probe": "rules"},
    targets=lambda env: (Fixed("rules"),) if env.prometheus is not None else (),
    grant="read access to the Prometheus API (/api/v1/rules)",
    doc="the alerting rules the environment's Prometheus holds",
))
