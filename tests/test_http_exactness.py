"""The HTTP probe reads responses exactly, against raw socket servers that answer byte by byte.

These are the HTTP layer's contract: whatever client sits underneath must pass them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from acgs_checks.environment import Service, SloSettings, Tls
from acgs_checks.probes import aio, http, http_body, slo
from servers import RealServers, answer, raw_http, serving, url_of


def probe(url: str, timeout: float = 2.0) -> http.HttpResult:
    return http.probe_services([Service(name="svc", title="svc", url=url, timeout_seconds=timeout)])["svc"]


def _response(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_interim_1xx_responses_are_skipped() -> None:
    port, _ = raw_http([b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                        _response("503 Service Unavailable", b'{"status": "fail"}', "Content-Length: 18")])
    result = probe(f"http://127.0.0.1:{port}")
    assert (result.outcome, result.status) == (http.RESPONSE, 503)


def test_a_close_delimited_body_is_read_to_the_end() -> None:
    body = b'{"status": "ok", "padding": "' + b"x" * 20000 + b'"}'
    port, _ = raw_http([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body[:7000], body[7000:]],
                       pause=0.2)
    result = probe(f"http://127.0.0.1:{port}")
    assert result.body_bytes == len(body)
    assert result.health == http_body.HEALTHY


def test_a_close_delimited_body_stops_at_the_cap() -> None:
    port, _ = raw_http([b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * (http.BODY_LIMIT + 5000)])
    result = probe(f"http://127.0.0.1:{port}")
    assert result.body_bytes == http.BODY_LIMIT


def test_a_truncated_chunked_body_is_closed_not_complete() -> None:
    port, _ = raw_http([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"])
    assert probe(f"http://127.0.0.1:{port}").outcome == http.CLOSED


def test_a_truncated_content_length_body_is_closed() -> None:
    port, _ = raw_http([_response("200 OK", b'{"status"', "Content-Length: 100")])
    assert probe(f"http://127.0.0.1:{port}").outcome == http.CLOSED


def test_a_gzip_encoded_health_body_is_decoded_before_it_is_read() -> None:
    body = gzip.compress(b'{"status": "fail"}')
    port, _ = raw_http([_response("200 OK", body, "Content-Type: application/json", "Content-Encoding: gzip",
                                  f"Content-Length: {len(body)}")])
    result = probe(f"http://127.0.0.1:{port}")
    assert (result.status, result.health, result.health_value) == (200, http_body.UNHEALTHY, "fail")


def test_the_whole_exchange_stays_within_one_timeout() -> None:
    """A server that trickles its body byte by byte (5 s in all) cannot stretch the 0.5 s bound."""
    pieces = [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"] + [b"x"] * 50
    port, _ = raw_http(pieces, pause=0.1)
    result = probe(f"http://127.0.0.1:{port}", timeout=0.5)
    assert result.outcome == http.TIMEOUT  # had the bound been per read, the body would have completed


class _Proxy:
    """A real forwarding proxy: absolute-form GETs for http, CONNECT tunnels for https; it records each request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.seen: list[str] = []
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode()
            self.seen.append(line)
            method, target, _ = line.split(" ", 2)
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._pipe(conn, upstream)
                return
            authority = target.split("://", 1)[1].split("/", 1)[0]
            host, port = authority.rsplit(":", 1)
            path = "/" + target.split("://", 1)[1].split("/", 1)[1]
            upstream = socket.create_connection((host, int(port)))
            upstream.sendall(head.replace(target.encode(), path.encode(), 1))
            self._pipe(conn, upstream)

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        def copy(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        t = threading.Thread(target=copy, args=(b, a), daemon=True)
        t.start()
        copy(a, b)
        t.join(timeout=5)
        b.close()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Proxy]:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    real = _Proxy()
    yield real
    real.stop.set()
    real.sock.close()


