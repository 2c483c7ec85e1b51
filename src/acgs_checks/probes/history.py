"""Wednesday performance review: the measured values of the past weeks, from the history store and Prometheus.

The store (:mod:`acgs_checks.reporting.history`) holds what every run measured. Where the
environment has ``[prometheus]`` and a host a ``prometheus_selector``, each filesystem's
projection comes from node_exporter instead: ``predict_linear``'s slope over the past week
(``deriv(node_filesystem_avail_bytes[7d])``) against the bytes still available.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from acgs_checks import kinds
from acgs_checks.probes import _aio
from acgs_checks.probes._record import JsonRecord
from acgs_checks.probes.host import PSEUDO_FS
from acgs_checks.probes.security import Fixed
from acgs_checks.reporting import history

DAY = 86400.0


@dataclass(frozen=True)
class HistorySnapshot(JsonRecord):
    """Each case's points (Unix time, value) with its threshold and worse direction, and Prometheus projections."""

    target: str
    path: str
    read: bool
    error: str = ""
    weeks: int = 4
    series: dict[str, dict[str, Any]] = field(default_factory=dict)  # case -> {points, threshold, worse}
    projections: list[dict[str, Any]] = field(default_factory=list)  # from Prometheus: resource, days, fit
    projection_error: str = ""


async def _disk_projections(job: kinds.Job) -> tuple[list[dict[str, Any]], str]:
    from acgs_checks.probes import prometheus as prom  # noqa: PLC0415

    env = job.env
    hosts = [h for h in env.section("hosts") if h.prometheus_selector]
    if env.prometheus is None or not hosts:
        return [], ""
    found: list[dict[str, Any]] = []
    pseudo = "|".join(PSEUDO_FS)
    for host in hosts:
        sel = f'{host.prometheus_selector},fstype!~"{pseudo}"'
        avail, error = await prom.vector(env.prometheus, f"node_filesystem_avail_bytes{{{sel}}}")
        slope, slope_error = await prom.vector(env.prometheus, f"deriv(node_filesystem_avail_bytes{{{sel}}}[7d])")
        if error or slope_error:
            return found, error or slope_error
        per_second = {labels.get("mountpoint"): value for labels, value in slope}
        for labels, left in avail:
            mount = labels.get("mountpoint", "?")
            rate = per_second.get(mount)
            if rate is None:
                continue
            days = None if rate >= 0 else left / -rate / DAY
            found.append({"resource": f"disk {mount} on {host.name}", "what": "full", "days": days,
                          "fit": f"deriv(node_filesystem_avail_bytes[7d]) = {rate * DAY / 2**30:+.3f} GiB/day, "
                                 f"{left / 2**30:.2f} GiB available (PromQL, window 7 d)"})
    return found, ""


async def probe_history(target: Fixed, job: kinds.Job) -> HistorySnapshot:
    env = job.env
    path = history.path_for(env.history.path)
    weeks = env.history.weeks
    projections, projection_error = await _disk_projections(job)
    if path is None:
        return HistorySnapshot(target.name, "", read=False, error="no history store configured", weeks=weeks,
                               projections=projections, projection_error=projection_error)
    since = time.time() - (weeks + 1) * 7 * DAY
    try:
        rows = await _aio.in_thread(history.read, path, env.name, since)
    except history.Error as exc:
        return HistorySnapshot(target.name, str(path), read=False, error=f"reading {path} failed: {exc}",
                               weeks=weeks, projections=projections, projection_error=projection_error)
    series: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = series.setdefault(row.case_name, {"points": [], "threshold": row.threshold, "worse": {}})
        entry["points"].append((row.at, row.value))
        entry["threshold"] = row.threshold if row.threshold is not None else entry["threshold"]
        if row.worse:
            entry["worse"][row.worse] = entry["worse"].get(row.worse, 0) + 1
    for entry in series.values():
        votes = entry.pop("worse")
        entry["worse"] = max(votes, key=votes.get) if votes else ""
    return HistorySnapshot(target.name, str(path), read=True, weeks=weeks, series=series,
                           projections=projections, projection_error=projection_error)


HISTORY = kinds.register(kinds.ProbeKind(
    name="history", section="history", record=HistorySnapshot, probe=probe_history,
    fixed={"history_probe": "history"}, targets=lambda env: (Fixed("history"),),
    doc="the past weeks' measured values (history store) and disk projections (Prometheus)",
))
