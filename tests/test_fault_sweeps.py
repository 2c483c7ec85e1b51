"""Faults are exact near the lines: just below passes, just above fails, at the line as docs/judging.md's table says.

The latency and error faults act on each client's own sequence of requests (the suite's
sampler apart from the sandbox's background traffic), so their values hold on the traffic
the suite measures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_slo_sandbox import rewrite

from acgs_checks.maths.metrics import percentile
from acgs_checks.sandbox.services import LATENCY_PERIOD, latency_sequence
from conftest import RunSuite


def test_the_latency_sequence_has_the_exact_p95() -> None:
    for p95 in (0.5, 1.5, 1.9, 3.0):
        samples = [latency_sequence(i, p95) for i in range(17, 17 + LATENCY_PERIOD)]  # any 50 in a row
        assert percentile(samples, 0.95) == pytest.approx(p95, rel=1e-9)


@pytest.mark.parametrize(("p95", "passes"), [(1.8, True), (2.2, False)], ids=["1.8 s passes", "2.2 s fails"])
def test_latency_just_below_and_above_the_p95_line(run_suite: RunSuite, p95: float, passes: bool) -> None:
    # 10 % either side of 2 s: the fault is exact, so only the sampler's own overhead is in the way.
    run = run_suite("-m", "daily and slo", "-k", "auth and p95", "--env", "sandbox",
                    "--sandbox-fault", f"auth:latency={p95}")
    assert run.statuses() == {"test_p95_latency[auth]": "passed" if passes else "failed"}, run.output


@pytest.mark.parametrize(("share", "warning", "critical"), [
    (0.0099, "passed", "passed"),   # 0 of 100: below 1 %
    (0.0101, "failed", "passed"),   # 1 of 100 = 1 %: the target is < 1 %, so 1 % fails
    (0.05, "failed", "passed"),     # 5 of 100 = 5 %: the critical alert is > 5 %, so 5 % passes it
    (0.06, "failed", "failed"),     # 6 of 100
], ids=["0.99%", "1.01%", "5%", "6%"])
def test_error_share_just_below_at_and_above_the_lines(
        run_suite: RunSuite, standalone_sandbox: Callable[..., Path], share: float, warning: str,
        critical: str) -> None:
    env_file = standalone_sandbox(f"auth:errors={share}", backends=False)

    def hundred_samples(data: dict[str, Any]) -> None:
        data["slo"].update(samples=100, concurrency=50)
        for key in ("databases", "poolers", "caches", "security", "backups"):  # the last two name them
            data.pop(key, None)

    changed = rewrite(env_file, hundred_samples)
    run = run_suite("-m", "daily and slo", "-k", "auth and error_rate", "--env", str(changed))
    assert run.statuses() == {"test_error_rate_warning[auth]": warning, "test_error_rate_critical[auth]": critical}, \
        run.output


@pytest.mark.parametrize(("fault", "case", "passes"), [
    ("cache:memory=84", "test_cache_memory[main]", True),
    ("cache:memory=86", "test_cache_memory[main]", False),
    ("db:connections=79", "test_connection_usage[primary]", True),
    ("db:connections=81", "test_connection_usage[primary]", False),
], ids=["memory 84", "memory 86", "connections 79", "connections 81"])
def test_backend_faults_just_below_and_above_their_lines(run_suite: RunSuite, fault: str, case: str,
                                                         passes: bool) -> None:
    run = run_suite("-m", "daily and (cache or database)", "-k", case.split("[", maxsplit=1)[0], "--env", "sandbox",
                    "--sandbox-fault", fault)
    assert run.statuses() == {case: "passed" if passes else "failed"}, run.output
