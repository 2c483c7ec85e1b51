"""An honest first week: a review whose history the store cannot yet hold is "warming up" (a skip naming the date of
its first verdict, in every output), only for as long as its own window; Prometheus's history is used from the first
run.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import servers
from acgs_checks import measurements
from conftest import Run, RunSuite
from servers import RealServers

REVIEWS = ("test_performance_trends", "test_capacity_headroom_critical", "test_capacity_headroom")
DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"


def _message(run: Run, name: str) -> str:
    return str(run.results()[name]["statusDetails"]["message"]).removeprefix("Skipped: ").removeprefix("Failed: ")


def _utc_day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def test_an_empty_store_is_warming_up_with_dates_in_every_output(
        run_suite: RunSuite, servers: RealServers, write_env: Callable[[str], Path], tmp_path: Path) -> None:
    port = servers.http().server_address[1]
    store = tmp_path / "store" / "history.sqlite"
    env_file = write_env(f'name = "young"\n[[services]]\nname = "auth"\nurl = "http://127.0.0.1:{port}"\n'
                         f'[history]\npath = "{store}"\n')
    out = tmp_path / "out"
    run = run_suite("-m", "wednesday", "-k", "trends or capacity", "--env", str(env_file),
                    f"--summary-json={out / 'summary.json'}", f"--junitxml={out / 'junit.xml'}",
                    f"--metrics-textfile={out / 'acgs.prom'}")
    # Never a pass and never a page: skipped, and the run exits 0.
    assert run.returncode == 0, run.output
    assert {name: run.statuses()[name] for name in REVIEWS} == dict.fromkeys(REVIEWS, "skipped"), run.output
    now = time.time()
    trends = _message(run, "test_performance_trends")
    assert re.fullmatch(rf"warming up: 0 of 2 runs recorded \(the history store {re.escape(str(store))} holds none: "
                        rf"this run is its first\), and the review needs a run in an earlier week; first verdict "
                        rf"expected {DATE}", trends), trends
    assert _utc_day(now + 7 * 86400) in trends or _utc_day(now + 7 * 86400 - 120) in trends, trends
    capacity = _message(run, "test_capacity_headroom_critical")
    assert capacity.startswith("warming up: 0 of 3 runs recorded"), capacity
    assert "3 runs over a day or more" in capacity
    # Every output says "warming up": the terminal, Allure's categories, JUnit, summary.json and the metrics.
    assert "warming up: 3 check(s) reported as skipped until the history store covers" in run.output, run.output
    assert "SKIPPED [1] checks/test_performance.py" in run.output, run.output
    categories = json.loads((run.allure_dir / "categories.json").read_text())
    warming = next(c for c in categories if c["name"] == "Warming up")
    assert re.match(warming["messageRegex"], "Skipped: " + trends)
    summary = {c["name"]: c for c in json.loads((out / "summary.json").read_text())["checks"]}
    assert {summary[name]["kind"] for name in REVIEWS} == {"warming up"}
    junit = (out / "junit.xml").read_text()
    assert junit.count('<skipped type="pytest.skip" message="warming up: ') == 3, junit
    assert junit.count('<property name="skip_kind" value="warming up"') == 3, junit
    metrics = (out / "acgs.prom").read_text()
    assert metrics.count("acgs_check_warming_up{") == 3, metrics
    assert 'acgs_check_success{check="test_capacity_headroom' not in metrics

    # Two runs later the store has a first run: the count and its date, and still no page.
    for _ in range(2):
        assert run_suite("-m", "daily and health", "--env", str(env_file)).returncode == 0
    again = run_suite("-m", "wednesday", "-k", "capacity", "--env", str(env_file))
    assert again.returncode == 0, again.output
    said = _message(again, "test_capacity_headroom")
    assert re.fullmatch(rf"warming up: 2 of 3 runs recorded since {DATE}, and the review needs 3 runs over a day or "
                        rf"more; first verdict expected {DATE}", said), said
    assert said.count(_utc_day(now)) >= 1


def test_a_store_past_its_window_without_data_fails_as_no_data(
        run_suite: RunSuite, write_env: Callable[[str], Path], tmp_path: Path) -> None:
    store = tmp_path / "history.sqlite"
    # The first run was ten days ago, and nothing trended or projected was ever recorded: no longer young.
    ten_days_ago = time.time() - 10 * 86400
    measurements.append(store, [measurements.Row(at=ten_days_ago + day * 86400, environment="old", review="daily",
                                                 case_name="test_service_health[auth]", value=200.0, threshold=None,
                                                 outcome="passed") for day in range(3)])
    env_file = write_env(f'name = "old"\n[history]\npath = "{store}"\n')
    run = run_suite("-m", "wednesday", "-k", "trends or capacity", "--env", str(env_file))
    assert run.returncode == 1, run.output
    assert {name: run.statuses()[name] for name in REVIEWS} == dict.fromkeys(REVIEWS, "failed"), run.output
    for name in REVIEWS:
        assert _message(run, name).startswith("no data: history store"), _message(run, name)
    # Another environment's history in the same store does not make this one old.
    young = write_env(f'name = "new"\n[history]\npath = "{store}"\n', name="new.toml")
    fresh = run_suite("-m", "wednesday", "-k", "capacity", "--env", str(young))
    assert set(fresh.statuses().values()) == {"skipped"}, fresh.output


GIB = 2**30


def _node_history(instance: str, now: float) -> str:
    """node_exporter-shaped series, every 5 minutes: a week of / going from 100 GiB to 40 GiB free (8.6 GiB/day), and
    two weeks of CPU (20 % busy the week before, 50 % this week) and memory (a steady 40 % used)."""
    end, step = now - 20, 300  # the newest sample within the 5 minutes an instant query looks back
    two_weeks = [end - i * step for i in range(14 * 86400 // step, -1, -1)]
    week = [at for at in two_weeks if at >= end - 7 * 86400]
    disk = f'device="/dev/sda1",fstype="ext4",instance="{instance}",job="node",mountpoint="/"'
    node = f'instance="{instance}",job="node"'
    lines = ["# TYPE node_filesystem_avail_bytes gauge"]
    lines += [f"node_filesystem_avail_bytes{{{disk}}} {100 * GIB - 60 * GIB * (at - week[0]) / (7 * 86400):.0f} "
              f"{at:.0f}" for at in week]
    lines += ["# TYPE node_filesystem_size_bytes gauge"]
    lines += [f"node_filesystem_size_bytes{{{disk}}} {200 * GIB} {at:.0f}" for at in week]
    busy, idle, cpu = 0.0, 0.0, []
    for at in two_weeks:
        share = 0.5 if at >= end - 7 * 86400 else 0.2
        busy, idle = busy + share * step, idle + (1 - share) * step
        cpu.append((at, busy, idle))
    lines += ["# TYPE node_cpu_seconds counter"]
    lines += [f'node_cpu_seconds_total{{cpu="0",{node},mode="user"}} {b:.1f} {at:.0f}' for at, b, _ in cpu]
    lines += [f'node_cpu_seconds_total{{cpu="0",{node},mode="idle"}} {i:.1f} {at:.0f}' for at, _, i in cpu]
    lines += ["# TYPE node_memory_MemAvailable_bytes gauge"]
    lines += [f"node_memory_MemAvailable_bytes{{{node}}} {6 * GIB} {at:.0f}" for at in two_weeks]
    lines += ["# TYPE node_memory_MemTotal_bytes gauge"]
    lines += [f"node_memory_MemTotal_bytes{{{node}}} {10 * GIB} {at:.0f}" for at in two_weeks]
    return "\n".join(lines) + "\n# EOF\n"


def test_prometheus_history_gives_capacity_and_trends_a_verdict_on_the_first_run(
        run_suite: RunSuite, write_env: Callable[[str], Path], tmp_path: Path) -> None:
    if servers.PROMETHEUS is None or servers.PROMTOOL is None:
        pytest.skip("needs prometheus and promtool (.ci/run installs them)")
    instance = "db1:9100"
    with servers.prometheus_with_history(tmp_path / "prom", _node_history(instance, time.time())) as base:
        env_file = write_env(
            f'name = "first-day"\n[prometheus]\nurl = "{base}"\n'
            f'[[hosts]]\nname = "db1"\nspec = "local://"\nlog_dirs = []\nlogrotate_config = ""\n'
            f"prometheus_selector = 'instance=\"{instance}\"'\n"
            f'[history]\npath = "{tmp_path / "empty.sqlite"}"\n')
        run = run_suite("-m", "wednesday", "-k", "capacity", "--env", str(env_file))
        trends = run_suite("-m", "wednesday", "-k", "trends", "--env", str(env_file))
    # The store is empty, yet Prometheus holds a week: 40 GiB left at 8.6 GiB/day is 4.7 days, inside both windows.
    assert run.statuses() == {"test_capacity_headroom_critical": "failed", "test_capacity_headroom": "failed"}, \
        run.output
    message = _message(run, "test_capacity_headroom_critical")
    assert re.search(r"disk / on db1: full in [45] days \(deriv\(node_filesystem_avail_bytes\[7d\]\) = -8\.\d+ "
                     r"GiB/day, 40\.\d+ GiB available", message), message
    assert "(expected more than 30 days of headroom)" in message, message
    assert re.search(r"over [67]\.\d days of node_exporter data", message), message  # the span really read
    # Trends: node_exporter's two weeks say CPU went from 20 % to 50 % busy (a regression), memory held at 40 %.
    assert trends.statuses() == {"test_performance_trends": "failed"}, trends.output
    said = _message(trends, "test_performance_trends")
    assert re.search(r"1 of 2 value\(s\) regressed: cpu\[db1\] 50(\.\d+)? this week vs 20(\.\d+)? before "
                     r"\(\+150 % worse, 1 earlier week\(s\)\)", said), said
