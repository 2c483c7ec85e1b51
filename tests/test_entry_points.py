"""Every entry point answers --help (the fault list's "%" once broke argparse's formatting)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "pytest", "--help"],
    [sys.executable, "-m", "acgs_checks.sandbox", "--help"],
    [str(Path(sys.executable).parent / "acgs-sandbox"), "--help"],
], ids=["pytest", "python -m acgs_checks.sandbox", "acgs-sandbox"])
@pytest.mark.parametrize("ci", ["", "true"], ids=["local", "CI"])
def test_help_works_for_every_entry_point(command: list[str], ci: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ACGS_ENV")}
    env["CI"] = ci
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback (most recent call last)" not in done.stdout + done.stderr
    assert "latency=" in done.stdout  # the fault list is part of the help


@pytest.mark.parametrize(("command", "says"), [
    ([str(Path(sys.executable).parent / "acgs-checks"), "--help"], "validate"),
    (["node", str(ROOT / "scripts" / "report.mjs"), "--help"], "--url URL"),
], ids=["acgs-checks", "report.mjs"])
def test_help_of_the_other_commands(command: list[str], says: str) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert says in done.stdout
