"""The suite's health run against blackbox_exporter probing the same endpoints, in the same run.

    python bench/bench_blackbox.py --endpoints 200 --hanging 20 --timeout 2 --runs 5
    python bench/bench_blackbox.py --endpoints 1000 --hanging 20 --timeout 2 --runs 3

One process serves N real HTTP endpoints on loopback (the first ``--hanging`` accept and never
answer). Each round times, back to back:

* ``pytest -m "daily and health"`` over them (2 cases per endpoint), interpreter start included;
* Debian's ``prometheus-blackbox-exporter`` (already running, as in production) probing every
  endpoint through concurrent ``/probe?module=http_2xx&target=...`` requests, as Prometheus
  scrapes it, with the same timeout.

It prints both medians, their ratio, and the suite's time per case beyond the timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_health import environment_text  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_blackbox(work: Path, timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus-blackbox-exporter")
    if binary is None:
        raise SystemExit("install Debian's prometheus-blackbox-exporter first")
    config = work / "blackbox.yml"
    config.write_text(f"modules:\n  http_2xx:\n    prober: http\n    timeout: {timeout:g}s\n"
                      "    http:\n      preferred_ip_protocol: ip4\n      valid_status_codes: []\n")
    port = _free_port()
    process = subprocess.Popen([binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                                "--log.level=error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/-/healthy", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("blackbox_exporter did not start")


async def _blackbox_round(url: str, ports: list[tuple[bool, int]], timeout: float,
                          concurrency: int) -> tuple[float, int]:
    """Every endpoint probed once through blackbox_exporter, ``concurrency`` probes in flight (the suite's own
    setting): (wall, successes).

    The driver is a plain asyncio HTTP/1.1 client, one keep-alive connection per probe in flight, so the
    figure is blackbox_exporter's, not a client library's (httpx at 256 in flight added seconds of its own)."""
    host, port_text = url.removeprefix("http://").split(":")
    queue: asyncio.Queue[int] = asyncio.Queue()
    for _, port in ports:
        queue.put_nowait(port)
    successes = 0

    async def worker() -> None:
        nonlocal successes
        reader, writer = await asyncio.open_connection(host, int(port_text))
        try:
            while not queue.empty():
                port = queue.get_nowait()
                target = f"http%3A%2F%2F127.0.0.1%3A{port}%2Fhealth"
                writer.write(f"GET /probe?module=http_2xx&target={target} HTTP/1.1\r\nHost: {host}\r\n"
                             f"X-Prometheus-Scrape-Timeout-Seconds: {timeout + 0.5:g}\r\n\r\n".encode())
                length, chunked = 0, False
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    lowered = line.lower()
                    if lowered.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                    chunked = chunked or (lowered.startswith(b"transfer-encoding:") and b"chunked" in lowered)
                if chunked:
                    parts = []
                    while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
                        parts.append(await reader.readexactly(size + 2))
                    await reader.readline()  # the empty trailer
                    body = b"".join(parts)
                else:
                    body = await reader.readexactly(length)
                successes += b"probe_success 1" in body
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(ports)))))
    return time.perf_counter() - start, successes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--hanging", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--marker", default="daily and health")
    parser.add_argument("--bytecode", choices=("off", "on"), default="off",
                        help="off: PYTHONDONTWRITEBYTECODE=1, the image's setting (default); on: bytecode cached")
    parser.add_argument("--concurrency", type=int, default=256,
                        help="probes in flight, for both: the environment's concurrency, and the requests "
                        "to the exporter")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="acgs-bench-bb-"))
    ready = work / "ports.json"
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "bench_health.py"), "--serve", str(ready),
                               "--endpoints", str(args.endpoints), "--hanging", str(args.hanging)])
    blackbox = None
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ports = json.loads(ready.read_text())
        env_file = work / "bench.toml"
        env_file.write_text(environment_text(ports, args.timeout, args.concurrency))
        blackbox, url = _start_blackbox(work, args.timeout)
        command = [sys.executable, "-m", "pytest", "-m", args.marker, "-q", "-p", "no:cacheprovider",
                   f"--env={env_file}", f"--alluredir={work / 'allure'}", f"--junitxml={work / 'junit.xml'}",
                   f"--summary-json={work / 'summary.json'}"]
        # --bytecode off (the default): as the shipped image runs (PYTHONDONTWRITEBYTECODE=1); on: as a machine
        # that lets Python cache bytecode.
        environ = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTHONDONTWRITEBYTECODE")}
        if args.bytecode == "off":
            environ["PYTHONDONTWRITEBYTECODE"] = "1"
        ours, theirs = [], []
        cases = 0
        for run in range(args.runs):
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environ, check=False)
            ours.append(time.perf_counter() - start)
            cases = sum(sum(row.values()) for row in json.loads((work / "summary.json").read_text())["counts"].values())
            wall, passed = asyncio.run(_blackbox_round(url, ports, args.timeout, args.concurrency))
            theirs.append(wall)
            tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
            print(f"run {run + 1}: suite {ours[-1]:.2f} s ({tail}); blackbox_exporter {wall:.2f} s "
                  f"({passed} of {len(ports)} probe_success 1)", flush=True)
        suite, exporter = statistics.median(ours), statistics.median(theirs)
        print(f"endpoints={args.endpoints} hanging={args.hanging} timeout={args.timeout:g}s -m {args.marker!r} "
              f"concurrency={args.concurrency} runs={args.runs}: suite median {suite:.2f} s ({cases} cases), "
              "blackbox_exporter median "
              f"{exporter:.2f} s, ratio {suite / exporter:.2f}, suite beyond the timeout "
              f"{(suite - args.timeout) * 1000 / max(cases, 1):.2f} ms per case")
    finally:
        if blackbox is not None:
            blackbox.terminate()
            blackbox.wait()
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
