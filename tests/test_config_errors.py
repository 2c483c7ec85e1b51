"""Bad input stops the run before any check: one line naming the file and key, exit code 4."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunSuite

GOOD_SERVICE = '[[services]]\nname = "auth"\nurl = "http://127.0.0.1:9"\n'


def assert_one_line(run_output: str, *needles: str) -> None:
    lines = [line for line in run_output.splitlines() if line.strip()]
    assert len(lines) == 1, run_output
    assert lines[0].startswith("ERROR: ")
    assert "Traceback" not in run_output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('name = "x"\n[[services]\nname = "a"\n', ["not valid TOML", "line 2"]),
        (GOOD_SERVICE, ["name", "missing required key"]),
        ('name = "x"\ncolour = "red"\n' + GOOD_SERVICE, ["colour", "unknown key"]),
        ('name = "x"\n[[services]]\nname = "auth"\nurl = "ftp://host"\n',
         ["services[auth].url", "not an http or https URL"]),
        ('name = "x"\n[[services]]\nname = "auth"\nurl = "http://h:99999"\n',
         ["services[auth].url", "not a valid URL"]),
        ('name = "x"\n[[services]]\nname = "auth"\nurl = "${ACGS_TEST_UNSET_URL}"\n',
         ["services[auth].url", "ACGS_TEST_UNSET_URL is not set", "${ACGS_TEST_UNSET_URL:-default}"]),
        ('name = "x"\n' + GOOD_SERVICE + '[thresholds]\np95_warning_seconds = "fast"\n',
         ["thresholds.p95_warning_seconds", "not a number"]),
        ('name = "x"\n' + GOOD_SERVICE + "[thresholds]\nerror_rate_warning_percent = 7\n",
         ["thresholds.error_rate_warning_percent", "error_rate_critical_percent"]),
        ('name = "x"\n' + GOOD_SERVICE + "[thresholds]\nlatency = 3\n", ["thresholds.latency", "unknown threshold"]),
        ('name = "x"\n' + GOOD_SERVICE + GOOD_SERVICE, ["services[auth].name", "defined twice"]),
        ('name = "x"\n[defaults]\ntimeout_seconds = 0\n' + GOOD_SERVICE, ["defaults.timeout_seconds", "out of range"]),
        ('name = "x"\n[[services]]\nname = "Auth Service"\nurl = "http://h"\n', ["is not a valid name"]),
    ],
    ids=["malformed", "missing-name", "unknown-key", "bad-scheme", "bad-port", "unset-variable",
         "threshold-not-number", "threshold-order", "unknown-threshold", "duplicate", "zero-timeout",
         "bad-service-name"],
)
def test_invalid_environment_file(run_suite: RunSuite, write_env: Callable[[str], Path],
                                  text: str, needles: list[str]) -> None:
    path = write_env(text)
    run = run_suite("-m", "daily", "--env", str(path))
    assert run.returncode == 4, run.output
    assert_one_line(run.output, str(path), "fix:", *needles)
    assert not run.allure_dir.exists() or not list(run.allure_dir.glob("*-result.json"))


def test_unknown_environment_name(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily", "--env", "staging")
    assert run.returncode == 4
    assert_one_line(run.output, "fixtures/environments/staging.toml", "not found", "local")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--sandbox-fault", "auth:explode"], ["unknown fault 'explode'", "down, 503"]),
        (["--sandbox-fault", "billing:down"], ["unknown sandbox target 'billing'", "auth"]),
        (["--sandbox-fault", "auth:slow"], ["needs an argument"]),
        (["--sandbox-fault", "auth:slow=soon"], ["bad argument 'soon'"]),
        (["--sandbox-fault", "auth"], ["TARGET:FAULT"]),
        (["--sandbox-fault", "auth:down", "--sandbox-fault", "auth:503"], ["already has fault"]),
        (["--fail-on", "P9"], ["--fail-on", "P9"]),
        (["--env", "local", "--sandbox-fault", "auth:down"], ["only to the sandbox"]),
    ],
)
def test_bad_options(run_suite: RunSuite, args: list[str], needles: list[str]) -> None:
    run = run_suite("-m", "daily", *args)
    assert run.returncode == 4, run.output
    assert_one_line(run.output, "fix:", *needles)


def test_the_shipped_environment_files_are_valid(run_suite: RunSuite) -> None:
    for name in ("local", "production.example"):
        run = run_suite("--collect-only", "-q", "--env", name)
        assert run.returncode == 0, run.output
        assert "test_service_health[auth]" in run.stdout
