"""HTTP on httpx: the health probe, and the one bounded exchange every HTTP read of the suite makes.

One adapter keeps the probe's contract over httpx: one total time bound per exchange that never
hangs (DNS included, see ``network``), a precise outcome for each way an exchange fails, the system
trust store or ``ca_file`` (an ``SSLContext``), a client certificate for mutual TLS, proxies
from ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``, and per-phase timings (resolve, connect, TLS,
processing, transfer) as blackbox_exporter reports them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from acgs_checks import kinds, redaction
from acgs_checks.environment import NO_TLS, Service, Tls, display_url
from acgs_checks.probes import aio, http_body, http_client, network
from acgs_checks.probes.http_body import (
    NOT_REPORTED,
    classify_health,
    decode_body,
    escaped,
)
from acgs_checks.probes.http_client import Pool, proxy_for
from acgs_checks.probes.network import race
from acgs_checks.records import JsonRecord

BODY_LIMIT = http_body.BODY_LIMIT  # a health body's cap (64 KiB): what a target may send
EXCERPT_LIMIT = 2048
# Evidence keeps at most this many response headers, each value cut to HEADER_VALUE_LIMIT characters.
HEADERS_KEPT = 64
HEADER_VALUE_LIMIT = 1024
REDIRECT_STATUSES = (301, 302, 303, 307, 308)

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
REDIRECTS = "redirects"      # a redirect loop, or more redirects than allowed

# httpcore's words for a peer that went away mid-exchange (as opposed to bytes that are not HTTP).
_CLOSED_WORDS = ("disconnected", "peer closed", "connection closed", "incomplete")


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
    content_type: str = ""        # as the answer declared it (its body is decoded by it)
    location: str = ""            # a redirect's Location
    body_excerpt: str = ""
    body_bytes: int = 0
    body_truncated: bool = False  # more than body_limit bytes were on offer: only the limit was read
    body_limit: int = BODY_LIMIT
    redirects: tuple[str, ...] = ()  # the URLs redirected through, in order, when redirects were followed
    health: str = NOT_REPORTED
    health_field: str = ""
    health_value: str = ""
    # Seconds per phase, as blackbox_exporter names them: resolve, connect, tls, processing, transfer.
    phases: dict[str, float] = field(default_factory=dict)
    # From the request's last byte handed to the kernel to the answer's first byte reaching the event
    # loop: the server's time, without the client's own parsing (what synthetic sampling measures).
    response_seconds: float | None = None

    # The record contract (acgs_checks.records.Answer): an HTTP answer of any status is an answer.
    @property
    def answered(self) -> bool:
        return self.outcome == RESPONSE

    @property
    def error(self) -> str:
        return "" if self.answered else self.detail

    @property
    def denied(self) -> str:
        """A 401 or 403: the headers configured for the service (a token) are what to check."""
        return (f"the headers configured for {self.target} (a token) and the service's access rules for its health "
                "path") if self.status in (401, 403) else ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HttpResult:
        # JSON turned the header pairs into lists; the record keeps them as tuples.
        return super().from_json({**data, "headers": tuple(tuple(h) for h in data.get("headers", ()))})


def json_body(result: HttpResult, body: bytes) -> tuple[Any, str]:
    """An API answer's JSON document, read by what it declares, or (None, what came back instead)."""
    if result.body_truncated:
        return None, f"answer over the {result.body_limit // 1024} KiB limit (not read)"
    text, why = decode_body(body, result.content_type)
    if text is None:
        return None, f"answer {why}"
    try:
        return json.loads(text), ""
    except (ValueError, RecursionError):
        return None, f"answer is not JSON: {escaped(body[:60])}"


async def probe_service(service: Service) -> HttpResult:
    """GET the service's health URL; never raises for an unhealthy target.

    Redirects are followed (unless the service says not to), up to ``max_redirects``, all within the one
    timeout; the final answer is judged. A loop, or one redirect too many, is the REDIRECTS outcome, naming
    the chain. The configured headers go only to the service's own host and port.
    """
    start = time.perf_counter()
    url, chain = service.health_url, [display_url(service.health_url)]
    origin = _origin(url)
    while True:
        left = service.timeout_seconds if len(chain) == 1 else service.timeout_seconds - (time.perf_counter() - start)
        same_origin = _origin(url) == origin
        result, _ = await exchange(url, target=service.name, timeout=max(left, 0.001),
                                   headers=service.headers if same_origin else (), tls=service.tls)
        if not (service.follow_redirects and result.answered and result.status in REDIRECT_STATUSES
                and result.location):
            break
        url = urljoin(url, result.location)
        shown_next = display_url(url)
        if shown_next in chain or len(chain) > service.max_redirects:
            why = "redirect loop" if shown_next in chain else f"more than {service.max_redirects} redirects"
            trail = " → ".join(chain if len(chain) <= 8 else [*chain[:6], "…", *chain[-2:]])
            return dataclasses.replace(result, outcome=REDIRECTS, detail=f"{why}: {trail} → {shown_next}",
                                       redirects=tuple(chain[1:]))
        chain.append(shown_next)
    if len(chain) > 1:
        result = dataclasses.replace(result, redirects=tuple(chain[1:]), timeout_seconds=service.timeout_seconds,
                                     elapsed_seconds=round(time.perf_counter() - start, 6))
    return result


