"""What a run hands to people and pipelines: JUnit, summary.json, textfile, Pushgateway, webhook, --review."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tomllib
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_allure_report import ALLURE, CHROMIUM, assert_html_report_shows

from acgs_checks.maths import metrics
from acgs_checks.reporting import outputs
from conftest import ROOT, RunSuite
from servers import free_port, serving, url_of, wait_ready

PUSHGATEWAY = shutil.which("prometheus-pushgateway")


class _Receiver(BaseHTTPRequestHandler):
    posts: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append({"path": self.path, "body": json.loads(body)})  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    """A real local HTTP receiver, as Alertmanager or a Slack-compatible endpoint would be."""
    with serving(_Receiver, posts=[]) as server:
        yield server


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    if PUSHGATEWAY is None:
        pytest.skip("prometheus-pushgateway is not installed (.ci/run installs it)")
    port = free_port()
    process = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/-/ready")
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_one_p0_run_agrees_everywhere(run_suite: RunSuite, tmp_path: Path, receiver: ThreadingHTTPServer,
                                      pushgateway: str, serve: functools.partial[str]) -> None:
    junit, summary_file, textfile = tmp_path / "junit.xml", tmp_path / "summary.json", tmp_path / "acgs.prom"
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/acgs"
    run = run_suite("-m", "daily and (health or cache)", "--env", "sandbox", "--sandbox-fault", "auth:down",
                    f"--junitxml={junit}", f"--summary-json={summary_file}", f"--metrics-textfile={textfile}",
                    "--pushgateway", pushgateway, "--notify-webhook", hook, "--review", "daily")
    assert run.returncode == 1, run.output
    failing = "test_service_health[auth]"

    # JUnit: the failure, with severity and review day as properties.
    root = ET.parse(junit).getroot()
    failed = [case for case in root.iter("testcase") if case.find("failure") is not None]
    assert [case.get("name") for case in failed] == [failing]
    props = {p.get("name"): p.get("value") for p in failed[0].iter("property")}
    assert props["severity"] == "P0"
    assert props["review_day"] == "daily"
    assert props["runbook"] == "daily.service-health,alerts.critical.service-down"

    # summary.json: per check id, severity, day, outcome, message, measured value and threshold.
    summary = json.loads(summary_file.read_text())
    assert summary["environment"] == "sandbox"
    assert summary["review"] == "daily"
    assert summary["counts"]["P0"]["failed"] == 1
    checks = {c["name"]: c for c in summary["checks"]}
    assert [n for n, c in checks.items() if c["outcome"] == "failed"] == [failing]
    assert checks[failing]["id"] == f"checks/test_service_health.py::{failing}"
    assert "connection refused" in checks[failing]["message"]
    assert checks["test_service_not_degraded[auth]"]["outcome"] == "skipped"

    # Textfile: node_exporter format, written atomically (no temporary file left beside it).
    text = textfile.read_text()
    success = {(s.labels["check"], s.labels["severity"], s.labels["env"], s.labels["review"]): s.value
               for s in metrics.parse_text(text) if s.name == "acgs_check_success"}
    assert success[(failing, "P0", "sandbox", "daily")] == 0
    assert success[("test_service_health[policy-governance]", "P0", "sandbox", "daily")] == 1
    assert "acgs_check_duration_seconds{" in text
    assert 'acgs_checks_last_run_timestamp_seconds{env="sandbox",review="daily"}' in text
    assert "test_service_not_degraded[auth]" not in text  # skipped checks have no success sample
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".acgs.prom")] == []

    # Pushgateway: the same series, grouped by env and review.
    with urllib.request.urlopen(pushgateway + "/metrics", timeout=5) as response:
        pushed = response.read().decode()
    assert (f'acgs_check_success{{check="{failing}",env="sandbox",instance="",job="acgs_checks",review="daily",'
            f'severity="P0"}} 0') in pushed  # the Pushgateway's own rendering

    # Webhook: the failures at or above --fail-on, Alertmanager-shaped, with a Slack text.
    assert len(receiver.posts) == 1  # type: ignore[attr-defined]
    post = receiver.posts[0]  # type: ignore[attr-defined]
    assert post["path"] == "/hooks/acgs"
    alerts = post["body"]["alerts"]
    assert [a["labels"]["check"] for a in alerts] == [failing]
    assert alerts[0]["labels"]["severity"] == "P0"
    assert "connection refused" in alerts[0]["annotations"]["summary"]
    assert post["body"]["text"].startswith("acgs-checks: 1 check(s) failing at or above P3 in sandbox")

    # The Allure HTML report of the same run, in real Chromium: the same single failure.
    if not ALLURE.exists() or CHROMIUM is None:
        pytest.skip("the Allure CLI (npm ci) or chromium is missing: the HTML part was not checked")
    assert_html_report_shows(run.allure_dir, tmp_path, serve, failing=failing,
                             message=r"auth: GET http://127\.0\.0\.1:\d+/health → connection refused")


def test_webhook_only_for_failures_at_or_above_fail_on(run_suite: RunSuite, receiver: ThreadingHTTPServer) -> None:
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/"
    run = run_suite("-m", "daily and health", "--env", "sandbox", "--sandbox-fault", "auth:degraded",
                    "--fail-on", "P0", "--notify-webhook", hook)
    assert run.returncode == 0, run.output
    assert receiver.posts == []  # type: ignore[attr-defined]


def test_undeliverable_outputs_are_one_line_not_a_crash(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily and health", "--env", "sandbox", "--sandbox-fault", "auth:503",
                    "--pushgateway", f"http://127.0.0.1:{free_port()}",
                    "--notify-webhook", f"http://127.0.0.1:{free_port()}/secret-token-path")
    assert run.returncode == 1
    assert "could not deliver: pushgateway:" in run.stdout
    assert "could not deliver: webhook:" in run.stdout
    assert "Traceback" not in run.output
    assert "secret-token-path" not in run.output


def test_junit_and_summary_default_to_reports(run_suite: RunSuite, suite_copy: Path) -> None:
    run = run_suite("-m", "daily and health", "--env", "sandbox", cwd=suite_copy, report_defaults=True)
    assert run.returncode == 0, run.output
    assert (suite_copy / "reports" / "junit.xml").is_file()
    # the four services' health, and the sandbox host's services
    assert json.loads((suite_copy / "reports" / "summary.json").read_text())["counts"]["P0"]["passed"] == 5


@pytest.mark.parametrize(
    ("today", "days"),
    [("2026-11-23", {"daily", "monday"}), ("2026-11-24", {"daily"}), ("2026-11-25", {"daily", "wednesday"}),
     ("2026-11-27", {"daily", "friday"}), ("2026-11-29", {"daily"})],
    ids=["monday", "tuesday", "wednesday", "friday", "sunday"],
)
def test_review_today_selects_daily_and_todays_review(run_suite: RunSuite, today: str, days: set[str]) -> None:
    run = run_suite("--review", "today", "--env", "sandbox", "--collect-only", "-q",
                    environ={"ACGS_TODAY": today})
    assert run.returncode == 0, run.output
    collected = {line.split("::")[1].split("[")[0] for line in run.stdout.splitlines() if "::" in line}
    assert "test_service_health" in collected
    assert ("test_tables_vacuumed_and_analyzed" in collected) == ("wednesday" in days)


def test_review_day_runs_that_days_set_on_any_day(run_suite: RunSuite) -> None:
    run = run_suite("--review", "wednesday", "--env", "sandbox", "--collect-only", "-q",
                    environ={"ACGS_TODAY": "2026-11-24"})
    assert "test_tables_vacuumed_and_analyzed[primary]" in run.stdout
    bad = run_suite("--review", "someday", "--env", "sandbox")
    assert bad.returncode == 4
    assert "--review: 'someday' is not a review" in bad.stderr


def test_runbook_coverage_map_is_guarded(run_suite: RunSuite) -> None:
    run = run_suite("--runbook-coverage", "--env", "sandbox", alluredir=False)
    assert run.returncode == 0, run.output
    out = run.stdout
    assert "LOST ITS CHECKS" not in out, out  # a requirement that had checks lost them all
    assert "has checks, but the map says automated = false" not in out, out
    assert "[x] daily.service-health: Daily Operations > Morning Health Check (09:00 UTC)" in out
    assert "checks/test_service_health.py::test_service_health" in out
    # The weekly reviews are automated, each with checks; what is not automated is listed, not hidden.
    for rid in ("monday.ssl-expiry", "monday.failed-authentication", "monday.access-log-anomalies",
                "monday.security-alerts", "wednesday.performance-trends", "wednesday.slow-query-log",
                "wednesday.resource-trends", "wednesday.capacity-planning", "friday.backup-completion",
                "friday.backup-restore-test", "friday.backup-retention", "friday.dr-documentation"):
        assert f"[x] {rid}:" in out, out
    # User satisfaction is the Apdex check now: every requirement of the runbook is automated.
    assert "[x] monitoring.business.user-satisfaction:" in out
    assert "test_user_satisfaction_apdex" in out
    requirements = tomllib.loads((ROOT / "src" / "acgs_checks" / "policy" / "runbook.toml").read_text())["requirement"]
    for requirement in requirements:
        mark = "x" if requirement["automated"] else " "
        assert f"[{mark}] {requirement['id']}:" in out


class _Flaky(BaseHTTPRequestHandler):
    answers: list[int]
    seen: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(self.path)
        code = self.answers.pop(0) if self.answers else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.mark.parametrize(("answers", "attempts", "problem"), [
    ([503, 502], 3, ""),                        # transient: retried until it is delivered
    ([503, 503, 503], 3, "webhook: HTTP 503"),  # still failing after the bounded attempts: one line
    ([404], 1, "webhook: HTTP 404"),            # refused: another attempt would get the same
])
def test_webhook_delivery_retries_only_transient_failures(answers: list[int], attempts: int, problem: str) -> None:
    handler = type("Handler", (_Flaky,), {"answers": list(answers), "seen": []})
    with serving(handler) as server:
        result = outputs.notify(f"{url_of(server)}/hook", {"alerts": []})
    assert len(handler.seen) == attempts
    assert result.startswith(problem) if problem else result == ""
