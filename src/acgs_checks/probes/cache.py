"""Redis probe: PING and two INFO samples a window apart, on one connection.

Only read commands are sent: PING and INFO, plus a best-effort CLIENT SETNAME so the
connection shows as ``acgs-checks`` in CLIENT LIST (a refusal is noted, never a failure).
``maxmemory`` and the eviction policy come from INFO, so the probe needs no CONFIG
permission. A least-privilege ACL user is enough::

    ACL SETUSER acgs_monitor on >PASSWORD resetkeys resetchannels -@all +ping +info
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import time
from dataclasses import dataclass, field
from typing import Any

from acgs_checks import kinds, redaction, verdict
from acgs_checks.environment import Cache, Environment, display_url
from acgs_checks.records import JsonRecord

CLIENT_NAME = "acgs-checks"
FIELDS = (
    "redis_version", "role", "uptime_in_seconds", "connected_clients", "keyspace_hits", "keyspace_misses",
    "evicted_keys", "rejected_connections", "total_connections_received", "used_memory", "used_memory_human",
    "used_memory_rss", "maxmemory", "maxmemory_human", "maxmemory_policy", "mem_fragmentation_ratio",
    "total_system_memory",
)


@dataclass(frozen=True)
class CacheSnapshot(JsonRecord):
    """``first`` and ``second`` are INFO samples taken ``window_seconds`` apart."""

    target: str
    url: str
    answered: bool
    error: str = ""
    ping_seconds: float | None = None
    window_seconds: float = 0.0
    first: dict[str, Any] = field(default_factory=dict)
    second: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    denied: str = ""   # access was refused: the credential or grant to check
    notes: dict[str, str] = field(default_factory=dict)

    def delta(self, key: str) -> float:
        """How much a counter grew within the window."""
        return float(self.second.get(key, 0)) - float(self.first.get(key, 0))


def _pick(info: dict[str, Any]) -> dict[str, Any]:
    return {key: info[key] for key in FIELDS if key in info}


# No CLIENT SETINFO on connect: a least-privilege user would be refused, and each refusal lands
# in the server's ACL LOG, where the Monday review looks for trouble. redis-py 7 and later say
# it with driver_info=None; older ones with lib_name/lib_version=None.
# (The client library loads when a cache is probed, not with the plugin.)
def _no_setinfo() -> dict[str, Any]:
    if importlib.util.find_spec("redis.driver_info"):
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}

# What one connection may read from a Redis: INFO is a few KiB, ACL LOG's 128 entries some 100 KiB. A reply
# that declares more (a bulk of 2 GB) is refused before it is read, so memory stays bounded whatever it sends.
READ_LIMIT = 8 * 1024 * 1024


class _CappedStream:
    """The connection's StreamReader, counting what the parser reads and refusing to read past READ_LIMIT."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._read = 0

    def _take(self, size: int) -> None:
        self._read += size
        if self._read > READ_LIMIT:
            raise ValueError(f"the reply is over the {READ_LIMIT // (1024 * 1024)} MiB a connection may read")

    async def readexactly(self, size: int) -> bytes:
        self._take(size)  # before reading: a declared 2 GB bulk is never buffered
        return bytes(await self._stream.readexactly(size))

    async def readline(self) -> bytes:
        line = bytes(await self._stream.readline())  # asyncio's own line limit (64 KiB) bounds one line
        self._take(len(line))
        return line

    async def read(self, size: int = -1) -> bytes:
        data = bytes(await self._stream.read(min(size, READ_LIMIT) if size >= 0 else READ_LIMIT))
        self._take(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@functools.cache
def capped_parser() -> Any:
    """redis-py's default parser, reading through :class:`_CappedStream` (the client library loads lazily)."""
    from redis.asyncio.connection import DefaultParser  # noqa: PLC0415 - see _no_setinfo

    class CappedParser(DefaultParser):  # type: ignore[misc,valid-type]
        def on_connect(self, connection: Any) -> None:
            super().on_connect(connection)
            self._stream = _CappedStream(getattr(self, "_stream", None))

    return CappedParser


def client_options(cache: Cache) -> dict[str, Any]:
    """What every Redis connection of the suite takes: RESP2 (every Redis since 2.6 speaks it; HELLO, for
    RESP3, arrived with Redis 6, and PING, INFO and ACL LOG read the same in both), the capped parser, no
    CLIENT SETINFO, no health checks, and the cache's TLS settings."""
    return {"protocol": 2, "parser_class": capped_parser(), "health_check_interval": 0,
            "single_connection_client": True, "retry_on_timeout": False, **_no_setinfo(), **_tls_options(cache)}


_DENIED_WORDS = ("NOAUTH", "WRONGPASS", "NOPERM", "invalid password", "invalid username-password")
DENIED_HINT = ("the user and password in the URL, and the ACL user's rules "
               "(it needs +ping +info: ACL SETUSER <user> on >PASSWORD -@all +ping +info)")


def failure_text(exc: BaseException, timeout: float) -> str:
    import redis.exceptions  # noqa: PLC0415 - see _no_setinfo

    if isinstance(exc, TimeoutError | redis.exceptions.TimeoutError):
        return f"no answer within {timeout:g} s"
    text = str(exc).strip() or type(exc).__name__
    if _is_denied(exc):
        return text
    return f"connection failed: {text}"


def protocol_error(expected: str, exc: BaseException) -> str:
    """What a Redis sent that is not what was asked for, in one line: never a traceback."""
    return f"protocol error: expected {expected}, got {redaction.clip(f'{type(exc).__name__}: {exc}', 200)}"


def _is_denied(exc: BaseException) -> bool:
    import redis.exceptions  # noqa: PLC0415 - see _no_setinfo

    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.NoPermissionError
                  | redis.exceptions.AuthenticationWrongNumberOfArgsError):
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and any(w in str(exc) for w in _DENIED_WORDS)


