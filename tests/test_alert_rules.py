"""The runbook's alerting as code: `acgs-checks alert-rules` writes Prometheus rules from the checks' own PromQL and
thresholds. promtool accepts them for every shipped environment; each rule's severity and runbook id are its
check's; overrides and selectors reach the expressions; and a real Prometheus holding the rules, scraping a
sandbox with faults, raises alerts exactly where the suite's own checks fail, and nowhere else."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acgs_checks.alerting import rules
from conftest import ROOT, RunSuite
from test_prometheus import _ask, prometheus_env, prometheus_for  # noqa: F401 - the fixture, shared

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (.ci/run installs prometheus)")


def generate(env_file: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "acgs_checks.cli", "alert-rules", "--env", str(env_file),
                           "--output", str(out), *extra], capture_output=True, text=True, check=False, timeout=60,
                          cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "CI"})


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False,
                          timeout=60)


def _marks_of_checks() -> dict[str, tuple[str, list[str]]]:
    """check name -> (severity marker, runbook ids), read from the check modules."""
    found = {}
    for path in (ROOT / "checks").glob("test_*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                severity, ids = "", []
                for deco in node.decorator_list:
                    text = ast.unparse(deco)
                    if text in ("pytest.mark.p0", "pytest.mark.p1", "pytest.mark.p2", "pytest.mark.p3"):
                        severity = text.rsplit(".", 1)[1]
                    if isinstance(deco, ast.Call) and ast.unparse(deco.func) == "pytest.mark.runbook":
                        ids = [ast.literal_eval(a) for a in deco.args]
                found[node.name] = (severity, ids)
    return found


def test_each_alert_carries_its_checks_severity_and_runbook_id() -> None:
    checks = _marks_of_checks()
    for spec in rules.ALL:
        severity, ids = checks[spec.check]
        assert spec.severity.marker == severity, spec.name
        assert spec.runbook in ids, (spec.name, ids)


@needs_promtool
@pytest.mark.parametrize("env_file", sorted((ROOT / "fixtures" / "environments").glob("*.toml")), ids=lambda p: p.name)
def test_promtool_accepts_the_rules_of_every_shipped_environment(env_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    done = generate(env_file, out)
    assert done.returncode == 0, done.stderr
    checked = promtool_check(out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@needs_promtool
def test_overrides_selectors_hosts_and_business_metrics_reach_the_expressions(
        tmp_path: Path, write_env: Callable[[str], Path]) -> None:
    env = write_env(
        'name = "team"\n[prometheus]\nurl = "http://127.0.0.1:9"\n[slo]\nsource = "prometheus"\nwindow = "10m"\n'
        "[thresholds]\nerror_rate_critical_percent = 7\np95_warning_seconds = 1.5\nrequest_rate_min_per_second = 0.5\n"
        "disk_critical_percent = 97\n"
        '[[services]]\nname = "auth"\nurl = "https://auth.example.com"\nprometheus_selector = \'job="auth"\'\n'
        '[[hosts]]\nname = "db1"\nspec = "local://"\nprometheus_selector = \'instance="db1:9100"\'\n'
        '[[caches]]\nname = "main"\nurl = "redis://cache:6379/0"\nprometheus_selector = \'instance="cache:9121"\'\n'
        '[business.compliance]\nquery = "avg(score_percent)"\nunit = "percent"\n')
    out = tmp_path / "rules.yml"
    done = generate(env, out, "--runbook-url", "https://wiki.example.com/acgs-runbook")
    assert done.returncode == 0, done.stderr
    assert "alert rule(s) for environment 'team'" in done.stdout
    text = out.read_text()
    checked = promtool_check(out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'status=~\\"5..\\"}[10m])) or vector(0)) / sum(rate(http_requests_total{job=\\"auth\\"}[10m]))) > 0.07' \
        in text
    assert "[10m])))) >= 1.5" in text  # P95 at the team's 1.5 s
    assert ") < 0.5" in text             # the request-rate floor, configured
    assert 'probe_success{instance=\\"https://auth.example.com/health\\"} == 0' in text
    assert 'node_filesystem_size_bytes{instance=\\"db1:9100\\",fstype!~\\"tmpfs|' in text
    assert ") > 97" in text               # disk critical at the team's 97 %
    assert '"((avg(score_percent)) / 100) <= 0.95"' in text  # a percent metric, compared as a ratio
    assert '"https://wiki.example.com/acgs-runbook#alerts.critical.error-rate"' in text
    assert "(threshold > 7 %; check test_error_rate_critical[auth]" in text
    assert "# Checks with no PromQL form here" in text
    assert ('sum(rate(redis_keyspace_hits_total{instance=\\"cache:9121\\"}[10m])) / (sum(rate(redis_keyspace_hits_total'
            in text)                       # the cache hit rate, in redis_exporter's names
    assert '"AcgsApdexLow"' in text
    assert 'http_request_duration_seconds_bucket{job=\\"auth\\",le=\\"0.5\\"}[10m]))' in text  # T, a bound


def test_a_broken_environment_is_one_line_and_exit_4(tmp_path: Path, write_env: Callable[[str], Path]) -> None:
    done = generate(write_env('name = "x"\n[thresholds]\nlatency = 3\n'), tmp_path / "r.yml")
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1, done.stderr
    assert "thresholds.latency" in done.stderr
    assert "Traceback" not in done.stderr


def _alerts(base: str) -> set[tuple[str, str]]:
    found = _ask(base, "/api/v1/alerts")["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("service") or a["labels"].get("metric") or "")
            for a in found if a["state"] in ("pending", "firing") and a["labels"].get("generator") == "acgs_checks"}


@needs_promtool
def test_alerts_fire_exactly_where_the_checks_fail(run_suite: RunSuite, standalone_sandbox: Callable[..., Path],
                                                   prometheus_for: Callable[..., str],  # noqa: F811 - the fixture
                                                   tmp_path: Path) -> None:
    env_file = standalone_sandbox("auth:latency=3", "constitutional-ai:errors=0.1", "compliance=0.9",
                                  "policy-success=0.95", backends=False)
    rules_file = tmp_path / "acgs-rules.yml"
    # The rules come from the environment the checks run with (the same PromQL, window and thresholds).
    draft = prometheus_env(env_file, "http://127.0.0.1:9")
    assert generate(draft, rules_file).returncode == 0
    assert promtool_check(rules_file).returncode == 0  # the sandbox's rules, as promtool reads them
    base = prometheus_for(env_file, rules=rules_file)
    run = run_suite("-m", "daily and (slo or business)", "--env", str(prometheus_env(env_file, base)))
    by_check = {spec.check: spec for spec in rules.ALL}
    expected = set()
    for case in run.failed():
        name, _, target = case.partition("[")
        if name in by_check:
            expected.add((rules.PREFIX + by_check[name].name, target.rstrip("]") or by_check[name].key))
    assert expected == {("AcgsP95LatencyWarning", "auth"), ("AcgsApdexLow", "auth"),
                        ("AcgsErrorRateWarning", "constitutional-ai"),
                        ("AcgsErrorRateCritical", "constitutional-ai"), ("AcgsComplianceScoreLow", "compliance"),
                        ("AcgsPolicySuccessLow", "policy_success")}, run.output
    deadline, seen = time.monotonic() + 60, set()
    while time.monotonic() < deadline and seen != expected:
        time.sleep(1)
        seen = _alerts(base)
    assert seen == expected
    time.sleep(3)  # a few more evaluations: nothing else appears (no probe_success series: no ServiceDown)
    assert _alerts(base) == expected
    loaded = _ask(base, "/api/v1/rules")["data"]["groups"]
    assert {g["name"] for g in loaded} == {"acgs-health-and-slo", "acgs-business", "acgs-escalation"}
    assert {r["labels"]["generator"] for g in loaded for r in g["rules"]} == {"acgs_checks"}


def test_drift_compares_meaning_not_spelling() -> None:
    from acgs_checks.alerting import drift  # noqa: PLC0415

    assert drift.split('(rate(x{b="2", a="1"}[5m]))  >=  0.05') == ('(rate(x{a="1",b="2"}[5m]))', ">=", 0.05)
    assert drift.seconds("1h30m") == 5400
    assert drift.seconds(120.0) == 120
    wanted = {("AcgsErrorRateCritical", "auth"): {"alert": "AcgsErrorRateCritical", "expr": 'e{a="1"} > 0.05',
                                                  "for": "2m", "labels": {"severity": "p0", "runbook": "r",
                                                                          "service": "auth"}},
              ("AcgsServiceDown", "auth"): {"alert": "AcgsServiceDown", "expr": "p == 0", "for": "1m",
                                            "labels": {"severity": "p0", "runbook": "d", "service": "auth"}}}
    same = [{"name": "AcgsErrorRateCritical", "query": 'e{a = "1"}>0.050', "duration": 120,
             "labels": {"severity": "p0", "runbook": "r", "service": "auth"}},
            {"name": "AcgsServiceDown", "query": "p == 0", "duration": 60,
             "labels": {"severity": "p0", "runbook": "d", "service": "auth"}}]
    assert drift.differences(wanted, same) == []
    edited = [{**same[0], "query": 'e{a="1"} > 0.5', "duration": 300, "labels": {**same[0]["labels"],
                                                                                  "severity": "p1"}},
              {"name": "AcgsHandMade", "query": "x > 1", "duration": 0,
               "labels": {"generator": "acgs_checks", "service": "auth"}}]
    assert drift.differences(wanted, edited) == [
        "AcgsErrorRateCritical[auth]: threshold 0.5 in Prometheus, 0.05 in the runbook",
        "AcgsErrorRateCritical[auth]: for 5m in Prometheus, 2m in the runbook",
        "AcgsErrorRateCritical[auth]: severity p1 in Prometheus, p0 in the runbook",
        "AcgsServiceDown[auth]: missing in Prometheus",
        "AcgsHandMade[auth]: in Prometheus with generator=acgs_checks, but the runbook makes no such rule"]


def _edit_rules(path: Path) -> None:
    """One threshold edited, one rule deleted, one for: changed (auth's), as a hand edit would."""
    kept = []
    for block in path.read_text().split("      - alert: "):
        auth = 'service: "auth"' in block
        if block.startswith('"AcgsP95LatencyWarning"') and auth:
            continue  # deleted
        if block.startswith('"AcgsErrorRateCritical"') and auth:
            kept.append(block.replace(") > 0.05", ") > 0.5", 1))
        elif block.startswith('"AcgsErrorRateWarning"') and auth:
            kept.append(block.replace('for: "5m"', 'for: "10m"', 1))
        else:
            kept.append(block)
    path.write_text("      - alert: ".join(kept))


@needs_promtool
def test_the_drift_check_passes_on_generated_rules_and_names_each_edit(
        run_suite: RunSuite, standalone_sandbox: Callable[..., Path],
        prometheus_for: Callable[..., str],  # noqa: F811 - the fixture
        tmp_path: Path) -> None:
    env_file = standalone_sandbox(backends=False)
    rules_file = tmp_path / "acgs-rules.yml"
    draft = prometheus_env(env_file, "http://127.0.0.1:9", slo={"source": "prometheus", "window": "5m"})
    assert generate(draft, rules_file).returncode == 0
    base = prometheus_for(env_file, rules=rules_file)
    env = prometheus_env(env_file, base, slo={"source": "prometheus", "window": "5m"})
    run = run_suite("-m", "daily and alerting", "--env", str(env))
    assert run.statuses() == {"test_alert_rules_match_the_runbook": "passed"}, run.output
    assert "generated rule(s) deployed as generated" in run.results()["test_alert_rules_match_the_runbook"][
        "statusDetails"]["message"]

    _edit_rules(rules_file)
    assert promtool_check(rules_file).returncode == 0
    before = {r["name"] for g in _ask(base, "/api/v1/rules")["data"]["groups"] for r in g["rules"]}
    process_reload(base, rules_file, before)
    run = run_suite("-m", "daily and alerting", "--env", str(env))
    assert run.statuses() == {"test_alert_rules_match_the_runbook": "failed"}, run.output
    message = run.results()["test_alert_rules_match_the_runbook"]["statusDetails"]["message"]
    assert "3 difference(s) in Prometheus" in message, message
    assert "AcgsErrorRateCritical[auth]: threshold 0.5 in Prometheus, 0.05 in the runbook" in message
    assert "AcgsP95LatencyWarning[auth]: missing in Prometheus" in message
    assert "AcgsErrorRateWarning[auth]: for 10m in Prometheus, 5m in the runbook" in message
    assert label_of(run, "severity") == ["normal"]  # P1


def label_of(run: Any, name: str) -> list[str]:
    from conftest import label  # noqa: PLC0415

    return label(run.results()["test_alert_rules_match_the_runbook"], name)


def process_reload(base: str, rules_file: Path, before: set[str]) -> None:
    """SIGHUP the Prometheus listening at ``base`` and wait until its rules API shows the edited file."""
    port = base.rsplit(":", 1)[1]
    found = subprocess.run(["pgrep", "-f", f"web.listen-address=127.0.0.1:{port}"], capture_output=True, text=True,
                           check=False)
    pids = [int(p) for p in found.stdout.split()]
    assert pids, "the test's Prometheus is not running"
    for pid in pids:
        os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rules_now = _ask(base, "/api/v1/rules")["data"]["groups"]
        durations = {r["name"]: r.get("duration") for g in rules_now for r in g["rules"]
                     if r["labels"].get("service") == "auth"}
        if durations.get("AcgsErrorRateWarning") == 600 and "AcgsP95LatencyWarning" not in durations:
            return
        time.sleep(0.3)
    raise AssertionError(f"Prometheus did not load {rules_file} (had {sorted(before)[:5]}...)")


@needs_promtool
def test_generated_promtool_unit_tests_pass_and_catch_an_edited_threshold(
        tmp_path: Path, write_env: Callable[[str], Path]) -> None:
    env = write_env('name = "team"\n[prometheus]\nurl = "http://127.0.0.1:9"\n[slo]\nsource = "prometheus"\n'
                    '[thresholds]\nerror_rate_critical_percent = 7\nmemory_max_percent = 90\n'
                    '[[services]]\nname = "auth"\nurl = "https://auth.example.com"\n'
                    '[[services]]\nname = "policy"\nurl = "https://policy.example.com"\n'
                    '[[hosts]]\nname = "db1"\nspec = "local://"\nprometheus_selector = \'instance="db1:9100"\'\n')
    out, tests = tmp_path / "rules.yml", tmp_path / "rules.test.yml"
    done = generate(env, out, "--tests", str(tests))
    assert done.returncode == 0, done.stderr
    assert PROMTOOL is not None
    ran = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, check=False,
                         timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    text = tests.read_text()
    # both sides of each line: service down, both error rates (per service), compliance, host memory
    assert text.count("alertname: ") == 2 * (2 * 3) + 2 + 2
    # The tests assert the thresholds: a rule file edited by hand no longer passes them.
    out.write_text(out.read_text().replace(") > 0.07", ") > 0.5"))
    broken = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, check=False,
                            timeout=120)
    assert broken.returncode != 0
    assert "AcgsErrorRateCritical" in broken.stdout + broken.stderr
    alone = subprocess.run([sys.executable, "-m", "acgs_checks.cli", "alert-rules", "--env", str(env), "--tests",
                            str(tests)], capture_output=True, text=True, check=False, timeout=60, cwd=ROOT)
    assert alone.returncode == 4
    assert alone.stderr == ("acgs-checks alert-rules: --tests needs --output FILE (the tests name the rule file); "
                            "fix: add --output FILE\n")


