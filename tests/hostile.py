"""Hostile loopback servers: real sockets that answer as broken or malicious targets do.

Each server is a thread accepting on 127.0.0.1 and handing every connection to a function that reads
what the client sent and writes whatever the case needs (huge, slow, malformed, echoing). Every loop
is bounded in time and bytes, and every server stops when its context ends.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

Handler = Callable[[socket.socket, "Hostile"], None]
# Nothing a hostile server sends runs longer than this, whatever the client does.
SEND_SECONDS = 20.0


class Hostile:
    """One loopback server; ``seen`` holds the first bytes of every request it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[bytes] = []
        self.stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    def __enter__(self) -> Hostile:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        self._sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(5)
            self.handler(conn, self)

    def sent_for(self, seconds: float) -> bool:
        """Whether a sending loop may go on (the server is not stopping, and its time bound not over)."""
        return not self.stop.is_set() and seconds < SEND_SECONDS


def read_request(conn: socket.socket, server: Hostile) -> bytes:
    """An HTTP request's head (up to 64 KiB), remembered in ``server.seen``."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    server.seen.append(data)
    return data


def path_of(request: bytes) -> str:
    line = request.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    return parts[1] if len(parts) > 1 else ""


def head(status: str, headers: dict[str, str] | None = None, *, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(conn: socket.socket, status: str, body: bytes, content_type: str = "application/json",
           headers: dict[str, str] | None = None) -> None:
    conn.sendall(head(status, {"Content-Type": content_type, **(headers or {})}, length=len(body)) + body)


def stream(conn: socket.socket, server: Hostile, first: bytes, *, total: int, chunk: bytes,
           pause: float = 0.0) -> None:
    """Send ``first``, then ``chunk`` again and again up to ``total`` bytes, until the client goes away."""
    conn.sendall(first)
    sent, started = 0, time.monotonic()
    while sent < total and server.sent_for(time.monotonic() - started):
        conn.sendall(chunk)
        sent += len(chunk)
        if pause:
            time.sleep(pause)


# --- HTTP handlers ------------------------------------------------------------------------------

def health_after_padding(size: int, status: str = "down") -> Handler:
    """A JSON health body whose status comes after ``size`` bytes of padding."""
    body = b'{"pad": "' + b"x" * size + b'", "status": "' + status.encode() + b'"}'

    def handle(conn: socket.socket, server: Hostile) -> None:
        read_request(conn, server)
        answer(conn, "200 OK", body)

    return handle


def endless_body(total: int = 2 * 1024 ** 3) -> Handler:
    """200 with a JSON body that never ends (up to ``total`` bytes, no Content-Length)."""
    def handle(conn: socket.socket, server: Hostile) -> None:
        read_request(conn, server)
        stream(conn, server, head("200 OK", {"Content-Type": "application/json"}) + b'{"status": "ok", "pad": "',
               total=total, chunk=b"x" * 65536)

    return handle


def huge_header(size: int) -> Handler:
    """A healthy answer with one response header of ``size`` bytes."""
    def handle(conn: socket.socket, server: Hostile) -> None:
        read_request(conn, server)
        answer(conn, "200 OK", b'{"status": "ok"}', headers={"X-Padding": "h" * size})

    return handle


def slow_loris(pause: float = 0.2) -> Handler:
    """A status line and headers, then one byte of body every ``pause`` seconds, for as long as it may."""
    def handle(conn: socket.socket, server: Hostile) -> None:
        read_request(conn, server)
        stream(conn, server, head("200 OK", {"Content-Type": "application/json"}, length=10 ** 6),
               total=10 ** 6, chunk=b" ", pause=pause)

    return handle


def redirect_to(location: str) -> Handler:
    def handle(conn: socket.socket, server: Hostile) -> None:
        read_request(conn, server)
        answer(conn, "302 Found", b"", headers={"Location": location})

    return handle


def garbage(data: bytes) -> Handler:
    def handle(conn: socket.socket, server: Hostile) -> None:
        read_request(conn, server)
        conn.sendall(data)

    return handle


def raw_json(body: bytes, content_type: str = "application/json", status: str = "200 OK") -> Handler:
    def handle(conn: socket.socket, server: Hostile) -> None:
        read_request(conn, server)
        answer(conn, status, body, content_type)

    return handle


def echo() -> Handler:
    """Every request echoed: its head in the JSON body (as a failing status), its Authorization in a header."""
    def handle(conn: socket.socket, server: Hostile) -> None:
        request = read_request(conn, server).decode("latin-1")
        authorization = next((line.split(":", 1)[1].strip() for line in request.split("\r\n")
                              if line.lower().startswith("authorization:")), "")
        body = json.dumps({"status": "error", "errorType": "echo", "error": request,
                           "data": {"resultType": "vector", "result": []}}).encode()
        answer(conn, "500 Internal Server Error", body, headers={"X-Echo": authorization or "none",
                                                                 "WWW-Authenticate": f'Basic realm="{request[:200]}"'})

    return handle


def prometheus(answers: dict[str, bytes], *, delay: float = 0.0) -> Handler:
    """A Prometheus HTTP API: buildinfo answers; each query answers the body whose key is in its query string."""
    def handle(conn: socket.socket, server: Hostile) -> None:
        path = path_of(read_request(conn, server))
        if path.startswith("/api/v1/status/buildinfo"):
            answer(conn, "200 OK", b'{"status": "success", "data": {"version": "2.45.0"}}')
            return
        if delay:
            time.sleep(delay)
        for key, body in answers.items():
            if key in path:
                answer(conn, "200 OK", body)
                return
        answer(conn, "200 OK", b'{"status": "success", "data": {"resultType": "vector", "result": []}}')

    return handle


def vector(value: str, series: int = 1) -> bytes:
    one = '{"metric": {"instance": "i%d"}, "value": [1700000000, "%s"]}'
    return ('{"status": "success", "data": {"resultType": "vector", "result": ['
            + ", ".join(one % (n, value) for n in range(series)) + "]}}").encode()


# --- Redis (RESP) -------------------------------------------------------------------------------

def redis(info: bytes, *, refuse_hello: bool = True, echo_auth: bool = False) -> Handler:
    """A RESP server: PING, CLIENT, AUTH answered; INFO answered with ``info`` as it is (valid or not); HELLO
    refused as Redis 5 refuses it; with ``echo_auth``, AUTH refused quoting the password it was sent."""
    def handle(conn: socket.socket, server: Hostile) -> None:
        buffer = b""
        started = time.monotonic()
        while server.sent_for(time.monotonic() - started):
            chunk = conn.recv(65536)
            if not chunk:
                return
            buffer += chunk
            while True:
                command, buffer = _resp_command(buffer)
                if command is None:
                    break
                server.seen.append(b" ".join(command))
                name = command[0].upper() if command else b""
                if name == b"PING":
                    conn.sendall(b"+PONG\r\n")
                elif name == b"HELLO" and refuse_hello:
                    conn.sendall(b"-ERR unknown command 'HELLO'\r\n")
                elif name == b"AUTH" and echo_auth:
                    conn.sendall(b"-WRONGPASS invalid password '" + command[-1] + b"' for user\r\n")
                elif name in (b"AUTH", b"CLIENT", b"SELECT"):
                    conn.sendall(b"+OK\r\n")
                elif name == b"INFO":
                    conn.sendall(info)
                else:
                    conn.sendall(b"-ERR unknown command\r\n")

    return handle


def _resp_command(buffer: bytes) -> tuple[list[bytes] | None, bytes]:
    """One RESP array of bulk strings from ``buffer``, or None when it is not complete yet."""
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None, buffer
    count_line, rest = buffer.split(b"\r\n", 1)
    parts: list[bytes] = []
    for _ in range(int(count_line[1:])):
        if b"\r\n" not in rest:
            return None, buffer
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line[1:])
        if len(rest) < size + 2:
            return None, buffer
        parts.append(rest[:size])
        rest = rest[size + 2:]
    return parts, rest


def bulk(text: bytes) -> bytes:
    return b"$" + str(len(text)).encode() + b"\r\n" + text + b"\r\n"


# --- PostgreSQL (the frontend/backend protocol) ------------------------------------------------------

def postgres_echo(*, stall: bool = False) -> Handler:
    """A PostgreSQL server that refuses SSL, asks for a cleartext password, and refuses the login quoting the
    password it was sent (as a misconfigured proxy or a hostile server may); with ``stall``, it never answers."""
    def handle(conn: socket.socket, server: Hostile) -> None:
        if stall:
            while server.sent_for(0) and conn.recv(65536):
                pass
            return
        while True:
            size = struct.unpack("!I", _exactly(conn, 4))[0]
            payload = _exactly(conn, size - 4)
            code = struct.unpack("!I", payload[:4])[0]
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: no
                conn.sendall(b"N")
                continue
            server.seen.append(payload)
            break
        conn.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
        kind = _exactly(conn, 1)
        size = struct.unpack("!I", _exactly(conn, 4))[0]
        password = _exactly(conn, size - 4).rstrip(b"\0")
        server.seen.append(kind + password)
        fields = (b"SFATAL\0" + b"VFATAL\0" + b"C28P01\0"
                  + b"Mpassword authentication failed: got \"" + password + b"\"\0\0")
        conn.sendall(b"E" + struct.pack("!I", len(fields) + 4) + fields)

    return handle


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


@contextlib.contextmanager
def serving(handler: Handler) -> Iterator[Hostile]:
    with Hostile(handler) as server:
        yield server