def _tls_options(cache: Cache) -> dict[str, Any]:
    if not cache.url.startswith("rediss://"):
        return {}
    tls = cache.tls
    options: dict[str, Any] = {"ssl_cert_reqs": "required" if tls.verify else "none",
                               "ssl_check_hostname": tls.verify}
    if tls.ca_file:
        options["ssl_ca_certs"] = tls.ca_file
    if tls.client_cert:
        options["ssl_certfile"] = tls.client_cert
        options["ssl_keyfile"] = tls.client_key or tls.client_cert
    return options


async def probe_cache(cache: Cache, *, window_seconds: float) -> CacheSnapshot:
    """PING, INFO, wait ``window_seconds``, INFO; never raises for a sick server."""
    import redis.asyncio as aioredis  # noqa: PLC0415 - see _no_setinfo
    import redis.exceptions  # noqa: PLC0415

    url = display_url(cache.url)
    timeout = cache.timeout_seconds
    client = aioredis.Redis.from_url(cache.url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                     **client_options(cache))
    errors: dict[str, str] = {}
    notes: dict[str, str] = {}
    try:
        try:
            async with asyncio.timeout(timeout):
                started = time.perf_counter()
                await client.ping()
                ping = time.perf_counter() - started
        except (OSError, redis.exceptions.RedisError, TimeoutError) as exc:
            return CacheSnapshot(target=cache.name, url=url, answered=False, error=failure_text(exc, timeout),
                                 denied=DENIED_HINT if _is_denied(exc) else "")
        except Exception as exc:  # noqa: BLE001 - bytes that are not RESP make the client library raise anything
            return CacheSnapshot(target=cache.name, url=url, answered=False,
                                 error=protocol_error("a RESP answer to PING", exc))
        try:
            async with asyncio.timeout(timeout):
                await client.client_setname(CLIENT_NAME)
        except redis.exceptions.ResponseError as exc:
            notes["client setname"] = f"refused, the connection stays unnamed: {exc}"
        except (OSError, redis.exceptions.RedisError, TimeoutError) as exc:
            notes["client setname"] = failure_text(exc, timeout)
        first: dict[str, Any] = {}
        second: dict[str, Any] = {}
        measured = 0.0
        try:
            async with asyncio.timeout(timeout * 2 + window_seconds):
                first = _pick(await client.info())
                t0 = time.monotonic()
                await asyncio.sleep(window_seconds)
                second = _pick(await client.info())
                measured = time.monotonic() - t0
        except redis.exceptions.ResponseError as exc:
            errors["info"] = str(exc)
        except (OSError, redis.exceptions.RedisError, TimeoutError) as exc:
            errors["info"] = failure_text(exc, timeout)
        except Exception as exc:  # noqa: BLE001 - INFO text the client library cannot parse: ValueError and kin
            errors["info"] = protocol_error("INFO's field:value lines", exc)
        return CacheSnapshot(target=cache.name, url=url, answered=True, ping_seconds=round(ping, 6),
                             window_seconds=round(measured, 3), first=first, second=second, errors=errors,
                             notes=notes)
    finally:
        await client.aclose()


# --- the kind -----------------------------------------------------------------------------------

def _gate(seen: CacheSnapshot, env: Environment) -> kinds.Decision | kinds.Blocked | None:
    del env
    if not seen.answered:
        return kinds.unanswered("cache", seen)
    if "info" in seen.errors:
        return lambda: verdict.no_data(f"{seen.target}: INFO on {seen.url} failed: {seen.errors['info']}")
    return None


async def _probe(store: Cache, job: kinds.Job) -> CacheSnapshot:
    return await probe_cache(store, window_seconds=job.env.defaults.cache_window_seconds)


CACHE = kinds.register(kinds.ProbeKind(
    name="cache", section="caches", record=CacheSnapshot, param="cache", fixture="cache_probe",
    probe=_probe,
    targets=lambda env: env.caches,
    gate=kinds.Gate(_gate, fixture="redis_info", doc="the snapshot; blocked when Redis is unreachable, no data "
                    "when INFO failed"),
    grant="ACL SETUSER acgs_monitor on >PASSWORD resetkeys resetchannels -@all +ping +info",
    doc="PING and two INFO samples of a Redis",
))
