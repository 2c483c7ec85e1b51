"""One concurrent pass over every selected target of every kind.

The pass costs about the slowest target's bound (one timeout, the cache window, the
synthetic sampling bound), not the sum: HTTP services, databases, poolers, caches, SLO
sources and business metrics are probed side by side.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from acgs_checks.environment import Environment
from acgs_checks.probes import _aio, http
from acgs_checks.probes._record import JsonRecord

# The parametrized target arguments of checks.
KINDS = ("service", "database", "pooler", "cache")
# Probe fixture -> (probe kind, the target argument naming the target, or a fixed target name).
PROBE_FIXTURES: dict[str, tuple[str, str]] = {
    "health": ("service", "service"),
    "slo_probe": ("slo", "service"),
    "database_probe": ("database", "database"),
    "pooler_probe": ("pooler", "pooler"),
    "cache_probe": ("cache", "cache"),
    "metrics_source_probe": ("metrics_source", "=prometheus"),
    "compliance_probe": ("business", "=compliance"),
    "policy_success_probe": ("business", "=policy_success"),
}
PROBE_KINDS = ("service", "database", "pooler", "cache", "slo", "business", "metrics_source")
# How an SLO result says its service's health probe failed, so sampling left it alone.
NOT_MEASURED = "not measured:"


@dataclass(frozen=True)
class ProbeError(JsonRecord):
    """A probe that raised: a bug or an input it could not handle. Only its own target's cases fail."""

    target: str
    probe_error: str
    traceback: str


def _guarded(name: str, job: Callable[[], Awaitable[_Result]]) -> Callable[[], Awaitable[_Result]]:
    async def run() -> _Result:
        try:
            return await job()
        except Exception as exc:  # noqa: BLE001 - one probe's exception must not take every other check down
            return ProbeError(target=name, probe_error=f"{type(exc).__name__}: {exc}",
                              traceback=traceback.format_exc(limit=20))

    return run


