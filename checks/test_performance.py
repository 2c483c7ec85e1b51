"""Wednesday performance review: slow statements, week-on-week trends, and capacity projections.

Trends and capacity read the history store, where every run keeps what it measured (see
``[history]`` in the README). Performance figures (latency, error rates, hit rates, CPU,
memory) are compared week on week; usage shares of a hard limit (disk, max_connections,
maxmemory, max_client_conn) are projected to the day they reach it. Other measured values
(days until a certificate expires, say) are neither.
"""

from __future__ import annotations

import io
import statistics
import time
from typing import TYPE_CHECKING, Any

import allure
import pytest

from acgs_checks import trends
from acgs_checks.environment import Environment
from acgs_checks.verdict import breached, judge, measure, no_data, require_read

if TYPE_CHECKING:
    from acgs_checks.probes.history import HistorySnapshot
    from acgs_checks.probes.postgres import PgSnapshot

pytestmark = [pytest.mark.wednesday, pytest.mark.performance]

DAY = 86400.0
# The checks whose measured values are performance figures worth trending week on week. Usage shares of a
# hard limit (disk, connections, maxmemory, client connections) are projected instead (CAPACITY).
TRENDED = ("test_p95_latency", "test_p99_latency", "test_error_rate_warning", "test_cache_hit_rate",
           "test_buffer_cache_hit_ratio", "test_pool_saturation", "test_host_cpu", "test_host_memory",
           "test_replication_lag", "test_slow_queries")
# Usage shares a linear fit can project to 100 %: the check, and what running out means.
CAPACITY = {"test_host_disk_usage": "disk full", "test_connection_usage": "max_connections reached",
            "test_cache_memory": "Redis maxmemory reached", "test_pooler_client_connections":
            "PgBouncer max_client_conn reached"}


@pytest.mark.p2
@pytest.mark.runbook("wednesday.slow-query-log")
def test_slow_queries(db: PgSnapshot, acgs_environment: Environment) -> None:
    """No statement called at least 10 times averages above 500 ms (pg_stat_statements, top 10 by mean and total)."""
    t = acgs_environment.thresholds
    if "statements" in db.errors:
        if db.slow_log_source and "slow log" not in db.errors:
            _slow_from_log(db, t.slow_query_mean_ms, t.slow_query_min_calls)
            return
        error = db.errors["statements"]
        fix = ("CREATE EXTENSION pg_stat_statements (with shared_preload_libraries = 'pg_stat_statements'), "
               "and GRANT pg_read_all_stats (or pg_monitor) TO <role> to see every statement; or set log_host and "
               "log_path on the database to read log_min_duration_statement lines")
        also = f"; the server log: {db.errors['slow log']}" if "slow log" in db.errors else ""
        no_data(f"{db.target}: {error}{also}; fix: {fix}")
    by_mean = [s for s in db.statements if s["ranked_by"] == "mean"]
    by_total = [s for s in db.statements if s["ranked_by"] == "total"]
    slow = [s for s in by_mean if s["mean_ms"] > t.slow_query_mean_ms and s["calls"] >= t.slow_query_min_calls]
    worst = max((s["mean_ms"] for s in by_mean), default=0.0)
    top_total = "; ".join(f"{s['total_ms'] / 1000:.1f} s in {s['calls']:.0f} calls: {s['query'][:80]}"
                          for s in by_total[:3]) or "none"
    shown = "; ".join(f"{s['mean_ms']:.0f} ms mean over {s['calls']:.0f} calls: {s['query'][:120]}" for s in slow[:5])
    judge(bool(slow), f"{db.target}: " + (f"{len(slow)} slow statement(s): {shown}" if slow else
                                          f"slowest mean {worst:.0f} ms among {len(by_mean)} statement(s) called "
                                          f"≥ {t.slow_query_min_calls:g} times")
          + f"; most total time: {top_total}",
          f"mean ≤ {t.slow_query_mean_ms:g} ms for statements called ≥ {t.slow_query_min_calls:g} times",
          value=worst, threshold=t.slow_query_mean_ms)


