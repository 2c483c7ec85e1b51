"""An interrupted run says what it did not do: how many selected cases never ran, by level, in the terminal and in
summary.json, for Ctrl-C (SIGINT) and for SIGTERM (a CI abort, Kubernetes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_names_the_cases_that_never_ran(tmp_path: Path, stop: signal.Signals) -> None:
    summary = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ACGS_ENV", "PYTEST_ADDOPTS")}
    # auth's latency fault keeps its SLO sampling busy for seconds: the signal lands while cases wait for it.
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "daily and (health or slo)",
         "--sandbox-fault", "auth:latency=9", f"--summary-json={summary}", f"--alluredir={tmp_path / 'allure'}",
         f"--junitxml={tmp_path / 'junit.xml'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The signal lands once the first case has a result (the run is under way; auth's SLO cases still wait).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not list(tmp_path.glob("allure/*-result.json")):
        time.sleep(0.05)
    process.send_signal(stop)
    output, _ = process.communicate(timeout=120)
    assert process.returncode in (2, 130), output  # pytest's "interrupted"
    document = json.loads(summary.read_text())
    assert document["status"] == "interrupted", output
    never = document["not_run"]
    assert never, output
    assert {case["severity"] for case in never} <= {"P0", "P1", "P2", "P3"}, never
    ran = {check["id"] for check in document["checks"]}
    assert not ran & {case["id"] for case in never}
    line = next(line for line in output.splitlines() if line.startswith("interrupted: "))
    assert line.startswith(f"interrupted: {len(never)} selected case(s) never ran ("), line