class _Result(Protocol):
    @property
    def target(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


def applicable(env: Environment, fixture: str) -> bool:
    """Whether checks using this probe fixture apply to the environment at all."""
    from acgs_checks.probes.slo import business_metrics  # noqa: PLC0415 - keeps the import graph light

    kind, arg = PROBE_FIXTURES[fixture]
    if kind == "metrics_source":
        return env.prometheus is not None
    if kind == "business":
        return arg[1:] in {m.name for m in business_metrics(env.business, env.prometheus)}
    return bool(env.targets(arg))


def probe_selected(env: Environment, selected: Mapping[str, set[str]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Probe the named targets of each kind; results as JSON-ready dicts, by kind and name."""
    jobs: list[tuple[str, Callable[[], Awaitable[_Result]]]] = []
    services = [svc for svc in env.services if svc.name in selected.get("service", ())]
    jobs += [("service", _guarded(svc.name, partial(http.probe_service, svc))) for svc in services]
    # The database and cache client libraries load only when such targets are selected.
    if selected.get("database") or selected.get("pooler"):
        from acgs_checks.probes import postgres  # noqa: PLC0415
        for db in env.databases:
            if db.name in selected.get("database", ()):
                jobs.append(("database", _guarded(db.name, partial(postgres.probe_database, db))))
        for pooler in env.poolers:
            if pooler.name in selected.get("pooler", ()):
                jobs.append(("pooler", _guarded(pooler.name, partial(postgres.probe_pooler, pooler))))
    if selected.get("cache"):
        from acgs_checks.probes import cache  # noqa: PLC0415
        window = env.defaults.cache_window_seconds
        for store in env.caches:
            if store.name in selected.get("cache", ()):
                jobs.append(("cache", _guarded(store.name, partial(cache.probe_cache, store, window_seconds=window))))
    async def all_of() -> list[list[tuple[str, _Result]]]:
        semaphore = asyncio.Semaphore(max(1, env.defaults.concurrency))

        async def bounded(job: Callable[[], Awaitable[_Result]]) -> _Result:
            async with semaphore:
                return await job()

        tasks = [asyncio.ensure_future(bounded(job)) for _, job in jobs]
        # The health probes come first in ``jobs``, one per service in ``services``.
        health = {svc.name: task for svc, task in zip(services, tasks, strict=False)}
        results, from_metrics = await asyncio.gather(asyncio.gather(*tasks), _metrics_jobs(env, selected, health)())
        return [list(zip([kind for kind, _ in jobs], results, strict=True)), from_metrics]

    out: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in PROBE_KINDS}
    for batch in _aio.run(all_of):
        for kind, result in batch:
            out[kind][result.target] = result.to_json()
    return out


def _metrics_jobs(env: Environment, selected: Mapping[str, set[str]],
                  health: Mapping[str, asyncio.Future[_Result]]) -> Callable[[], Awaitable[list[tuple[str, _Result]]]]:
    """SLO and business numbers; with a Prometheus source, first ask whether it answers at all.

    Sampling or scraping a service waits for its health probe when that runs too, and leaves a
    service that did not answer alone: its health case already fails, and sampling a dead
    service would only wait out the request timeout many times over.
    """
    slo_services = [s for s in env.services if s.name in selected.get("slo", ())]
    wanted_business = selected.get("business", set())
    wants_source = bool(selected.get("metrics_source"))

    async def run() -> list[tuple[str, _Result]]:
        if not (slo_services or wanted_business or wants_source):
            return []
        from acgs_checks.probes import slo  # noqa: PLC0415

        settings = env.slo
        prometheus = env.prometheus
        business = [m for m in slo.business_metrics(env.business, prometheus) if m.name in wanted_business]
        down, denied = "", ""
        needs_prometheus = wants_source or any(m.query for m in business) or (
            slo_services and settings.source == "prometheus")
        if prometheus is not None and needs_prometheus:
            down, denied = await slo.prometheus_reachable(prometheus)
        found: list[tuple[str, _Result]] = []
        if prometheus is not None and wants_source:
            found.append(("metrics_source", slo.SourceStatus(target="prometheus", url=slo.shown(prometheus.url),
                                                              reachable=not down, error=down,
                                                              denied=denied)))
        jobs: list[tuple[str, Callable[[], Awaitable[_Result]]]] = []
        for service in slo_services:
            if settings.source == "prometheus" and prometheus is not None:
                if down:
                    source = f"Prometheus {slo.shown(prometheus.url)}"
                    found.append(("slo", slo.SloSnapshot(target=service.name, source=source, window=settings.window,
                                                         reachable=False, error=down)))
                    continue
                from_prometheus = partial(slo.from_prometheus, service, prometheus, settings)
                jobs.append(("slo", _guarded(service.name, from_prometheus)))
            else:
                measure = slo.from_scrapes if settings.source == "scrape" else slo.from_samples
                jobs.append(("slo", _guarded(service.name, partial(
                    _after_health, service.name, health.get(service.name), partial(measure, service, settings),
                    settings.source))))
        for metric in business:
            if metric.query and down:
                found.append(("business", slo.BusinessSnapshot(metric.name, f"PromQL {metric.query}", None, down,
                                                               reachable=False)))
                continue
            jobs.append(("business", _guarded(metric.name, partial(slo.business_metric, metric, prometheus,
                                                                    settings.window))))
        results = await _aio.gather_bounded([job for _, job in jobs], limit=env.defaults.concurrency)
        return found + list(zip([kind for kind, _ in jobs], results, strict=True))

    return run


async def _after_health(name: str, health: asyncio.Future[_Result] | None,
                        measure: Callable[[], Awaitable[_Result]], source: str) -> _Result:
    from acgs_checks.probes import slo  # noqa: PLC0415

    if health is not None:
        seen = await asyncio.shield(health)
        if isinstance(seen, http.HttpResult) and not seen.reachable:
            return slo.SloSnapshot(target=name, source=source, window="-", reachable=False,
                                   error=f"{NOT_MEASURED} {seen.detail}")
    return await measure()
