"""Database, pooler and cache checks against the sandbox's real PostgreSQL, PgBouncer and Redis."""

from __future__ import annotations

import hashlib
import re

import pytest

from acgs_checks.sandbox.servers import pgbouncer_binary
from acgs_checks.sandbox.workload import SECRET_LITERAL
from conftest import Run, RunSuite, label

# Without PgBouncer on the machine the sandbox has no pooler (and its checks do not apply).
HAS_PGBOUNCER = pgbouncer_binary() is not None

DB = "[primary]"
CACHE = "[main]"
POOL = "[pgbouncer]"
DATABASE_CASES = {f"test_database_connectivity{DB}", f"test_no_long_running_queries{DB}",
                  f"test_no_idle_in_transaction_sessions{DB}", f"test_connection_usage{DB}",
                  f"test_no_blocked_lock_waits{DB}", f"test_buffer_cache_hit_ratio{DB}",
                  f"test_transaction_id_age{DB}", f"test_replication_lag{DB}",
                  f"test_tables_vacuumed_and_analyzed{DB}"}
POOLER_CASES = {f"test_pooler_reachable{POOL}", f"test_pool_saturation{POOL}", f"test_pooler_client_connections{POOL}"}
CACHE_CASES = {f"test_cache_reachable{CACHE}", f"test_cache_hit_rate{CACHE}", f"test_cache_memory{CACHE}",
               f"test_cache_evictions{CACHE}", f"test_cache_rejected_connections{CACHE}",
               f"test_cache_fragmentation{CACHE}"}


def backends_run(run_suite: RunSuite, *faults: str) -> Run:
    args = ["-m", "(daily or wednesday) and (database or cache)", "--env", "sandbox"]
    for fault in faults:
        args += ["--sandbox-fault", fault]
    return run_suite(*args)


def test_healthy_sandbox_passes_every_backend_case(run_suite: RunSuite) -> None:
    run = backends_run(run_suite)
    assert run.returncode == 0, run.output
    statuses = run.statuses()
    assert set(statuses) == DATABASE_CASES | (POOLER_CASES if HAS_PGBOUNCER else set()) | CACHE_CASES
    # A standalone primary has nothing to replicate: that one case says so instead of passing.
    assert statuses.pop(f"test_replication_lag{DB}") == "skipped"
    assert set(statuses.values()) == {"passed"}, statuses
    assert "not applicable: primary is a primary with no replicas attached" in \
        run.results()[f"test_replication_lag{DB}"]["statusDetails"]["message"]


FAULTS = [
    ("db:long-query", f"test_no_long_running_queries{DB}", "normal",
     r"primary: 1 statement\(s\) running longer than 1 s: pid \d+ \(user postgres, application 'acgs-sandbox-app'\) "
     r"running \d+\.\d s: SELECT pg_sleep\(…\), '…' \(expected none longer than 1 s\)"),
    ("db:idle-in-transaction", f"test_no_idle_in_transaction_sessions{DB}", "normal",
     r"primary: 1 session\(s\) idle in transaction: pid \d+ .* idle in transaction for \d+\.\d s .*"
     r"\(expected none idle longer than 1 s\)"),
    ("db:connections=90", f"test_connection_usage{DB}", "normal",
     # Exactly floor(47 x 90 %) = 42 sessions, the checker's own included.
     r"primary: 42 of 47 usable connections in use = 89\.4 % \(max_connections 50 - 3 superuser-reserved\) "
     r"\(expected < 80 %\)"),
    ("db:blocked-lock", f"test_no_blocked_lock_waits{DB}", "normal",
     r"pid \d+ .* has waited \d+\.\d s for AccessShareLock on acgs\.policies, blocked by pid \d+ .*"
     r"\(expected no wait longer than 1 s\)"),
    ("cache:misses", f"test_cache_hit_rate{CACHE}", "normal",
     r"main: hit rate 0\.0 % over the last 0\.5\d* s \(0 hits / \d+ lookups; cumulative \d+\.\d %\) "
     r"\(expected > 85 %\)"),
    ("cache:memory=90", f"test_cache_memory{CACHE}", "normal",
     r"main: used_memory [\d.]+M = (8[5-9]|9\d)\.\d % of maxmemory [\d.]+M \(policy noeviction\) \(expected < 85 %\)"),
    ("cache:evictions", f"test_cache_evictions{CACHE}", "minor",
     r"main: \d+ key\(s\) evicted in 0\.5\d* s .*policy volatile-lru\) \(expected 0 evictions\)"),
    pytest.param(
        "pgbouncer:saturated", f"test_pool_saturation{POOL}", "normal",
        r"pgbouncer: acgs_production/postgres: 2 client\(s\) waiting.*10 of 10 server connections active = 100 % "
        r"\(expected no waiting clients and active < 80 % of pool_size\)",
        marks=pytest.mark.skipif(not HAS_PGBOUNCER, reason="pgbouncer is not installed (.ci/run installs it)"),
        id="pgbouncer:saturated"),
]