def test_http_goes_through_the_proxy_the_environment_names(proxy: _Proxy, servers: RealServers,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    port = servers.http().server_address[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    result = probe(f"http://localhost:{port}")
    assert (result.outcome, result.status) == (http.RESPONSE, 200), result.detail
    assert proxy.seen == [f"GET http://localhost:{port}/health HTTP/1.1"]


def test_https_tunnels_through_the_proxy_with_connect(proxy: _Proxy, servers: RealServers,
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = servers.https(trusted_ca=servers.ca)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    service = Service(name="svc", title="svc", url=f"https://localhost:{port}", timeout_seconds=2,
                      tls=Tls(ca_file=str(servers.ca_file(tmp_path))))
    result = http.probe_services([service])["svc"]
    assert (result.outcome, result.status) == (http.RESPONSE, 200), result.detail
    assert proxy.seen == [f"CONNECT localhost:{port} HTTP/1.1"]


def test_no_proxy_is_honoured(proxy: _Proxy, servers: RealServers, monkeypatch: pytest.MonkeyPatch) -> None:
    port = servers.http().server_address[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert probe(f"http://localhost:{port}").status == 200
    assert proxy.seen == []


def test_addresses_are_raced_so_a_silent_one_costs_a_quarter_second() -> None:
    """An address that swallows SYNs (a full accept queue) is passed over after 250 ms, not the timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    filler = [socket.socket() for _ in range(3)]
    for sock in filler:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(silent.getsockname())
    time.sleep(0.1)
    good = socket.socket()
    good.bind(("127.0.0.1", 0))
    good.listen(8)
    try:
        async def connect() -> tuple[str, int]:
            # One after the other, the silent address alone would outlast this bound (SYN retries take minutes).
            _reader, writer = await asyncio.wait_for(http.race([silent.getsockname(), good.getsockname()]), timeout=5)
            peer: tuple[str, int] = writer.get_extra_info("peername")
            writer.close()
            return peer

        assert aio.run(connect) == good.getsockname()
    finally:
        for sock in (silent, good, *filler):
            sock.close()


class _KeepAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; the server counts the connections it accepted."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        answer(self, 200, b'{"ok": true}')

    def log_message(self, *args: object) -> None:
        pass


class _CountingServer(ThreadingHTTPServer):
    accepted = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        type(self).accepted += 1
        return super().get_request()


@pytest.mark.parametrize(("keepalive", "most"), [(True, 4), (False, 40)], ids=["keep-alive", "fresh connections"])
def test_sampling_reuses_at_most_one_connection_per_request_in_flight(keepalive: bool, most: int) -> None:
    _CountingServer.accepted = 0
    with serving(_KeepAlive, server_class=_CountingServer) as server:
        service = Service(name="svc", title="svc", url=url_of(server), slo_path="/work")
        settings = SloSettings(samples=40, concurrency=4, keepalive=keepalive)
        seen = aio.run(lambda: slo.from_samples(service, settings, apdex_t=0.5))
    assert seen.samples == 40
    assert seen.values["error_rate"] == 0
    assert seen.connections == _CountingServer.accepted
    assert _CountingServer.accepted <= most
    if not keepalive:
        assert _CountingServer.accepted == 40


def test_an_idle_connection_the_server_closed_is_replaced_not_an_error() -> None:
    """A server that promises keep-alive and closes anyway: the pool notices and the request still succeeds."""
    port, _ = raw_http([_response("200 OK", b'{"status": "ok"}', "Content-Length: 16")])
    pool = http.Pool()

    async def thrice() -> list[tuple[int | None, int]]:
        seen = []
        for _ in range(3):
            result, _body = await http.exchange(f"http://127.0.0.1:{port}/health", target="svc", timeout=2, pool=pool)
            seen.append((result.status, pool.idle()))
        await pool.aclose()
        return seen

    # Each answer leaves a connection that looks reusable; each next request finds it closed (at once,
    # or when it asks) and opens anew: never an error, never more than one idle connection.
    seen = aio.run(thrice)
    assert [status for status, _ in seen] == [200, 200, 200]
    assert all(idle <= 1 for _, idle in seen)
    assert pool.opened == 3  # each idle connection was found closed and replaced
