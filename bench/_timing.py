"""Timing whole ``pytest`` runs for the benchmarks: interpreter start included, each run printed as it ends."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def time_runs(command: list[str], runs: int, label: str = "") -> list[float]:
    """Run ``command`` in the checkout ``runs`` times (CI cleared, so the sandbox is allowed); the wall times."""
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    walls = []
    prefix = f"{label} " if label else ""
    for run in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environ, check=False)
        walls.append(time.perf_counter() - start)
        tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
        print(f"{prefix}run {run + 1}: {walls[-1]:.2f} s (exit {done.returncode}; {tail})", flush=True)
    return walls
