"""A small ACGS-shaped HTTP service with injectable faults.

Endpoints: ``/health``; an SLO endpoint that does the service's "work" (the one latency
and error faults affect); ``/metrics`` in the Prometheus text format, counting the real
traffic; and for two services a JSON business endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from acgs_checks.sandbox.dialects import DEFAULT_DIALECTS, PREFIXES
from acgs_checks.sandbox.faults import Fault

# Finer than the client libraries' defaults around the runbook's 2 s / 5 s / 10 s lines,
# so that histogram_quantile lands close to the truth.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.5,
           10.0, 12.5, 15.0, 20.0, 30.0)
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}
SLO_PATHS = {
    "auth": "/api/v1/auth/validate",
    "constitutional-ai": "/api/v1/constitutional/validate",
    "policy-governance": "/api/v1/policies/evaluate",
    "governance-synthesis": "/api/v1/synthesize",
}
COMPLIANCE_PATH = "/api/v1/compliance"      # on constitutional-ai
POLICY_STATS_PATH = "/api/v1/policies/stats"  # on policy-governance


@dataclass
class Business:
    """The stack's business numbers, shared by the services that report them."""

    compliance_score: float = 0.97
    policy_success_rate: float = 0.999
    evaluations: Counter[str] = field(default_factory=Counter)

    def evaluate(self) -> None:
        total = sum(self.evaluations.values())
        expected_failures = round((total + 1) * (1 - self.policy_success_rate))
        self.evaluations["failure" if self.evaluations["failure"] < expected_failures else "success"] += 1


@dataclass
class Metrics:
    """Request counters, an in-flight gauge and a latency histogram, by path."""

    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    buckets: Counter[tuple[str, float]] = field(default_factory=Counter)
    sums: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)

    by_status: Counter[tuple[str, int]] = field(default_factory=Counter)
    status_buckets: Counter[tuple[tuple[str, int], float]] = field(default_factory=Counter)
    status_sums: defaultdict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        self.requests[(method, path, status)] += 1
        self.sums[path] += seconds
        self.counts[path] += 1
        self.by_status[(path, status)] += 1
        self.status_sums[(path, status)] += seconds
        for bound in BUCKETS:
            if seconds <= bound:
                self.buckets[(path, bound)] += 1
                self.status_buckets[((path, status), bound)] += 1

    def render(self, service: str, business: Business | None, dialect: str = "", *, info_type: bool = False) -> str:
        """The service's /metrics in its metric dialect (:data:`DIALECTS`; default: its ACGS-2 counterpart's)."""
        dialect = dialect or DEFAULT_DIALECTS[service]
        lines: list[str] = []
        if dialect == "generic":
            lines += self._generic(service)
        elif dialect == "prefix":
            # prometheus_client as ACGS-2's auth, gs and pgc services use it: a counter by method, endpoint and
            # status, and a latency histogram with no labels at all (one per process).
            prefix = PREFIXES[service]
            lines += [f"# HELP {prefix}requests_total Total requests", f"# TYPE {prefix}requests_total counter"]
            lines += [f'{prefix}requests_total{{method="{m}",endpoint="{p}",status="{st}"}} {n}.0'
                      for (m, p, st), n in sorted(self.requests.items())]
            lines += self._histogram(f"{prefix}request_duration_seconds", {"": ""}, "Request duration")
        elif dialect == "acgs-http":
            # ACGS-2's shared metrics module (Constitutional AI): status_code, and an Info family.
            if info_type:  # as ACGS-2's own middleware writes it: a type the 0.0.4 text format does not have
                lines += ["# HELP acgs_service_info Service information", "# TYPE acgs_service_info info",
                          f'acgs_service_info{{service="{service}",version="3.0.0"}} 1']
            else:  # as prometheus_client renders an Info in the text format
                lines += ["# HELP acgs_service_info Service information", "# TYPE acgs_service_info gauge",
                          f'acgs_service_info{{service="{service}",version="3.0.0"}} 1.0']
            lines += ["# HELP acgs_http_requests_total Total HTTP requests", "# TYPE acgs_http_requests_total counter"]
            lines += [f'acgs_http_requests_total{{service="{service}",method="{m}",endpoint="{p}",'
                      f'status_code="{st}"}} {n}.0' for (m, p, st), n in sorted(self.requests.items())]
            lines += self._histogram("acgs_http_request_duration_seconds",
                                     {p: f'service="{service}",method="GET",endpoint="{p}"' for p in self.counts},
                                     "HTTP request duration in seconds")
        else:  # "otel": OpenTelemetry's HTTP server histogram only; requests are its _count, the status a label
            lines += self._histogram("http_server_request_duration_seconds",
                                     {key: f'http_request_method="GET",http_route="{key[0]}",'
                                           f'http_response_status_code="{key[1]}"' for key in self.by_status},
                                     "Duration of HTTP server requests.", by_status=True)
        if business is not None and service == "constitutional-ai":
            name = "acgs_constitutional_compliance_score" if dialect == "generic" else "constitutional_compliance_score"
            lines += [f"# TYPE {name} gauge", f"{name} {business.compliance_score}"]
        if business is not None and service == "policy-governance":
            if dialect == "generic":
                lines.append("# TYPE acgs_policy_evaluations_total counter")
                lines += [f'acgs_policy_evaluations_total{{result="{result}"}} {business.evaluations[result]}'
                          for result in ("success", "failure")]
            else:  # the names ACGS-2's own alert rules and dashboards read
                for result, name in (("success", "successful"), ("failure", "failed")):
                    lines += [f"# TYPE policy_evaluations_{name}_total counter",
                              f"policy_evaluations_{name}_total {business.evaluations[result]}"]
        return "\n".join(lines) + "\n"

    def _histogram(self, name: str, series: dict[Any, str], help_text: str, *, by_status: bool = False) -> list[str]:
        """One histogram family; ``series`` maps a path (or ``""`` for everything, or a (path, status) key) to its
        labels."""
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for key, labels in sorted(series.items()):
            counts, total, whole = self._counts(key, by_status)
            sep = "," if labels else ""
            for bound in BUCKETS:
                lines.append(f'{name}_bucket{{{labels}{sep}le="{float(bound)}"}} {counts.get(bound, 0)}.0')
            lines += [f'{name}_bucket{{{labels}{sep}le="+Inf"}} {whole}.0',
                      f"{name}_sum{{{labels}}} {total:.6f}" if labels else f"{name}_sum {total:.6f}",
                      f"{name}_count{{{labels}}} {whole}.0" if labels else f"{name}_count {whole}.0"]
        return lines

    def _counts(self, key: Any, by_status: bool) -> tuple[dict[float, int], float, int]:
        if by_status:
            return ({b: self.status_buckets[(key, b)] for b in BUCKETS}, self.status_sums[key], self.by_status[key])
        paths = list(self.counts) if key == "" else [key]
        counts = {b: sum(self.buckets[(p, b)] for p in paths) for b in BUCKETS}
        return counts, sum(self.sums[p] for p in paths), sum(self.counts[p] for p in paths)

    def _generic(self, service: str) -> list[str]:
        lines = ["# HELP http_requests_total Requests handled, by method, path and status.",
                 "# TYPE http_requests_total counter"]
        for (method, path, status), count in sorted(self.requests.items()):
            lines.append(f'http_requests_total{{service="{service}",method="{method}",path="{path}",'
                         f'status="{status}"}} {count}')
        lines += ["# HELP http_requests_in_flight Requests being served now.",
                  "# TYPE http_requests_in_flight gauge"]
        for path in sorted(set(self.counts) | set(self.in_flight)):
            lines.append(f'http_requests_in_flight{{service="{service}",path="{path}"}} {self.in_flight[path]}')
        return lines + self._histogram("http_request_duration_seconds",
                                       {p: f'service="{service}",path="{p}"' for p in self.counts},
                                       "Time to answer a request.")


