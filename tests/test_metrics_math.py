"""histogram_quantile, sample percentiles and the text format, against hand-computed cases."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from acgs_checks.environment import Service
from acgs_checks.maths import metrics
from acgs_checks.probes.slo import render, service_queries

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # 100 observations: 50 in (0, 0.1], 30 in (0.1, 0.5], 20 in (0.5, 1]. rank 50 -> end of first bucket.
        (0.5, [(0.1, 50), (0.5, 80), (1.0, 100), (INF, 100)], 0.1),
        # rank 95 -> 15 of the 20 in (0.5, 1]: 0.5 + 0.5 * 15/20 = 0.875
        (0.95, [(0.1, 50), (0.5, 80), (1.0, 100), (INF, 100)], 0.875),
        # rank 25 in the first bucket, which starts at 0: 0.1 * 25/50 = 0.05
        (0.25, [(0.1, 50), (0.5, 80), (1.0, 100), (INF, 100)], 0.05),
        # rank 99 falls in the +Inf bucket: the highest finite bound is returned
        (0.99, [(0.1, 50), (0.5, 80), (1.0, 90), (INF, 100)], 1.0),
        # a first bucket with a negative bound returns that bound
        (0.1, [(-1.0, 10), (0.0, 20), (INF, 20)], -1.0),
        # counts that decrease (a scrape race) are made monotonic: (0.5, 70) counts as 80
        (0.9, [(0.1, 50), (0.5, 80), (0.75, 70), (1.0, 100), (INF, 100)], 0.75 + 0.25 * (90 - 80) / 20),
        # buckets given twice for one bound are summed (two series)
        (0.5, [(1.0, 5), (1.0, 5), (2.0, 10), (2.0, 10), (INF, 20)], 1.0),
    ],
    ids=["median-at-bound", "p95-interpolated", "first-bucket-from-zero", "inf-bucket", "negative-bound",
         "non-monotonic", "summed-series"],
)
def test_histogram_quantile(q: float, buckets: list[tuple[float, float]], expected: float) -> None:
    assert metrics.histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("q", "buckets"),
    [(0.5, [(0.1, 5), (1.0, 10)]), (0.5, [(INF, 10)]), (0.5, [(0.1, 0), (INF, 0)]), (math.nan, [(1, 1), (INF, 1)])],
    ids=["no-inf-bucket", "one-bucket", "no-observations", "nan-q"],
)
def test_histogram_quantile_nan(q: float, buckets: list[tuple[float, float]]) -> None:
    assert math.isnan(metrics.histogram_quantile(q, buckets))


def test_histogram_quantile_out_of_range_q() -> None:
    buckets = [(1.0, 1), (INF, 1)]
    assert metrics.histogram_quantile(-0.1, buckets) == -INF
    assert metrics.histogram_quantile(1.1, buckets) == INF


def test_percentile_is_linear_between_closest_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert metrics.percentile(values, 0.5) == pytest.approx(5.5)
    assert metrics.percentile(values, 0.95) == pytest.approx(9.55)  # h = 8.55
    assert metrics.percentile(list(reversed(values)), 0.0) == 1.0
    assert metrics.percentile([3.0], 0.99) == 3.0
    assert math.isnan(metrics.percentile([], 0.5))


def test_parse_text_and_deltas() -> None:
    before = metrics.parse_text(
        '# HELP x\nhttp_request_duration_seconds_bucket{service="a",le="0.5"} 1\n'
        'http_request_duration_seconds_bucket{service="a",le="+Inf"} 2\n'
        'http_requests_total{service="a",status="200"} 10\nhttp_requests_total{service="a",status="500"} 1\n'
        'other{label="with \\"quote\\""} 3.5 1700000000\n')
    after = metrics.parse_text(
        'http_request_duration_seconds_bucket{service="a",le="0.5"} 5\n'
        'http_request_duration_seconds_bucket{service="a",le="+Inf"} 10\n'
        'http_requests_total{service="a",status="200"} 30\nhttp_requests_total{service="a",status="500"} 3\n'
        'http_requests_total{service="b",status="500"} 99\n')
    assert before[-1].labels == {"label": 'with "quote"'}
    assert metrics.bucket_deltas(before, after, "http_request_duration_seconds_bucket", {"service": "a"}) == [
        (0.5, 4.0), (INF, 8.0)]
    assert metrics.counter_delta(before, after, "http_requests_total", {"service": "a"}) == 22.0
    assert metrics.counter_delta(before, after, "http_requests_total", {"service": "a"},
                                 where="status", pattern="5..") == 2.0


def test_parse_text_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not the Prometheus text format"):
        metrics.parse_text("this is not { metrics")


def test_default_queries_render_the_selector_and_window() -> None:
    service = Service(name="auth", url="http://a:1", prometheus_selector='job="auth"')
    rendered = service_queries(service, None, "5m")["error_rate"]
    assert rendered == ('(sum(rate(http_requests_total{job="auth",status=~"5.."}[5m])) or vector(0)) '
                        '/ sum(rate(http_requests_total{job="auth"}[5m]))')
    template = render("sum(rate(x_total{selector,code=~\"5..\"}[{window}]))", selector='job="auth"', window="5m")
    assert template == 'sum(rate(x_total{job="auth",code=~"5.."}[5m]))'


def test_a_dialect_names_every_query() -> None:
    # ACGS-2's auth: prometheus_client with a prefix, the histogram without labels; the selector is the target's.
    service = Service(name="auth", url="http://a:1", prometheus_selector='job="acgs-auth",instance="h:8000"',
                      metrics={"histogram": "auth_service_request_duration_seconds",
                               "counter": "auth_service_requests_total", "status_label": "status", "in_flight": ""})
    queries = service_queries(service, None, "5m")
    assert queries["p95"] == ('histogram_quantile(0.95, sum by (le) (rate(auth_service_request_duration_seconds_bucket'
                              '{job="acgs-auth",instance="h:8000"}[5m])))')
    assert 'auth_service_requests_total{job="acgs-auth",instance="h:8000",status=~"5.."}' in queries["error_rate"]
    assert "active_connections" not in queries  # no in-flight gauge: evidence the dialect cannot give
    # A histogram-only dialect counts requests with the histogram's _count; no status label: no error rate at all.
    only = Service(name="gs", url="http://a:1", metrics={"histogram": "h_seconds", "counter": "histogram_count",
                                                         "status_label": ""})
    queries = service_queries(only, None, "1m")
    assert queries["request_rate"] == "sum(rate(h_seconds_count{service=\"gs\"}[1m]))"
    assert "error_rate" not in queries


PROMTOOL = shutil.which("promtool")
# Bucket sets (upper bound, cumulative count) and quantiles, including the edges: q = 0 with an
# empty and a non-empty lowest bucket, q = 1, a rank in +Inf, a negative lowest bound, no observations.
AGAINST_PROMETHEUS = {
    "spread": [(0.1, 50), (0.5, 80), (1.0, 100), (INF, 100)],
    "empty_low": [(0.1, 0), (0.5, 4), (1.0, 5), (INF, 5)],
    "tail": [(0.1, 50), (0.5, 80), (1.0, 90), (INF, 100)],
    "negative": [(-1.0, 10), (0.0, 20), (INF, 20)],
    "nothing": [(0.1, 0), (1.0, 0), (INF, 0)],
    "one_bucket": [(0.25, 3), (INF, 3)],
}
QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not installed")
def test_histogram_quantile_agrees_with_prometheus(tmp_path: Path) -> None:
    """Prometheus itself (promtool's rule unit tests) evaluates every case and must get our values."""
    series = [{"series": f'{name}_bucket{{le="{"+Inf" if math.isinf(bound) else bound}"}}', "values": f"{count:g}"}
              for name, buckets in AGAINST_PROMETHEUS.items() for bound, count in buckets]
    tests = []
    for name, buckets in AGAINST_PROMETHEUS.items():
        for q in QUANTILES:
            ours = metrics.histogram_quantile(q, buckets)
            expr = f"histogram_quantile({q}, {name}_bucket)"
            if math.isnan(ours):
                # NaN equals nothing, itself included: the comparison keeps no sample exactly when it is NaN.
                tests.append({"expr": f"{expr} == {expr}", "eval_time": "0m", "exp_samples": []})
            else:
                tests.append({"expr": expr, "eval_time": "0m", "exp_samples": [{"labels": "{}", "value": ours}]})
    document = {"rule_files": [], "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}
    (tmp_path / "quantiles.yml").write_text(json.dumps(document))  # JSON is YAML
    run = subprocess.run([str(PROMTOOL), "test", "rules", "quantiles.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(tests) == len(AGAINST_PROMETHEUS) * len(QUANTILES)


def test_apdex_from_a_known_histogram_matches_the_hand_computation() -> None:
    # cumulative: 50 within 0.1 s, 80 within 0.5 s, 90 within 1 s, 97 within 2.5 s, 100 in all
    buckets = [(0.1, 50.0), (0.25, 70.0), (0.5, 80.0), (1.0, 90.0), (2.5, 97.0), (5.0, 99.0), (math.inf, 100.0)]
    found = metrics.apdex_from_buckets(buckets, 0.5)
    # T = 0.5 s is a bound: 80 satisfied. 4T = 2 s lies in 1..2.5: 90 + 7 * (2 - 1) / 1.5 = 94.667 within 4T.
    assert found.score == pytest.approx((80 + (94.667 - 80) / 2) / 100, abs=0.005)
    assert "T=0.5 s exact at a bucket bound" in found.note
    assert "4T=2 s interpolated inside le=1..2.5" in found.note
    exact = metrics.apdex_from_buckets(buckets, 0.25)  # T and 4T = 1 s are both bounds
    assert exact.score == pytest.approx((70 + (90 - 70) / 2) / 100)
    # Rates work as counts do, and series split by other labels add up.
    halves = [(b, c / 2) for b, c in buckets] * 2
    assert metrics.apdex_from_buckets(halves, 0.5).score == pytest.approx(found.score)


def test_apdex_that_the_histogram_cannot_express_is_no_score() -> None:
    capped = [(0.1, 50.0), (1.0, 90.0), (math.inf, 100.0)]
    found = metrics.apdex_from_buckets(capped, 0.5)  # 4T = 2 s beyond the top bucket, 10 observations above it
    assert found.score is None
    assert "2 s lies beyond the top finite bucket le=1 (10 observations above it)" in found.note
    nothing_above = [(0.1, 50.0), (1.0, 100.0), (math.inf, 100.0)]
    within_t = 50 + 50 * (0.5 - 0.1) / (1.0 - 0.1)  # 72.22, interpolated; 4T beyond the top, but nothing is
    assert metrics.apdex_from_buckets(nothing_above, 0.5).score == pytest.approx(
        (within_t + (100 - within_t) / 2) / 100, abs=0.005)
    assert metrics.apdex_from_buckets([(math.inf, 0.0), (1.0, 0.0)], 0.5).score is None  # no requests
    assert metrics.apdex_from_buckets([(1.0, 5.0)], 0.5).score is None                      # no +Inf bucket


def test_apdex_from_samples_counts_failures_as_frustrated() -> None:
    latencies = [0.1, 0.4, 0.6, 1.9, 2.5, 0.2]
    failed = [False, False, False, False, False, True]
    found = metrics.apdex_from_samples(latencies, failed, 0.5)
    assert (found.satisfied, found.tolerating, found.total) == (2, 2, 6)
    assert found.score == pytest.approx((2 + 2 / 2) / 6)
    assert metrics.apdex_from_samples([], [], 0.5).score is None
