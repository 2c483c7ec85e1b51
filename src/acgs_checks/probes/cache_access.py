"""Monday security review: Redis refuses strangers (one target per cache).

One unauthenticated connection sends PING and expects to be refused. It waits for the daily cache probe of the
same Redis, if that runs too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

from acgs_checks import kinds
from acgs_checks.environment import Cache, display_url
from acgs_checks.probes.cache import client_options, failure_text, protocol_error
from acgs_checks.records import JsonRecord


@dataclass(frozen=True)
class CacheAccess(JsonRecord):
    target: str
    url: str
    answered: bool
    error: str = ""
    anonymous: str = ""     # "refused" (what we want), "accepted", or "" when not reached
    reply: str = ""
    denied: str = ""  # the target refused the suite: the credential or grant to check


async def probe_cache_access(cache: Cache, job: kinds.Job) -> CacheAccess:
    """PING without credentials on a fresh connection: a NOAUTH refusal is what a secure Redis says."""
    import redis.asyncio as aioredis  # noqa: PLC0415
    import redis.exceptions  # noqa: PLC0415


    del job
    parts = urlsplit(cache.url)
    anonymous = parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")).geturl()
    if ":" in (parts.hostname or ""):
        anonymous = parts._replace(netloc=f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")).geturl()
    from redis.asyncio.retry import Retry  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415

    # RESP2 (no HELLO on connect) and no retry: one connection, one PING, one answer.
    client = aioredis.Redis.from_url(anonymous, socket_timeout=cache.timeout_seconds,
                                     socket_connect_timeout=cache.timeout_seconds, retry=Retry(NoBackoff(), 0),
                                     **client_options(cache))
    shown = display_url(anonymous)
    try:
        async with asyncio.timeout(cache.timeout_seconds):
            reply = await client.ping()
        return CacheAccess(cache.name, shown, answered=True, anonymous="accepted", reply=f"PING → {reply!r}")
    except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
        if "NOAUTH" in str(exc) or "Authentication required" in str(exc) or isinstance(
                exc, redis.exceptions.AuthenticationError):
            return CacheAccess(cache.name, shown, answered=True, anonymous="refused", reply=f"PING → {exc}")
        return CacheAccess(cache.name, shown, answered=True, anonymous="accepted", reply=f"PING → {exc}")
    except (OSError, redis.exceptions.RedisError, TimeoutError) as exc:
        return CacheAccess(cache.name, shown, answered=False, error=failure_text(exc, cache.timeout_seconds))
    except Exception as exc:  # noqa: BLE001 - bytes that are not RESP make the client library raise anything
        return CacheAccess(cache.name, shown, answered=False, error=protocol_error("a RESP answer to PING", exc))
    finally:
        await client.aclose()


CACHE_ACCESS = kinds.register(kinds.ProbeKind(
    name="cache_security", section="caches", record=CacheAccess, param="cache", fixture="cache_access_probe",
    probe=probe_cache_access, targets=lambda env: env.caches, after="cache",
    grant="none: it sends one PING without credentials",
    doc="one unauthenticated PING per Redis: it must be refused",
))

__all__ = ["CACHE_ACCESS", "CacheAccess", "probe_cache_access"]