class SandboxService:
    """One service on a free loopback port; ``fault`` changes how it behaves."""

    def __init__(self, name: str, title: str, fault: Fault | None = None, business: Business | None = None,
                 dialect: str = "") -> None:
        self.name = name
        self.dialect = dialect or DEFAULT_DIALECTS[name]
        self.title = title
        self.fault = fault
        self.business = business
        self.slo_path = SLO_PATHS[name]
        self.metrics = Metrics()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._served: dict[str, int] = {}
        self._reserved: socket.socket | None = None
        self._random = random.Random(name)  # noqa: S311 - a fixed seed: the same latencies on every run

    async def start(self) -> None:
        if self.fault is not None and self.fault.name == "down":
            # Hold a port that is bound but never listened on: connecting is refused, and no other
            # server (another test's, another worker's) can take the port while the sandbox runs.
            self._reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._reserved.bind(("127.0.0.1", 0))
            self.port = self._reserved.getsockname()[1]
            return
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._reserved is not None:
            self._reserved.close()
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
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        keep_alive = True
        client = ""
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "connection" and value.strip().lower() == "close":
                keep_alive = False
            if name.strip().lower() == "user-agent":
                client = value.strip().split("/", 1)[0]
        self.metrics.in_flight[path] += 1
        try:
            status, content_type, body = await self._route(method, path, client)
        finally:
            self.metrics.in_flight[path] -= 1
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

    async def _route(self, method: str, path: str, client: str = "") -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/metrics":
            info_type = self.fault is not None and self.fault.name == "info-type"
            return 200, "text/plain; version=0.0.4", self.metrics.render(self.name, self.business, self.dialect,
                                                                         info_type=info_type).encode()
        if path == "/health":
            return await self._health()
        if path == self.slo_path:
            return await self._work(client)
        if self.business is not None and self.name == "constitutional-ai" and path == COMPLIANCE_PATH:
            return 200, "application/json", json.dumps(
                {"compliance": {"score": self.business.compliance_score}}).encode()
        if self.business is not None and self.name == "policy-governance" and path == POLICY_STATS_PATH:
            total = sum(self.business.evaluations.values())
            return 200, "application/json", json.dumps({"evaluations": {
                "success_rate": self.business.policy_success_rate, "total": total}}).encode()
        if path == "/":
            return 200, "application/json", json.dumps({"service": self.title}).encode()
        return 404, "application/json", b'{"error": "not found"}'

    async def _work(self, client: str = "") -> tuple[int, str, bytes]:
        """The service's unit of work: where latency and error faults act.

        Each client (by User-Agent: the suite's sampler, the background traffic) has its own
        count of requests, so the faults are exact on the traffic each one measures, however
        the two interleave.
        """
        served = self._served.get(client, 0)
        self._served[client] = served + 1
        fault = self.fault.name if self.fault else None
        if fault == "latency" and self.fault is not None and self.fault.arg:
            if client == SAMPLER:
                await asyncio.sleep(latency_sequence(served, self.fault.arg))
            else:
                # Other traffic (what /metrics and Prometheus histograms see): uniform on [0, P95 / 0.95],
                # a continuous distribution whose 95th percentile is the injected P95, as buckets expect.
                await asyncio.sleep(self._random.uniform(0, self.fault.arg / 0.95))
        if self.business is not None and self.name == "policy-governance":
            self.business.evaluate()
        if fault == "errors" and self.fault is not None and self.fault.arg is not None:
            # Deterministic: of a client's first n requests, exactly floor(n x SHARE) fail.
            share = self.fault.arg
            if int((served + 1) * share) > int(served * share):
                return 500, "application/json", b'{"error": "injected"}'
        return 200, "application/json", json.dumps({"service": self.name, "ok": True}).encode()

    async def _health(self) -> tuple[int, str, bytes]:
        fault = self.fault.name if self.fault else None
        if fault == "hang":
            await asyncio.Event().wait()  # until the sandbox stops and cancels us
        if fault == "slow" and self.fault is not None and self.fault.arg:
            await asyncio.sleep(self.fault.arg)
        if self.name == "constitutional-ai":
            return self._rich_health(fault)
        document: dict[str, object] = {"status": "pass", "service": self.title, "version": "sandbox"}
        status = 200
        if fault == "503":
            status, document["status"] = 503, "fail"
        elif fault == "degraded":
            document["status"] = "warn"
            document["notes"] = ["dependency latency above normal"]
        return status, "application/health+json", json.dumps(document).encode()

    def _rich_health(self, fault: str | None) -> tuple[int, str, bytes]:
        """Constitutional AI's health body as ACGS-2 gives it: its dependencies and performance beside the status;
        "degraded" with HTTP 200 is its degraded state."""
        status, word = (503, "unhealthy") if fault == "503" else (200, "degraded" if fault == "degraded" else "healthy")
        document = {"status": word, "service": "ac_service", "version": "3.0.0",
                    "services": {"database": "healthy" if word != "unhealthy" else "unhealthy", "redis": "healthy",
                                 "policy_engine": "degraded" if word == "degraded" else "healthy"},
                    "performance": {"avg_response_time_ms": 12.5, "requests_per_second": 10.0}}
        return status, "application/json", json.dumps(document).encode()


