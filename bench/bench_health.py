"""Wall time of ``pytest -m daily`` against many endpoints, some of which never answer.

    python bench/bench_health.py --endpoints 200 --hanging 20 --timeout 2 --runs 5
    python bench/bench_health.py --marker "daily and health" --runs 5

It starts N real HTTP listeners on loopback in a separate process (the hanging ones
accept the connection and never answer), writes an environment file for them, then
times whole ``pytest`` runs, interpreter start included, and prints the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import time_runs


async def _serve(endpoints: int, hanging: int, ready_file: Path) -> None:
    body = json.dumps({"status": "ok"}).encode()
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    held: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        writer.write(response)
        await writer.drain()
        writer.close()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read nothing, answer never

    ports = []
    for index in range(endpoints):
        handler = hang if index < hanging else answer
        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=512)
        ports.append((index < hanging, server.sockets[0].getsockname()[1]))
    ready_file.write_text(json.dumps(ports))
    await asyncio.Event().wait()


def environment_text(ports: list[tuple[bool, int]], timeout: float, concurrency: int) -> str:
    lines = ['name = "bench"', "[defaults]", f"timeout_seconds = {timeout}", f"concurrency = {concurrency}"]
    for index, (hangs, port) in enumerate(ports):
        kind = "hang" if hangs else "ok"
        lines += ["[[services]]", f'name = "svc-{index:03d}-{kind}"', f'url = "http://127.0.0.1:{port}"']
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--hanging", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--xdist", default="", help="also pass -n VALUE to pytest")
    parser.add_argument("--marker", default="daily",
                        help='the -m expression, e.g. "daily and health" for the health checks alone')
    parser.add_argument("--concurrency", type=int, default=256,
                        help="probes in flight at once (1 = one target after another, the naive way)")
    parser.add_argument("--serve", metavar="READY_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.endpoints, args.hanging, Path(args.serve)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="acgs-bench-"))
    ready = work / "ports.json"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(ready),
                               "--endpoints", str(args.endpoints), "--hanging", str(args.hanging)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env_file = work / "bench.toml"
        env_file.write_text(environment_text(json.loads(ready.read_text()), args.timeout, args.concurrency))
        command = [sys.executable, "-m", "pytest", "-m", args.marker, "-q", "-p", "no:cacheprovider",
                   f"--env={env_file}", f"--alluredir={work / 'allure'}"]
        if args.xdist:
            command += ["-n", args.xdist]
        walls = time_runs(command, args.runs)
        median = statistics.median(walls)
        print(f"endpoints={args.endpoints} hanging={args.hanging} timeout={args.timeout:g}s "
              f"-m {args.marker!r} concurrency={args.concurrency} xdist={args.xdist or 'off'} runs={args.runs}: "
              f"median {median:.2f} s, "
              f"min {min(walls):.2f} s, max {max(walls):.2f} s, "
              f"median/timeout = {median / args.timeout:.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)  # the environment file and the Allure results
    return 0


if __name__ == "__main__":
    sys.exit(main())
