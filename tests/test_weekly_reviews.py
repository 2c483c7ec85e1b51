"""The weekly reviews against the real sandbox: each day passes healthy, and each fault fails exactly its cases.

Faults on different targets go into one run where their cases are disjoint; the table below says
which cases each fault fails, and every run asserts that exactly the union of them failed, that
the blocked ones are skipped by a case that failed, and that every other case passed.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Run, RunSuite
from servers import RealServers

WEEKLY = "monday or wednesday or friday"
MONDAY = {"test_tls_certificate_expiry_critical[gateway]", "test_tls_certificate_expiry[gateway]",
          "test_tls_chain_trusted[gateway]", "test_tls_hostname[gateway]", "test_tls_minimum_protocol[gateway]",
          "test_failed_logins[redis-acl]", "test_failed_logins[postgres-log]", "test_access_log_anomalies",
          "test_redis_refuses_anonymous[main]", "test_postgres_ssl_on[primary]",
          "test_postgres_password_encryption[primary]", "test_postgres_no_remote_trust[primary]",
          "test_no_critical_alerts_firing", "test_no_warning_alerts_firing"}
WEDNESDAY = {"test_slow_queries[primary]", "test_performance_trends", "test_capacity_headroom_critical",
             "test_capacity_headroom", "test_tables_vacuumed_and_analyzed[primary]"}
FRIDAY = {"test_backup_completion[nightly]", "test_wal_archiving[nightly]", "test_restore_drill[nightly]",
          "test_backup_retention[nightly]", "test_dr_documentation_current"}

# fault -> (the cases it fails, the cases it blocks, a word of each failure's message)
FAULTS: dict[str, tuple[set[str], set[str], str]] = {
    "tls:expiring=20": ({"test_tls_certificate_expiry[gateway]"}, set(), "expires in 20.0 days"),
    "tls:expiring=5": ({"test_tls_certificate_expiry[gateway]", "test_tls_certificate_expiry_critical[gateway]"},
                       set(), "expires in 5.0 days"),
    "tls:expired": ({"test_tls_certificate_expiry[gateway]", "test_tls_certificate_expiry_critical[gateway]"},
                    set(), "expired 1.0 days ago"),
    "tls:self-signed": ({"test_tls_chain_trusted[gateway]"}, set(), "self-signed certificate"),
    "tls:wrong-host": ({"test_tls_hostname[gateway]"}, set(), "['wrong.example']"),
    "tls:old-protocol": ({"test_tls_minimum_protocol[gateway]"}, set(), "accepts TLSv1, TLSv1.1"),
    "auth:failed-logins=25": ({"test_failed_logins[redis-acl]", "test_failed_logins[postgres-log]"}, set(),
                              "25 failed login(s) in 24 h"),
    "logs:access-spike": ({"test_access_log_anomalies"}, set(), "5xx share 31.25 % outside"),
    "alerts:critical": ({"test_no_critical_alerts_firing"}, set(), "ACGSServiceDown"),
    "db:slow-query": ({"test_slow_queries[primary]"}, set(), "mean over 12 calls: SELECT pg_sleep($1)"),
    "history:regression": ({"test_performance_trends"}, set(), "test_p95_latency[auth] 0.64 this week"),
    "history:disk-fills=20": ({"test_capacity_headroom_critical", "test_capacity_headroom"}, set(),
                              "disk full in 20 days"),
    "backup:stale": ({"test_backup_completion[nightly]"}, {"test_restore_drill[nightly]"}, "30.0 h old"),
    "backup:missing": ({"test_backup_completion[nightly]"},
                       {"test_restore_drill[nightly]", "test_backup_retention[nightly]", "test_wal_archiving[nightly]"},
                       "no backup in"),
    "backup:corrupt": ({"test_restore_drill[nightly]"}, set(), "pg_restore failed"),
    "retention:short": ({"test_backup_retention[nightly]"}, set(), "5 backup(s), the oldest 4.0 days old"),
    "docs:stale": ({"test_dr_documentation_current"}, set(), "last changed 120 days ago"),
}
# One run per group: the faults of a group act on different targets and fail disjoint cases.
GROUPS = [
    ("tls:expiring=20", "auth:failed-logins=25", "alerts:critical", "db:slow-query", "history:regression",
     "backup:stale", "docs:stale"),
    ("tls:self-signed", "logs:access-spike", "history:disk-fills=20", "backup:corrupt"),
    ("tls:wrong-host", "backup:missing"),
    ("tls:old-protocol", "retention:short"),
    ("tls:expired",),
    ("tls:expiring=5",),
]


def _message(run: Run, name: str) -> str:
    return str(run.results()[name]["statusDetails"]["message"]).removeprefix("Failed: ").removeprefix("Skipped: ")


def test_every_fault_is_in_a_group() -> None:
    grouped = [f for group in GROUPS for f in group]
    assert sorted(grouped) == sorted(FAULTS)


@pytest.mark.parametrize(("day", "cases"), [("monday", MONDAY), ("wednesday", WEDNESDAY), ("friday", FRIDAY)])
def test_each_weekly_review_passes_on_a_healthy_sandbox(run_suite: RunSuite, day: str, cases: set[str]) -> None:
    # As root the scratch server runs as another account, which cannot enter pytest's private tmp_path.
    restore_tmp = Path(tempfile.mkdtemp(prefix="acgs-test-restore-"))
    restore_tmp.chmod(0o755)
    try:
        run = run_suite("-m", day, "--env", "sandbox", environ={"ACGS_RESTORE_TMPDIR": str(restore_tmp)})
        leftovers = list(restore_tmp.iterdir())
    finally:
        shutil.rmtree(restore_tmp, ignore_errors=True)
    assert run.returncode == 0, run.output
    assert run.statuses() == dict.fromkeys(cases, "passed"), run.output
    results = run.results()
    if day == "monday":
        evidence = run.all_files_text()
        for field in ('"subject": "CN=localhost"', '"issuer": "CN=acgs sandbox CA"', '"not_after"', '"key": "EC'):
            assert field in evidence
    if day == "wednesday":
        trends = results["test_performance_trends"]
        pngs = [a for a in trends["attachments"] if a["type"] == "image/png"]
        assert pngs, trends["attachments"]
        assert (run.allure_dir / pngs[0]["source"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if day == "friday":
        # A real pg_dump, restored for real into a scratch server that is gone afterwards.
        drill = _message(run, "test_restore_drill[nightly]")
        assert "4 table(s)" in drill, drill
        assert leftovers == []


@pytest.mark.parametrize("group", GROUPS, ids=["+".join(g) for g in GROUPS])
def test_each_fault_fails_exactly_its_cases(run_suite: RunSuite, group: tuple[str, ...]) -> None:
    args = [a for fault in group for a in ("--sandbox-fault", fault)]
    run = run_suite("-m", WEEKLY, "--env", "sandbox", *args)
    assert run.returncode == 1, run.output
    failing = set().union(*(FAULTS[f][0] for f in group))
    blocked = set().union(*(FAULTS[f][1] for f in group))
    statuses = run.statuses()
    assert set(statuses) == MONDAY | WEDNESDAY | FRIDAY
    assert {n for n, s in statuses.items() if s == "failed"} == failing, run.output
    assert {n for n, s in statuses.items() if s == "skipped"} == blocked, run.output
    for fault in group:
        cases, _, word = FAULTS[fault]
        assert any(word in _message(run, case) for case in cases), (fault, [_message(run, c) for c in cases])
    for case in blocked:
        assert _message(run, case).startswith("blocked:"), _message(run, case)


def test_a_run_that_selects_nothing_says_why_in_one_line(run_suite: RunSuite) -> None:
    nothing = run_suite("-m", "friday and cache", "--env", "sandbox")
    assert nothing.returncode == 5, nothing.output
    lines = [line for line in nothing.stdout.splitlines() if line.startswith("acgs-checks: ")]
    assert len(lines) == 1, nothing.output
    assert "-m 'friday and cache' selects no check in environment 'sandbox'" in lines[0]
    assert "-m friday selects 5 checks (backup 5)" in lines[0]
    assert "-m monday selects 13 checks (security 13)" in lines[0]
    lacking = run_suite("-m", "friday", "--env", "local")
    assert lacking.returncode == 5, lacking.output
    assert "-m 'friday' matches 5 check(s), but environment 'local' has nothing for them to check: add " \
           "[backups], [dr]" in lacking.stdout


def test_every_run_keeps_its_measured_values(run_suite: RunSuite, servers: RealServers,
                                             write_env: Callable[[str], Path], tmp_path: Path) -> None:
    port = servers.http().server_address[1]
    env_file = write_env(f'name = "staging"\n[[services]]\nname = "auth"\nurl = "http://127.0.0.1:{port}"\n')
    summary = tmp_path / "out" / "summary.json"
    for _ in range(2):
        run = run_suite("-m", "daily and health", "--env", str(env_file), f"--summary-json={summary}")
        assert run.returncode == 0, run.output
    checks = {c["name"]: c for c in json.loads(summary.read_text())["checks"]}
    assert checks["test_service_health[auth]"]["measured"] is not None
    # The default store is beside summary.json; passing cases are kept too, once per run.
    with sqlite3.connect(summary.parent / "history.sqlite") as conn:
        rows = conn.execute("SELECT environment, review, case_name, value, outcome FROM measurements").fetchall()
    kept = [r for r in rows if r[2] == "test_service_health[auth]"]
    assert len(kept) == 2, rows
    assert {(r[0], r[1], r[4]) for r in kept} == {("staging", "adhoc", "passed")}
    assert {r[3] for r in kept} == {200.0}  # the health case's measured value: the status
    # Two runs today are no trend yet: the store is younger than the week the comparison needs (warming up; a
    # store past its window without data fails: test_warming_up.py).
    trends = run_suite("-m", "wednesday", "-k", "trends", "--env", str(env_file), f"--summary-json={summary}")
    assert trends.returncode == 0, trends.output
    message = str(trends.results()["test_performance_trends"]["statusDetails"]["message"])
    assert message.removeprefix("Skipped: ").startswith("warming up: 2 of 2 runs recorded since ") is False
    assert message.removeprefix("Skipped: ").startswith("warming up: 2 runs recorded since "), message


DB = '[[databases]]\nname = "primary"\ndsn = "postgresql://m@127.0.0.1:1/x"\n'


@pytest.mark.parametrize(("text", "needles"), [
    ('[[security.failed_logins]]\nname = "x"\nquery = "up"\ncache = "main"\n',
     ["security.failed_logins", "sets query, cache of query, cache and database", "fix: set exactly one"]),
    (DB + '[[security.failed_logins]]\nname = "x"\ndatabase = "primary"\n', ["path: is missing", "fix: write path ="]),
    ('[[security.failed_logins]]\nname = "x"\ncache = "main"\n',
     ["security.failed_logins[x].cache: 'main' is not a [[caches]] name"]),
    (DB + '[[backups]]\nname = "nightly"\ndatabase = "replica"\ndirectory = "/b"\n',
     ["backups[nightly].database: is not a [[databases]] name", "fix: use one of primary"]),
    (DB + '[[backups]]\nname = "nightly"\ndatabase = "primary"\ndirectory = "/b"\nhost = "db9"\n',
     ["backups[nightly].host: 'db9' is not a [[hosts]] name"]),
    (DB + '[[backups]]\nname = "nightly"\ndatabase = "primary"\ndirectory = "/b"\nbarman_server = "pg"\n',
     ["sets directory, barman_server of directory"]),
    (DB + '[[backups]]\nname = "n"\ndatabase = "primary"\ndirectory = "/b"\ntimestamp_column = "a.b"\n',
     ["'a.b' is not schema.table.column"]),
    ('[[tls_endpoints]]\nname = "gw"\naddress = "gateway"\n', ["'gateway' is not host:port", "fix: write e.g."]),
    ('[security]\naccess_logs = [{ host = "web9" }]\n', ["security.access_logs[0].host: 'web9' is not a [[hosts]]"]),
    ('[thresholds]\ncapacity_critical_days = 120\n', ["capacity_critical_days", "keep capacity_critical_days at or "
                                                      "below capacity_warning_days"]),
], ids=["two sources", "log without path", "unknown cache", "unknown database", "unknown host", "two backup sources",
        "bad column", "bad address", "unknown access host", "thresholds out of order"])
def test_weekly_sections_refuse_bad_input_in_one_line(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                      text: str, needles: list[str]) -> None:
    from test_config_errors import assert_one_line  # noqa: PLC0415

    run = run_suite("-m", "monday", "--env", str(write_env('name = "x"\n' + text)), alluredir=False)
    assert run.returncode == 4, run.output
    assert_one_line(run.output, "fix:", *needles)


def test_without_openssl_or_pg_stat_statements_the_sandbox_says_so_and_reads_the_log(run_suite: RunSuite) -> None:
    """The pgserver wheel's PostgreSQL (what a machine without PostgreSQL gets) has neither TLS nor
    pg_stat_statements: the TLS case is not applicable (the sandbox sets tls_required = false), and slow
    statements come from its log_min_duration_statement lines, read on the sandbox host."""
    pgserver = pytest.importorskip("pgserver")
    bindir = Path(pgserver.__file__).parent / "pginstall" / "bin"
    run = run_suite("-m", WEEKLY, "--env", "sandbox", "--sandbox-fault", "db:slow-query",
                    environ={"ACGS_SANDBOX_PG_BINDIR": str(bindir)})
    assert run.returncode == 1, run.output
    statuses = run.statuses()
    assert {n for n, s in statuses.items() if s != "passed"} == {"test_postgres_ssl_on[primary]",
                                                                 "test_slow_queries[primary]"}, run.output
    assert _message(run, "test_postgres_ssl_on[primary]").startswith(
        "not applicable: primary: tls_required = false (TLS ends elsewhere); ssl = off")
    slow = _message(run, "test_slow_queries[primary]")
    assert "1 slow statement(s): " in slow
    assert "mean over 12 logged calls: SELECT pg_sleep(…) (source: log_min_duration_statement lines of " in slow


def test_dr_documents_are_dated_by_git_or_last_modified(run_suite: RunSuite, write_env: Callable[[str], Path],
                                                       tmp_path: Path, serve: Callable[[Path], str]) -> None:
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import time  # noqa: PLC0415

    day = 86400
    repo = tmp_path / "repo"
    repo.mkdir()
    doc = repo / "restore.md"
    doc.write_text("# Restore\n")
    dated = {"GIT_AUTHOR_DATE": f"@{int(time.time()) - 10 * day} +0000",
             "GIT_COMMITTER_DATE": f"@{int(time.time()) - 10 * day} +0000", "GIT_CONFIG_GLOBAL": "/dev/null",
             "HOME": str(tmp_path)}
    for args in (["init", "-q"], ["add", "restore.md"],
                 ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "restore"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env={**os.environ, **dated})
    os.utime(doc, (time.time() - 200 * day, time.time() - 200 * day))  # the file's own time is older: git wins
    git_env = write_env(f'name = "dr"\n[dr]\ndocuments = ["{doc}"]\n', "git.toml")
    fresh = run_suite("-m", "friday", "--env", str(git_env))
    assert fresh.returncode == 0, fresh.output
    assert "restore.md 10 days (last git commit)" in _message(fresh, "test_dr_documentation_current")
    site = tmp_path / "site"
    site.mkdir()
    (site / "contacts.html").write_text("<h1>DR contacts</h1>")
    os.utime(site / "contacts.html", (time.time() - 100 * day, time.time() - 100 * day))
    url = serve(site) + "/contacts.html"
    stale_env = write_env(f'name = "dr"\n[dr]\ndocuments = ["{url}", "missing.md"]\n', "stale.toml")
    stale = run_suite("-m", "friday", "--env", str(stale_env))
    assert stale.returncode == 1, stale.output
    message = _message(stale, "test_dr_documentation_current")
    assert f"{url} last changed 100 days ago (Last-Modified)" in message, message
    assert f"{tmp_path / 'missing.md'}: does not exist" in message  # relative to the environment file
