"""Maintenance windows: inside one, a target's failures are "in maintenance" (skipped) in every output."""

from __future__ import annotations

import datetime
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from acgs_checks.environment.maintenance import Maintenance, parse_cron
from conftest import RunSuite

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_cron_fields_and_the_day_rule() -> None:
    weekdays = parse_cron("30 2 * * 1-5")  # weekdays 02:30
    assert weekdays.matches(at("2026-11-30T02:30"))  # a Monday
    assert not weekdays.matches(at("2026-11-29T02:30"))  # a Sunday
    assert not weekdays.matches(at("2026-11-30T02:31"))
    sundays = parse_cron("0 3 * * 7")  # 7 is Sunday too
    assert sundays.matches(at("2026-11-29T03:00"))
    # Day of month and day of week both restricted: either one matches (cron's rule).
    either = parse_cron("0 0 1 * 1")
    assert either.matches(at("2026-12-01T00:00"))  # the 1st, a Tuesday
    assert either.matches(at("2026-11-30T00:00"))  # a Monday, the 30th
    assert not either.matches(at("2026-12-02T00:00"))
    steps = parse_cron("*/15 8-17/3 * * *")
    assert steps.minutes == frozenset({0, 15, 30, 45})
    assert steps.hours == frozenset({8, 11, 14, 17})


@pytest.mark.parametrize(("expression", "said"), [
    ("0 3 * *", "has 4 field(s)"),
    ("60 3 * * *", "minute '60' is outside 0-59"),
    ("0 3 * * mon", "day of week 'mon' is not a number"),
    ("0 5-3 * * *", "hour '5-3' is outside 0-23"),
])
def test_bad_cron_says_which_field(expression: str, said: str) -> None:
    with pytest.raises(ValueError, match=said.replace("(", r"\(").replace(")", r"\)")):
        parse_cron(expression)


def test_one_off_and_recurring_windows() -> None:
    upgrade = Maintenance(targets=("primary",), reason="CHG-1", start=at("2026-12-01T02:00"),
                          end=at("2026-12-01T04:00"))
    assert upgrade.until(at("2026-12-01T02:00")) == at("2026-12-01T04:00")  # the start is inside
    assert upgrade.until(at("2026-12-01T04:00")) is None  # the end is not
    assert upgrade.until(at("2026-12-01T01:59")) is None
    weekly = Maintenance(targets=("main", "cache-*"), reason="restart", every="50 23 * * 6", duration_minutes=30)
    assert weekly.until(at("2026-11-29T00:10")) == at("2026-11-29T00:20")  # Saturday 23:50 + 30 min, past midnight
    assert weekly.until(at("2026-11-29T00:20")) is None
    assert weekly.covers("cache-eu")
    assert not weekly.covers("primary")


def test_a_window_needs_one_kind_of_time(run_suite: RunSuite, write_env: Callable[[str], Path]) -> None:
    env = write_env('name = "x"\n[[maintenance]]\ntargets = ["primary"]\nreason = "r"\n'
                    'start = 2026-12-01T02:00:00Z\nevery = "0 3 * * *"\nduration_minutes = 60\n'
                    '[[maintenance]]\ntargets = ["primary"]\nreason = "r"\nevery = "0 25 * * *"\n'
                    "duration_minutes = 60\n")
    run = run_suite("-m", "daily", "--env", str(env))
    assert run.returncode == 4, run.output
    assert "maintenance[0]: a window needs either start and end, or every and duration_minutes" in run.stderr
    assert "maintenance[1].every: hour '25' is outside 0-23; fix:" in run.stderr
    assert "Traceback" not in run.output


MAINTENANCE = """
[[maintenance]]
targets = ["primary"]
reason = "PostgreSQL minor upgrade, CHG-77"
start = 2026-12-01T02:00:00Z
end = 2026-12-01T04:00:00Z
"""


def test_inside_the_window_the_targets_failures_are_in_maintenance_everywhere(
        run_suite: RunSuite, standalone_sandbox: Callable[..., Path], tmp_path: Path) -> None:
    env_file = standalone_sandbox("db:down", "auth:down")
    env_file.write_text(env_file.read_text() + MAINTENANCE)
    textfile = tmp_path / "acgs.prom"
    inside = run_suite("-m", "daily and (database or health)", "--env", str(env_file), "--fail-on", "P3",
                       f"--metrics-textfile={textfile}", environ={"ACGS_NOW": "2026-12-01T03:00:00Z"})
    assert inside.returncode == 1, inside.output  # auth is down and not in maintenance: it still fails
    results = inside.results()
    assert inside.failed() == {"test_service_health[auth]"}
    connectivity = results["test_database_connectivity[primary]"]
    assert connectivity["status"] == "skipped"
    message = connectivity["statusDetails"]["message"]
    assert message.startswith("Skipped: in maintenance until 2026-12-01 04:00 UTC (PostgreSQL minor upgrade, "
                              "CHG-77); primary: connect postgresql://"), message
    assert "connection refused" in message.lower()
    # The cases its failure blocks say the same, not "blocked".
    queries = results["test_no_long_running_queries[primary]"]["statusDetails"]["message"]
    assert queries.startswith("Skipped: in maintenance until 2026-12-01 04:00 UTC"), queries
    # summary.json, the terminal, the metrics and JUnit say it too.
    summary = {c["name"]: c for c in json.loads(Path(f"{inside.allure_dir}-summary.json").read_text())["checks"]}
    assert summary["test_database_connectivity[primary]"]["outcome"] == "skipped"
    assert summary["test_database_connectivity[primary]"]["kind"] == "in maintenance"
    assert "in maintenance: 8 check(s) reported as skipped in a maintenance window" in inside.stdout
    assert ("maintenance window open until 2026-12-01 04:00 UTC for primary: PostgreSQL minor upgrade, CHG-77"
            in inside.stdout)
    metrics = textfile.read_text()
    assert ('acgs_check_suppressed{check="test_database_connectivity[primary]",env="sandbox",reason='
            '"in_maintenance",review="adhoc",severity="P0"} 1.0') in metrics
    assert 'acgs_check_success{check="test_database_connectivity[primary]"' not in metrics
    junit = ET.parse(f"{inside.allure_dir}-junit.xml").getroot()
    case = next(c for c in junit.iter("testcase") if c.get("name") == "test_database_connectivity[primary]")
    skipped = case.find("skipped")
    assert skipped is not None
    assert "in maintenance until" in (skipped.get("message") or "")

    # After the window the same failure is a P0 failure again.
    after = run_suite("-m", "daily and database", "--env", str(env_file),
                      environ={"ACGS_NOW": "2026-12-01T04:00:00Z"})
    assert after.returncode == 1
    assert "test_database_connectivity[primary]" in after.failed()
