"""What a failed check leaves in Allure: severity, runbook place, environment, response, remediation, evidence."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import RunSuite, label


def test_failed_p0_case_in_allure(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox", "--sandbox-fault", "auth:down")
    assert run.returncode == 1
    result = run.results()["test_service_health[auth]"]
    assert result["status"] == "failed"
    assert label(result, "severity") == ["critical"]
    assert label(result, "epic") == ["Daily Operations"]
    assert label(result, "feature") == ["Morning Health Check (09:00 UTC)"]
    assert label(result, "story") == ["Service Health Verification"]
    assert label(result, "environment") == ["sandbox"]
    assert {"p0", "daily", "health"} <= set(label(result, "tag"))
    assert {"name": "environment", "value": "'sandbox'"} in result["parameters"]
    assert {"name": "service", "value": "'auth'"} in result["parameters"]
    description = result["description"]
    assert "respond within 15 minutes" in description
    assert "status page update within 30 minutes" in description
    assert "docker-compose -f docker-compose.production.yml restart <service_name>" in description
    assert "rolling_restart.sh" in description

    attachments = {a["name"]: a for a in result["attachments"]}
    evidence = json.loads((run.allure_dir / attachments["evidence"]["source"]).read_text())
    assert evidence["outcome"] == "refused"
    assert evidence["timings_seconds"]["timeout"] == 2.0


def test_severity_mapping_and_evidence_of_a_p1(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox", "--sandbox-fault", "auth:degraded")
    result = run.results()["test_service_not_degraded[auth]"]
    assert label(result, "severity") == ["normal"]
    assert "respond within 1 hour" in result["description"]
    attachments = {a["name"]: a for a in result["attachments"]}
    evidence = json.loads((run.allure_dir / attachments["evidence"]["source"]).read_text())
    assert evidence["status"] == 200
    assert evidence["health"] == {"normalised": "degraded", "field": "status", "value": "warn"}
    assert "content-type" in {k.lower() for k in evidence["headers"]}
    assert '"warn"' in evidence["body_excerpt"]
    assert set(evidence["phases_seconds"]) == {"resolve", "connect", "processing", "transfer"}  # plain http


def test_launch_files(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox", "--sandbox-fault", "auth:503", "--fail-on", "P1")
    props = dict(line.split("=", 1) for line in
                 (run.allure_dir / "environment.properties").read_text().splitlines())
    assert props["environment"] == "sandbox"
    assert props["fail_on"] == "P1"
    assert props["sandbox.faults"] == "auth:503"
    categories = json.loads((run.allure_dir / "categories.json").read_text())
    assert [c["name"] for c in categories] == ["Access denied", "Target unreachable", "No data",
                                               "Insufficient privilege", "Probe error", "Threshold breached",
                                               "Warming up", "Configuration error"]


def test_two_environments_keep_two_histories(run_suite: RunSuite) -> None:
    sandbox = run_suite("-m", "daily", "--env", "sandbox").results()["test_service_health[auth]"]
    local = run_suite("-m", "daily", "--env", "local").results()["test_service_health[auth]"]
    assert sandbox["historyId"] != local["historyId"]
    again = run_suite("-m", "daily", "--env", "sandbox").results()["test_service_health[auth]"]
    assert again["historyId"] == sandbox["historyId"]


def test_default_results_folder_is_reports(run_suite: RunSuite, suite_copy: Path) -> None:
    # Without --alluredir the results land in the suite's reports/allure-results (a copy's, here).
    run = run_suite("-m", "daily", "--env", "sandbox", alluredir=False, cwd=suite_copy)
    assert run.returncode == 0, run.output
    assert "allure results: " in run.stdout
    assert "reports/allure-results" in run.stdout
    assert list((suite_copy / "reports" / "allure-results").glob("*-result.json"))


def test_one_identity_per_check_whatever_the_outcome(run_suite: RunSuite) -> None:
    """Passed, failed, blocked or not applicable: the same history id and parameters, environment included."""
    healthy = run_suite("-m", "daily and (database or health)", "--env", "sandbox").results()
    faulted = run_suite("-m", "daily and (database or health)", "--env", "sandbox",
                        "--sandbox-fault", "db:down", "--sandbox-fault", "auth:down").results()
    outcomes = {faulted[name]["status"] for name in faulted}
    assert {"passed", "failed", "skipped"} <= outcomes  # blocked and not-applicable skips among them
    assert set(healthy) == set(faulted)
    for name, result in healthy.items():
        other = faulted[name]
        assert other["historyId"] == result["historyId"], (name, result["status"], other["status"])
        # "measured" (a passing case's value) is an excluded parameter: not part of the identity.
        identity = [[p for p in r["parameters"] if not p.get("excluded")] for r in (result, other)]
        assert identity[0] == identity[1], name
        assert {p["name"]: p["value"] for p in result["parameters"]}["environment"] == "'sandbox'", name


def test_every_passing_case_says_what_it_measured_and_no_stray_teardown(run_suite: RunSuite) -> None:
    """A healthy daily run: each passing case carries its value against its threshold (History shows it)."""
    run = run_suite("-m", "daily", "--env", "sandbox")
    assert run.returncode == 0, run.output
    results = run.results()
    passed = {name: r for name, r in results.items() if r["status"] == "passed"}
    assert len(passed) > 30
    for name, result in passed.items():
        message = result.get("statusDetails", {}).get("message", "")
        assert "(expected " in message, (name, message)
        measured = [p for p in result["parameters"] if p["name"] == "measured"]
        assert measured == [{"name": "measured", "value": message, "excluded": True}], name
    summary = json.loads(Path(f"{run.allure_dir}-summary.json").read_text())
    by_name = {c["name"]: c for c in summary["checks"]}
    assert by_name["test_cache_hit_rate[main]"]["measurement"].startswith("main: hit rate ")
    assert by_name["test_cache_hit_rate[main]"]["threshold"] == 85
    steps = [a["name"] for path in run.allure_dir.glob("*-container.json")
             for a in json.loads(path.read_text()).get("afters", [])]
    assert not [s for s in steps if s.endswith("::<lambda>")], steps[:5]


def test_each_result_is_finished_as_it_is_written_in_one_process_and_under_xdist(run_suite: RunSuite) -> None:
    """Measurements and blocked links are in the results whether one process wrote them
    (annotated in memory; only blocked cases rewritten at the end) or xdist workers did (scanned at the end)."""
    for workers in ((), ("-n", "2")):
        run = run_suite("-m", "daily and (health or slo)", "--env", "sandbox", "--sandbox-fault", "auth:down",
                        *workers)
        assert run.returncode == 1, run.output
        results = run.results()
        passed = results["test_service_health[policy-governance]"]
        assert passed["status"] == "passed"
        measured = [p for p in passed["parameters"] if p["name"] == "measured"]
        assert len(measured) == 1, workers  # written once, never twice
        assert passed["statusDetails"]["message"] == measured[0]["value"]
        blocked = [r for r in results.values() if r["status"] == "skipped"
                   and "blocked: auth" in r.get("statusDetails", {}).get("message", "")]
        assert blocked, workers
        for result in blocked:
            assert [link["name"] for link in result.get("links", [])] == ["blocked by test_service_health[auth]"]
        assert not list(run.allure_dir.glob("*.tmp"))
        # Fixture containers only where they show something: none here (two per case before).
        assert list(run.allure_dir.glob("*-container.json")) == [], workers
