"""Real servers for the self-tests: plain HTTP with a chosen answer, TLS, and ones that hang."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import trustme

from acgs_checks.sandbox.servers import free_port


@contextlib.contextmanager
def serving(handler: Callable[..., BaseHTTPRequestHandler], *, tls: ssl.SSLContext | None = None,
            server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer, host: str = "127.0.0.1",
            **attributes: object) -> Iterator[ThreadingHTTPServer]:
    """The self-tests' one HTTP server: ``handler`` on a free loopback port, served from a thread (over TLS with
    ``tls``), with ``attributes`` set on the server for the handler to read; shut down and closed on exit.

    Hostile servers that must break HTTP itself are raw sockets (``raw_http``, ``tests/hostile.py``).
    """
    server = server_class((host, 0), handler)
    server.daemon_threads = True
    for name, value in attributes.items():
        setattr(server, name, value)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server: ThreadingHTTPServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}"


def answer(handler: BaseHTTPRequestHandler, status: int, body: bytes,
           content_type: str = "application/json") -> None:
    """Send one complete response with a Content-Length from a request handler."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    answer: tuple[int, str, bytes, bool] = (200, "application/json", b'{"status": "ok"}', False)
    seen_headers: list[dict[str, str]]

    def do_GET(self) -> None:
        self.server.seen_headers.append(dict(self.headers))  # type: ignore[attr-defined]
        status, content_type, body, chunked = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (body[: len(body) // 2], body[len(body) // 2:]):
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class RealServers:
    """Start servers with :meth:`http`, :meth:`https`, :meth:`hang`; all stop on exit."""

    def __init__(self) -> None:
        self._running = contextlib.ExitStack()
        self._sockets: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.ca = trustme.CA()

    def __enter__(self) -> RealServers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._running.close()
        for sock in self._sockets + self._held:
            sock.close()

    def http(self, status: int = 200, body: bytes = b'{"status": "ok"}',
             content_type: str = "application/json", *, chunked: bool = False,
             tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> ThreadingHTTPServer:
        return self._running.enter_context(serving(_Handler, tls=tls, host=host, seen_headers=[],
                                                   answer=(status, content_type, body, chunked)))

    def https(self, *, hostname: str = "localhost", trusted_ca: trustme.CA | None = None) -> int:
        """A TLS server whose certificate is for ``hostname``, signed by ``trusted_ca`` or its own CA."""
        ca = trusted_ca or trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(hostname).configure_cert(context)
        return int(self.http(tls=context).server_address[1])

    def ca_file(self, folder: Path) -> Path:
        path = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def hang(self) -> int:
        """Accept connections and never answer (the listen backlog accepts them)."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self._sockets.append(sock)

        def accept() -> None:
            sock.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    conn, _ = sock.accept()
                except (TimeoutError, OSError):
                    continue
                self._held.append(conn)

        threading.Thread(target=accept, daemon=True).start()
        return int(sock.getsockname()[1])


def wait_ready(url: str, *, seconds: float = 30) -> None:
    """Wait until a server's readiness URL answers (Prometheus-family servers: ``/-/ready``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
        except OSError:
            time.sleep(0.1)
        else:
            return


def raw_http(pieces: list[bytes], *, pause: float = 0.0) -> tuple[int, threading.Event]:
    """A raw socket server: for each connection, read the request, send ``pieces`` (``pause`` apart), close.

    Returns the port and an event that is set when the server stops.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stopped = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not stopped.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    for index, piece in enumerate(pieces):
                        if index and pause:
                            time.sleep(pause)
                        conn.sendall(piece)
        sock.close()
        stopped.set()

    threading.Thread(target=serve, daemon=True).start()
    return int(sock.getsockname()[1]), stopped


class CountingForwarder:
    """A TCP forwarder in front of a shared server, counting the connections this test's runs make.

    The machine's Redis serves every self-test at once (and a second suite run, if one runs), so
    its own connection counters cannot tell whose connections they were; this one can.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
PROMETHEUS = shutil.which("prometheus")


@contextlib.contextmanager
def node_exporter_in_prometheus(folder: Path, *, config: str = "", scrapes: int = 5,
                                ready: Callable[[str], bool] = lambda base: True) -> Iterator[tuple[str, str]]:
    """A real node_exporter scraped every second by a real Prometheus: (Prometheus URL, instance label).

    ``config`` is added to the Prometheus configuration's global part (rule files); the server is
    handed over once it has ``scrapes`` scrapes and ``ready(base)`` holds, or after 60 s.
    """
    assert NODE_EXPORTER is not None
    assert PROMETHEUS is not None
    exporter_port = free_port()
    instance = f"127.0.0.1:{exporter_port}"
    exporter = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address={instance}", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = ("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n" + config
              + "scrape_configs:\n  - job_name: node\n    static_configs:\n"
              f"      - targets: ['{instance}']\n")
    try:  # rate() and deriv() want several scrapes
        with prometheus(folder, config, until="count_over_time(up[1m])", at_least=scrapes, ready=ready) as base:
            yield base, instance
    finally:
        exporter.terminate()
        exporter.wait(timeout=20)


PROMTOOL = shutil.which("promtool")


@contextlib.contextmanager
def prometheus(folder: Path, config: str, *, until: str, equals: float | None = None, at_least: float = 0.0,
               ready: Callable[[str], bool] = lambda base: True, settle: float = 0.0) -> Iterator[str]:
    """A real Prometheus running ``config`` (YAML text, written to ``folder/prometheus.yml``) on a free loopback
    port: its URL once the PromQL ``until`` gives ``equals`` (or at least ``at_least``) and ``ready(url)`` holds,
    or after 60 s, and ``settle`` more seconds have passed (traffic for rate()); stopped on exit."""
    assert PROMETHEUS is not None
    settings = folder / "prometheus.yml"
    settings.write_text(config)
    port = free_port()
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={settings}", f"--storage.tsdb.path={folder / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        query = base + "/api/v1/query?query=" + urllib.parse.quote(until)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                with urllib.request.urlopen(query, timeout=2) as answer_:
                    result = json.loads(answer_.read())["data"]["result"]
                value = float(result[0]["value"][1]) if result else None
                if value is not None and (value == equals if equals is not None else value >= at_least) and ready(
                        base):
                    break
            time.sleep(0.2)
        time.sleep(settle)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextlib.contextmanager
def prometheus_with_history(folder: Path, openmetrics: str) -> Iterator[str]:
    """A real Prometheus whose only data is ``openmetrics``, backfilled with ``promtool tsdb create-blocks-from
    openmetrics`` (the past it would have scraped); its URL, stopped on exit."""
    assert PROMETHEUS is not None
    assert PROMTOOL is not None
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "history.om"
    source.write_text(openmetrics)
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(folder / "tsdb")],
                   check=True, capture_output=True, timeout=120)
    settings = folder / "prometheus.yml"
    settings.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = free_port()
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={settings}", f"--storage.tsdb.path={folder / 'tsdb'}",
         "--storage.tsdb.retention.time=30d", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/-/ready", seconds=60)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextlib.contextmanager
def alertmanager(binary: str, config: Path, folder: Path) -> Iterator[str]:
    """A real Alertmanager on a free loopback port (no cluster), running ``config``; its URL, stopped on exit."""
    port = free_port()
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={folder / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/-/ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