async def exchange(url: str, *, target: str, timeout: float,
                   headers: Mapping[str, str] | Sequence[tuple[str, str]] = (), tls: Tls = NO_TLS,
                   body_limit: int = BODY_LIMIT, pool: Pool | None = None) -> tuple[HttpResult, bytes]:
    """One GET, bounded by ``timeout`` in total: what was seen, and the body (decoded, up to ``body_limit``).

    With ``pool`` the request goes out on an idle keep-alive connection when there is one, and
    the connection stays open for the next; without, the connection is closed afterwards.
    """
    shown = display_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    start = time.perf_counter()
    marks: dict[str, float] = {}
    token = network.MARKS.set(marks)
    proxy = proxy_for(parts.scheme, host)
    own = None if pool is not None else http_client.client(http_client.transport(tls, proxy, network.Backend(), 1))
    client = pool.client(tls, proxy) if pool is not None else own
    assert client is not None
    extra = {} if pool is not None else {"Connection": "close"}

    def result(outcome: str, detail: str, **fields: Any) -> HttpResult:
        return HttpResult(
            target=target, url=shown, outcome=outcome, detail=detail, timeout_seconds=timeout,
            elapsed_seconds=round(time.perf_counter() - start, 6),
            connect_seconds=_since(start, marks.get("tls", marks.get("connected"))),
            first_byte_seconds=_since(start, marks.get("first_byte", marks.get("answer"))),
            phases=_phases(start, marks, parts.scheme),
            response_seconds=round(marks["first_byte"] - marks["written"], 6)
            if "first_byte" in marks and "written" in marks and marks["first_byte"] >= marks["written"] else None,
            **fields)

    try:
        async with asyncio.timeout(timeout):
            response = await _send(client, url, {**dict(headers), **extra}, marks, pooled=pool is not None)
            try:
                marks.setdefault("answer", time.perf_counter())
                body, truncated = await _read(response, body_limit)
            finally:
                await response.aclose()
            marks["done"] = time.perf_counter()
            content_type = response.headers.get("content-type", "")
            health, found, value = classify_health(body, content_type, truncated=truncated, limit=body_limit)
            text, _ = decode_body(body[:EXCERPT_LIMIT * 4], content_type)
            excerpt = (text if text is not None else body[:EXCERPT_LIMIT].decode("utf-8", errors="replace"))
            return result(RESPONSE, "", status=response.status_code,
                          reason=redaction.clip(response.reason_phrase, 200),
                          headers=_kept_headers(response.headers.multi_items()),
                          content_type=redaction.clip(content_type, 200),
                          location=redaction.clip(response.headers.get("location", ""), HEADER_VALUE_LIMIT),
                          body_excerpt=redaction.clip(excerpt, EXCERPT_LIMIT), body_bytes=len(body),
                          body_truncated=truncated, body_limit=body_limit, health=health, health_field=found,
                          health_value=value), body
    except TimeoutError:
        if "connected" in marks and "tls" not in marks and parts.scheme == "https" and "answer" not in marks:
            return result(TLS_TIMEOUT, f"TCP connected, but the TLS handshake did not finish within {timeout:g} s"), b""
        if "connected" not in marks and "reused" not in marks:
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
    except (ConnectionResetError, BrokenPipeError):
        return result(CLOSED, "the server closed the connection before a full response"), b""
    except httpx.ProxyError as exc:
        return result(REFUSED, f"proxy {display_url(proxy)} refused the tunnel: {exc}"), b""
    except httpx.RemoteProtocolError as exc:
        if any(word in str(exc).lower() for word in _CLOSED_WORDS):
            if "answer" not in marks:
                return result(CLOSED, "the server closed the connection without answering"), b""
            return result(CLOSED, "the server closed the connection before a full response"), b""
        return result(PROTOCOL, f"malformed HTTP response: {exc}"), b""
    except (httpx.DecodingError, httpx.LocalProtocolError, httpx.UnsupportedProtocol, ValueError) as exc:
        return result(PROTOCOL, f"malformed HTTP response: {exc}"), b""
    except (OSError, httpx.TransportError) as exc:
        return result(NETWORK, f"network error: {getattr(exc, 'strerror', None) or exc}"), b""
    finally:
        network.MARKS.reset(token)
        if own is not None:
            await own.aclose()


