"""HTTP health probe: one GET per service, with a hard time bound and precise failure kinds."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from acgs_checks import __version__
from acgs_checks.environment import NO_TLS, Service, Tls, display_url
from acgs_checks.probes import _aio
from acgs_checks.probes._record import JsonRecord

BODY_LIMIT = 64 * 1024
EXCERPT_LIMIT = 2048

# What a failed exchange was, so each gets its own message.
RESPONSE = "response"        # an HTTP response arrived (any status)
REFUSED = "refused"          # TCP connection refused: nothing listening
DNS = "dns"                  # the host name did not resolve
TLS = "tls"                  # TLS handshake or certificate verification failed
TLS_TIMEOUT = "tls-timeout"  # TCP connected, but the TLS handshake did not finish in time
CONNECT_TIMEOUT = "connect-timeout"
TIMEOUT = "timeout"          # connected, but no complete response in time
CLOSED = "closed"            # the peer closed or reset before a full response
PROTOCOL = "protocol"        # the bytes were not HTTP
NETWORK = "network"          # any other socket error (unreachable network, ...)

# Health statuses services report in their body, normalised.
HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
UNRECOGNISED = "unrecognised"
NOT_REPORTED = "not-reported"

_HEALTHY_WORDS = frozenset({"healthy", "ok", "up", "pass", "passing", "green"})
_DEGRADED_WORDS = frozenset({"warn", "warning", "degraded", "yellow"})
_UNHEALTHY_WORDS = frozenset({"fail", "failed", "failing", "down", "unhealthy", "error",
                              "critical", "out_of_service", "red"})


@dataclass(frozen=True)
class HttpResult(JsonRecord):
    """What one GET saw. ``outcome`` is RESPONSE or one of the failure kinds."""

    target: str
    url: str
    outcome: str
    detail: str
    timeout_seconds: float
    elapsed_seconds: float
    connect_seconds: float | None = None
    first_byte_seconds: float | None = None
    status: int | None = None
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body_excerpt: str = ""
    body_bytes: int = 0
    health: str = NOT_REPORTED
    health_field: str = ""
    health_value: str = ""

    @property
    def reachable(self) -> bool:
        return self.outcome == RESPONSE

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HttpResult:
        # JSON turned the header pairs into lists; the record keeps them as tuples.
        return super().from_json({**data, "headers": tuple(tuple(h) for h in data.get("headers", ()))})


def classify_health(body: bytes, content_type: str) -> tuple[str, str, str]:
    """Read a conventional status field from a JSON body: (health, field, raw value).

    Understood: ``{"status": "healthy|ok|up|pass"}``, Spring Boot's ``UP``/``DOWN``,
    and the IETF health-check draft's ``pass``/``warn``/``fail``.
    """
    text = body.strip()
    if "json" not in content_type.lower() and not text.startswith(b"{"):
        return NOT_REPORTED, "", ""
    try:
        document = json.loads(text.decode("utf-8", errors="replace"))
    except ValueError:
        return NOT_REPORTED, "", ""
    if not isinstance(document, dict) or "status" not in document:
        return NOT_REPORTED, "", ""
    raw = document["status"]
    if not isinstance(raw, str):
        return UNRECOGNISED, "status", json.dumps(raw)[:80]
    word = raw.strip().lower().replace(" ", "_")
    if word in _HEALTHY_WORDS:
        return HEALTHY, "status", raw
    if word in _DEGRADED_WORDS:
        return DEGRADED, "status", raw
    if word in _UNHEALTHY_WORDS:
        return UNHEALTHY, "status", raw
    return UNRECOGNISED, "status", raw


def ssl_context(tls: Tls) -> ssl.SSLContext:
    """The system trust store (or ``ca_file``), hostname checks, and a client certificate if given."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.client_cert:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


def _request(headers: Sequence[tuple[str, str]], parts: Any) -> bytes:
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        f"User-Agent: acgs-checks/{__version__}",
        "Accept: application/health+json, application/json;q=0.9, */*;q=0.1",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], limit: int) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            line = await reader.readline()
            length = int(line.split(b";")[0].strip() or b"0", 16)
            if length == 0:
                break
            chunk = await reader.readexactly(length)
            await reader.readexactly(2)
            chunks.append(chunk)
            size += length
        return b"".join(chunks)[:limit]
    if "content-length" in headers:
        length = min(int(headers["content-length"]), limit)
        return await reader.readexactly(length)
    return await reader.read(limit)


