"""Metric dialects: the sandbox speaks ACGS-2's (prometheus_client with a prefix and an unlabelled histogram,
``acgs_http_*`` with ``status_code``) and OpenTelemetry's histogram-only one; init learns each from a real Prometheus
by the shapes of its series; the file it writes, unedited, judges every latency, error, rate and Apdex case; the
alert rules made from it fire where the checks fail; a target Prometheus cannot scrape fails naming the scrape error.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import servers
from acgs_checks.environment.dialect import BUSINESS_DEFAULTS, DEFAULTS
from acgs_checks.onboarding.starter import Found, from_targets
from acgs_checks.probes.dialects import Family, decide
from acgs_checks.sandbox.stack import render_toml
from conftest import ROOT, RunSuite
from test_onboarding import _cli

# ACGS-2's own scrape jobs (config/monitoring/prometheus.yml).
JOBS = {"auth": "acgs-auth-service", "constitutional-ai": "acgs-constitutional-ai",
        "policy-governance": "acgs-policy-governance", "governance-synthesis": "acgs-governance-synthesis"}
# What init must learn for each service of a sandbox whose governance-synthesis speaks OpenTelemetry's dialect.
LEARNED = {
    "auth": {"histogram": "auth_service_request_duration_seconds", "counter": "auth_service_requests_total",
             "status_label": "status"},
    "constitutional-ai": {"histogram": "acgs_http_request_duration_seconds", "counter": "acgs_http_requests_total",
                          "status_label": "status_code"},
    "policy-governance": {"histogram": "pgc_service_request_duration_seconds", "counter": "pgc_service_requests_total",
                          "status_label": "status"},
    "governance-synthesis": {"histogram": "http_server_request_duration_seconds", "counter": "histogram_count",
                             "status_label": "http_response_status_code"},
}
JUDGED = ("test_p95_latency", "test_p99_latency_target", "test_p99_latency_critical", "test_error_rate_warning",
          "test_error_rate_critical", "test_client_error_share", "test_request_rate_floor",
          "test_user_satisfaction_apdex")
pytestmark = pytest.mark.skipif(servers.PROMETHEUS is None, reason="needs prometheus (.ci/run installs it)")


def _ask(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.fixture
def sandbox(standalone_sandbox: Callable[..., Path]) -> Callable[..., dict[str, Any]]:
    """``acgs-sandbox`` with faults and dialects, without its databases; returns its environment file's data."""

    def start(*faults: str, dialects: dict[str, str] | None = None) -> dict[str, Any]:
        return tomllib.loads(standalone_sandbox(*faults, backends=False, dialects=dialects).read_text())

    return start


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """A real Prometheus scraping a sandbox's services under ACGS-2's job names, every 500 ms; ``rules`` is a rule
    file it reads (rewritten later, then reloaded with SIGHUP)."""
    with contextlib.ExitStack() as running:

        def start(data: dict[str, Any], *, rules: Path, up: int = 4) -> str:
            rules.write_text("groups: []\n")
            jobs = "".join(f"  - job_name: {JOBS[s['name']]}\n    static_configs:\n      - targets: "
                           f"['{urllib.parse.urlsplit(s['url']).netloc}']\n" for s in data["services"])
            config = ("global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n"
                      f"rule_files: [{json.dumps(str(rules))}]\nscrape_configs:\n" + jobs)
            # a few seconds of traffic, so rate() over the window has samples
            return running.enter_context(servers.prometheus(tmp_path, config, until="count(up == 1)", equals=up,
                                                            settle=6))

        yield start


def _init(tmp_path: Path, base: str) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path / "production.toml"
    done = _cli("init", "--name", "production", "--output", str(out), environ={"PROMETHEUS_URL": base})
    assert done.returncode == 0, done.stderr + done.stdout
    text = out.read_text()
    # A 15 s window: this Prometheus is seconds old (the file is otherwise init's, unedited).
    window = tmp_path / "window.toml"
    window.write_text(text.replace("[defaults]", '[slo]\nwindow = "15s"\n\n[defaults]', 1))
    return window, tomllib.loads(text), done.stdout