@needs_promtool
def test_the_prometheusrule_format_holds_the_same_groups(tmp_path: Path, write_env: Callable[[str], Path]) -> None:
    import yaml  # noqa: PLC0415 - a test extra

    env = write_env('name = "prod_eu.1"\n[[services]]\nname = "auth"\nurl = "https://auth.example.com"\n')
    plain, wrapped = tmp_path / "rules.yml", tmp_path / "rule.k8s.yml"
    assert generate(env, plain).returncode == 0
    assert generate(env, wrapped, "--format", "prometheusrule").returncode == 0
    resource = yaml.safe_load(wrapped.read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["name"] == "acgs-checks-prod-eu-1"  # a valid Kubernetes name
    assert resource["spec"] == yaml.safe_load(plain.read_text())
    unwrapped = tmp_path / "spec.yml"
    unwrapped.write_text(yaml.safe_dump(resource["spec"]))
    assert promtool_check(unwrapped).returncode == 0


def test_a_hostile_rules_answer_is_a_difference_never_a_crash() -> None:
    """What a broken Prometheus may send for a rule: labels that are not a map, a duration that is not a finite
    number, an expression of a megabyte of unclosed braces. Each is read by its shape and named as a difference."""
    from acgs_checks.alerting import drift  # noqa: PLC0415
    from acgs_checks.probes import deployed_rules  # noqa: PLC0415

    assert deployed_rules._labels("severity=p0") == {}
    assert deployed_rules._labels({"severity": 0}) == {"severity": "0"}
    assert [deployed_rules._duration(v) for v in (120, 1.5, True, "2m", None, float("inf"), float("nan"))] == [
        120.0, 1.5, -1.0, -1.0, -1.0, -1.0, -1.0]
    assert deployed_rules._list("rules") == []
    wanted = {("AcgsErrorRateCritical", "auth"): {"alert": "AcgsErrorRateCritical", "expr": 'e{a="1"} > 0.05',
                                                  "for": "2m", "labels": {"severity": "p0", "runbook": "r",
                                                                          "service": "auth"}}}
    huge = {"name": "AcgsErrorRateCritical", "query": "e{" * 500_000 + " > 0.05", "duration": -1.0,
            "labels": {"severity": "p0", "runbook": "r", "service": "auth"}}
    said = drift.differences(wanted, [huge])
    assert said[0] == "AcgsErrorRateCritical[auth]: threshold none in Prometheus, 0.05 in the runbook"
    assert any("expression differs" in line for line in said)
    assert "AcgsErrorRateCritical[auth]: for -1s in Prometheus, 2m in the runbook" in said


def test_output_dash_is_standard_output_and_env_errors_name_what_works() -> None:
    done = subprocess.run([sys.executable, "-m", "acgs_checks.cli", "alert-rules", "--env", "local", "--output", "-"],
                          capture_output=True, text=True, check=False, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Prometheus alert rules for environment 'local'")
    assert not (ROOT / "-").exists()  # a file named "-" was the old behaviour
    sandbox = subprocess.run([sys.executable, "-m", "acgs_checks.cli", "alert-rules", "--env", "sandbox"],
                             capture_output=True, text=True, check=False, timeout=60, cwd=ROOT)
    assert sandbox.returncode == 4
    assert sandbox.stderr.count("\n") == 1, sandbox.stderr
    assert "acgs-sandbox --write sandbox.toml" in sandbox.stderr
    assert "one of local, production.example or a path" in sandbox.stderr  # not "sandbox": this command cannot
