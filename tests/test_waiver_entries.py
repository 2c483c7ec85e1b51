"""Waivers: a known failure is reported as waived until its date, and counts again after it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import RunSuite
from servers import free_port

TODAY = {"ACGS_TODAY": "2026-11-28"}


def environment(*waivers: str, services: tuple[str, ...] = ("auth", "ai")) -> str:
    # Ports nothing listens on: every health case fails with connection refused.
    text = 'name = "waived"\n' + "".join(
        f'[[services]]\nname = "{name}"\nurl = "http://127.0.0.1:{free_port()}"\n' for name in services)
    return text + "".join(waivers)


def waiver(check: str, expires: str, owner: str = "alice", reason: str = "known outage, INC-42") -> str:
    return f'[[waivers]]\ncheck = "{check}"\nreason = "{reason}"\nowner = "{owner}"\nexpires = {expires}\n'


def summary(run_dir: Path) -> dict[str, dict[str, object]]:
    data = json.loads(Path(f"{run_dir}-summary.json").read_text())
    return {c["name"]: c for c in data["checks"]}


def test_active_expired_and_unmatched_waivers(run_suite: RunSuite, write_env: Callable[[str], Path]) -> None:
    env = write_env(environment(waiver("test_service_health[auth]", "2026-12-31"),
                                waiver("test_service_health[ai*]", "2026-11-01", owner="bob"),
                                waiver("test_nothing_matches_this", "2027-01-31", owner="carol")))
    run = run_suite("-m", "daily", "--env", str(env), environ=TODAY)
    assert run.returncode == 1, run.output  # ai still fails: its waiver has expired
    statuses = run.statuses()
    auth = run.results()["test_service_health[auth]"]
    assert auth["status"] == "skipped"
    message = auth["statusDetails"]["message"]
    assert "waived until 2026-12-31 by alice: known outage, INC-42 (the failure: auth: GET http://127.0.0.1:" in message
    assert "connection refused" in message
    assert statuses["test_service_health[ai]"] == "failed"
    # The expired waiver is reported at P2; the ones in force pass.
    assert statuses["test_waiver_not_expired[test_service_health[ai*]]"] == "failed"
    assert statuses["test_waiver_not_expired[test_service_health[auth]]"] == "passed"
    expired = summary(run.allure_dir)["test_waiver_not_expired[test_service_health[ai*]]"]
    assert expired["severity"] == "P2"
    assert "expired on 2026-11-01 (owner bob" in str(expired["message"])
    assert "warning: waiver 'test_nothing_matches_this' (owner carol) matches no case in this run" in run.stdout
    assert "waived: 1 check(s) reported as skipped under a waiver" in run.stdout


def test_a_waived_failure_does_not_fail_the_run(run_suite: RunSuite, write_env: Callable[[str], Path]) -> None:
    env = write_env(environment(waiver("test_service_*[auth]", "2026-11-28"), services=("auth",)))
    run = run_suite("-m", "daily", "--env", str(env), "--fail-on", "P3", environ=TODAY)
    assert run.returncode == 0, run.output  # its last day: still in force
    assert summary(run.allure_dir)["test_service_health[auth]"]["outcome"] == "skipped"
    later = run_suite("-m", "daily", "--env", str(env), environ={"ACGS_TODAY": "2026-11-29"})
    assert later.returncode == 1  # a day later it no longer applies
    assert later.statuses()["test_service_health[auth]"] == "failed"
