"""The runbook's alerting as code: `acgs-checks alert-rules` writes Prometheus rules from the checks' own PromQL and
thresholds. promtool accepts them for every shipped environment; each rule's severity and runbook id are its
check's; overrides and selectors reach the expressions; and a real Prometheus holding the rules, scraping a
sandbox with faults, raises alerts exactly where the suite's own checks fail, and nowhere else."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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
    base = prometheus_for(env_file, rules=rules_file)
    run = run_suite("-m", "daily and (slo or business)", "--env", str(prometheus_env(env_file, base)))
    by_check = {spec.check: spec for spec in rules.ALL}
    expected = set()
    for case in run.failed():
        name, _, target = case.partition("[")
        if name in by_check:
            expected.add((rules.PREFIX + by_check[name].name, target.rstrip("]") or by_check[name].key))
    assert expected == {("AcgsP95LatencyWarning", "auth"), ("AcgsErrorRateWarning", "constitutional-ai"),
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
    assert {g["name"] for g in loaded} == {"acgs-health-and-slo", "acgs-business"}
    assert {r["labels"]["generator"] for g in loaded for r in g["rules"]} == {"acgs_checks"}
