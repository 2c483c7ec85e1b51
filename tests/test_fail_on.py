"""--fail-on: every failure is reported; only those at or above the level fail the run."""

from __future__ import annotations

import pytest

from conftest import RunSuite


@pytest.mark.parametrize(("fail_on", "expected"), [("P3", 1), ("P2", 1), ("P1", 1), ("P0", 0)])
def test_p1_failure(run_suite: RunSuite, fail_on: str, expected: int) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox", "--sandbox-fault", "auth:degraded",
                    "--fail-on", fail_on)
    assert run.returncode == expected, run.output
    # Reported either way.
    assert "FAILED P1 checks/test_service_health.py::test_service_not_degraded[auth]" in run.stdout
    if expected == 0:
        assert "--fail-on P0: 1 failure(s) below P0 are reported but do not fail the run" in run.stdout


@pytest.mark.parametrize("fail_on", ["P0", "P1", "P3"])
def test_p0_failure_always_fails(run_suite: RunSuite, fail_on: str) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox", "--sandbox-fault", "auth:503",
                    "--fail-on", fail_on)
    assert run.returncode == 1, run.output
    assert "P0 failing: respond within 15 minutes" in run.stdout


def test_default_is_p3_and_a_clean_run_exits_zero(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox")
    assert run.returncode == 0
    assert "fail-on P3" in run.stdout