async def _send(client: httpx.AsyncClient, url: str, headers: dict[str, str], marks: dict[str, float], *,
                pooled: bool) -> httpx.Response:
    """Send the GET; a kept-alive connection the server closed just before it is replaced, once.

    The server's FIN can arrive after httpcore checked the idle connection: the request then meets
    a closed or reset connection before any answer. A GET is safe to send again, on a new connection, within
    the same bound, as HTTP/1.1 clients do; anything else (or a second failure) is the outcome.
    """
    for attempt in (1, 2):
        request = client.build_request("GET", url, headers=headers, extensions={"trace": partial(_trace, marks)})
        try:
            return await client.send(request, stream=True)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            # Closed ("disconnected without a response"), reset (ECONNRESET) or half-closed (EPIPE): which one the
            # request meets depends on how far the server's close has got, which a busy machine decides.
            if attempt == 2 or not pooled or "reused" not in marks or "first_byte" in marks:
                raise
            marks.clear()
    raise AssertionError("unreachable")


async def _read(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The decoded body up to ``limit`` bytes, and whether there was more (what is beyond is not read)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


async def _trace(marks: dict[str, float], event: str, info: dict[str, Any]) -> None:
    """httpcore's trace extension: when the request went out and the answer's head arrived."""
    now = time.perf_counter()
    if event.endswith("send_request_headers.started"):
        marks.setdefault("sent", now)
        if "connected" not in marks:  # no connect in this exchange: a kept-alive connection was reused
            marks.setdefault("reused", now)
    elif event.endswith("receive_response_headers.complete"):
        marks.setdefault("answer", now)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _kept_headers(items: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The response headers as evidence keeps them: the first HEADERS_KEPT, each value capped."""
    return tuple((redaction.clip(name, 200), redaction.clip(value, HEADER_VALUE_LIMIT))
                 for name, value in items[:HEADERS_KEPT])


def _since(start: float, mark: float | None) -> float | None:
    return None if mark is None else round(mark - start, 6)


def _phases(start: float, marks: dict[str, float], scheme: str) -> dict[str, float]:
    """Seconds per phase; a phase that did not happen (a reused connection's connect) is left out."""
    order = [("resolve", "resolved"), ("connect", "connected"), *([("tls", "tls")] if scheme == "https" else []),
             ("processing", "first_byte" if "first_byte" in marks else "answer"), ("transfer", "done")]
    found: dict[str, float] = {}
    previous = start
    for phase, name in order:
        if name in marks:
            found[phase] = round(marks[name] - previous, 6)
            previous = marks[name]
    return found


def probe_services(services: Sequence[Service], *, concurrency: int = 64) -> dict[str, HttpResult]:
    """Probe every service concurrently; the whole pass costs about one timeout."""
    async def all_of() -> list[HttpResult]:
        return await aio.gather_bounded([partial(probe_service, s) for s in services], limit=concurrency)

    results = aio.run(all_of) if services else []
    return {r.target: r for r in results}


def summary(result: HttpResult) -> str:
    """``auth: GET http://host/health → 503 in 0.012 s`` or ``… → connection refused: …``."""
    head = f"{result.target}: GET {result.url} →"
    if result.outcome != RESPONSE:
        return f"{head} {result.detail}"
    via = f" (after {len(result.redirects)} redirect(s), to {result.redirects[-1]})" if result.redirects else ""
    return f"{head} {result.status} in {result.elapsed_seconds:.3f} s{via}"


# --- the kind -----------------------------------------------------------------------------------

def evidence(result: HttpResult) -> dict[str, Any]:
    """Status, timings, headers and a body excerpt, as one attachment (the run redacts and attaches it)."""
    return {
        "url": result.url,
        "outcome": result.outcome,
        "detail": result.detail,
        "status": result.status,
        "reason": result.reason,
        "timings_seconds": {
            "connect": result.connect_seconds,
            "first_byte": result.first_byte_seconds,
            "total": result.elapsed_seconds,
            "timeout": result.timeout_seconds,
        },
        # Per phase, as blackbox_exporter's probe_http_duration_seconds{phase=...} names them.
        "phases_seconds": result.phases,
        "health": {"normalised": result.health, "field": result.health_field,
                   "value": result.health_value},
        "headers": dict(result.headers),
        "body_bytes": result.body_bytes,
        # In the one attachment: a file per case is what a run of hundreds of targets pays for.
        "body_excerpt": result.body_excerpt,
    }


async def _probe(service: Service, job: kinds.Job) -> HttpResult:
    return await probe_service(service)


SERVICE = kinds.register(kinds.ProbeKind(
    name="service", section="services", record=HttpResult, param="service", fixture="health",
    probe=_probe, targets=lambda env: env.services, evidence=evidence,
    grant="network access to the health URL (any header it needs, e.g. a bearer token, from ${VAR})",
    doc="one GET of each service's health URL",
))

__all__ = ["Pool", "exchange", "race"]
