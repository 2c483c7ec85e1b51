"""A small ACGS-shaped HTTP service: ``/health``, ``/metrics`` and ``/``, with injectable faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from acgs_checks.sandbox.faults import Fault

# Prometheus default buckets, as client libraries use them.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass
class Metrics:
    """Request counters and a latency histogram that reflect the service's real traffic."""

    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    bucket_counts: Counter[float] = field(default_factory=Counter)
    duration_sum: float = 0.0
    duration_count: int = 0

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        self.requests[(method, path, status)] += 1
        self.duration_sum += seconds
        self.duration_count += 1
        for bound in BUCKETS:
            if seconds <= bound:
                self.bucket_counts[bound] += 1

    def render(self, service: str) -> str:
        lines = [
            "# HELP http_requests_total Requests handled, by method, path and status.",
            "# TYPE http_requests_total counter",
        ]
        for (method, path, status), count in sorted(self.requests.items()):
            lines.append(
                f'http_requests_total{{service="{service}",method="{method}",'
                f'path="{path}",status="{status}"}} {count}'
            )
        lines += [
            "# HELP http_request_duration_seconds Time to answer a request.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for bound in BUCKETS:
            lines.append(f'http_request_duration_seconds_bucket{{service="{service}",le="{bound:g}"}} '
                         f"{self.bucket_counts[bound]}")
        lines += [
            f'http_request_duration_seconds_bucket{{service="{service}",le="+Inf"}} {self.duration_count}',
            f'http_request_duration_seconds_sum{{service="{service}"}} {self.duration_sum:.6f}',
            f'http_request_duration_seconds_count{{service="{service}"}} {self.duration_count}',
        ]
        return "\n".join(lines) + "\n"


class SandboxService:
    """One service on a free loopback port; ``fault`` changes how ``/health`` behaves."""

    def __init__(self, name: str, title: str, fault: Fault | None = None) -> None:
        self.name = name
        self.title = title
        self.fault = fault
        self.metrics = Metrics()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.fault is not None and self.fault.name == "down":
            # Reserve a port nobody listens on: connecting to it is refused.
            probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            self.port = probe.sockets[0].getsockname()[1]
            probe.close()
            await probe.wait_closed()
            return
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            writer.transport.abort()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return True to keep the connection open."""
        request_line = await reader.readline()
        if not request_line:
            return False
        started = time.perf_counter()
        method, _, rest = request_line.decode("latin-1").partition(" ")
        target = rest.split(" ", 1)[0]
        path = target.split("?", 1)[0]
        keep_alive = True
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "connection" and value.strip().lower() == "close":
                keep_alive = False
        status, content_type, body = await self._route(method, path)
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Server: acgs-sandbox/{self.name}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        self.metrics.observe(method, path, status, time.perf_counter() - started)
        return keep_alive

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", self.metrics.render(self.name).encode()
        if path == "/health":
            return await self._health()
        if path == "/":
            return 200, "application/json", json.dumps({"service": self.title}).encode()
        return 404, "application/json", b'{"error": "not found"}'

    async def _health(self) -> tuple[int, str, bytes]:
        fault = self.fault.name if self.fault else None
        if fault == "hang":
            await asyncio.Event().wait()  # until the sandbox stops and cancels us
        if fault == "slow" and self.fault is not None and self.fault.arg:
            await asyncio.sleep(self.fault.arg)
        document: dict[str, object] = {"status": "pass", "service": self.title, "version": "sandbox"}
        status = 200
        if fault == "503":
            status, document["status"] = 503, "fail"
        elif fault == "degraded":
            document["status"] = "warn"
            document["notes"] = ["dependency latency above normal"]
        return status, "application/health+json", json.dumps(document).encode()
