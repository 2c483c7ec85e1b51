"""HTTP health probe: one GET per service, with a hard time bound and precise failure kinds."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import time
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import zip_longest
from typing import Any
from urllib.parse import unquote, urlsplit

from acgs_checks import __version__, kinds
from acgs_checks.environment import NO_TLS, Environment, Service, Tls, display_url
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


def _request(headers: Sequence[tuple[str, str]], parts: Any, *, absolute: bool = False,
             keep_alive: bool = False) -> bytes:
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    target = f"{parts.scheme}://{host}{path}" if absolute else path  # a plain-HTTP proxy wants the absolute form
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        f"User-Agent: acgs-checks/{__version__}",
        "Accept: application/health+json, application/json;q=0.9, */*;q=0.1",
        "Accept-Encoding: gzip, deflate",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], limit: int) -> bytes:
    """The body as framed by the headers, up to ``limit`` bytes; a body cut short raises IncompleteReadError."""
    if headers.get("transfer-encoding", "").lower().endswith("chunked"):
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise asyncio.IncompleteReadError(line, None)  # the peer closed before the last chunk
            length = int(line.split(b";")[0].strip() or b"0", 16)
            if length == 0:
                break
            chunks.append(await reader.readexactly(length))
            await reader.readexactly(2)
            size += length
        return b"".join(chunks)[:limit]
    if "content-length" in headers:
        return await reader.readexactly(min(int(headers["content-length"]), limit))
    # Neither: the body runs until the server closes the connection (read up to the cap).
    body = bytearray()
    while len(body) < limit:
        piece = await reader.read(limit - len(body))
        if not piece:
            break
        body += piece
    return bytes(body)


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo gzip or deflate Content-Encoding (capped at ``limit``), so the health status can be read."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, limit)
    if coding == "deflate":
        try:
            return zlib.decompressobj().decompress(body, limit)
        except zlib.error:  # some servers send raw deflate without the zlib header
            return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, limit)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


async def _response_head(reader: asyncio.StreamReader) -> tuple[list[str], list[tuple[str, str]]] | None:
    """The final response's status line pieces and headers; None when the peer closed before answering.

    1xx responses (100 Continue, 103 Early Hints) are interim: the real answer follows them.
    """
    while True:
        status_line = await reader.readline()
        if not status_line:
            return None
        pieces = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(pieces) < 2 or not pieces[0].startswith("HTTP/") or not pieces[1].isdigit():
            raise ValueError(f"not an HTTP response: {status_line[:60]!r}")
        headers = await _read_headers(reader)
        if not 100 <= int(pieces[1]) < 200:
            return pieces, headers


async def _read_headers(reader: asyncio.StreamReader) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return found
        name, _, value = line.decode("latin-1").partition(":")
        found.append((name.strip(), value.strip()))


HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305: start the next address this long after the previous one


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TCP only (TLS follows, so a stalled handshake is told apart from a stalled connect).

    The resolved addresses are raced as Happy Eyeballs does (RFC 8305): families interleaved,
    each attempt started 250 ms after the previous one or as soon as it fails, the first
    connection wins. An address that swallows SYNs costs 250 ms, not the whole timeout.
    """
    infos = [info for info in await _aio.resolve(host, port) if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not infos:
        raise OSError(f"no usable address for {host}")
    by_family = [[i for i in infos if i[0] == socket.AF_INET6], [i for i in infos if i[0] == socket.AF_INET]]
    ordered = [i for pair in zip_longest(*by_family) for i in pair if i is not None]
    return await race([(info[4][0], info[4][1]) for info in ordered])


async def race(addresses: Sequence[tuple[str, int]], *, delay: float = HAPPY_EYEBALLS_DELAY) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the first of ``addresses`` that answers, starting one attempt every ``delay`` seconds."""
    pending: set[asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = set()
    errors: list[OSError] = []
    queue = list(addresses)
    try:
        while queue or pending:
            if queue:
                address, port = queue.pop(0)
                pending.add(asyncio.ensure_future(asyncio.open_connection(address, port)))
            done, pending = await asyncio.wait(pending, timeout=delay if queue else None,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    return task.result()
                error = task.exception()
                errors.append(error if isinstance(error, OSError) else OSError(str(error)))
    finally:
        for task in pending:
            task.cancel()
    refused = [e for e in errors if isinstance(e, ConnectionRefusedError)]
    raise (refused or errors or [OSError("no address to connect to")])[0]


def _proxy_for(scheme: str, host: str) -> str:
    """The proxy the environment names for this URL (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), or ''."""
    proxy = urllib.request.getproxies_environment().get(scheme, "")
    return "" if not proxy or urllib.request.proxy_bypass(host) else proxy


async def _through_proxy(proxy: str, scheme: str, host: str, port: int) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
    """Connect to the proxy; for https, open a CONNECT tunnel to host:port. Returns extra request headers."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    reader, writer = await _connect(parts.hostname or "", parts.port or 8080)
    extra: dict[str, str] = {}
    if parts.username is not None:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        extra["Proxy-Authorization"] = f"Basic {token}"
    if scheme == "https":
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}", *(f"{k}: {v}" for k, v in extra.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        status = (await reader.readline()).decode("latin-1").split(" ", 2)
        await _read_headers(reader)
        if len(status) < 2 or status[1] != "200":
            writer.transport.abort()
            raise ConnectionRefusedError(f"proxy {parts.hostname}:{parts.port} refused CONNECT: {' '.join(status[1:])}")
        return reader, writer, {}
    return reader, writer, extra


