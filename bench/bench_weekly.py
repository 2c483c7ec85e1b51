"""Wall time of the Monday TLS review against many endpoints, some of which never finish a handshake.

    python bench/bench_weekly.py --endpoints 100 --hanging 10 --timeout 2 --runs 5
    python bench/bench_weekly.py --sandbox --runs 5      # -m monday, wednesday, friday on the sandbox

The TLS part starts N real TLS listeners on loopback in a separate process, with certificates
from a CA of its own (the hanging ones accept the TCP connection and never answer the
handshake), writes an environment file for them, then times whole ``pytest -m monday -k tls``
runs, interpreter start included, and prints the median. Each endpoint costs up to five
handshakes; the run should still cost about one timeout, not one per endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import time_runs


async def _serve(endpoints: int, hanging: int, folder: Path) -> None:
    from acgs_checks.sandbox.weekly import Certificates  # noqa: PLC0415 - only the serving process needs it

    certificates = Certificates(folder)
    cert, key = certificates.issue("bench")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    held: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # TCP accepted; no TLS server ever speaks

    ports = []
    for index in range(endpoints):
        hangs = index < hanging
        server = await asyncio.start_server(hang if hangs else answer, "127.0.0.1", 0, backlog=512,
                                            ssl=None if hangs else context)
        ports.append((hangs, server.sockets[0].getsockname()[1]))
    (folder / "ports.json").write_text(json.dumps({"ports": ports, "ca": str(certificates.ca_file)}))
    await asyncio.Event().wait()


def environment_text(ready: dict[str, object], timeout: float, concurrency: int) -> str:
    lines = ['name = "bench"', "[defaults]", f"timeout_seconds = {timeout}", f"concurrency = {concurrency}"]
    for index, (hangs, port) in enumerate(ready["ports"]):  # type: ignore[arg-type]
        lines += ["[[tls_endpoints]]", f'name = "tls-{index:03d}-{"hang" if hangs else "ok"}"',
                  f'address = "127.0.0.1:{port}"', 'server_name = "localhost"', f'ca_file = "{ready["ca"]}"']
    return "\n".join(lines) + "\n"


def _time(command: list[str], runs: int, label: str) -> float:
    walls = time_runs(command, runs, label)
    median = statistics.median(walls)
    print(f"{label}: median {median:.2f} s, min {min(walls):.2f} s, max {max(walls):.2f} s", flush=True)
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--hanging", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=256,
                        help="probes in flight at once (1 = one endpoint after another, the naive way)")
    parser.add_argument("--sandbox", action="store_true", help="time -m monday/wednesday/friday on the sandbox")
    parser.add_argument("--serve", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.endpoints, args.hanging, Path(args.serve)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="acgs-bench-"))
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--alluredir={work / 'allure'}",
            f"--junitxml={work / 'junit.xml'}", f"--summary-json={work / 'summary.json'}"]
    if args.sandbox:
        try:
            for day in ("monday", "wednesday", "friday"):
                _time([*base, "-m", day, "--env", "sandbox"], args.runs, f"-m {day} --env sandbox")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(work), "--endpoints", str(args.endpoints),
                               "--hanging", str(args.hanging)])
    try:
        deadline = time.monotonic() + 60
        while not (work / "ports.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env_file = work / "bench.toml"
        env_file.write_text(environment_text(json.loads((work / "ports.json").read_text()), args.timeout,
                                             args.concurrency))
        median = _time([*base, "-m", "monday", "-k", "tls", f"--env={env_file}"], args.runs,
                       f"endpoints={args.endpoints} hanging={args.hanging} timeout={args.timeout:g}s "
                       f"concurrency={args.concurrency}")
        print(f"median/timeout = {median / args.timeout:.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
