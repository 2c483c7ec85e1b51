"""Small asyncio helpers shared by the probes."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

AddrInfo = list[tuple[Any, ...]]


async def resolve(host: str, port: int) -> AddrInfo:
    """getaddrinfo in a daemon thread.

    asyncio's default executor is joined when the loop closes, so one stuck
    lookup would hold the whole run past its timeout; a daemon thread cannot.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 0, "", (host, port))]

    loop = asyncio.get_running_loop()
    future: asyncio.Future[AddrInfo] = loop.create_future()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def work() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            loop.call_soon_threadsafe(deliver, future.set_exception, exc)
        else:
            loop.call_soon_threadsafe(deliver, future.set_result, infos)

    threading.Thread(target=work, name=f"resolve-{host}", daemon=True).start()
    return await future


def run(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a fresh event loop, from sync code (pytest hooks, fixtures)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro_factory())
    finally:
        loop.close()


async def gather_bounded(factories: list[Callable[[], Awaitable[T]]], *, limit: int) -> list[T]:
    """Await every factory's coroutine with at most ``limit`` in flight."""
    semaphore = asyncio.Semaphore(max(1, limit))

    async def one(factory: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await factory()

    return list(await asyncio.gather(*(one(f) for f in factories)))