async def probe_service(service: Service) -> HttpResult:
    """GET the service's health URL once; never raises for an unhealthy target."""
    result, _ = await exchange(service.health_url, target=service.name, timeout=service.timeout_seconds,
                               headers=tuple(service.headers.items()), tls=service.tls)
    return result


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Head = tuple[list[str], list[tuple[str, str]]]  # the final status line's pieces, and the response headers


class Pool:
    """Idle keep-alive connections for repeated requests to one service (synthetic sampling).

    At most one idle connection per request in flight; :meth:`close` drops them all.
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self.opened = 0  # connections made for requests that used this pool

    def take(self, key: tuple[str, str, int]) -> Connection | None:
        idle = self._idle.get(key)
        return idle.pop() if idle else None

    def give(self, key: tuple[str, str, int], connection: Connection) -> None:
        self._idle.setdefault(key, []).append(connection)

    def idle(self) -> int:
        """How many connections wait to be reused."""
        return sum(len(idle) for idle in self._idle.values())

    def close(self) -> None:
        for idle in self._idle.values():
            for _reader, writer in idle:
                writer.transport.abort()
        self._idle.clear()


def _reusable(version: str, headers: dict[str, str], body_bytes: int) -> bool:
    """An HTTP/1.1 response framed by its length or by chunks, fully read, without Connection: close."""
    if version != "HTTP/1.1" or headers.get("connection", "").lower() == "close":
        return False
    if headers.get("transfer-encoding", "").lower().endswith("chunked"):
        return True
    return "content-length" in headers and int(headers["content-length"]) == body_bytes


async def exchange(url: str, *, target: str, timeout: float, headers: Sequence[tuple[str, str]] = (),
                   tls: Tls = NO_TLS, body_limit: int = BODY_LIMIT,
                   pool: Pool | None = None) -> tuple[HttpResult, bytes]:
    """One GET, bounded by ``timeout`` in total: what was seen, and the body (up to ``body_limit``).

    With ``pool`` the request goes out on an idle keep-alive connection when there is one (an
    idle connection the server has closed meanwhile is replaced, within the same bound), and
    the connection is handed back afterwards; ``connect_seconds`` is then 0.
    """
    shown = display_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    start = time.perf_counter()
    marks: dict[str, float] = {}  # when TCP connected, the connection was ready (TLS too), the answer began
    writer: asyncio.StreamWriter | None = None
    key = (parts.scheme, host, port)

    def result(outcome: str, detail: str, **fields: Any) -> HttpResult:
        return HttpResult(
            target=target, url=shown, outcome=outcome, detail=detail,
            timeout_seconds=timeout, elapsed_seconds=round(time.perf_counter() - start, 6),
            connect_seconds=round(marks["ready"] - start, 6) if "ready" in marks else None,
            first_byte_seconds=round(marks["answer"] - start, 6) if "answer" in marks else None,
            **fields,
        )

    try:
        async with asyncio.timeout(timeout):
            proxy = _proxy_for(parts.scheme, host)
            reused = (await _reuse(pool, key, _request(headers, parts, keep_alive=True))
                      if pool is not None and not proxy else None)
            head: Head | None
            if reused is not None:
                reader, writer, head = reused
                marks["tcp"] = marks["ready"] = start
            else:
                reader, writer, extra = await _open(parts, host=host, port=port, proxy=proxy, tls=tls, marks=marks)
                if pool is not None:
                    pool.opened += 1
                request = _request([*headers, *extra.items()], parts, absolute=bool(proxy) and parts.scheme == "http",
                                   keep_alive=pool is not None)
                head = await _ask(reader, writer, request)
            marks["answer"] = time.perf_counter()
            if head is None:
                return result(CLOSED, "the server closed the connection without answering"), b""
            pieces, header_list = head
            response_headers = {name.lower(): value for name, value in header_list}
            raw = await _read_body(reader, response_headers, body_limit)
            body = _decoded(raw, response_headers.get("content-encoding", ""), body_limit)
            health, field, value = classify_health(body, response_headers.get("content-type", ""))
            if pool is not None and writer is not None and not proxy and _reusable(pieces[0], response_headers,
                                                                                  len(raw)):
                pool.give(key, (reader, writer))
                writer = None  # handed back: not closed below
            return result(
                RESPONSE, "", status=int(pieces[1]), reason=pieces[2] if len(pieces) > 2 else "",
                headers=tuple(header_list),
                body_excerpt=body[:EXCERPT_LIMIT].decode("utf-8", errors="replace"),
                body_bytes=len(body), health=health, health_field=field, health_value=value,
            ), body
    except TimeoutError:
        if "tcp" in marks and "ready" not in marks:
            return result(TLS_TIMEOUT, f"TCP connected, but the TLS handshake did not finish within {timeout:g} s"), b""
        if "ready" not in marks:
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
    except (ValueError, asyncio.LimitOverrunError, zlib.error) as exc:
        return result(PROTOCOL, f"malformed HTTP response: {exc}"), b""
    except OSError as exc:
        return result(NETWORK, f"network error: {exc.strerror or exc}"), b""
    finally:
        if writer is not None:
            writer.transport.abort()


async def _reuse(pool: Pool, key: tuple[str, str, int], request: bytes) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, Head] | None:
    """Send on an idle pooled connection; None when there is none, or the server closed it meanwhile."""
    while (idle := pool.take(key)) is not None:
        reader, writer = idle
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            head = await _ask(reader, writer, request)
            if head is not None:
                return reader, writer, head
        writer.transport.abort()
    return None


async def _open(parts: Any, *, host: str, port: int, proxy: str, tls: Tls, marks: dict[str, float]) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
    """A new connection (through the proxy when one applies), TLS included; ``marks`` records its phases."""
    context = ssl_context(tls) if parts.scheme == "https" else None
    extra: dict[str, str] = {}
    if proxy:
        reader, writer, extra = await _through_proxy(proxy, parts.scheme, host, port)
    else:
        reader, writer = await _connect(host, port)
    marks["tcp"] = time.perf_counter()
    try:
        if context is not None:
            await writer.start_tls(context, server_hostname=host)
    except BaseException:
        writer.transport.abort()
        raise
    marks["ready"] = time.perf_counter()
    return reader, writer, extra


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> Head | None:
    writer.write(request)
    await writer.drain()
    return await _response_head(reader)


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


# --- the kind -----------------------------------------------------------------------------------

def _attach(result: HttpResult, env: Environment) -> None:
    from acgs_checks.reporting import evidence  # noqa: PLC0415 - the reporting layer imports this module

    evidence.attach_http(result, env)


async def _probe(service: Service, job: kinds.Job) -> HttpResult:
    return await probe_service(service)


SERVICE = kinds.register(kinds.ProbeKind(
    name="service", section="services", record=HttpResult, param="service", fixture="health",
    probe=_probe, targets=lambda env: env.services, evidence=_attach,
    doc="one GET of each service's health URL",
))
