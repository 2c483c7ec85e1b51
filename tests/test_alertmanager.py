"""Failures at or above --fail-on reach a real Alertmanager as alerts; checks that pass clear them."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import servers
from conftest import RunSuite

ALERTMANAGER = shutil.which("prometheus-alertmanager")
pytestmark = pytest.mark.skipif(ALERTMANAGER is None,
                                reason="prometheus-alertmanager is not installed (.ci/run installs it)")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    assert ALERTMANAGER is not None
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    with servers.alertmanager(ALERTMANAGER, config, tmp_path) as url:
        yield url


def alerts(url: str) -> dict[str, dict[str, Any]]:
    """The active alerts by check."""
    with urllib.request.urlopen(url + "/api/v2/alerts?active=true&silenced=false&inhibited=false",
                                timeout=5) as response:
        found = json.loads(response.read())
    return {a["labels"]["check"]: a for a in found}


def test_failures_fire_and_passing_checks_clear(run_suite: RunSuite, alertmanager: str) -> None:
    failing = run_suite("-m", "daily and health", "--env", "sandbox", "--sandbox-fault", "auth:down",
                        "--fail-on", "P1", "--alertmanager", alertmanager)
    assert failing.returncode == 1, failing.output
    active = alerts(alertmanager)
    assert set(active) == {"test_service_health[auth]"}  # P1 and up; the blocked P1 case says nothing new
    alert = active["test_service_health[auth]"]
    assert alert["labels"] == {"alertname": "ACGSRunbookCheckFailed", "severity": "P0",
                               "check": "test_service_health[auth]", "env": "sandbox",
                               "runbook": "daily.service-health"}
    assert "connection refused" in alert["annotations"]["summary"]
    assert "rolling_restart.sh" in alert["annotations"]["remediation"]
    assert alert["status"]["state"] == "active"

    healthy = run_suite("-m", "daily and health", "--env", "sandbox", "--fail-on", "P1", "--alertmanager", alertmanager)
    assert healthy.returncode == 0, healthy.output
    assert alerts(alertmanager) == {}  # resolved: endsAt now


def test_an_unreachable_alertmanager_is_one_line(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily and health", "--env", "sandbox", "--sandbox-fault", "auth:503",
                    "--alertmanager", f"http://127.0.0.1:{servers.free_port()}")
    assert run.returncode == 1  # the failure's own exit code, unchanged by the delivery
    assert "could not deliver: alertmanager:" in run.stdout
    assert "Traceback" not in run.output


def _post(url: str, alerts_: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(url + "/api/v2/alerts", data=json.dumps(alerts_).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_the_monday_review_lists_what_a_real_alertmanager_has_firing(
        run_suite: RunSuite, alertmanager: str, tmp_path: Path) -> None:
    env_file = tmp_path / "env.toml"
    env_file.write_text(f'name = "review"\n[alertmanager]\nurl = "{alertmanager}"\n')
    quiet = run_suite("-m", "monday", "--env", str(env_file))
    assert quiet.returncode == 0, quiet.output
    assert quiet.statuses() == {"test_no_critical_alerts_firing": "passed", "test_no_warning_alerts_firing": "passed"}
    _post(alertmanager, [
        {"labels": {"alertname": "PostgresDown", "severity": "critical", "instance": "db1:5432"}},
        {"labels": {"alertname": "DiskFilling", "severity": "warning", "mountpoint": "/var"}},
        {"labels": {"alertname": "Silenced", "severity": "critical"}},
    ])
    silence = {"matchers": [{"name": "alertname", "value": "Silenced", "isRegex": False}],
               "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "test",
               "comment": "a silenced alert is not reviewed"}
    request = urllib.request.Request(alertmanager + "/api/v2/silences", data=json.dumps(silence).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()
    firing = run_suite("-m", "monday", "--env", str(env_file))
    assert firing.returncode == 1, firing.output
    assert firing.statuses() == {"test_no_critical_alerts_firing": "failed", "test_no_warning_alerts_firing": "failed"}
    critical = str(firing.results()["test_no_critical_alerts_firing"]["statusDetails"]["message"])
    assert "1 critical alert(s) firing" in critical
    assert "PostgresDown {'instance': 'db1:5432'}, firing 0.0 h" in critical
    assert "Silenced" not in critical
    warning = str(firing.results()["test_no_warning_alerts_firing"]["statusDetails"]["message"])
    assert "DiskFilling {'mountpoint': '/var'}" in warning


def test_another_environments_alerts_are_counted_never_judged(
        run_suite: RunSuite, alertmanager: str, tmp_path: Path) -> None:
    # One Alertmanager serving two environments: the sandbox's P0 alert must not page production.
    _post(alertmanager, [{"labels": {"alertname": "OtherEnvDown", "severity": "critical", "env": "sandbox"}},
                         {"labels": {"alertname": "OtherEnvSlow", "severity": "warning", "env": "sandbox"}}])
    env_file = tmp_path / "env.toml"
    env_file.write_text(f'name = "production"\n[alertmanager]\nurl = "{alertmanager}"\n')
    run = run_suite("-m", "monday", "--env", str(env_file))
    assert run.returncode == 0, run.output
    checks = json.loads(Path(f"{run.allure_dir}-summary.json").read_text())["checks"]
    passed = next(c for c in checks if c["name"] == "test_no_critical_alerts_firing")
    assert passed["outcome"] == "passed"
    assert passed["measurement"].startswith("0 critical alert(s) firing"), passed
    assert 'for {env="production"}; 2 of other environments, not judged' in passed["measurement"], passed
    # Its own critical alert fails it, and the other environment's are still only counted.
    _post(alertmanager, [{"labels": {"alertname": "ProdDown", "severity": "critical", "env": "production"}}])
    own = run_suite("-m", "monday", "--env", str(env_file))
    assert own.failed() == {"test_no_critical_alerts_firing"}, own.output
    message = str(own.results()["test_no_critical_alerts_firing"]["statusDetails"]["message"])
    assert "1 critical alert(s) firing" in message
    assert "ProdDown" in message
    assert 'for {env="production"}; 2 of other environments, not judged' in message, message
    # A team whose rules label the environment otherwise says so with a matcher.
    other = tmp_path / "matchers.toml"
    other.write_text(f'name = "production"\n[alertmanager]\nurl = "{alertmanager}"\n'
                     '[security]\nalert_matchers = [\'env=~"sand.*"\']\n')
    theirs = run_suite("-m", "monday", "--env", str(other))
    assert theirs.failed() == {"test_no_critical_alerts_firing", "test_no_warning_alerts_firing"}, theirs.output
    assert "OtherEnvDown" in str(theirs.results()["test_no_critical_alerts_firing"]["statusDetails"]["message"])
