"""The network under httpx: a bounded resolver, Happy Eyeballs, and the phase marks of each exchange.

httpx (through httpcore) does the HTTP; this backend does what a probe needs below it:

* DNS runs in a daemon thread: asyncio's default executor is joined when the loop closes,
  so one stuck lookup would hold the whole run past its timeout; a daemon thread cannot.
* The resolved addresses are raced as Happy Eyeballs does (RFC 8305), so an address that
  swallows SYNs costs 250 ms, not the whole timeout.
* Each phase (resolved, connected, TLS done) is marked in the exchange's :data:`MARKS`, so a
  timeout says which phase stalled and the evidence carries per-phase timings.
* Errors stay what the OS or ``ssl`` raised (refused, DNS, certificate), for precise outcomes.
"""

from __future__ import annotations

import asyncio
import contextvars
import select
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from itertools import zip_longest
from typing import Any

import httpcore

from acgs_checks.probes import aio

# Phase -> time.perf_counter() when it completed, for the exchange running in this context.
MARKS: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("acgs_http_marks", default=None)
HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305: start the next address this long after the previous one


def mark(phase: str, when: float | None = None) -> None:
    marks = MARKS.get()
    if marks is not None:
        marks.setdefault(phase, time.perf_counter() if when is None else when)


class TimedProtocol(asyncio.StreamReaderProtocol):
    """Notes when the first bytes of an answer reach the event loop, before any parsing.

    Latency is measured from the request's last byte handed to the kernel to this moment, so
    the client's own work (httpx parsing, other cases, a busy interpreter) stays out of it.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self.waiting = False
        self.arrived: float | None = None

    def expect_answer(self) -> None:
        self.waiting, self.arrived = True, None

    def data_received(self, data: bytes) -> None:
        if self.waiting and data:
            self.arrived, self.waiting = time.perf_counter(), False
        super().data_received(data)


async def open_timed(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` with a :class:`TimedProtocol`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**16, loop=loop)
    protocol = TimedProtocol(reader)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


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
                pending.add(asyncio.ensure_future(open_timed(address, port)))
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


def interleaved(infos: Iterable[tuple[Any, ...]]) -> list[tuple[str, int]]:
    """IPv6 and IPv4 addresses alternating, IPv6 first (RFC 8305)."""
    usable = [i for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
    by_family = [[i for i in usable if i[0] == socket.AF_INET6], [i for i in usable if i[0] == socket.AF_INET]]
    return [(i[4][0], i[4][1]) for pair in zip_longest(*by_family) for i in pair if i is not None]


class Stream(httpcore.AsyncNetworkStream):
    """An asyncio stream as httpcore wants it; timeouts are the exchange's one bound, not per read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        protocol = writer.transport.get_protocol()  # stays the application protocol after start_tls
        self._timed = protocol if isinstance(protocol, TimedProtocol) else None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._reader.read(max_bytes)
        protocol = self._protocol()  # behind TLS too: the SSL layer hands it the decrypted bytes
        if data and protocol is not None and protocol.arrived is not None:
            mark("first_byte", protocol.arrived)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        protocol = self._protocol()
        if protocol is not None:
            protocol.expect_answer()
        self._writer.write(buffer)
        await self._writer.drain()
        marks = MARKS.get()
        if marks is not None:
            marks["written"] = time.perf_counter()  # the last write of the request

    def _protocol(self) -> TimedProtocol | None:
        return self._timed

    async def aclose(self) -> None:
        self._writer.transport.abort()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        mark("tls")
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # An idle keep-alive connection that reads as readable was closed by the server (or sent
            # something unasked): httpcore then opens a new one instead of failing the request.
            if self._reader.at_eof() or self._writer.is_closing():
                return True
            sock = self._writer.get_extra_info("socket")
            return sock is not None and bool(select.select([sock.fileno()], [], [], 0)[0])
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info in ("ssl_object", "socket"):
            return self._writer.get_extra_info(info)
        return None


class Backend(httpcore.AsyncNetworkBackend):
    """TCP for httpcore: daemon-thread DNS, raced addresses, phase marks; counts the connections it opened."""

    def __init__(self) -> None:
        self.opened = 0

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        infos = await aio.resolve(host, port)
        mark("resolved")
        addresses = interleaved(infos)
        if not addresses:
            raise OSError(f"no usable address for {host}")
        reader, writer = await race(addresses)
        self.opened += 1
        mark("connected")
        return Stream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise OSError("unix sockets are not probed")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
