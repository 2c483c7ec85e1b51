"""Drift between the alert rules the runbook makes (:mod:`acgs_checks.alerting.rules`) and those a Prometheus holds.

A rule is known by its alert name and its target (the ``service``, ``host`` or ``metric`` label). The comparison
is semantic where it must be: whitespace and the order of label matchers do not matter (Prometheus prints a rule's
expression its own way), the threshold is compared as a number, the ``for:`` duration in seconds, and the
``severity`` and ``runbook`` labels as written. A deployed rule that carries ``generator="acgs_checks"`` but that
the runbook does not make is a difference too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from acgs_checks.alerting.rules import LABEL_SOURCE

TARGET_LABELS = ("service", "host", "metric")
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)\s*(-?[0-9.]+(?:e[-+]?[0-9]+)?)\s*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}

Key = tuple[str, str]


def _key(name: str, labels: Mapping[str, Any]) -> Key:
    return name, next((str(labels[label]) for label in TARGET_LABELS if label in labels), "")


def shown(key: Key) -> str:
    return f"{key[0]}[{key[1]}]" if key[1] else key[0]


def seconds(duration: str | float) -> float:
    """A ``for:`` duration ("2m", "1h30m") or Prometheus's seconds, in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(duration))


def _matchers_sorted(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        parts = re.findall(r'[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"', match.group(1))
        return "{" + ",".join(sorted(p.replace(" ", "") for p in parts)) + "}"

    return re.sub(r"\{((?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*)\}", one, text)


def split(expr: str) -> tuple[str, str, float | None]:
    """(the expression left of its final comparison, normalised; the operator; the threshold), or (expr, "", None)."""
    match = _COMPARISON.search(expr)
    body, op, number = (expr[: match.start()], match.group(1), float(match.group(2))) if match else (expr, "", None)
    return re.sub(r"\s+", "", _matchers_sorted(body)), op, number


def expected(groups: Iterable[Mapping[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The generated rules, by (alert, target)."""
    return {_key(rule["alert"], rule["labels"]): rule for group in groups for rule in group["rules"]}


def differences(wanted: Mapping[Key, Mapping[str, Any]], deployed: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per difference, naming the rule: missing, a threshold, an operator, an expression, ``for:``, a
    severity or runbook label, or a rule of this project's that the runbook does not make."""
    found: dict[Key, Mapping[str, Any]] = {}
    for rule in deployed:
        found.setdefault(_key(str(rule.get("name", "")), rule.get("labels") or {}), rule)
    lines = []
    for key, rule in sorted(wanted.items()):
        live = found.get(key)
        if live is None:
            lines.append(f"{shown(key)}: missing in Prometheus")
            continue
        lines += [f"{shown(key)}: {said}" for said in _compare(rule, live)]
    for key, live in sorted(found.items()):
        if key not in wanted and (live.get("labels") or {}).get("generator") == LABEL_SOURCE:
            lines.append(f"{shown(key)}: in Prometheus with generator={LABEL_SOURCE}, but the runbook makes no "
                         "such rule")
    return lines


# A deployed expression this much longer than the generated one cannot be the same rule: it is not normalised
# (a hostile or broken Prometheus may answer megabytes; the matcher scan is then not worth its cost).
LENGTH_SLACK = 4


def _compare(rule: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    said = []
    expr, query = str(rule["expr"]), str(live.get("query", ""))
    body, op, threshold = split(expr)
    if len(query) > LENGTH_SLACK * len(expr) + 1000:
        live_body, live_op, live_threshold = "", "", None
    else:
        live_body, live_op, live_threshold = split(query)
    if threshold != live_threshold:
        said.append(f"threshold {live_threshold if live_threshold is not None else 'none'} in Prometheus, "
                    f"{threshold:g} in the runbook" if threshold is not None else "threshold differs")
    if op != live_op:
        said.append(f"comparison {live_op or 'none'} in Prometheus, {op} in the runbook")
    if body != live_body:
        said.append(f"expression differs: Prometheus has {str(live.get('query', ''))[:200]!r}")
    want_for, live_for = seconds(rule.get("for", "0s")), float(live.get("duration") or 0.0)
    if want_for != live_for:
        said.append(f"for {_duration(live_for)} in Prometheus, {_duration(want_for)} in the runbook")
    labels, live_labels = rule.get("labels") or {}, live.get("labels") or {}
    for label in ("severity", "runbook"):
        if labels.get(label) != live_labels.get(label):
            said.append(f"{label} {live_labels.get(label, 'unset')} in Prometheus, {labels.get(label)} in the runbook")
    return said


def _duration(value: float) -> str:
    return f"{value / 60:g}m" if value and value % 60 == 0 else f"{value:g}s"
