"""Morning health check, step 3: Cache Performance Check, and the cache lines of Monitor Key Metrics.

Every case reads one snapshot: PING, then two INFO samples a window apart, on one
connection per cache. Redis has no ``hit_rate`` field (the runbook's grep finds
nothing): the hit rate is keyspace_hits / (keyspace_hits + keyspace_misses).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from acgs_checks.environment import Environment
from acgs_checks.verdict import judge, measure, no_data, require_answer

if TYPE_CHECKING:  # the client libraries load only when such checks run
    from acgs_checks.probes.cache import CacheSnapshot

pytestmark = [pytest.mark.daily, pytest.mark.cache]

MIB = 1024 * 1024


def _number(seen: CacheSnapshot, key: str, *, sample: str = "second") -> float:
    """A field of an INFO sample; a field INFO did not give is no data, never 0."""
    info = seen.first if sample == "first" else seen.second
    if key not in info:
        no_data(f"{seen.target}: INFO gave no {key}")
    return float(info[key])


@pytest.mark.p0
@pytest.mark.runbook("daily.cache-performance.reachable")
@pytest.mark.reachability
def test_cache_reachable(cache_probe: CacheSnapshot) -> None:
    """Redis answers PING (the round trip is in the evidence)."""
    seen = cache_probe
    require_answer(seen, f"PING {seen.url}")
    measure(f"{seen.target}: PING {seen.url} answered", "PONG")


@pytest.mark.p1
@pytest.mark.runbook("daily.key-metrics.cache-hit-rate", "alerts.warning.cache-hit-rate")
@pytest.mark.trended
def test_cache_hit_rate(redis_info: CacheSnapshot, acgs_environment: Environment) -> None:
    """The hit rate over the measuring window stays above {cache_hit_rate_min_percent:g} %.

    Counters since the last restart would hide a recent collapse, so the window decides;
    only when the window saw no lookups does the cumulative figure stand in.
    """
    seen = redis_info
    for key in ("keyspace_hits", "keyspace_misses"):
        _number(seen, key)
        _number(seen, key, sample="first")
    hits, misses = seen.delta("keyspace_hits"), seen.delta("keyspace_misses")
    source = f"over the last {seen.window_seconds:g} s"
    if hits + misses == 0:
        hits, misses = float(seen.second.get("keyspace_hits", 0)), float(seen.second.get("keyspace_misses", 0))
        source = f"cumulative since restart ({seen.second.get('uptime_in_seconds', '?')} s; no lookups in the window)"
    if hits + misses == 0:
        pytest.skip(f"{seen.target}: no lookups at all since the last restart; nothing to judge")
    rate = 100.0 * hits / (hits + misses)
    limit = acgs_environment.thresholds.cache_hit_rate_min_percent
    total_hits = float(seen.second.get("keyspace_hits", 0))
    total = total_hits + float(seen.second.get("keyspace_misses", 0))
    # Say what the cumulative figure would have shown: it is what hides a recent collapse.
    note = f"; cumulative {100.0 * total_hits / total:.1f} %" if source.startswith("over") and total else ""
    judge(rate <= limit, f"{seen.target}: hit rate {rate:.1f} % {source} ({hits:.0f} hits / {hits + misses:.0f} "
          f"lookups{note})", f"> {limit:g} %", value=rate, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("daily.cache-performance.memory")
@pytest.mark.capacity("Redis maxmemory reached")
def test_cache_memory(redis_info: CacheSnapshot, acgs_environment: Environment) -> None:
    """used_memory stays below {cache_memory_max_percent:g} % of maxmemory.

    Without maxmemory Redis grows until the host runs out; that case compares against the
    host's total memory as Redis reports it (total_system_memory).
    """
    info = redis_info.second
    used = _number(redis_info, "used_memory")
    limit = acgs_environment.thresholds.cache_memory_max_percent
    maxmemory = float(info.get("maxmemory", 0))
    if maxmemory:
        share, against = 100.0 * used / maxmemory, f"maxmemory {info.get('maxmemory_human')}"
    elif info.get("total_system_memory"):
        share, against = 100.0 * used / float(info["total_system_memory"]), "host memory (no maxmemory set)"
    else:
        pytest.skip(f"{redis_info.target}: neither maxmemory nor the host's memory is known")
    judge(share >= limit, f"{redis_info.target}: used_memory {info.get('used_memory_human')} = {share:.1f} % of "
          f"{against} (policy {info.get('maxmemory_policy')})", f"< {limit:g} %", value=share, threshold=limit)


@pytest.mark.p2
@pytest.mark.runbook("daily.cache-performance.evictions")
def test_cache_evictions(redis_info: CacheSnapshot) -> None:
    """No key was evicted for lack of memory during the measuring window."""
    evicted = _number(redis_info, "evicted_keys") - _number(redis_info, "evicted_keys", sample="first")
    judge(evicted > 0, f"{redis_info.target}: {evicted:.0f} key(s) evicted in {redis_info.window_seconds:g} s "
          f"(evicted_keys {redis_info.second.get('evicted_keys')} since restart, "
          f"policy {redis_info.second.get('maxmemory_policy')})", "0 evictions", value=evicted, threshold=0)


@pytest.mark.p1
@pytest.mark.runbook("daily.cache-performance.connections")
def test_cache_rejected_connections(redis_info: CacheSnapshot) -> None:
    """Redis did not refuse clients (maxclients reached) during the measuring window."""
    rejected = _number(redis_info, "rejected_connections") - _number(redis_info, "rejected_connections",
                                                                     sample="first")
    judge(rejected > 0, f"{redis_info.target}: {rejected:.0f} connection(s) rejected in "
          f"{redis_info.window_seconds:g} s ({redis_info.second.get('rejected_connections')} since restart)",
          "0 rejected", value=rejected, threshold=0)


@pytest.mark.p3
@pytest.mark.runbook("daily.cache-performance.fragmentation")
def test_cache_fragmentation(redis_info: CacheSnapshot, acgs_environment: Environment) -> None:
    """RSS does not exceed used_memory by more than the ratio allows, once the excess is large enough to matter."""
    t = acgs_environment.thresholds
    ratio = _number(redis_info, "mem_fragmentation_ratio")
    excess = (_number(redis_info, "used_memory_rss") - _number(redis_info, "used_memory")) / MIB
    judge(ratio > t.cache_fragmentation_max_ratio and excess >= t.cache_fragmentation_min_excess_mib,
          f"{redis_info.target}: mem_fragmentation_ratio {ratio:.2f} ({excess:.0f} MiB of RSS beyond used_memory)",
          f"≤ {t.cache_fragmentation_max_ratio:g} (or under {t.cache_fragmentation_min_excess_mib:g} MiB of excess)",
          value=ratio, threshold=t.cache_fragmentation_max_ratio)
