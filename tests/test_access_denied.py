"""A target that answers and refuses the suite is "access denied", never "target unreachable".

Real servers refuse for real: PostgreSQL with a wrong password, Redis with an ACL user that
may not PING (NOPERM), an HTTP health endpoint answering 401. Every output says it the same
way: the terminal, summary.json, JUnit and Allure.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from acgs_checks.sandbox.servers import PostgresServer, RedisServer
from conftest import Run, RunSuite, accounts
from servers import RealServers


@pytest.fixture
def refusing() -> Iterator[tuple[PostgresServer, RedisServer, str]]:
    with accounts((), ("no_ping", "on", ">{password}", "-@all", "+info")) as servers:
        yield servers


def _message(run: Run, name: str) -> str:
    # allure-pytest puts pytest's "Failed: " or "Skipped: " before the suite's own line.
    return str(run.results()[name]["statusDetails"]["message"]).removeprefix("Failed: ").removeprefix("Skipped: ")


def test_refusals_are_access_denied_in_every_output(
        run_suite: RunSuite, servers: RealServers, write_env: Callable[[str], Path], tmp_path: Path,
        refusing: tuple[PostgresServer, RedisServer, str]) -> None:
    pg, cache, password = refusing
    http_port = servers.http(status=401, body=b'{"error": "unauthorized"}').server_address[1]
    env_file = write_env(
        'name = "refused"\n'
        f'[[services]]\nname = "auth"\nurl = "http://127.0.0.1:{http_port}"\n'
        f'[[databases]]\nname = "primary"\ndsn = "postgresql://acgs_monitor:wrong-password@127.0.0.1:{pg.port}/'
        f'{pg.database}"\n'
        f'[[caches]]\nname = "main"\nurl = "redis://no_ping:${{NO_PING_PASSWORD}}@127.0.0.1:{cache.port}/0"\n')
    junit, summary_file = tmp_path / "junit.xml", tmp_path / "summary.json"
    run = run_suite("-m", "daily and (health or database or cache)", "--env", str(env_file),
                    f"--junitxml={junit}", f"--summary-json={summary_file}", environ={"NO_PING_PASSWORD": password})
    assert run.returncode == 1, run.output
    refused = {"test_service_health[auth]", "test_database_connectivity[primary]", "test_cache_reachable[main]"}
    assert run.failed() == refused, run.output

    # Allure: the message, the category that catches it, and the dependents blocked for that reason.
    messages = {name: _message(run, name) for name in refused}
    assert messages["test_database_connectivity[primary]"].startswith(
        "access denied: primary: connect postgresql://acgs_monitor:***@")
    assert "password authentication failed" in messages["test_database_connectivity[primary]"]
    assert "; check the user and password in the DSN" in messages["test_database_connectivity[primary]"]
    assert messages["test_cache_reachable[main]"].startswith("access denied: main: PING redis://no_ping:***@")
    assert "NOPERM" in messages["test_cache_reachable[main]"] or "permission" in messages["test_cache_reachable[main]"]
    assert messages["test_service_health[auth]"].startswith("access denied: auth: GET http://127.0.0.1:")
    assert all("(target unreachable)" not in m for m in messages.values())
    categories = json.loads((run.allure_dir / "categories.json").read_text())
    denied = next(c for c in categories if c["name"] == "Access denied")
    for name in refused:
        raw = run.results()[name]["statusDetails"]["message"]
        assert re.match(denied["messageRegex"], raw), raw
        assert not re.match(categories[1]["messageRegex"], raw)  # not "Target unreachable"
    blocked = _message(run, "test_no_long_running_queries[primary]")
    assert blocked.startswith("blocked: primary refused access; see test_database_connectivity[primary]")

    # summary.json: the kind per check, and a count per kind.
    summary = json.loads(summary_file.read_text())
    kinds = {c["name"]: c["kind"] for c in summary["checks"] if c["outcome"] == "failed"}
    assert kinds == dict.fromkeys(refused, "access denied")
    assert summary["failure_kinds"] == {"access denied": 3}

    # JUnit: a property on each refused case.
    for case in ET.parse(junit).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if case.get("name") in refused:
            assert props["failure_kind"] == "access denied"

    # Terminal: its own line, apart from unreachable targets.
    assert "access denied: 3 check(s) were refused by their target; check credentials and grants" in run.stdout
    assert password not in run.output + run.all_files_text() + junit.read_text() + summary_file.read_text()
    assert pg.monitor_password not in run.output


def test_least_privilege_redis_user_without_client_setname(
        run_suite: RunSuite, write_env: Callable[[str], Path],
        refusing: tuple[PostgresServer, RedisServer, str]) -> None:
    """+ping +info only: every cache case runs; the refused CLIENT SETNAME is a note, not a failure."""
    _, cache, _ = refusing
    env_file = write_env('name = "narrow"\n[defaults]\ncache_window_seconds = 0.2\n'
                         f'[[caches]]\nname = "main"\nurl = "{cache.url}"\n')
    run = run_suite("-m", "daily and cache", "--env", str(env_file))
    assert run.statuses()["test_cache_reachable[main]"] == "passed", run.output
    assert "test_cache_memory[main]" in run.statuses()
    assert run.statuses()["test_cache_memory[main]"] != "skipped", run.output
    assert "client setname" in run.all_files_text()