LATENCY_PERIOD = 50
SAMPLER = "acgs-checks"  # the suite's User-Agent (before the "/version")


def latency_sequence(index: int, p95: float) -> float:
    """The delay of a client's request number ``index`` under the ``latency=P95`` fault.

    Every run of 50 consecutive requests gets the delays j x P95 / (0.95 x 49), j = 0..49, once
    each, in a scrambled order: 50 samples then have a P95 of exactly ``p95`` by the linear
    interpolation the suite uses (h = 49 x 0.95 = 46.55 falls 55 % of the way from j = 46 to 47),
    and any multiple of 50 samples lands within 1 % of it.
    """
    j = (index * 23) % LATENCY_PERIOD  # 23 is prime to 50: each j once per period
    return p95 / 0.95 * j / (LATENCY_PERIOD - 1)


async def background_traffic(services: list[SandboxService], *, per_second: float, stop: asyncio.Event) -> None:
    """Application-like traffic to every service's SLO endpoint, so /metrics and Prometheus see rates.

    Requests start on a fixed schedule whatever the latency (at most 200 in flight), as
    real clients do; their outcomes only show in the services' own metrics.
    """
    in_flight: set[asyncio.Task[None]] = set()

    async def one(service: SandboxService) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        except OSError:
            return
        try:
            writer.write(f"GET {service.slo_path} HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            await asyncio.wait_for(reader.read(), 30)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.transport.abort()

    live = [s for s in services if s.fault is None or s.fault.name not in ("down", "hang")]
    while not stop.is_set():
        for service in live:
            if len(in_flight) < 200:
                task = asyncio.create_task(one(service))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / per_second)
    for task in list(in_flight):
        task.cancel()
    await asyncio.gather(*in_flight, return_exceptions=True)
