"""The daily run against the embedded sandbox: healthy, and each fault failing exactly its case."""

from __future__ import annotations

import hashlib

import pytest

from acgs_checks.sandbox.servers import pgbouncer_binary
from conftest import RunSuite, label

HEALTH = "test_service_health[{}]"
DEGRADED = "test_service_not_degraded[{}]"
SERVICES = ("auth", "constitutional-ai", "policy-governance", "governance-synthesis")


def test_healthy_sandbox_passes_every_case(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox")
    assert run.returncode == 0, run.output
    statuses = run.statuses()
    assert {HEALTH.format(s) for s in SERVICES} | {DEGRADED.format(s) for s in SERVICES} <= set(statuses)
    # The sandbox's database is a standalone primary: replication does not apply; synthetic
    # sampling makes its own traffic, so the request-rate floor does not apply either.
    not_applicable = {"test_replication_lag[primary]"} | {f"test_request_rate_floor[{s}]" for s in SERVICES}
    assert {n for n, status in statuses.items() if status == "skipped"} == not_applicable
    assert {n for n, status in statuses.items() if status != "skipped"} == set(statuses) - not_applicable
    assert set(statuses[n] for n in set(statuses) - not_applicable) == {"passed"}
    # 8 health, 8 db, 3 pooler, 6 cache, 28 slo, 2 business, 11 host
    assert len(statuses) == (70 if pgbouncer_binary() else 67)
    assert "environment 'sandbox' (embedded sandbox)" in run.stdout


@pytest.mark.parametrize(
    ("fault", "failing", "severity", "message"),
    [
        ("auth:down", HEALTH.format("auth"), "critical", "connection refused: nothing is listening on"),
        ("constitutional-ai:503", HEALTH.format("constitutional-ai"), "critical",
         "→ 503 in"),
        ("policy-governance:slow=3", HEALTH.format("policy-governance"), "critical",
         "connected, but no complete response within 2 s (target unreachable)"),
        ("governance-synthesis:hang", HEALTH.format("governance-synthesis"), "critical",
         "connected, but no complete response within 2 s (target unreachable)"),
        ("auth:degraded", DEGRADED.format("auth"), "normal", "body status='warn'"),
        # Constitutional AI's richer body (its dependencies and performance beside the status), as ACGS-2 gives it.
        ("constitutional-ai:degraded", DEGRADED.format("constitutional-ai"), "normal", "body status='degraded'"),
    ],
    ids=["down", "503", "slow", "hang", "degraded", "degraded-rich-body"],
)
def test_each_fault_fails_exactly_its_case(run_suite: RunSuite, fault: str, failing: str,
                                           severity: str, message: str) -> None:
    run = run_suite("-m", "daily and health", "--env", "sandbox", "--sandbox-fault", fault)
    assert run.returncode == 1, run.output
    results = run.results()
    assert run.failed() == {failing}, run.output
    failed = results[failing]
    assert message in failed["statusDetails"]["message"]
    assert label(failed, "severity") == [severity]
    # A P0 failure blocks its P1 twin instead of raising a second alarm.
    target = failing.split("[")[1].rstrip("]")
    if failing.startswith("test_service_health"):
        twin = results[DEGRADED.format(target)]
        assert twin["status"] == "skipped"
        assert f"blocked: {target} is down; see test_service_health[{target}]" in twin["statusDetails"]["message"]
    others = {n: s for n, s in run.statuses().items() if target not in n}
    assert set(others.values()) == {"passed"}, others
    # Printed once, with its level: the acgs-checks summary's line, not pytest's FAILURES section or short summary.
    assert run.stdout.count(f"checks/test_service_health.py::{failing}") == 1, run.stdout
    level = "P0" if failing.startswith("test_service_health[") else "P1"
    assert f"FAILED {level} checks/test_service_health.py::{failing}: " in run.stdout


def test_slow_service_within_timeout_passes(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox", "--sandbox-fault", "auth:slow=0.3")
    assert run.returncode == 0, run.output


def test_marker_selection_runs_only_p0(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily and p0", "--env", "sandbox", "--sandbox-fault", "auth:degraded")
    assert run.returncode == 0, run.output
    pooler = {"test_pooler_reachable[pgbouncer]"} if pgbouncer_binary() else set()
    slo = {f"{case}[{s}]" for case in ("test_p99_latency_critical", "test_error_rate_critical") for s in SERVICES}
    host = {f"{c}[sandbox-host]" for c in ("test_host_reachable", "test_host_disk_critical", "test_host_services")}
    assert set(run.statuses()) == {HEALTH.format(s) for s in SERVICES} | pooler | slo | host | {
        "test_database_connectivity[primary]", "test_cache_reachable[main]"}


def test_keyword_selection_probes_only_the_selected_service(run_suite: RunSuite) -> None:
    # Only auth is selected, so the hanging service is never probed and the run does not wait.
    run = run_suite("-m", "daily", "-k", "auth", "--env", "sandbox",
                    "--sandbox-fault", "governance-synthesis:hang")
    assert run.returncode == 0, run.output
    assert {HEALTH.format("auth"), DEGRADED.format("auth")} <= set(run.statuses())
    assert all("[auth]" in name for name in run.statuses())


def test_xdist_gives_the_same_verdicts(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox", "-n", "2", "--sandbox-fault", "auth:down")
    assert run.returncode == 1, run.output
    assert run.failed() == {HEALTH.format("auth")}
    assert run.statuses()["test_cache_hit_rate[main]"] == "passed"
    # The blocked twin ran on whichever worker; the controller still links it to the failure.
    results = run.results()
    allure_id = hashlib.md5(results[HEALTH.format("auth")]["uuid"].encode()).hexdigest()
    assert results[DEGRADED.format("auth")]["links"] == [
        {"name": f"blocked by {HEALTH.format('auth')}", "url": f"#/{allure_id}", "type": "link"}]
    assert "environment.properties" in {p.name for p in run.allure_dir.iterdir()}
