"""What hostile targets cost: masking time by text length, and whole runs against targets that send too much.

    python bench/bench_hostile.py --masking          # Redactor on 10 k, 100 k and 1 M characters
    python bench/bench_hostile.py --runs 5 --timeout 2

The masking part times the environment's redaction (known secrets in every derived form, then the
patterns) over texts shaped to hurt a backtracking matcher: many ``scheme://`` starts, many
``user:`` prefixes without ``@``, many ``?password=``, and plain letters; it prints the median of
each shape per length and the ratio between lengths (linear: about 10 per tenfold length).

The run part starts hostile loopback servers in this process (tests/hostile.py): a Prometheus whose
every query answers a 1 MB error message, a service with a 90 KB response header, one streaming a
2 GB body, one dribbling a byte at a time, one with a 70 KiB body before its status; then times
whole ``pytest -m daily`` runs against them (interpreter start included), and reports the median
against the timeout and the peak resident memory of the run's process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from acgs_checks import redaction  # noqa: E402
from hostile import (  # noqa: E402 - the self-tests' hostile servers, shared with the bench
    endless_body,
    health_after_padding,
    huge_header,
    raw_json,
    serving,
    slow_loris,
)

SHAPES = {
    "letters": lambda n: "a" * n,
    "scheme starts": lambda n: "ab://" * (n // 5),
    "scheme starts, an @ at the end": lambda n: "ab://" * (n // 5) + "@",
    "user: without @": lambda n: "x://u:" + "p://q:" * (n // 6) + "@",
    "user:password@ everywhere": lambda n: "s://u:p@" * (n // 8),
    "?password=": lambda n: "?password=" * (n // 10),
    "Bearer": lambda n: "Bearer " * (n // 7),
    "one long userinfo": lambda n: "a://" + "b" * (n // 2) + ":" + "c" * (n // 2) + "@",
}


def masking(repeats: int = 5) -> None:
    redact = redaction.Redactor({'s3cr"et\\pw', "hunter2-long-password", "Tok3n/with+slash="})
    print("| text | 10 k chars | 100 k chars | 1 M chars | 1 M ÷ 100 k |")
    print("|---|---|---|---|---|")
    for shape, make in SHAPES.items():
        medians = []
        for length in (10_000, 100_000, 1_000_000):
            text = make(length)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                redact(text)
                times.append(time.perf_counter() - start)
            medians.append(statistics.median(times))
        print(f"| {shape} | {medians[0] * 1000:.2f} ms | {medians[1] * 1000:.2f} ms | {medians[2] * 1000:.1f} ms "
              f"| {medians[2] / medians[1]:.1f} |", flush=True)


def runs(count: int, timeout: float) -> None:
    error = json.dumps({"status": "error", "errorType": "execution", "error": "ab://x:" * 150_000}).encode()
    with serving(raw_json(error)) as metrics, \
            serving(huge_header(90 * 1024)) as header, \
            serving(endless_body(2 * 1024 ** 3)) as endless, \
            serving(slow_loris()) as loris, \
            serving(health_after_padding(70 * 1024)) as padded, tempfile.TemporaryDirectory() as folder:
        env_file = Path(folder) / "env.toml"
        env_file.write_text(
            f'name = "hostile"\n[defaults]\ntimeout_seconds = {timeout:g}\n'
            f'[prometheus]\nurl = "{metrics.url}"\n'
            + "".join(f'[[services]]\nname = "{name}"\nurl = "{server.url}"\n' for name, server in
                      (("header", header), ("endless", endless), ("loris", loris), ("padded", padded))))
        walls, peaks = [], []
        for run in range(count):
            command = [sys.executable, "-c", _MEASURE, "-m", "daily", "-p", "no:cacheprovider", f"--env={env_file}",
                       f"--alluredir={folder}/allure", f"--junitxml={folder}/junit.xml",
                       f"--summary-json={folder}/summary.json", "--clean-alluredir"]
            environ = {k: v for k, v in os.environ.items() if k != "CI"}
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environ, check=False)
            walls.append(time.perf_counter() - start)
            peaks.append(int(done.stderr.strip().splitlines()[-1].split()[-1]) / 1024)
            tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
            print(f"run {run + 1}: {walls[-1]:.2f} s, peak RSS {peaks[-1]:.0f} MiB (exit {done.returncode}; {tail})",
                  flush=True)
        median = statistics.median(walls)
        print(f"median {median:.2f} s = timeout {timeout:g} s + {median - timeout:.2f} s; "
              f"peak RSS max {max(peaks):.0f} MiB; "
              f"the 2 GB body sent {sum(len(s) for s in endless.seen)} request bytes and was cut at the cap")


# Runs pytest in this process, then prints its own peak resident set size (KiB) on stderr.
_MEASURE = ("import resource, sys, pytest; code = pytest.main(sys.argv[1:]); "
            "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "sys.exit(code)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masking", action="store_true", help="time the redaction only")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    if args.masking:
        masking()
        return
    runs(args.runs, args.timeout)


if __name__ == "__main__":
    main()
