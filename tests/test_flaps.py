"""Opt-in retries reveal flapping: a pass on a later attempt is flaky, a hard failure still fails."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from conftest import RunSuite
from servers import answer, serving, url_of

SAMPLES = 20


class Flapping:
    """A real service on loopback whose work path fails its first ``bad`` requests (all of them: -1)."""

    def __init__(self, bad: int) -> None:
        self.bad, self.work, self.lock = bad, 0, threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path == "/health":
                    answer(self, 200, b'{"status": "pass"}')
                    return
                with outer.lock:
                    outer.work += 1
                    failing = outer.bad < 0 or outer.work <= outer.bad
                answer(self, 500 if failing else 200, b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._serving = serving(Handler)
        self.url = url_of(self._serving.__enter__())

    def stop(self) -> None:
        self._serving.__exit__(None, None, None)


@pytest.fixture
def flapping() -> Iterator[Callable[[int], Flapping]]:
    started: list[Flapping] = []

    def start(bad: int) -> Flapping:
        started.append(Flapping(bad))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def environment(flappy: Flapping, broken: Flapping, retries: str) -> str:
    services = "".join(f'[[services]]\nname = "{name}"\nurl = "{s.url}"\nslo_path = "/work"\n'
                       for name, s in (("flappy", flappy), ("broken", broken)))
    return (f'name = "flaps"\n[slo]\nsource = "synthetic"\nsamples = {SAMPLES}\nconcurrency = 5\n'
            f"{services}{retries}")


RETRIES = '[[retries]]\narea = "slo"\nattempts = 3\nbackoff_seconds = 0.1\n'


def test_a_pass_on_retry_is_flaky_and_a_hard_failure_still_fails(
        run_suite: RunSuite, write_env: Callable[[str], Path], flapping: Callable[[int], Flapping],
        tmp_path: Path) -> None:
    flappy, broken = flapping(SAMPLES), flapping(-1)  # flappy: its whole first sample fails
    env = write_env(environment(flappy, broken, RETRIES))
    textfile = tmp_path / "acgs.prom"
    run = run_suite("-m", "daily and slo", "--env", str(env), f"--metrics-textfile={textfile}")
    assert run.returncode == 1, run.output
    results = run.results()
    # broken fails every attempt; the failure is not hidden, and says so.
    # (every request of broken fails: its users are frustrated too, Apdex 0)
    assert run.failed() == {"test_error_rate_warning[broken]", "test_error_rate_critical[broken]",
                            "test_user_satisfaction_apdex[broken]"}, run.output
    critical = results["test_error_rate_critical[broken]"]["statusDetails"]["message"]
    assert critical.endswith("(failed all 3 attempts)"), critical
    # flappy passed on its second attempt: passed, and flaky everywhere.
    for name in ("test_error_rate_warning[flappy]", "test_error_rate_critical[flappy]"):  # (and its Apdex)
        result = results[name]
        assert result["status"] == "passed"
        assert result["statusDetails"]["flaky"] is True
        message = result["statusDetails"]["message"]
        assert "flaky: passed on attempt 2 of 3; attempt 1 failed: flappy: 5xx error rate 100.00 %" in message
        steps = [step["name"] for step in result.get("steps", [])]
        assert steps[0].startswith("attempt 1 of 3 failed: flappy: 5xx error rate 100.00 %"), steps
        assert steps[1].startswith("attempt 2 of 3"), steps
    assert "flaky" not in results["test_p95_latency[flappy]"]["statusDetails"]  # passed at once
    summary = {c["name"]: c for c in json.loads(Path(f"{run.allure_dir}-summary.json").read_text())["checks"]}
    assert summary["test_error_rate_critical[flappy]"]["flaky"] is True
    assert summary["test_error_rate_critical[flappy]"]["outcome"] == "passed"
    assert summary["test_error_rate_critical[broken]"]["flaky"] is False
    assert results["test_user_satisfaction_apdex[flappy]"]["statusDetails"]["flaky"] is True
    assert "flaky: 3 check(s) passed only on a retry:" in run.stdout
    metrics = textfile.read_text()
    assert ('acgs_check_flaky{check="test_error_rate_critical[flappy]",env="flaps",review="adhoc",severity="P0"} 1.0'
            in metrics)
    assert ('acgs_check_flaky{check="test_p95_latency[flappy]",env="flaps",review="adhoc",severity="P1"} 0.0'
            in metrics)
    # One probe per attempt, shared by the target's cases that retried: flappy's two failing cases
    # read one second sample; broken's read one second and one third.
    assert flappy.work == 2 * SAMPLES
    assert broken.work == 3 * SAMPLES


def test_without_a_policy_nothing_is_retried(run_suite: RunSuite, write_env: Callable[[str], Path],
                                             flapping: Callable[[int], Flapping]) -> None:
    flappy, broken = flapping(SAMPLES), flapping(-1)
    env = write_env(environment(flappy, broken, ""))
    run = run_suite("-m", "daily and slo", "--env", str(env))
    assert run.returncode == 1
    assert {"test_error_rate_critical[flappy]", "test_error_rate_critical[broken]"} <= run.failed()
    assert flappy.work == SAMPLES
    assert "failed all" not in run.output


def test_a_policy_over_the_wait_budget_is_refused(run_suite: RunSuite, write_env: Callable[[str], Path]) -> None:
    env = write_env('name = "x"\n[[retries]]\narea = "slo"\nattempts = 5\nbackoff_seconds = 30\n'
                    '[[retries]]\narea = "nowhere"\nattempts = 2\n')
    run = run_suite("-m", "daily", "--env", str(env))
    assert run.returncode == 4, run.output
    assert "retries[0].backoff_seconds: waits 450 s in all between attempts, over the 60 s budget" in run.stderr
    assert "retries[1].area: 'nowhere' is not an area" in run.stderr
