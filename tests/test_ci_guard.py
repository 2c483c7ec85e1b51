"""In CI the environment must be named: a pipeline never goes green against the sandbox by accident."""

from __future__ import annotations

from conftest import RunSuite


def test_ci_without_environment_is_a_usage_error(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", environ={"CI": "true"})
    assert run.returncode == 4, run.output
    assert "CI is set but no environment was given" in run.stderr
    assert "Traceback" not in run.output


def test_without_ci_the_default_is_the_sandbox(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily")
    assert run.returncode == 0, run.output
    assert "environment 'sandbox'" in run.stdout


def test_ci_with_an_explicit_environment_runs(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "--env", "sandbox", environ={"CI": "true"})
    assert run.returncode == 0, run.output
    run = run_suite("-m", "daily", environ={"CI": "true", "ACGS_ENV": "sandbox"})
    assert run.returncode == 0, run.output


def test_ci_false_is_not_ci(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", environ={"CI": "false"})
    assert run.returncode == 0, run.output
