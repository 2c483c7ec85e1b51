"""One concurrent pass over every selected target of every kind.

The pass costs about the slowest target's bound (one timeout, or the cache window),
not the sum: HTTP services, databases, poolers and caches are probed side by side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Protocol

from acgs_checks.environment import Environment
from acgs_checks.probes import _aio, http

KINDS = ("service", "database", "pooler", "cache")


class _Result(Protocol):
    @property
    def target(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


def probe_selected(env: Environment, selected: Mapping[str, set[str]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Probe the named targets of each kind; results as JSON-ready dicts, by kind and name."""
    jobs: list[tuple[str, Callable[[], Awaitable[_Result]]]] = []
    # The database and cache client libraries load only when such targets are selected.
    if selected.get("database") or selected.get("pooler"):
        from acgs_checks.probes import postgres  # noqa: PLC0415
    if selected.get("cache"):
        from acgs_checks.probes import cache  # noqa: PLC0415
    for svc in env.services:
        if svc.name in selected.get("service", ()):
            jobs.append(("service", partial(http.probe_service, svc)))
    for db in env.databases:
        if db.name in selected.get("database", ()):
            jobs.append(("database", partial(postgres.probe_database, db)))
    for pooler in env.poolers:
        if pooler.name in selected.get("pooler", ()):
            jobs.append(("pooler", partial(postgres.probe_pooler, pooler)))
    window = env.defaults.cache_window_seconds
    for store in env.caches:
        if store.name in selected.get("cache", ()):
            jobs.append(("cache", partial(cache.probe_cache, store, window_seconds=window)))

    async def all_of() -> list[_Result]:
        return await _aio.gather_bounded([job for _, job in jobs], limit=env.defaults.concurrency)

    results = _aio.run(all_of) if jobs else []
    out: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
    for (kind, _), result in zip(jobs, results, strict=True):
        out[kind][result.target] = result.to_json()
    return out
