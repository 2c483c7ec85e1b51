"""Trust: a case never passes on what it could not see, and is blocked only by a case that failed.

Real servers throughout: a PostgreSQL role without pg_monitor, a hardened catalog function,
a Redis user without INFO, an SLO endpoint that hangs while health answers, a /metrics with
the default client buckets scraped by a real Prometheus, a business endpoint in the wrong unit.
Every run here also passes through run_suite's own check that blocked skips point at failures.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import redis

from acgs_checks.maths import metrics
from acgs_checks.sandbox.servers import PostgresServer, RedisServer, free_port
from conftest import Run, RunSuite
from servers import RealServers, answer, serving

PROMETHEUS = shutil.which("prometheus")
# The client libraries' default buckets (Python, Go): nothing finer than 10 s at the top.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def _message(run: Run, name: str) -> str:
    text = str(run.results()[name].get("statusDetails", {}).get("message", ""))
    return text.removeprefix("Failed: ").removeprefix("Skipped: ")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_without_pg_monitor_the_session_cases_say_insufficient_privilege(
        run_suite: RunSuite, write_env: Callable[[str], Path], postgres: PostgresServer) -> None:
    postgres.psql("DROP ROLE IF EXISTS plain_reader; CREATE ROLE plain_reader LOGIN PASSWORD 'plain-reader-pw'")
    # Another session running a long statement: invisible to this role, and it must not pass for "none".
    long_running = subprocess.Popen(
        ["psql", "-X", "-q", "-h", str(postgres.workdir), "-p", str(postgres.port), "-U", "postgres",
         "-d", postgres.database, "-c", "SELECT pg_sleep(60)"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        env_file = write_env('name = "plain"\n[thresholds]\nlong_query_seconds = 1\nlock_wait_seconds = 1\n'
                             f'[[databases]]\nname = "primary"\ndsn = "postgresql://plain_reader:plain-reader-pw@'
                             f'127.0.0.1:{postgres.port}/{postgres.database}"\n')
        run = run_suite("-m", "daily and database", "--env", str(env_file))
    finally:
        long_running.kill()
        long_running.wait()
    assert run.statuses()["test_database_connectivity[primary]"] == "passed", run.output
    for case in ("test_no_long_running_queries[primary]", "test_no_idle_in_transaction_sessions[primary]",
                 "test_connection_usage[primary]", "test_no_blocked_lock_waits[primary]",
                 "test_replication_lag[primary]"):
        assert run.statuses()[case] == "failed", (case, run.output)
        assert _message(run, case) == (
            "insufficient privilege: primary: role plain_reader cannot see other sessions' state, query and type "
            "in pg_stat_activity (grant pg_monitor: GRANT pg_monitor TO plain_reader)")
        # The report tells how to read (the grant), not how to fix a value that was never read.
        description = run.results()[case]["description"]
        assert "**Remediation:** (insufficient privilege) The monitoring account lacks a grant" in description
    assert run.statuses()["test_transaction_id_age[primary]"] == "passed"  # needs no grant


def test_a_query_the_server_refuses_is_no_data(run_suite: RunSuite, write_env: Callable[[str], Path],
                                               postgres: PostgresServer) -> None:
    """A hardened catalog (pg_blocking_pids revoked) fails the lock case; it does not pass on an empty list."""
    postgres.psql("REVOKE EXECUTE ON FUNCTION pg_blocking_pids(integer) FROM PUBLIC")
    postgres.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lean_monitor') THEN "
                  "CREATE ROLE lean_monitor LOGIN PASSWORD 'lean-monitor-pw' IN ROLE pg_monitor; END IF; END $$")
    try:
        env_file = write_env(f'name = "lean"\n[[databases]]\nname = "primary"\ndsn = "postgresql://lean_monitor:'
                             f'lean-monitor-pw@127.0.0.1:{postgres.port}/{postgres.database}"\n')
        run = run_suite("-m", "daily and database", "--env", str(env_file))
    finally:
        postgres.psql("GRANT EXECUTE ON FUNCTION pg_blocking_pids(integer) TO PUBLIC")
    assert run.statuses()["test_no_blocked_lock_waits[primary]"] == "failed", run.output
    message = _message(run, "test_no_blocked_lock_waits[primary]")
    assert message.startswith("no data: primary: the lock waits query on postgresql://lean_monitor:***@"), message
    assert "permission denied for function pg_blocking_pids" in message
    assert run.statuses()["test_no_long_running_queries[primary]"] == "passed"


def test_a_pass_cut_off_by_its_deadline_is_no_data(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                   postgres: PostgresServer) -> None:
    env_file = write_env(f'name = "rushed"\n[[databases]]\nname = "primary"\ntimeout_seconds = 0.001\n'
                         f'dsn = "{postgres.dsn}"\n')
    run = run_suite("-m", "daily and database", "--env", str(env_file))
    statuses = run.statuses()
    statuses.pop("test_database_connectivity[primary]")  # SELECT 1, the first query, may still make it
    assert set(statuses.values()) == {"failed"}, run.output  # nothing passes on what it could not read
    for name in statuses:
        assert _message(run, name).startswith("no data: primary: the "), _message(run, name)
        assert "not read: the pass did not finish within 0.002 s" in _message(run, name)


def test_a_redis_user_without_info_gets_no_data_at_each_severity(run_suite: RunSuite,
                                                                 write_env: Callable[[str], Path]) -> None:
    server = RedisServer(port=free_port())
    server.start()
    try:
        admin = redis.Redis.from_url(server.admin_url)
        admin.execute_command("ACL", "SETUSER", "ping_only", "on", ">ping-only-pw", "-@all", "+ping")
        admin.close()
        env_file = write_env('name = "pingonly"\n[defaults]\ncache_window_seconds = 0.2\n'
                             f'[[caches]]\nname = "main"\nurl = "redis://ping_only:ping-only-pw@127.0.0.1:{server.port}/0"\n')
        run = run_suite("-m", "daily and cache", "--env", str(env_file))
    finally:
        server.stop()
    statuses = run.statuses()
    assert statuses.pop("test_cache_reachable[main]") == "passed", run.output  # PING works: it is reachable
    assert set(statuses.values()) == {"failed"}, run.output
    for name in statuses:
        assert _message(run, name).startswith("no data: main: INFO on redis://ping_only:***@"), _message(run, name)
    severities = {item["value"] for name in statuses for item in run.results()[name]["labels"]
                  if item["name"] == "tag" and item["value"] in ("p1", "p2", "p3")}
    assert severities == {"p1", "p2", "p3"}  # each at its own severity


class _WorkHangs(BaseHTTPRequestHandler):
    """Health answers at once; the work endpoint never does."""

    def do_GET(self) -> None:
        if self.path == "/health":
            answer(self, 200, b'{"status": "ok"}')
            return
        time.sleep(30)

    def log_message(self, *args: object) -> None:
        pass


def test_a_hanging_work_endpoint_fails_the_slo_cases_instead_of_blocking_them(
        run_suite: RunSuite, write_env: Callable[[str], Path]) -> None:
    with serving(_WorkHangs) as server:
        env_file = write_env(
            'name = "hangs"\n[slo]\nsource = "synthetic"\nsamples = 4\nconcurrency = 4\nrequest_timeout_seconds = 1\n'
            f'[[services]]\nname = "auth"\nurl = "http://127.0.0.1:{server.server_address[1]}"\n'
            'slo_path = "/api/v1/auth/validate"\n')
        run = run_suite("-m", "daily and (health or slo)", "--env", str(env_file))
    statuses = run.statuses()
    assert statuses["test_service_health[auth]"] == "passed", run.output
    assert "skipped" not in {v for k, v in statuses.items() if k != "test_request_rate_floor[auth]"}, run.output
    assert statuses["test_error_rate_critical[auth]"] == "failed"
    assert "5xx error rate 100.00 %" in _message(run, "test_error_rate_critical[auth]")
    assert "every request failed: connected, but no complete response within 1 s" in _message(
        run, "test_error_rate_critical[auth]")
    p95 = _message(run, "test_p95_latency[auth]")
    assert ("P95 latency cannot be measured below 2 s: it is made of requests that timed out at the 1 s "
            "request timeout") in p95, p95


class _DefaultBuckets(BaseHTTPRequestHandler):
    """A /metrics with the client libraries' default buckets, no service label, growing each scrape.

    Per scrape: 100 requests, 97 under 0.1 s, 1 at 7 s and 2 slower than every bucket (> 10 s):
    the true P99 lies above 10 s, which histogram_quantile can only report as 10.
    """

    scrapes = 0

    def do_GET(self) -> None:
        if self.path != "/metrics":
            answer(self, 200, b'{"status": "ok"}')
            return
        type(self).scrapes += 1
        n = type(self).scrapes
        lines = ["# TYPE http_request_duration_seconds histogram"]
        for bound in DEFAULT_BUCKETS:
            count = (97 if bound >= 0.1 else 0) + (1 if bound >= 7.5 else 0)
            lines.append(f'http_request_duration_seconds_bucket{{le="{bound}"}} {count * n}')
        lines += [f'http_request_duration_seconds_bucket{{le="+Inf"}} {100 * n}',
                  f"http_request_duration_seconds_count {100 * n}",
                  "# TYPE http_requests_total counter", f'http_requests_total{{status="200"}} {100 * n}']
        answer(self, 200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def default_buckets_service() -> Iterator[int]:
    _DefaultBuckets.scrapes = 0
    with serving(_DefaultBuckets) as server:
        yield int(server.server_address[1])


def test_histogram_ceiling_arithmetic() -> None:
    buckets = [(b, 98.0 if b >= 7.5 else 97.0) for b in DEFAULT_BUCKETS] + [(float("inf"), 100.0)]
    assert metrics.histogram_quantile(0.99, buckets) == 10.0  # Prometheus's cap
    assert metrics.beyond_top_bucket(0.99, buckets) == (10.0, 2.0, 100.0)
    assert metrics.beyond_top_bucket(0.95, buckets) is None


def test_scrape_source_reads_a_plain_metrics_endpoint_and_sees_the_ceiling(
        run_suite: RunSuite, write_env: Callable[[str], Path], default_buckets_service: int) -> None:
    env_file = write_env('name = "plain"\n[slo]\nsource = "scrape"\nscrape_window_seconds = 0.5\n'
                         f'[[services]]\nname = "auth"\nurl = "http://127.0.0.1:{default_buckets_service}"\n')
    run = run_suite("-m", "daily and slo", "--env", str(env_file))
    statuses = run.statuses()
    # No service label on the series, no selector configured: all of /metrics belongs to the service.
    assert statuses["test_p95_latency[auth]"] == "passed", run.output
    assert statuses["test_p99_latency_critical[auth]"] == "failed", run.output
    message = _message(run, "test_p99_latency_critical[auth]")
    assert "P99 latency cannot be measured below 10 s" in message
    assert "top finite bucket le=10 (2 of 100 observations beyond it)" in message


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (.ci/run installs it)")
def test_prometheus_source_sees_the_ceiling_too(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                default_buckets_service: int, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 200ms\nscrape_configs:\n  - job_name: auth\n"
                      f"    static_configs:\n      - targets: ['127.0.0.1:{default_buckets_service}']\n")
    assert PROMETHEUS is not None
    process = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = f"http://127.0.0.1:{port}/api/v1/query?query=count(http_request_duration_seconds_bucket)"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _DefaultBuckets.scrapes < 12:
            time.sleep(0.2)
        with urllib.request.urlopen(query, timeout=5) as answer:
            assert b'"result":[{' in answer.read()
        env_file = write_env(
            f'name = "prom"\n[prometheus]\nurl = "http://127.0.0.1:{port}"\n[slo]\nwindow = "5s"\n'
            f'[[services]]\nname = "auth"\nurl = "http://127.0.0.1:{default_buckets_service}"\n'
            'prometheus_selector = \'job="auth"\'\n')
        run = run_suite("-m", "daily and slo", "-k", "latency", "--env", str(env_file))
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert run.statuses()["test_p99_latency_critical[auth]"] == "failed", run.output
    assert "cannot be measured below 10 s" in _message(run, "test_p99_latency_critical[auth]")
    assert run.statuses()["test_p95_latency[auth]"] == "passed"


def test_a_ratio_that_is_really_a_percent_fails_with_a_unit_message(
        run_suite: RunSuite, write_env: Callable[[str], Path], servers: RealServers) -> None:
    port = servers.http(body=b'{"score": 90}').server_address[1]
    env_file = write_env('name = "units"\n[business.compliance]\n'
                         f'url = "http://127.0.0.1:{port}/score"\nfield = "score"\nunit = "ratio"\n')
    run = run_suite("-m", "daily and business", "--env", str(env_file))
    assert run.statuses() == {"test_constitutional_compliance": "failed"}, run.output
    message = _message(run, "test_constitutional_compliance")
    assert 'unit: 90 cannot be a ratio (0..1); check unit = "percent"' in message
