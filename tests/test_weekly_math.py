"""The weekly reviews' arithmetic and parsing, on plain inputs: robust bounds, weeks, fits, log lines."""

from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acgs_checks.maths import review, trends
from acgs_checks.measurements import worse_direction
from acgs_checks.probes.access_stats import aggregate_access
from acgs_checks.probes.backup import parse_barman, parse_pgbackrest
from acgs_checks.probes.failed_logins import count_pg_lines

DAY = 86400.0
NOW = datetime.datetime(2026, 11, 28, 9, 30, tzinfo=datetime.UTC).timestamp()


@given(st.floats(-1e3, 1e3), st.floats(-50, 50), st.integers(3, 40))
def test_a_line_is_fitted_exactly(intercept: float, slope: float, days: int) -> None:
    points = [(NOW - d * DAY, intercept + slope * (-d)) for d in range(days)]
    fit = trends.linear_fit(points)
    assert fit is not None
    assert fit.slope_per_day == pytest.approx(slope, abs=1e-6)
    assert fit.at(NOW) == pytest.approx(intercept, abs=1e-6)


def test_days_until_a_limit() -> None:
    fit = trends.linear_fit([(NOW - d * DAY, 60 - 2 * d) for d in range(28)])
    assert fit is not None
    assert fit.days_until(100, NOW) == pytest.approx(20)
    falling = trends.linear_fit([(NOW - d * DAY, 10 + d) for d in range(5)])
    assert falling is not None
    assert falling.days_until(100, NOW) is None
    assert trends.linear_fit([(NOW, 1.0), (NOW - 10, 2.0), (NOW - 20, 3.0)]) is None  # under a day of span


