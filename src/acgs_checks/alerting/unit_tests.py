"""promtool unit tests for the generated rules (``acgs-checks alert-rules --tests FILE``).

For each rule whose query is one of the suite's defaults and whose inputs can be written as plain series, two
cases: the value just inside the line (no alert) and just outside it (the alert, with its labels and annotations
as Prometheus renders them). Covered: service down, the error rates, the business scores, host memory. Latency
quantiles, CPU, disks and inodes are not (their inputs are histograms and per-mode counters); the real-Prometheus
self-test covers latency end to end.
"""

from __future__ import annotations

import re
from typing import Any

from acgs_checks.alerting.drift import seconds, split
from acgs_checks.alerting.rules import PREFIX, Source, down_signal, rule_groups
from acgs_checks.environment import dialect
from acgs_checks.probes.prometheus import equality_matchers

_VALUE = re.compile(r"\{\{[^}]*\$value[^}]*\}\}")


def _render(text: str, value: float, unit: str) -> str:
    """The annotation as Prometheus renders it for this value (the templates rules.py writes)."""
    if unit == "percent-of-ratio":
        shown = f"{value * 100:.4g}%"  # humanizePercentage
    elif unit == "percent":
        shown = f"{value:.1f}"  # the template's own " %" follows
    else:
        shown = f"{value:g}"
    return _VALUE.sub(shown, text)


def _case(rule: dict[str, Any], series: list[dict[str, str]], value: float, unit: str, *, fires: bool,
          interval: float, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    hold = seconds(rule["for"])
    eval_s = int(hold + 6 * interval + 60)
    expected: list[dict[str, Any]] = []
    if fires:
        labels = {k: str(v) for k, v in rule["labels"].items()}
        labels.update(extra_labels or {})
        expected.append({"exp_labels": labels,
                         "exp_annotations": {k: _render(str(v), value, unit) for k, v in rule["annotations"].items()}})
    return {"interval": f"{interval:g}s", "input_series": series,
            "alert_rule_test": [{"eval_time": f"{eval_s}s", "alertname": rule["alert"], "exp_alerts": expected}]}


def _threshold(expr: str) -> float:
    """The number a generated rule compares against (drift.split reads it the same way from Prometheus)."""
    limit = split(expr)[2]
    assert limit is not None, expr  # every generated threshold rule ends in a comparison with a number
    return limit


def _counter(per_interval: float, count: int) -> str:
    """A counter growing by ``per_interval`` each interval, ``count`` intervals long (promtool's notation)."""
    return f"0+{per_interval:g}x{count}"


def tests_for(source: Source, rules_file: str) -> dict[str, Any]:
    env = source.env
    window = seconds(env.slo.window) or 300.0
    interval = max(1.0, window / 5)
    steps = 400
    cases: list[dict[str, Any]] = []
    groups = rule_groups(source)
    by_name: dict[tuple[str, str], dict[str, Any]] = {}
    for group in groups:
        for rule in group["rules"]:
            labels = rule["labels"]
            by_name[(rule["alert"], labels.get("service") or labels.get("metric") or labels.get("host") or "")] = rule
    for service in env.services:
        own = {**(dict(env.prometheus.queries.items()) if env.prometheus else {}), **dict(service.queries.items())}
        speaks = dialect.resolve(service, env.prometheus)
        down = by_name.get((PREFIX + "ServiceDown", service.name))
        if down is not None:
            probe = down_signal(service, speaks)
            extra = (equality_matchers(speaks.selector) if speaks.service_down == "up"
                     else {"instance": service.health_url})
            cases.append(_case(down, [{"series": probe, "values": f"1x{steps}"}], 1, "", fires=False,
                               interval=interval))
            cases.append(_case(down, [{"series": probe, "values": f"0x{steps}"}], 0, "", fires=True,
                               interval=interval, extra_labels=extra))
        if "error_rate" in own or not speaks.status_label:
            continue  # a query of the team's own (its inputs are unknown here), or no status label: no error rule
        for name in ("ErrorRateWarning", "ErrorRateCritical"):
            rule = by_name.get((PREFIX + name, service.name))
            if rule is None:
                continue
            limit = _threshold(rule["expr"])
            for share, fires in ((limit * 0.5, False), (min(1.0, limit * 2), True)):
                errors, total = round(share * 1000), 1000
                series = [{"series": f'{speaks.requests}{{{speaks.selector},{speaks.status_label}="500"}}',
                           "values": _counter(errors, steps)},
                          {"series": f'{speaks.requests}{{{speaks.selector},{speaks.status_label}="200"}}',
                           "values": _counter(total - errors, steps)}]
                cases.append(_case(rule, series, errors / total, "percent-of-ratio", fires=fires, interval=interval))
    compliance = by_name.get((PREFIX + "ComplianceScoreLow", "compliance"))
    names = dialect.business(env.prometheus.metrics if env.prometheus else None)
    if compliance is not None and names.queries()["compliance"] in compliance["expr"]:
        limit = _threshold(compliance["expr"])
        for score, fires in ((min(1.0, limit + 0.01), False), (limit - 0.05, True)):
            series = [{"series": names.compliance_score, "values": f"{score:g}x{steps}"}]
            cases.append(_case(compliance, series, score, "percent-of-ratio", fires=fires, interval=interval))
    for host in [h for h in env.section("hosts") if h.prometheus_selector]:
        memory = by_name.get((PREFIX + "HostMemoryHigh", host.name))
        if memory is None:
            continue
        limit = _threshold(memory["expr"])
        for used, fires in ((max(0.0, limit - 5.0), False), (min(100.0, limit + 5.0), True)):
            memory_total = 1000.0
            series = [{"series": f"node_memory_MemTotal_bytes{{{host.prometheus_selector}}}",
                       "values": f"{memory_total:g}x{steps}"},
                      {"series": f"node_memory_MemAvailable_bytes{{{host.prometheus_selector}}}",
                       "values": f"{memory_total * (100 - used) / 100:g}x{steps}"}]
            cases.append(_case(memory, series, used, "percent", fires=fires, interval=interval))
    return {"rule_files": [rules_file], "evaluation_interval": f"{interval:g}s", "tests": cases}