@pytest.mark.parametrize(("fault", "failing", "severity", "pattern"),
                         [f if hasattr(f, "marks") else pytest.param(*f, id=f[0]) for f in FAULTS])
def test_each_fault_fails_exactly_its_case(run_suite: RunSuite, fault: str, failing: str, severity: str,
                                           pattern: str) -> None:
    run = backends_run(run_suite, fault)
    assert run.returncode == 1, run.output
    assert run.failed() == {failing}, run.output
    result = run.results()[failing]
    assert re.search(pattern, result["statusDetails"]["message"]), result["statusDetails"]["message"]
    assert label(result, "severity") == [severity]
    others = {n: s for n, s in run.statuses().items() if n != failing and n != f"test_replication_lag{DB}"}
    assert set(others.values()) == {"passed"}, others


@pytest.mark.parametrize(
    ("fault", "connectivity", "dependents", "pattern"),
    [
        ("db:down", f"test_database_connectivity{DB}", DATABASE_CASES - {f"test_database_connectivity{DB}"},
         r"primary: connect postgresql://acgs_monitor:\*\*\*@127\.0\.0\.1:\d+/acgs_production → connection failed: "
         r".*Connection refused \(target unreachable\)"),
        ("cache:down", f"test_cache_reachable{CACHE}", CACHE_CASES - {f"test_cache_reachable{CACHE}"},
         r"main: PING redis://acgs_monitor:\*\*\*@127\.0\.0\.1:\d+/0 → connection failed: .*\(target unreachable\)"),
    ],
    ids=["db:down", "cache:down"],
)
def test_unreachable_target_is_one_failure_and_blocked_dependents(
        run_suite: RunSuite, fault: str, connectivity: str, dependents: set[str], pattern: str) -> None:
    run = backends_run(run_suite, fault)
    assert run.returncode == 1, run.output
    assert run.failed() == {connectivity}
    results = run.results()
    failed = results[connectivity]
    assert re.search(pattern, failed["statusDetails"]["message"]), failed["statusDetails"]["message"]
    assert label(failed, "severity") == ["critical"]
    target = connectivity.split("[")[1].rstrip("]")
    allure_id = hashlib.md5(failed["uuid"].encode()).hexdigest()  # how Allure 3 names a result
    for name in dependents:
        assert results[name]["status"] == "skipped", name
        assert f"blocked: {target} is unreachable; see {connectivity}" in results[name]["statusDetails"]["message"]
        assert {"name": f"blocked by {connectivity}", "url": f"#/{allure_id}", "type": "link"} in results[name]["links"]
    # The pooler is its own target: it stays reachable while PostgreSQL is down.
    if fault == "db:down" and HAS_PGBOUNCER:
        assert results[f"test_pooler_reachable{POOL}"]["status"] == "passed"


def test_backend_evidence_is_attached_and_redacted(run_suite: RunSuite) -> None:
    run = backends_run(run_suite, "db:long-query")
    result = run.results()[f"test_no_long_running_queries{DB}"]
    attachment = next(a for a in result["attachments"] if a["name"] == "evidence")
    text = (run.allure_dir / attachment["source"]).read_text()
    assert "SELECT pg_sleep(…), '…'" in text  # the activity rows behind the message, literals masked
    assert SECRET_LITERAL not in run.output + run.all_files_text()
    assert "acgs_monitor:***@127.0.0.1" in text
    assert "Daily Operations" in label(result, "epic")
    assert "pg_cancel_backend" in result["description"]
