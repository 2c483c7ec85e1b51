"""Run a command while other processes keep every core busy, and report its wall time.

    python bench/busy_cores.py -- pytest tests -q -p no:cacheprovider

One CPU-bound process per core (``--burners``) spins for at most ``--limit`` seconds; all
of them stop when the command ends, on Ctrl-C and on SIGTERM. The exit code is the command's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import time


def _burn(limit: float) -> None:
    deadline = time.monotonic() + limit
    x = 0
    while time.monotonic() < deadline:
        x = (x * 31 + 7) % 1_000_003


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2, help="busy processes (default: cores)")
    parser.add_argument("--limit", type=float, default=1800.0, help="seconds a burner spins at most")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    burners = [multiprocessing.Process(target=_burn, args=(args.limit,), daemon=True) for _ in range(args.burners)]
    for burner in burners:
        burner.start()

    def stop(*_: object) -> None:
        for burner in burners:
            burner.terminate()
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    try:
        code = subprocess.run(command, check=False).returncode
    finally:
        for burner in burners:
            burner.terminate()
            burner.join(timeout=5)
    print(f"busy_cores: {args.burners} busy process(es); the command took {time.monotonic() - started:.1f} s, "
          f"exit {code}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