def _slow_from_log(db: PgSnapshot, mean_limit: float, min_calls: float) -> None:
    """The same rule over the statements the server logged (only those at or above log_min_duration_statement
    are logged, so a mean here is the mean of the slow executions)."""
    slow = [s for s in db.slow_log if s["mean_ms"] > mean_limit and s["calls"] >= min_calls]
    worst = max((s["mean_ms"] for s in db.slow_log if s["calls"] >= min_calls), default=0.0)
    shown = "; ".join(f"{s['mean_ms']:.0f} ms mean over {s['calls']:.0f} logged calls: {s['query'][:120]}"
                      for s in slow[:5])
    judge(bool(slow), f"{db.target}: " + (f"{len(slow)} slow statement(s): {shown}" if slow else
                                          f"{len(db.slow_log)} statement(s) logged, slowest mean {worst:.0f} ms over "
                                          f"≥ {min_calls:g} calls") + f" (source: {db.slow_log_source})",
          f"mean ≤ {mean_limit:g} ms for statements called ≥ {min_calls:g} times", value=worst, threshold=mean_limit)


def _trended(name: str) -> bool:
    return name.split("[", 1)[0] in TRENDED


def _plot(title: str, lines: dict[str, list[tuple[float, float]]], marks: dict[str, str]) -> bytes:
    """Small multiples, one panel per series, weekly boundaries shaded; a PNG."""
    import matplotlib  # noqa: PLC0415 - only Wednesday runs draw

    matplotlib.use("Agg")
    import datetime  # noqa: PLC0415

    from matplotlib import pyplot as plt  # noqa: PLC0415

    names = sorted(lines)
    cols = 3 if len(names) > 4 else max(1, len(names))
    rows = (len(names) + cols - 1) // cols
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip((a for row in axes for a in row), names, strict=False):
        points = sorted(lines[name])
        ax.plot([datetime.datetime.fromtimestamp(t, datetime.UTC) for t, _ in points], [v for _, v in points],
                marker=".", linewidth=1, color="tab:red" if name in marks else "tab:blue")
        ax.set_title(name + (f"\n{marks[name]}" if name in marks else ""), fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in [a for row in axes for a in row][len(names):]:
        ax.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=90)
    plt.close(figure)
    return out.getvalue()


def _history(seen: HistorySnapshot) -> dict[str, dict[str, Any]]:
    require_read(seen, "history store", fix=" (every run appends to it; see [history] in the README)")
    return seen.series


@pytest.mark.p2
@pytest.mark.runbook("wednesday.performance-trends")
def test_performance_trends(history_probe: HistorySnapshot, acgs_environment: Environment) -> None:
    """This week's median of each measured value is no more than 20 % worse than the previous weeks' (median of
    their weekly medians). Changes smaller than a tenth of the value's threshold never count."""
    limit = acgs_environment.thresholds.trend_regression_percent
    now = time.time()
    series = {k: v for k, v in _history(history_probe).items() if _trended(k)}
    # Where Prometheus has the series, its range queries' weekly medians replace the store's for that case.
    for name, entry in history_probe.weekly.items():
        series[name] = {**entry, "points": [(now - w * 7 * DAY, m) for w, m in enumerate(entry["weekly"])
                                            if m is not None]}
    judged, regressions, marks = [], [], {}
    for name, entry in sorted(series.items()):
        medians = entry.get("weekly") or trends.weekly_medians(entry["points"], now, history_probe.weeks)
        this, before = medians[0], [m for m in medians[1:] if m is not None]
        if this is None or not before or not entry["worse"]:
            continue
        base = statistics.median(before)
        scale = max(abs(base), 0.1 * abs(entry["threshold"] or 0.0))
        if scale == 0:
            continue
        change = 100 * (this - base) / scale * (1 if entry["worse"] == "higher" else -1)
        judged.append(name)
        if change > limit:
            regressions.append(f"{name} {this:.4g} this week vs {base:.4g} before ({change:+.0f} % worse, "
                               f"{len(before)} earlier week(s))")
            marks[name] = f"{change:+.0f} % worse"
    if not judged:
        promql = (f", {len(history_probe.weekly)} from PromQL range queries" if history_probe.weekly else "") + (
            f"; Prometheus: {history_probe.weekly_error}" if history_probe.weekly_error else "")
        no_data(f"history store {history_probe.path}: no trended value has both this week's and an earlier week's "
                f"measurements ({len(series)} trended series{promql}, {len(history_probe.series)} in the store); "
                "trends need at least one earlier week of runs")
    allure.attach(_plot(f"weekly trends ({acgs_environment.name})", {n: series[n]["points"] for n in judged}, marks),
                  name="trends.png", attachment_type=allure.attachment_type.PNG)
    expected = f"no value more than {limit:g} % worse than the previous weeks' median"
    if regressions:
        breached(f"{len(regressions)} of {len(judged)} value(s) regressed: " + "; ".join(regressions[:5]), expected,
                 value=float(len(regressions)), threshold=0)
    waiting = [n for n in history_probe.weekly if n not in judged]
    later = f"; {len(waiting)} PromQL range series have no earlier week yet" if waiting else ""
    measure(f"{len(judged)} value(s) compared week on week (history {history_probe.path}){later}; none regressed",
            expected, value=0, threshold=0)


