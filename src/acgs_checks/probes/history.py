"""Wednesday performance review: the measured values of the past weeks, from the history store and Prometheus.

The store (:mod:`acgs_checks.measurements`) holds what every run measured. Where the
environment has ``[prometheus]``:

* each service's P95 and error rate get weekly medians from range queries, evaluated at the end
  of this week and of each earlier one: ``quantile_over_time(0.5, (<the SLO query over 1h>)[7d:1h])``;
* each host with a ``prometheus_selector`` gets weekly medians of CPU and memory the same way, from node_exporter;
* each filesystem of a host with a ``prometheus_selector`` is projected from node_exporter:
  ``predict_linear``'s slope over the past week (``deriv(node_filesystem_avail_bytes[7d])``)
  against the bytes still available.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from acgs_checks import kinds
from acgs_checks import measurements as history
from acgs_checks.kinds import Fixed
from acgs_checks.probes import aio
from acgs_checks.probes import prometheus as prom
from acgs_checks.probes.host import PSEUDO_FS
from acgs_checks.probes.host import promql as host_promql
from acgs_checks.probes.slo import service_queries
from acgs_checks.records import JsonRecord

DAY = 86400.0


@dataclass(frozen=True)
class HistorySnapshot(JsonRecord):
    """Each case's points (Unix time, value) with its threshold and worse direction, and Prometheus projections."""

    target: str
    path: str
    answered: bool
    error: str = ""
    weeks: int = 4
    series: dict[str, dict[str, Any]] = field(default_factory=dict)  # case -> {points, threshold, worse, role}
    projections: list[dict[str, Any]] = field(default_factory=list)  # from Prometheus: resource, days, fit
    projection_error: str = ""
    # Projections whose series spans too little yet: resource, span, first_verdict_at (Unix time)
    projection_waiting: list[dict[str, Any]] = field(default_factory=list)
    # From Prometheus range queries: "<promql key>[<service>]" -> {"weekly": [this week, the week before, ...],
    # threshold, worse, query}
    weekly: dict[str, dict[str, Any]] = field(default_factory=dict)
    weekly_error: str = ""
    denied: str = ""  # the target refused the suite: the credential or grant to check
    first_run_at: float | None = None  # when the environment's first recorded run started (None: none yet)
    runs: int = 0                      # runs the store holds for the environment


# A projection from Prometheus's history is judged only once the series it fits spans this much
# (docs/weekly-reviews.md): a slope fitted over minutes (a pip install filling the disk for a while) says nothing
# about the next weeks.
MIN_PROJECTION_SPAN = DAY
# The span is learned from the oldest sample in the window, found at this resolution (a bounded subquery).
SPAN_RESOLUTION = "5m"


def _span(seconds: float) -> str:
    """A duration as a reader wants it: hours under two days, days above."""
    return f"{seconds / 3600:.1f} hours" if seconds < 2 * DAY else f"{seconds / DAY:.1f} days"


async def _disk_projections(job: kinds.Job) -> tuple[list[dict[str, Any]], str, list[dict[str, Any]]]:
    """The disks' projections, the error, and the disks still warming up (too short a span of node_exporter data to
    fit a slope on), each with when its first verdict comes."""
    env = job.env
    hosts = [h for h in env.section("hosts") if h.prometheus_selector]
    if env.prometheus is None or not hosts:
        return [], "", []
    found: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []
    pseudo = "|".join(PSEUDO_FS)
    now = time.time()
    for host in hosts:
        sel = f'{host.prometheus_selector},fstype!~"{pseudo}"'
        avail, error = await prom.vector(env.prometheus, f"node_filesystem_avail_bytes{{{sel}}}")
        slope, slope_error = await prom.vector(env.prometheus, f"deriv(node_filesystem_avail_bytes{{{sel}}}[7d])")
        oldest, oldest_error = await prom.vector(
            env.prometheus, f"min_over_time(timestamp(node_filesystem_avail_bytes{{{sel}}})[7d:{SPAN_RESOLUTION}])")
        if error or slope_error or (oldest_error and not oldest_error.startswith("no data")):
            return found, error or slope_error or oldest_error, waiting
        per_second = {labels.get("mountpoint"): value for labels, value in slope}
        since = {labels.get("mountpoint"): value for labels, value in oldest}
        for labels, left in avail:
            mount = labels.get("mountpoint", "?")
            # No oldest sample at the subquery's resolution: the series is younger than one step of it.
            rate, first = per_second.get(mount), since.get(mount, now)
            if rate is None:
                continue
            resource, span = f"disk {mount} on {host.name}", max(0.0, now - first)
            if span < MIN_PROJECTION_SPAN:
                waiting.append({"resource": resource, "span": _span(span), "first_verdict_at": first + DAY})
                continue
            days = None if rate >= 0 else left / -rate / DAY
            found.append({"resource": resource, "what": "full", "days": days,
                          "fit": f"deriv(node_filesystem_avail_bytes[7d]) = {rate * DAY / 2**30:+.3f} GiB/day, "
                                 f"{left / 2**30:.2f} GiB available, over {_span(span)} of node_exporter data"})
        if not any(p["resource"].endswith(f" on {host.name}") for p in [*found, *waiting]):
            # Asked and not answered: no data for this host, never the store's youth.
            return found, (f"no filesystem of {host.name} has both a current node_filesystem_avail_bytes sample and "
                           f"a 7-day slope ({sel})"), waiting
    return found, "", waiting