@pytest.mark.early
def test_init_learns_each_dialect_and_its_file_judges_every_slo_case(
        run_suite: RunSuite, sandbox: Callable[..., dict[str, Any]], prometheus: Callable[..., str],
        tmp_path: Path) -> None:
    # An 8 % error share on one service of each dialect; policy-governance is healthy.
    data = sandbox("auth:errors=0.08", "constitutional-ai:errors=0.08", "governance-synthesis:errors=0.08",
                   dialects={"governance-synthesis": "otel"})
    rules = tmp_path / "rules.yml"
    base = prometheus(data, rules=rules)
    env_file, written, said = _init(tmp_path, base)
    by_name = {s["name"]: s for s in written["services"]}
    assert set(by_name) == set(LEARNED), said
    for name, expected in LEARNED.items():
        learned = by_name[name]["metrics"]
        assert {k: learned[k] for k in expected} == expected, (name, learned)
        assert learned["service_down"] == "up"  # no blackbox probe of the health URL in this Prometheus
        assert {0.5, 2.0} <= set(learned["buckets"]), learned  # the bounds, so the Apdex rule knows T and 4T are
        assert by_name[name]["prometheus_selector"].startswith(f'job="{JOBS[name]}",instance="127.0.0.1:')
    assert written["prometheus"]["metrics"] == {"compliance_score": "constitutional_compliance_score",
                                                "policy_successful": "policy_evaluations_successful_total",
                                                "policy_failed": "policy_evaluations_failed_total"}

    run = run_suite("-m", "daily and (slo or business)", "--env", str(env_file), environ={"PROMETHEUS_URL": base})
    results = run.results()
    assert len(results) == len(JUDGED) * 4 + 3, run.output  # and the metrics source, the two business metrics
    for case in JUDGED:
        for name in LEARNED:
            message = str(results[f"{case}[{name}]"].get("statusDetails", {}).get("message", ""))
            assert "no data" not in message, (case, name, message)
    failing = {f"{c}[{s}]" for c in ("test_error_rate_warning", "test_error_rate_critical")
               for s in ("auth", "constitutional-ai", "governance-synthesis")}
    assert run.failed() == failing, run.output
    for name, series in (("auth", "auth_service_requests_total"), ("constitutional-ai", "acgs_http_requests_total"),
                         ("governance-synthesis", "http_server_request_duration_seconds_count")):
        message = results[f"test_error_rate_critical[{name}]"]["statusDetails"]["message"]
        pattern = rf"{name}: 5xx error rate [5-9]\.\d\d % over a 15s window; source: .*{series}\{{job="
        assert re.search(pattern, message), message
    assert results["test_constitutional_compliance"]["status"] == "passed"

    # The alert rules made from init's file load into Prometheus and fire exactly where the checks fail.
    generated = subprocess.run([sys.executable, "-m", "acgs_checks.cli", "alert-rules", "--env",
                                str(env_file), "--output", str(rules)], cwd=ROOT, capture_output=True, text=True,
                               timeout=120, check=False, env={**os.environ, "PROMETHEUS_URL": base})
    assert generated.returncode == 0, generated.stderr
    firing: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 60
    expected = {(f"AcgsErrorRate{level}", s) for level in ("Warning", "Critical")
                for s in ("auth", "constitutional-ai", "governance-synthesis")}
    assert servers.PROMETHEUS is not None
    reloaded = False
    while time.monotonic() < deadline and firing != expected:
        if not reloaded:
            for process in subprocess.run(["pgrep", "-f", str(tmp_path / "prometheus.yml")], capture_output=True,
                                          text=True, check=False).stdout.split():
                subprocess.run(["kill", "-HUP", process], check=False)
            reloaded = True
        time.sleep(1)
        alerts = _ask(base, "/api/v1/alerts")["data"]["alerts"]
        firing = {(a["labels"]["alertname"], a["labels"].get("service", "")) for a in alerts
                  if a["state"] in ("pending", "firing") and a["labels"].get("generator") == "acgs_checks"}
    assert firing == expected


