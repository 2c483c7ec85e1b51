"""Small asyncio helpers shared by the probes."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

AddrInfo = list[tuple[Any, ...]]


async def in_thread(function: Callable[..., T], *args: Any, name: str = "acgs-probe") -> T:
    """``function(*args)`` in a thread of its own (a daemon), awaited.

    Not asyncio's default executor: it has min(32, cores + 4) threads, so on a small machine six
    hanging targets would hold every thread and the seventh would wait a whole timeout for one;
    and it is joined when the loop closes, so one stuck call would hold the run past its bound.
    Each blocking probe bounds its own work; a daemon thread never holds the process.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def work() -> None:
        try:
            result = context.run(function, *args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine, as to_thread would
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(deliver, future.set_exception, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, future.set_result, result)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future


async def resolve(host: str, port: int) -> AddrInfo:
    """getaddrinfo in a daemon thread (see :func:`in_thread`)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 0, "", (host, port))]
    return await in_thread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM, name=f"resolve-{host}")


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
