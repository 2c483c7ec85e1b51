"""Wednesday performance review: slow statements, week-on-week trends, and capacity projections.

Trends and capacity read the history store, where every run keeps what it measured (see ``[history]`` in the
documentation), and Prometheus where it holds the history. While the store is younger than a review's window (counted
from its first recorded run) and nothing else can be judged, the review is "warming up": a skip that names the
first verdict's date, never a pass and never a page. Performance figures (latency, error rates, hit rates,
CPU, memory) are compared week on week; usage shares of a hard limit (disk, max_connections, maxmemory,
max_client_conn) are projected to the day they reach it. Other measured values (days until a certificate
expires, say) are neither.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import allure
import pytest

from acgs_checks.environment import Environment
from acgs_checks.maths import review
from acgs_checks.verdict import judge, no_data, require_read, warming_up

if TYPE_CHECKING:
    from acgs_checks.probes.history import HistorySnapshot
    from acgs_checks.probes.postgres import PgSnapshot

pytestmark = [pytest.mark.wednesday, pytest.mark.performance]


@pytest.mark.p2
@pytest.mark.runbook("wednesday.slow-query-log")
@pytest.mark.trended
@pytest.mark.grant("CREATE EXTENSION pg_stat_statements in the checked database (pg_monitor reads it)")
def test_slow_queries(db: PgSnapshot, acgs_environment: Environment) -> None:
    """No statement called at least {slow_query_min_calls:g} times averages above {slow_query_mean_ms:g} ms
    (pg_stat_statements: the ten highest by mean and by total time)."""
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


def _history(seen: HistorySnapshot) -> dict[str, dict[str, Any]]:
    require_read(seen, "history store", fix=" (every run appends to it; see [history] in docs/weekly-reviews.md)")
    return seen.series


@pytest.mark.p2
@pytest.mark.runbook("wednesday.performance-trends")
def test_performance_trends(history_probe: HistorySnapshot, acgs_environment: Environment) -> None:
    """This week's median of each trended value is no more than {trend_regression_percent:g} % worse than the
    previous weeks' (median of their weekly medians). Changes smaller than a tenth of the value's threshold never
    count."""
    seen, limit, now = history_probe, acgs_environment.thresholds.trend_regression_percent, time.time()
    series = review.trended_series(_history(seen), seen.weekly, now)
    found = review.compare_weeks(series, weeks=seen.weeks, limit_percent=limit, now=now, promql=list(seen.weekly))
    if not found.judged:
        if not seen.weekly_error:  # Prometheus was asked and failed: no data, whatever the store's age
            _warming_up(seen, review.TRENDS_WARM_UP, now)
        promql = (f", {len(seen.weekly)} from PromQL range queries" if seen.weekly else "") + (
            f"; Prometheus: {seen.weekly_error}" if seen.weekly_error else "")
        no_data(f"history store {seen.path}: no trended value has both this week's and an earlier week's "
                f"measurements ({found.considered} trended series{promql}, {len(seen.series)} in the store); "
                "trends need at least one earlier week of runs")
    allure.attach(review.plot(f"weekly trends ({acgs_environment.name})", found.points, found.marks),
                  name="trends.png", attachment_type=allure.attachment_type.PNG)
    later = f"; {len(found.waiting)} PromQL range series have no earlier week yet" if found.waiting else ""
    judge(bool(found.regressions), f"{len(found.regressions)} of {len(found.judged)} value(s) regressed: "
          + "; ".join(found.regressions[:5]) if found.regressions else
          f"{len(found.judged)} value(s) compared week on week (history {seen.path}){later}; none regressed",
          f"no value more than {limit:g} % worse than the previous weeks' median",
          value=float(len(found.regressions)), threshold=0)


def _warming_up(seen: HistorySnapshot, needs: review.WarmUp, now: float) -> None:
    """Nothing to judge yet, while the store is younger than the review's window: warming up (a skip, not a page).
    Past the window, the caller fails with no data."""
    said = review.warming_up(seen.first_run_at, seen.runs, now, needs, store=seen.path)
    if said:
        warming_up(said)


def _capacity(seen: HistorySnapshot, limit: float) -> None:
    now = time.time()
    found, too_short = review.project_capacity(_history(seen), weeks=seen.weeks, now=now)
    found += [review.Projection(p["resource"], p["what"], p["days"], p["fit"]) for p in seen.projections]
    waiting = review.projection_waiting(seen.projection_waiting)
    if not found and waiting and not seen.projection_error:
        warming_up(waiting)  # Prometheus's own history is younger than a projection needs: honest, not a page
    if not found:
        if not seen.projection_error:  # Prometheus was asked and failed: no data, whatever the store's age
            _warming_up(seen, review.CAPACITY_WARM_UP, now)
        no_data(f"history store {seen.path}: no usage series with 3 runs over a day or more "
                f"({', '.join(too_short) or 'none recorded'})" + (f"; Prometheus: {seen.projection_error}"
                                                                   if seen.projection_error else ""))
    short = [p for p in found if p.days is not None and p.days < limit]
    worst = min((p.days for p in found if p.days is not None), default=None)
    note = (f"; too little history for {', '.join(too_short)}" if too_short else "") + (
        f"; {waiting}" if waiting else "")
    judge(bool(short), f"{len(found)} resource(s) projected: " + "; ".join(p.line() for p in (short or found)[:6])
          + note, f"more than {limit:g} days of headroom", value=worst, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("wednesday.capacity-planning", "wednesday.resource-trends")
def test_capacity_headroom_critical(history_probe: HistorySnapshot, acgs_environment: Environment) -> None:
    """No disk, connection limit, Redis maxmemory or PgBouncer client limit is projected to run out within
    {capacity_critical_days:g} days."""
    _capacity(history_probe, acgs_environment.thresholds.capacity_critical_days)


@pytest.mark.p2
@pytest.mark.runbook("wednesday.capacity-planning", "wednesday.resource-trends")
def test_capacity_headroom(history_probe: HistorySnapshot, acgs_environment: Environment) -> None:
    """Nothing is projected to run out within {capacity_warning_days:g} days (plan the capacity now)."""
    _capacity(history_probe, acgs_environment.thresholds.capacity_warning_days)