@pytest.mark.early
def test_a_target_prometheus_cannot_scrape_fails_naming_the_scrape_error(
        run_suite: RunSuite, sandbox: Callable[..., dict[str, Any]], prometheus: Callable[..., str],
        tmp_path: Path) -> None:
    # Constitutional AI's /metrics declares "# TYPE acgs_service_info info" as ACGS-2's middleware writes it.
    data = sandbox("constitutional-ai:info-type")
    base = prometheus(data, rules=tmp_path / "rules.yml", up=3)
    env_file, written, said = _init(tmp_path, base)
    assert "constitutional-ai: Prometheus cannot scrape 127.0.0.1:" in said, said
    cai = next(s for s in written["services"] if s["name"] == "constitutional-ai")
    # Learned from the target's own /metrics all the same, so the file is right once the scrape is fixed.
    assert cai["metrics"]["counter"] == "acgs_http_requests_total"
    run = run_suite("-m", "daily and slo", "--env", str(env_file), environ={"PROMETHEUS_URL": base})
    message = run.results()["test_error_rate_critical[constitutional-ai]"]["statusDetails"]["message"]
    assert re.search(r"no data: constitutional-ai: .*Prometheus cannot scrape 127\.0\.0\.1:\d+: .*info", message), \
        message
    assert {n for n in run.failed() if not n.endswith("[constitutional-ai]")} == set(), run.output


def test_services_on_the_runbook_ports_under_one_generic_job_are_found() -> None:
    # One job, "acgs", scraping the runbook's own ports: the port names the service.
    targets = [{"labels": {"job": "acgs", "instance": f"10.0.0.5:{port}"}, "scrapeUrl": f"http://10.0.0.5:{port}/metrics"}
               for port in (8000, 8001, 8005, 8004, 8002)]
    found = Found()
    from_targets(targets, found)
    assert {s["name"]: s["selector"] for s in found.services} == {
        "auth": 'job="acgs",instance="10.0.0.5:8000"', "constitutional-ai": 'job="acgs",instance="10.0.0.5:8001"',
        "policy-governance": 'job="acgs",instance="10.0.0.5:8005"',
        "governance-synthesis": 'job="acgs",instance="10.0.0.5:8004"'}
    assert any("job='acgs' (1)" in note for note in found.notes), found.notes  # 8002 is no core service


def test_no_consumer_spells_a_metric_name_of_its_own() -> None:
    # The dialect's defaults live in environment/dialect.py; the sandbox is a server that speaks dialects. Any other
    # module of the package spelling one of these names is a second source of truth.
    names = [*(DEFAULTS[k] for k in ("histogram", "counter", "in_flight")),
             *(BUSINESS_DEFAULTS[k] for k in ("compliance_score", "policy_evaluations")),
             "_request_duration_seconds", "_requests_total", "_compliance_score", "policy_evaluations_"]
    package = ROOT / "src" / "acgs_checks"
    offenders = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        if relative in ("environment/dialect.py",) or relative.startswith("sandbox/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.rstrip().endswith("# prose"):  # a message naming what ACGS-2's own rules expect, as words
                continue
            code = line.split("#", 1)[0]
            # Field names of the dialect tables are not metric names (compliance_score = "..." is a key).
            if any(name in code for name in names) and "dialect" not in code and "Field(" not in code:
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)


class _Refusing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        servers.answer(self, 400, b"Invalid host header", "text/plain")

    def log_message(self, *args: object) -> None:
        pass


