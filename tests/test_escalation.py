"""Escalation as code: `acgs-checks alertmanager-config` writes the runbook's timeline as Alertmanager routes.

amtool accepts the file; `amtool config routes test` sends each severity to the runbook's receiver; a real
Alertmanager running it inhibits a service's latency and error alerts while that service is down; and the
escalation rules (on ALERTS) are in the generated rule file, which promtool accepts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import servers
from conftest import ROOT

AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager")
pytestmark = pytest.mark.skipif(AMTOOL is None or ALERTMANAGER is None,
                                reason="prometheus-alertmanager (amtool) is not installed (.ci/run installs it)")


@pytest.fixture
def am_config(tmp_path: Path) -> Path:
    out = tmp_path / "alertmanager.yml"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ACGS_AM_")}
    environ["ACGS_AM_PRIMARY_URL"] = "http://127.0.0.1:9/primary"
    done = subprocess.run([sys.executable, "-m", "acgs_checks.cli", "alertmanager-config", "--output", str(out),
                           "--timezone", "Europe/Berlin"], capture_output=True, text=True, check=False, timeout=60,
                          cwd=ROOT, env=environ)
    assert done.returncode == 0, done.stderr
    return out


def test_amtool_accepts_the_configuration(am_config: Path) -> None:
    assert AMTOOL is not None
    checked = subprocess.run([AMTOOL, "check-config", str(am_config)], capture_output=True, text=True, check=False,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = am_config.read_text()
    assert '"http://127.0.0.1:9/primary"' in text                      # from ACGS_AM_PRIMARY_URL
    assert '"https://acgs-tracking.invalid/alertmanager-webhook"' in text  # a placeholder to replace
    assert 'location: "Europe/Berlin"' in text


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=p0"], "acgs-primary"),
    (["severity=p1"], "acgs-primary"),
    (["severity=p2"], "acgs-tracking"),
    (["severity=p3"], "acgs-weekly-review"),
    (["severity=p0", "escalation=secondary"], "acgs-secondary"),     # after 15 minutes (the escalation rule's for:)
    (["severity=p1", "escalation=secondary"], "acgs-secondary"),     # after 2 hours
    (["severity=p2", "escalation=secondary"], "acgs-secondary"),     # after a day, within business hours
], ids=lambda value: "+".join(value) if isinstance(value, list) else value)
def test_each_severity_reaches_the_runbooks_receiver(am_config: Path, labels: list[str], receiver: str) -> None:
    assert AMTOOL is not None
    routed = subprocess.run([AMTOOL, "config", "routes", "test", f"--config.file={am_config}",
                             "generator=acgs_checks", *labels], capture_output=True, text=True, check=False, timeout=60)
    assert routed.stdout.strip() == receiver, routed.stdout + routed.stderr
    others = subprocess.run([AMTOOL, "config", "routes", "test", f"--config.file={am_config}", "severity=p0"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert others.stdout.strip() == "acgs-tracking"  # another team's alert: the default, never the pager


def test_a_p2_escalation_waits_for_business_hours() -> None:
    from acgs_checks.alerting import routes, rules  # noqa: PLC0415

    config = routes.config(timezone="UTC")
    p2 = [r for r in config["route"]["routes"] if 'severity="p2"' in r["matchers"] and
          'escalation="secondary"' in r["matchers"]]
    assert p2[0]["active_time_intervals"] == [routes.BUSINESS_HOURS]
    window = config["time_intervals"][0]["time_intervals"][0]
    assert window["weekdays"] == ["monday:friday"]
    assert window["times"] == [{"start_time": "09:00", "end_time": "17:00"}]
    assert {r["alert"]: r["for"] for r in rules.escalation_rules(None)} == {  # type: ignore[arg-type]
        "AcgsEscalateP0": "15m", "AcgsEscalateP1": "2h", "AcgsEscalateP2": "1d"}


@pytest.fixture
def running_alertmanager(am_config: Path, tmp_path: Path) -> Iterator[str]:
    assert ALERTMANAGER is not None
    with servers.alertmanager(ALERTMANAGER, am_config, tmp_path) as url:
        yield url


def _post(url: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(url + "/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _inhibited(url: str) -> dict[str, bool]:
    with urllib.request.urlopen(url + "/api/v2/alerts?active=true&inhibited=true", timeout=5) as response:
        found = json.loads(response.read())
    return {f"{a['labels']['alertname']}[{a['labels'].get('service', '')}]": bool(a["status"]["inhibitedBy"])
            for a in found}


def test_a_service_down_inhibits_its_own_latency_and_error_alerts(running_alertmanager: str) -> None:
    def alert(name: str, service: str, severity: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "service": service, "severity": severity, "env": "production",
                           "generator": "acgs_checks"}}

    _post(running_alertmanager, [alert("AcgsServiceDown", "auth", "p0"), alert("AcgsErrorRateWarning", "auth", "p1"),
                                 alert("AcgsP95LatencyWarning", "auth", "p1"),
                                 alert("AcgsErrorRateWarning", "policy-governance", "p1"),
                                 alert("AcgsHostCpuHigh", "", "p1")])
    deadline, seen = time.monotonic() + 20, {}
    while time.monotonic() < deadline:
        seen = _inhibited(running_alertmanager)
        if seen.get("AcgsErrorRateWarning[auth]"):
            break
        time.sleep(0.3)
    assert seen == {"AcgsServiceDown[auth]": False, "AcgsErrorRateWarning[auth]": True,
                    "AcgsP95LatencyWarning[auth]": True, "AcgsErrorRateWarning[policy-governance]": False,
                    "AcgsHostCpuHigh[]": False}, seen