# The SLO values trended from Prometheus: the query key (a check declares it with @pytest.mark.trended(promql=KEY),
# and its stored series is replaced by these weekly medians), its threshold (in the query's unit).
_WEEKLY = (("p95", "p95_warning_seconds", 1.0), ("error_rate", "error_rate_warning_percent", 0.01))


# The host values trended from node_exporter: the key a host check declares (@pytest.mark.trended(promql=KEY)), the
# host query's name, and its threshold.
_HOST_WEEKLY = (("cpu", "cpu_percent", "cpu_max_percent"), ("memory", "memory_percent", "memory_max_percent"))


async def _weekly_medians(job: kinds.Job, weeks: int) -> tuple[dict[str, dict[str, Any]], str]:
    """Each week's median of the services' P95 and error rate (the SLO source is Prometheus) and of the hosts' CPU
    and memory (a ``prometheus_selector``), evaluated at the end of this week and of each earlier one."""
    env = job.env
    services = list(env.services) if env.slo.source == "prometheus" else []
    hosts = [h for h in env.section("hosts") if h.prometheus_selector]
    if env.prometheus is None or not (services or hosts):
        return {}, ""
    down, _denied = await prom.reachable_once(job, env.prometheus)
    if down:
        return {}, down
    now = time.time()
    found: dict[str, dict[str, Any]] = {}
    wanted: list[tuple[str, str, float]] = []  # series key, the query over 1 h, threshold
    for service in services:
        queries = service_queries(service, env.prometheus, "1h")
        wanted += [(f"{key}[{service.name}]", queries[key], getattr(env.thresholds, threshold) * scale)
                   for key, threshold, scale in _WEEKLY]
    for host in hosts:
        queries = host_promql(host, "1h")
        wanted += [(f"{key}[{host.name}]", queries[query], getattr(env.thresholds, threshold))
                   for key, query, threshold in _HOST_WEEKLY]
    for name, hourly, threshold in wanted:
        query = f"quantile_over_time(0.5, ({hourly})[7d:1h])"
        medians = [(await _at(env, query, now - week * 7 * DAY))[0] for week in range(weeks + 1)]
        found[name] = {"weekly": medians, "worse": "higher", "query": query, "threshold": threshold}
    return found, ""


async def _at(env: Any, query: str, at: float) -> tuple[float | None, str]:
    series, error = await prom.vector(env.prometheus, query, at)
    return (series[0][1], "") if len(series) == 1 else (None, error or f"{len(series)} series")


async def probe_history(target: Fixed, job: kinds.Job) -> HistorySnapshot:
    env = job.env
    path = history.path_for(env.history.path)
    weeks = env.history.weeks
    projections, projection_error, projection_waiting = await _disk_projections(job)
    weekly, weekly_error = await _weekly_medians(job, weeks)
    prometheus: dict[str, Any] = {"projections": projections, "projection_error": projection_error,
                  "projection_waiting": projection_waiting, "weekly": weekly, "weekly_error": weekly_error}
    if path is None:
        return HistorySnapshot(target.name, "", answered=False, error="no history store configured", weeks=weeks,
                               **prometheus)
    since = time.time() - (weeks + 1) * 7 * DAY
    try:
        first_run_at, runs = await aio.in_thread(history.first_run, path, env.name)
        rows = await aio.in_thread(history.read, path, env.name, since)
    except history.Error as exc:
        return HistorySnapshot(target.name, str(path), answered=False, error=f"reading {path} failed: {exc}",
                               weeks=weeks, **prometheus)
    series: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = series.setdefault(row.case_name, {"points": [], "threshold": row.threshold, "worse": {}, "role": ""})
        entry["points"].append((row.at, row.value))
        entry["role"] = row.role or entry["role"]  # the newest declaration wins
        entry["threshold"] = row.threshold if row.threshold is not None else entry["threshold"]
        if row.worse:
            entry["worse"][row.worse] = entry["worse"].get(row.worse, 0) + 1
    for entry in series.values():
        votes = entry.pop("worse")
        entry["worse"] = max(votes, key=votes.get) if votes else ""
    return HistorySnapshot(target.name, str(path), answered=True, weeks=weeks, series=series,
                           first_run_at=first_run_at, runs=runs, **prometheus)


HISTORY = kinds.register(kinds.ProbeKind(
    name="history", section="history", record=HistorySnapshot, probe=probe_history,
    fixed={"history_probe": "history"}, targets=lambda env: (Fixed("history"),),
    grant=("read access to the history store (every run appends to it); read access to the Prometheus API for "
           "projections"),
    doc="the past weeks' measured values (history store) and disk projections (Prometheus)",
))