def test_a_host_the_service_does_not_allow_is_named_with_its_setting(run_suite: RunSuite, tmp_path: Path) -> None:
    # ACGS-2's services answer 400 "Invalid host header" for a name outside their allowed hosts.
    with servers.serving(_Refusing) as server:
        env_file = tmp_path / "hosts.toml"
        env_file.write_text(f'name = "x"\n[[services]]\nname = "auth"\nurl = "{servers.url_of(server)}"\n')
        run = run_suite("-m", "daily and health", "--env", str(env_file))
    message = run.results()["test_service_health[auth]"]["statusDetails"]["message"]
    assert "the service refused the Host header '127.0.0.1:" in message, message
    assert "ALLOWED_HOSTS" in message


@pytest.mark.early
def test_doctor_names_the_runbook_lines_an_environment_leaves_uncovered(tmp_path: Path) -> None:
    dsn = os.environ.get("ACGS_TEST_PG_DSN")
    if not dsn:
        pytest.skip("needs ACGS_TEST_PG_DSN (.ci/run sets it)")
    env_file = tmp_path / "db-only.toml"
    env_file.write_text(f'name = "db-only"\n[[databases]]\nname = "primary"\ndsn = "{dsn}"\n')
    done = _cli("doctor", "--env", str(env_file), "-m", "daily", "-k", "connectivity")
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "DAILY daily.service-health (Service Health Verification): no [[services]] in this environment" in out, out
    assert "daily runbook line(s) have no target in this environment (exit 1)" in out
    assert "the message says" not in out
    assert "see the message" not in out
    report = json.loads(_cli("doctor", "--env", str(env_file), "-m", "daily", "-k", "connectivity", "--json").stdout)
    lacking = {s for line in report["runbook_coverage"]["uncovered"] if line["daily"] for s in line["lacks"]}
    assert "services" in lacking
    # Each part declared absent, with its reason: doctor then exits 0 and names them as declared.
    declared = env_file.with_name("declared.toml")
    declared.write_text(env_file.read_text() + "[absent]\n" + "".join(f'{s} = "not in this lab"\n' for s in lacking))
    ok = _cli("doctor", "--env", str(declared), "-m", "daily", "-k", "connectivity")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "declared absent: not in this lab" in ok.stdout
    bad = declared.with_name("bad.toml")
    bad.write_text(env_file.read_text() + '[absent]\nservice = "typo"\n')
    refused = _cli("doctor", "--env", str(bad), "-m", "daily", "-k", "connectivity")
    assert refused.returncode == 4
    assert "absent.service: not a section of the environment file" in refused.stderr, refused.stderr


@pytest.mark.early
def test_each_dialect_through_the_scrape_source(run_suite: RunSuite, sandbox: Callable[..., dict[str, Any]],
                                                tmp_path: Path) -> None:
    # The same three dialects read from each service's own /metrics, two scrapes apart (no Prometheus at all).
    data = sandbox("auth:errors=0.1", "constitutional-ai:errors=0.1", "governance-synthesis:errors=0.1",
                   dialects={"governance-synthesis": "otel"})
    for key in ("databases", "poolers", "caches", "security", "backups", "business", "hosts", "tls_endpoints"):
        data.pop(key, None)
    data["slo"] = {"source": "scrape", "scrape_window_seconds": 4.0}
    env_file = tmp_path / "scrape.toml"
    env_file.write_text(render_toml(data))
    run = run_suite("-m", "daily and slo", "--env", str(env_file))
    failing = {f"{c}[{s}]" for c in ("test_error_rate_warning", "test_error_rate_critical")
               for s in ("auth", "constitutional-ai", "governance-synthesis")}
    assert run.failed() == failing, run.output
    results = run.results()
    for name, series in (("auth", 'auth_service_requests_total{status=~"5.."}'),
                         ("constitutional-ai", 'acgs_http_requests_total{status_code=~"5.."}'),
                         ("governance-synthesis", 'http_server_request_duration_seconds_count'
                                                  '{http_response_status_code=~"5.."}')):
        message = results[f"test_error_rate_critical[{name}]"]["statusDetails"]["message"]
        assert re.search(rf"{name}: 5xx error rate \d+\.\d\d % over a 4 s window; source: GET .*/metrics twice",
                         message), message
        assert series in message, message
        p95 = results[f"test_p95_latency[{name}]"]
        assert p95["status"] == "passed", p95