def _projections(seen: HistorySnapshot) -> tuple[list[dict[str, Any]], list[str]]:
    """Days until each resource runs out: a linear fit over the history's usage shares, or Prometheus."""
    series = _history(seen)
    now = time.time()
    found = list(seen.projections)
    too_short = []
    for name, entry in sorted(series.items()):
        check = name.split("[", 1)[0]
        if check not in CAPACITY:
            continue
        fit = trends.linear_fit([(t, v) for t, v in entry["points"] if t > now - seen.weeks * 7 * DAY])
        if fit is None:
            too_short.append(name)
            continue
        days = fit.days_until(100.0, now)
        found.append({"resource": name, "what": CAPACITY[check], "days": days,
                      "fit": f"{fit.at(now):.1f} % now, {fit.slope_per_day:+.3f} points/day over {fit.days:.0f} days "
                             f"({fit.points} runs; least squares)"})
    if not found:
        no_data(f"history store {seen.path}: no usage series with 3 runs over a day or more "
                f"({', '.join(too_short) or 'none recorded'})" + (f"; Prometheus: {seen.projection_error}"
                                                                   if seen.projection_error else ""))
    return found, too_short


def _capacity(seen: HistorySnapshot, limit: float) -> None:
    found, too_short = _projections(seen)
    short = [p for p in found if p["days"] is not None and p["days"] < limit]
    worst = min((p["days"] for p in found if p["days"] is not None), default=None)

    def one(p: dict[str, Any]) -> str:
        when = "not growing" if p["days"] is None else f"{p['what']} in {p['days']:.0f} days"
        return f"{p['resource']}: {when} ({p['fit']})"

    note = f"; too little history for {', '.join(too_short)}" if too_short else ""
    judge(bool(short), f"{len(found)} resource(s) projected: " + "; ".join(one(p) for p in (short or found)[:6])
          + note, f"more than {limit:g} days of headroom", value=worst, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("wednesday.capacity-planning", "wednesday.resource-trends")
def test_capacity_headroom_critical(history_probe: HistorySnapshot, acgs_environment: Environment) -> None:
    """No disk, connection limit, Redis maxmemory or PgBouncer client limit is projected to run out within 30 days."""
    _capacity(history_probe, acgs_environment.thresholds.capacity_critical_days)


@pytest.mark.p2
@pytest.mark.runbook("wednesday.capacity-planning", "wednesday.resource-trends")
def test_capacity_headroom(history_probe: HistorySnapshot, acgs_environment: Environment) -> None:
    """Nothing is projected to run out within 90 days (plan the capacity now)."""
    _capacity(history_probe, acgs_environment.thresholds.capacity_warning_days)
