"""The weekly reviews' Prometheus paths, against a real Prometheus with a real node_exporter and alert rules.

Failed logins from PromQL (a count, an empty answer, an explicit zero), firing alerts from
Prometheus' own alerts API, access statistics evaluated at each earlier day (this Prometheus is
minutes old, so the earlier days have nothing: no data), and disk projections from node_exporter.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import servers
from conftest import Run, RunSuite

RULES = """groups:
  - name: review
    interval: 1s
    rules:
      - alert: AlwaysCritical
        expr: vector(1)
        labels: {severity: critical, team: platform}
"""


def _alert_firing(base: str) -> bool:
    with urllib.request.urlopen(base + "/api/v1/alerts", timeout=2) as answer:
        return any(a["state"] == "firing" for a in json.loads(answer.read())["data"]["alerts"])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, str]]:
    if servers.NODE_EXPORTER is None or servers.PROMETHEUS is None:
        pytest.skip("needs prometheus-node-exporter and prometheus (.ci/run installs them)")
    (tmp_path / "rules.yml").write_text(RULES)
    # a few scrapes (deriv needs two) and the alert firing
    with servers.node_exporter_in_prometheus(tmp_path, config=f"rule_files: ['{tmp_path / 'rules.yml'}']\n",
                                             scrapes=3, ready=_alert_firing) as found:
        yield found


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
    expected = "/api/v1/alerts; 1 firing in all for {env=\"promql\"}): AlwaysCritical {'team': 'platform'}"
    assert expected in critical, critical
    access = _message(run, "test_access_log_anomalies")
    assert access.startswith("no data: PromQL sum by (class)"), access
    assert "0 earlier day(s) with traffic; at least 3 are needed" in access
    # This Prometheus holds seconds of node_exporter data: a slope fitted on it would page for a disk that a build
    # filled for a minute. The projections warm up, naming the span and when their first verdict comes.
    for case in ("test_capacity_headroom_critical", "test_capacity_headroom"):
        assert statuses[case] == "skipped", run.output
        said = _message(run, case)
        assert "warming up: " in said, said
        assert re.search(r"disk / on exporter \(0\.\d hours of data\)", said), said
        assert re.search(r"the first verdict comes at 20\d\d-\d\d-\d\d \d\d:\d\d UTC", said), said