def test_the_shape_rules_pick_request_metrics_and_refuse_the_rest() -> None:
    def family(name: str, kind: str, **labels: set[str]) -> tuple[str, Family]:
        return name, Family(name, kind, dict(labels))

    # A service that also times its database and its outgoing calls, with a "code" label holding statuses.
    families = dict([
        family("app_db_query_duration_seconds", "histogram"),
        family("http_client_request_duration_seconds", "histogram", code={"200"}),
        family("app_request_latency_seconds", "histogram", route={"/a"}),
        family("app_requests_total", "counter", route={"/a"}, code={"200", "503", "404"}),
        family("app_request_errors_total", "counter", code={"500"}),
        family("app_requests_in_progress", "gauge"),
    ])
    found = decide(families)
    assert found.table == {"histogram": "app_request_latency_seconds", "counter": "app_requests_total",
                           "status_label": "code", "in_flight": "app_requests_in_progress"}, found
    # A latency histogram in milliseconds is named and refused: the thresholds are seconds.
    refused = decide(dict([family("http_request_duration_milliseconds", "histogram")]))
    assert not refused.usable
    assert "not in seconds" in refused.evidence
    # A label whose values are not all statuses is not the status label, whatever it is called.
    odd = decide(dict([family("x_request_duration_seconds", "histogram", status={"ok", "error"})]))
    assert odd.table["counter"] == "histogram_count"
    assert odd.table["status_label"] == ""


def test_no_apdex_rule_where_t_or_4t_is_no_bucket_bound() -> None:
    # prometheus_client's default buckets have 0.5 but no 2.0: PromQL cannot count the tolerating users at 4T, so
    # the rule would under-count them and page a healthy service. It is left out, and the file's header says why.
    from acgs_checks.alerting import rules  # noqa: PLC0415
    from acgs_checks.environment import from_mapping  # noqa: PLC0415
    from acgs_checks.policy import runbook  # noqa: PLC0415

    defaults = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
    env = from_mapping({"name": "acgs", "prometheus": {"url": "http://127.0.0.1:9"}, "services": [
        {"name": "auth", "url": "http://127.0.0.1:8000", "metrics": {
            "histogram": "auth_service_request_duration_seconds", "counter": "auth_service_requests_total",
            "status_label": "status", "buckets": defaults}},
        {"name": "gs", "url": "http://127.0.0.1:8004", "metrics": {
            "histogram": "gs_service_request_duration_seconds", "buckets": [*defaults, 2.0]}}]},
        source="test", environ={})
    source = rules.Source(env, runbook.load(runbook.map_path(ROOT)))
    apdex = {r["labels"]["service"] for g in rules.rule_groups(source) for r in g["rules"]
             if r["alert"] == "AcgsApdexLow"}
    assert apdex == {"gs"}
    assert ("AcgsApdexLow for auth: 2 s is no bucket bound of auth_service_request_duration_seconds"
            in rules.header(env)), rules.header(env)


def test_doctor_never_sends_a_reader_back_to_the_message() -> None:
    from acgs_checks.reporting import access  # noqa: PLC0415

    for kind in access.BLIND:
        fix = access.fix_of("a message that names no fix", kind)
        assert fix
        assert "the message says" not in fix
        assert "see the message" not in fix
    # A statement inside a message is its fix, with the account named.
    said = ("primary: role acgs_plain cannot see other sessions' state (grant pg_monitor: GRANT pg_monitor TO "
            "acgs_plain)")
    assert access.fix_of(said, "insufficient privilege") == "run GRANT pg_monitor TO acgs_plain"