def test_weekly_medians_split_at_week_boundaries() -> None:
    points = [(NOW - d * DAY - 60, float(d // 7)) for d in range(35)]
    assert trends.weekly_medians(points, NOW, 4) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert trends.weekly_medians(points[:7], NOW, 2) == [0.0, None, None]


def test_robust_bound_has_a_floor_for_a_flat_history() -> None:
    bound = trends.robust_bound([480.0] * 7, 3, floor=24)
    assert (bound.low, bound.high) == (408, 552)
    assert not bound.outside(500)
    assert bound.outside(600)
    wide = trends.robust_bound([100, 110, 90, 105, 95, 100, 300], 3, floor=1)
    assert wide.median == 100
    assert wide.spread == pytest.approx(5 * trends.MAD_SCALE)


def _day(total: float, classes: dict[str, float], clients: dict[str, float]) -> dict[str, object]:
    return {"total": total, "classes": classes, "clients": clients}


def test_access_anomalies_flag_share_volume_and_new_clients() -> None:
    before = [_day(1000, {"2xx": 980, "5xx": 20}, {"10.0.0.1": 500, "10.0.0.2": 500}) for _ in range(7)]
    same = [_day(1000, {"2xx": 980, "5xx": 20}, {"10.0.0.1": 600, "10.0.0.2": 400}), *before]
    assert trends.access_anomalies(same, k=3, min_requests=100, top=5)[0] == []
    errors = [_day(1000, {"2xx": 800, "5xx": 200}, {"10.0.0.1": 1000}), *before]
    assert trends.access_anomalies(errors, k=3, min_requests=100, top=5)[0] == [
        "2xx share 80.00 % outside 95..101 (median 98 ± 3·1) %", "5xx share 20.00 % outside -1..5 (median 2 ± 3·1) %"]
    surge = [_day(5000, {"2xx": 4900, "5xx": 100}, {"203.0.113.9": 4000, "10.0.0.1": 1000}), *before]
    findings = trends.access_anomalies(surge, k=3, min_requests=100, top=5)[0]
    assert findings[0].startswith("volume 5000 requests outside 850..1150")
    assert findings[-1] == "new top client(s): 203.0.113.9 (4000)"
    assert trends.access_anomalies([same[0], *before[:2]], k=3, min_requests=100, top=5) == ([], [])


def test_access_log_buckets_fall_into_24_hour_days() -> None:
    hour = datetime.datetime.fromtimestamp(NOW, datetime.UTC).strftime("%d/%b/%Y:%H")
    earlier = datetime.datetime.fromtimestamp(NOW - DAY - 3600, datetime.UTC).strftime("%d/%b/%Y:%H")
    days = aggregate_access(f"K {hour} 2xx 10\nK {hour} 5xx 2\nA {hour} 10.0.0.1 12\nK {earlier} 2xx 7\nnoise\n", NOW)
    assert days[0]["total"] == 12
    assert days[0]["classes"] == {"2xx": 10, "5xx": 2}
    assert days[0]["clients"] == {"10.0.0.1": 12}
    assert days[1]["total"] == 7


def test_postgres_log_lines_of_the_last_24_hours() -> None:
    stamp = datetime.datetime.fromtimestamp(NOW - 3600, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.123 UTC")
    old = datetime.datetime.fromtimestamp(NOW - 2 * DAY, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = (f'{stamp} [41] 10.1.2.3 FATAL:  password authentication failed for user "app"\n'
            f'{stamp} [41] 10.1.2.3 DETAIL:  Connection matched pg_hba.conf line 99: "host all all all scram"\n'
            f'{stamp} [42] [local] FATAL:  password authentication failed for user "ops"\n'
            f'{old} [43] 10.1.2.3 FATAL:  password authentication failed for user "app"\n')
    total, users, clients, note = count_pg_lines(text, NOW)
    assert total == 2
    assert users == {"app": 1, "ops": 1}
    assert clients == {"10.1.2.3": 1, "?": 1}
    assert note == ""
    undated = count_pg_lines('FATAL:  password authentication failed for user "x"\n', NOW)
    assert undated[0] == 1
    assert "without a timestamp" in undated[3]


def test_backup_tool_listings() -> None:
    info = [{"name": "main", "backup": [
        {"label": "20261127-010000F", "type": "full", "timestamp": {"start": NOW - DAY - 600, "stop": NOW - DAY},
         "info": {"size": 1048576}},
        {"label": "20261128-010000D", "type": "diff", "timestamp": {"start": NOW - 700, "stop": NOW - 100},
         "info": {"size": 2048}, "error": True}]}]
    found = parse_pgbackrest(json.dumps(info))
    assert [(b["name"], b["status"]) for b in found] == [("main/20261128-010000D", "error"),
                                                         ("main/20261127-010000F", "ok")]
    listing = ("main 20261128T010002 - Sat Nov 28 01:00:02 2026 - Size: 1.5 GiB - WAL Size: 12.0 MiB\n"
               "main 20261127T010002 - FAILED\n")
    barman = parse_barman(listing)
    assert barman[0]["size"] == 1.5 * 1024 ** 3
    assert barman[0]["status"] == "ok"
    assert barman[1]["status"] == "failed"


@pytest.mark.parametrize(("value", "threshold", "outcome", "worse"), [
    (0.4, 2.0, "passed", "higher"), (2.5, 2.0, "failed", "higher"), (95.0, 85.0, "passed", "lower"),
    (80.0, 85.0, "failed", "lower"), (1.0, None, "passed", "")])
def test_which_way_is_worse(value: float, threshold: float | None, outcome: str, worse: str) -> None:
    assert worse_direction(value, threshold, outcome) == worse


def test_warming_up_lasts_the_reviews_own_window_from_the_first_recorded_run() -> None:
    now, day = 1_800_000_000.0, 86400.0
    needs = review.CAPACITY_WARM_UP
    # No run yet: this run is the first, and the first verdict is the window away from now.
    said = review.warming_up(None, 0, now, needs, store="/h.sqlite")
    assert said.startswith("0 of 3 runs recorded (the history store /h.sqlite holds none: this run is its first)")
    assert said.endswith("first verdict expected 2027-01-18 08:00 UTC"), said  # now + 3 days
    # Two runs since yesterday: counted from the first run, not from now.
    said = review.warming_up(now - day, 2, now, needs, store="/h.sqlite")
    assert "2 of 3 runs recorded since 2027-01-14 08:00 UTC" in said
    assert "expected 2027-01-17 08:00 UTC" in said
    # Inside the day of slack after the window: still warming up (a daily run a little early), the date not in the past.
    assert review.warming_up(now - 3.5 * day, 3, now, needs, store="").endswith("expected 2027-01-15 08:00 UTC")
    # Past the window and its slack: no longer young; the caller fails with no data.
    assert review.warming_up(now - 4 * day, 9, now, needs, store="") == ""
    assert review.warming_up(now - 8 * day, 9, now, review.TRENDS_WARM_UP, store="") == ""
    assert review.warming_up(now - 6 * day, 6, now, review.TRENDS_WARM_UP, store="").startswith("6 runs recorded")