async def _read_headers(reader: asyncio.StreamReader) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return found
        name, _, value = line.decode("latin-1").partition(":")
        found.append((name.strip(), value.strip()))


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TCP only (TLS follows, so a stalled handshake is told apart from a stalled connect).

    Each resolved address is tried in turn, as curl does (e.g. ::1, then 127.0.0.1)."""
    infos = await _aio.resolve(host, port)
    last: OSError | None = None
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            return await asyncio.open_connection(sockaddr[0], sockaddr[1])
        except ConnectionRefusedError as exc:
            last = exc
        except OSError as exc:
            if isinstance(exc, ssl.SSLError):
                raise
            last = exc
    raise last if last is not None else OSError(f"no usable address for {host}")


async def probe_service(service: Service) -> HttpResult:
    """GET the service's health URL once; never raises for an unhealthy target."""
    result, _ = await exchange(service.health_url, target=service.name, timeout=service.timeout_seconds,
                               headers=service.headers, tls=service.tls)
    return result


async def exchange(url: str, *, target: str, timeout: float, headers: Sequence[tuple[str, str]] = (),
                   tls: Tls = NO_TLS, body_limit: int = BODY_LIMIT) -> tuple[HttpResult, bytes]:
    """One GET, bounded by ``timeout`` in total: what was seen, and the body (up to ``body_limit``)."""
    shown = display_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    start = time.perf_counter()
    connect_at: float | None = None
    tcp_at: float | None = None
    first_byte_at: float | None = None
    writer: asyncio.StreamWriter | None = None

    def result(outcome: str, detail: str, **fields: Any) -> HttpResult:
        return HttpResult(
            target=target, url=shown, outcome=outcome, detail=detail,
            timeout_seconds=timeout, elapsed_seconds=round(time.perf_counter() - start, 6),
            connect_seconds=None if connect_at is None else round(connect_at - start, 6),
            first_byte_seconds=None if first_byte_at is None else round(first_byte_at - start, 6),
            **fields,
        )

    try:
        async with asyncio.timeout(timeout):
            context = ssl_context(tls) if parts.scheme == "https" else None
            reader, writer = await _connect(host, port)
            tcp_at = time.perf_counter()
            if context is not None:
                await writer.start_tls(context, server_hostname=host)
            connect_at = time.perf_counter()
            writer.write(_request(headers, parts))
            await writer.drain()
            status_line = await reader.readline()
            first_byte_at = time.perf_counter()
            if not status_line:
                return result(CLOSED, "the server closed the connection without answering"), b""
            pieces = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            if len(pieces) < 2 or not pieces[0].startswith("HTTP/") or not pieces[1].isdigit():
                return result(PROTOCOL, f"not an HTTP response: {status_line[:60]!r}"), b""
            header_list = await _read_headers(reader)
            response_headers = {name.lower(): value for name, value in header_list}
            body = await _read_body(reader, response_headers, body_limit)
            health, field, value = classify_health(body, response_headers.get("content-type", ""))
            return result(
                RESPONSE, "", status=int(pieces[1]), reason=pieces[2] if len(pieces) > 2 else "",
                headers=tuple(header_list),
                body_excerpt=body[:EXCERPT_LIMIT].decode("utf-8", errors="replace"),
                body_bytes=len(body), health=health, health_field=field, health_value=value,
            ), body
    except TimeoutError:
        if tcp_at is not None and connect_at is None:
            return result(TLS_TIMEOUT, f"TCP connected, but the TLS handshake did not finish within {timeout:g} s"), b""
        if connect_at is None:
            return result(CONNECT_TIMEOUT, f"could not connect within {timeout:g} s"), b""
        return result(TIMEOUT, f"connected, but no complete response within {timeout:g} s"), b""
    except ConnectionRefusedError:
        return result(REFUSED, f"connection refused: nothing is listening on {host}:{port}"), b""
    except socket.gaierror as exc:
        return result(DNS, f"DNS lookup for {host!r} failed: {exc.strerror or exc}"), b""
    except ssl.SSLCertVerificationError as exc:
        return result(TLS, f"TLS certificate rejected: {exc.verify_message or exc.reason}"), b""
    except ssl.SSLError as exc:
        return result(TLS, f"TLS handshake failed: {exc.reason or exc}"), b""
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
        return result(CLOSED, "the server closed the connection before a full response"), b""
    except (ValueError, asyncio.LimitOverrunError) as exc:
        return result(PROTOCOL, f"malformed HTTP response: {exc}"), b""
    except OSError as exc:
        return result(NETWORK, f"network error: {exc.strerror or exc}"), b""
    finally:
        if writer is not None:
            writer.transport.abort()


def probe_services(services: Sequence[Service], *, concurrency: int = 64) -> dict[str, HttpResult]:
    """Probe every service concurrently; the whole pass costs about one timeout."""
    async def all_of() -> list[HttpResult]:
        return await _aio.gather_bounded([partial(probe_service, s) for s in services], limit=concurrency)

    results = _aio.run(all_of) if services else []
    return {r.target: r for r in results}


def summary(result: HttpResult) -> str:
    """``auth: GET http://host/health → 503 in 0.012 s`` or ``… → connection refused: …``."""
    head = f"{result.target}: GET {result.url} →"
    if result.outcome != RESPONSE:
        return f"{head} {result.detail}"
    return f"{head} {result.status} in {result.elapsed_seconds:.3f} s"
