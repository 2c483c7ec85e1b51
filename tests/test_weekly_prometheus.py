"""The weekly reviews' Prometheus paths, against a real Prometheus with a real node_exporter and alert rules.

Failed logins from PromQL (a count, an empty answer, an explicit zero), firing alerts from
Prometheus' own alerts API, access statistics evaluated at each earlier day (this Prometheus is
minutes old, so the earlier days have nothing: no data), and disk projections from node_exporter.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Run, RunSuite
from servers import free_port

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
PROMETHEUS = shutil.which("prometheus")
RULES = """groups:
  - name: review
    interval: 1s
    rules:
      - alert: AlwaysCritical
        expr: vector(1)
        labels: {severity: critical, team: platform}
"""


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, str]]:
    if NODE_EXPORTER is None or PROMETHEUS is None:
        pytest.skip("needs prometheus-node-exporter and prometheus (.ci/run installs them)")
    exporter_port, prometheus_port = free_port(), free_port()
    instance = f"127.0.0.1:{exporter_port}"
    exporter = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address={instance}", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (tmp_path / "rules.yml").write_text(RULES)
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                      f"rule_files: ['{tmp_path / 'rules.yml'}']\n"
                      "scrape_configs:\n  - job_name: node\n    static_configs:\n"
                      f"      - targets: ['{instance}']\n")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{prometheus_port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a few scrapes (deriv needs two) and the alert firing
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                with urllib.request.urlopen(base + "/api/v1/query?query=" + urllib.parse.quote(
                        "count_over_time(up[1m])"), timeout=2) as answer:
                    scrapes = float(json.loads(answer.read())["data"]["result"][0]["value"][1])
                with urllib.request.urlopen(base + "/api/v1/alerts", timeout=2) as answer:
                    firing = [a for a in json.loads(answer.read())["data"]["alerts"] if a["state"] == "firing"]
                if scrapes >= 3 and firing:
                    break
            time.sleep(0.5)
        yield base, instance
    finally:
        for each in (process, exporter):
            each.terminate()
            each.wait(timeout=20)


def _message(run: Run, name: str) -> str:
    return str(run.results()[name]["statusDetails"]["message"]).removeprefix("Failed: ")


def test_weekly_reviews_through_prometheus(run_suite: RunSuite, write_env: Callable[[str], Path], tmp_path: Path,
                                           prometheus: tuple[str, str]) -> None:
    base, instance = prometheus
    logs = tmp_path / "logs"
    logs.mkdir()
    env_file = write_env(
        f'name = "promql"\n[prometheus]\nurl = "{base}"\n'
        f'[[hosts]]\nname = "exporter"\nspec = "local://"\nlog_dirs = ["{logs}"]\nlogrotate_config = ""\n'
        f"prometheus_selector = 'instance=\"{instance}\"'\n"
        "[security]\naccess_query = 'sum by (class) (label_replace(count_over_time(up[24h]), \"class\", \"2xx\", "
        "\"\", \"\"))'\n"
        "[[security.failed_logins]]\nname = \"promql\"\nquery = 'sum(up{job=\"node\"}) * 30'\n"
        "[[security.failed_logins]]\nname = \"quiet\"\nquery = 'sum(acgs_no_such_metric_total)'\n"
        "[[security.failed_logins]]\nname = \"zero\"\nquery = 'sum(acgs_no_such_metric_total) or vector(0)'\n"
        f'[history]\npath = "{tmp_path / "history.sqlite"}"\n')
    run = run_suite("-m", "monday or wednesday", "-k", "failed_logins or alerts or access or capacity",
                    "--env", str(env_file))
    statuses = run.statuses()
    assert {k: v for k, v in statuses.items() if "capacity" not in k} == {
        "test_failed_logins[promql]": "failed", "test_failed_logins[quiet]": "failed",
        "test_failed_logins[zero]": "passed", "test_no_critical_alerts_firing": "failed",
        "test_no_warning_alerts_firing": "passed", "test_access_log_anomalies": "failed"}, run.output
    assert _message(run, "test_failed_logins[promql]").startswith("promql: 30 failed login(s) in 24 h from PromQL")
    quiet = _message(run, "test_failed_logins[quiet]")
    assert quiet.startswith("no data: quiet: PromQL sum(acgs_no_such_metric_total): the query returned no series"), \
        quiet
    assert "end it with `or vector(0)`" in quiet
    critical = _message(run, "test_no_critical_alerts_firing")
    assert "/api/v1/alerts; 1 firing in all): AlwaysCritical {'team': 'platform'}" in critical, critical
    access = _message(run, "test_access_log_anomalies")
    assert access.startswith("no data: PromQL sum by (class)"), access
    assert "0 earlier day(s) with traffic; at least 3 are needed" in access
    # The disks are projected from node_exporter (the history store is empty): whatever the other self-tests
    # write meanwhile, the evidence names the host, the mount and the PromQL fit.
    for case in ("test_capacity_headroom_critical", "test_capacity_headroom"):
        assert statuses[case] in ("passed", "failed")
        assert "disk / on exporter: " in _message(run, case), _message(run, case)
        assert "(PromQL, window 7 d)" in _message(run, case)
