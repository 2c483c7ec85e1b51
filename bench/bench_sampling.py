"""Accuracy of synthetic sampling: measured P95 against the sandbox's exact latency fault, and no-op P50.

    python bench/bench_sampling.py --runs 5
    python bench/busy_cores.py -- python bench/bench_sampling.py --runs 5     # with every core busy

For each injected P95 (1.5 s and 1.9 s by default) it starts a sandbox (services only) with
``auth:latency=P95`` and samples the auth service ``--runs`` times with the sandbox's settings
(50 requests, 50 in flight); it prints the median measured P95 and its error against the
truth. The no-op line samples a service without a fault: its P50 is the sampler's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from acgs_checks.probes import aio, slo
from acgs_checks.sandbox import Sandbox
from acgs_checks.sandbox.faults import parse_all


def _measure(fault: str | None, service: str, runs: int) -> list[tuple[float, float]]:
    sandbox = Sandbox(parse_all([fault] if fault else []), traffic_per_second=10.0)
    sandbox.start()
    try:
        env = sandbox.environment()
        target = env.service(service)
        settings = env.slo.model_copy(update={"samples": 50, "concurrency": 50})
        found = []
        for _ in range(runs):
            snapshot = aio.run(lambda: slo.from_samples(target, settings))
            found.append((float(snapshot.values["p50"] or 0.0), float(snapshot.values["p95"] or 0.0)))
        return found
    finally:
        sandbox.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--p95", type=float, nargs="*", default=[1.5, 1.9])
    args = parser.parse_args()
    print("| run | median measured | truth | error |")
    print("|---|---|---|---|")
    for truth in args.p95:
        p95s = [p95 for _, p95 in _measure(f"auth:latency={truth}", "auth", args.runs)]
        median = statistics.median(p95s)
        print(f"| P95, latency={truth} | {median:.3f} s | {truth:.3f} s | {100 * (median - truth) / truth:+.1f} % |")
    p50s = [p50 for p50, _ in _measure(None, "auth", args.runs)]
    print(f"| P50 of the no-op endpoint | {statistics.median(p50s) * 1000:.1f} ms | 0 | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
