"""Every threshold the runbook states, in one place, each with what it means there.

Environment files may override any of them under ``[thresholds]`` with the same key.
Ratios are written in percent, as the runbook writes them.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, fields
from typing import Any

from acgs_checks.errors import ConfigError


@dataclass(frozen=True)
class ThresholdSpec:
    key: str
    unit: str  # "seconds", "percent", "hours", "days", "rows", "ratio", "MiB", "ms", "calls" or "req/s"
    meaning: str


SPECS: tuple[ThresholdSpec, ...] = (
    ThresholdSpec("p95_warning_seconds", "seconds",
                  "P95 response time above this is a warning alert (daily target P95 < 2 s)"),
    ThresholdSpec("p99_warning_seconds", "seconds",
                  "P99 response time above this misses the daily target (P99 < 5 s)"),
    ThresholdSpec("p99_critical_seconds", "seconds",
                  "P99 response time above this is a critical alert"),
    ThresholdSpec("error_rate_warning_percent", "percent",
                  "error rate above this is a warning alert (daily target < 1 %)"),
    ThresholdSpec("error_rate_critical_percent", "percent",
                  "error rate above this is a critical alert"),
    ThresholdSpec("cache_hit_rate_min_percent", "percent",
                  "cache hit rate below this is a warning alert"),
    ThresholdSpec("pool_usage_max_percent", "percent",
                  "database connection pool usage must stay below this"),
    ThresholdSpec("cpu_max_percent", "percent",
                  "CPU utilisation above this is a warning alert"),
    ThresholdSpec("memory_max_percent", "percent",
                  "memory utilisation above this is a warning alert"),
    ThresholdSpec("disk_warning_percent", "percent",
                  "disk utilisation must stay below this"),
    ThresholdSpec("disk_critical_percent", "percent",
                  "disk usage above this is a critical alert"),
    ThresholdSpec("long_query_seconds", "seconds",
                  "a statement running longer than this (5 minutes) is a long-running query"),
    # The runbook names the following concerns without a number; these are the suite's choices.
    ThresholdSpec("idle_in_transaction_seconds", "seconds",
                  "a session idle inside an open transaction longer than this holds locks and snapshots"),
    ThresholdSpec("lock_wait_seconds", "seconds",
                  "a backend waiting for a lock longer than this is blocked"),
    ThresholdSpec("buffer_cache_hit_min_percent", "percent",
                  "share of block reads served from shared buffers; below this the database reads from disk"),
    ThresholdSpec("xid_age_max_percent", "percent",
                  "transaction-ID age as a share of the 2^31 wraparound limit"),
    ThresholdSpec("replication_lag_max_seconds", "seconds",
                  "a replica replaying further behind than this is lagging"),
    ThresholdSpec("maintenance_max_age_hours", "hours",
                  "a changed table whose last (auto)vacuum or (auto)analyze is older than this needs maintenance"),
    ThresholdSpec("maintenance_min_changed_rows", "rows",
                  "fewer changed rows than this are not significant"),
    ThresholdSpec("maintenance_min_changed_percent", "percent",
                  "changed rows as a share of live rows that count as significant"),
    ThresholdSpec("cache_memory_max_percent", "percent",
                  "Redis used_memory as a share of maxmemory (memory usage warning alert)"),
    ThresholdSpec("cache_fragmentation_max_ratio", "ratio",
                  "Redis RSS / used_memory above this wastes memory"),
    ThresholdSpec("client_error_max_percent", "percent",
                  "share of 4xx responses above which client errors are worth a look (P3)"),
    ThresholdSpec("request_rate_min_per_second", "req/s",
                  "a service must receive more traffic than this (0: any traffic at all)"),
    ThresholdSpec("inodes_max_percent", "percent",
                  "inode usage of a filesystem above this: files cannot be created though space is left"),
    ThresholdSpec("log_file_max_mib", "MiB",
                  "a log file larger than this was not rotated (runbook: log maintenance)"),
    ThresholdSpec("log_dir_max_mib", "MiB",
                  "a log directory's files together larger than this"),
    ThresholdSpec("log_rotation_max_age_hours", "hours",
                  "the newest rotated log file (name.1, name-DATE, .gz) is older than this: rotation stopped"),
    ThresholdSpec("compliance_min_percent", "percent",
                  "constitutional compliance score must stay above this (runbook: > 95 %)"),
    ThresholdSpec("policy_success_min_percent", "percent",
                  "policy evaluation success rate must stay above this (runbook: > 99 %)"),
    ThresholdSpec("tls_expiry_warning_days", "days",
                  "a certificate of a presented chain expiring within this many days must be renewed (P1)"),
    ThresholdSpec("tls_expiry_critical_days", "days",
                  "a certificate expiring within this many days (or expired) is critical (P0)"),
    ThresholdSpec("slow_query_mean_ms", "ms",
                  "a statement whose mean execution time is above this is slow (pg_stat_statements)"),
    ThresholdSpec("slow_query_min_calls", "calls",
                  "statements called fewer times than this are not judged slow"),
    ThresholdSpec("trend_regression_percent", "percent",
                  "this week's median worse than a previous week's median by more than this is a regression"),
    ThresholdSpec("capacity_critical_days", "days",
                  "a resource projected to run out within this many days needs capacity now (P1)"),
    ThresholdSpec("capacity_warning_days", "days",
                  "a resource projected to run out within this many days needs a capacity plan (P2)"),
    ThresholdSpec("apdex_t_seconds", "seconds",
                  "Apdex target time T: a request answered within T satisfies, within 4T tolerates, slower or "
                  "failed frustrates (0.5 s makes 4T = 2 s, the runbook's P95 target)"),
    ThresholdSpec("apdex_min_percent", "percent",
                  "the Apdex score, in percent, below which users count as dissatisfied (85: the Apdex "
                  "specification's 'good' band starts at 0.85)"),
    ThresholdSpec("backup_max_age_hours", "hours",
                  "the newest backup must be younger than this (daily plus slack)"),
    ThresholdSpec("rpo_seconds", "seconds",
                  "recovery point objective: the last archived WAL segment, and the newest row of a restored "
                  "backup, must be younger than this (1 h)"),
    ThresholdSpec("rto_seconds", "seconds",
                  "recovery time objective: a restore drill must finish within this (4 h)"),
    ThresholdSpec("restore_rows_tolerance_percent", "percent",
                  "a restored table's row count may differ this much from production's estimate"),
    ThresholdSpec("backup_retention_days", "days",
                  "backups are kept this long: the oldest one is about this old"),
    ThresholdSpec("pitr_window_days", "days",
                  "point-in-time recovery window: backups and WAL must reach back this far"),
    ThresholdSpec("dr_docs_max_age_days", "days",
                  "a disaster-recovery document unchanged for longer than this is out of date"),
    ThresholdSpec("cache_fragmentation_min_excess_mib", "MiB",
                  "the ratio is judged only when RSS exceeds used_memory by this much (small instances "
                  "always show a high ratio)"),
)

_BY_KEY = {spec.key: spec for spec in SPECS}
# Pairs that must stay ordered: (lower, higher).
_ORDERED = (
    ("p95_warning_seconds", "p99_critical_seconds"),
    ("p99_warning_seconds", "p99_critical_seconds"),
    ("error_rate_warning_percent", "error_rate_critical_percent"),
    ("disk_warning_percent", "disk_critical_percent"),
    # The long-query check leaves lock waiters to the lock check; that only holds in this order.
    ("lock_wait_seconds", "long_query_seconds"),
    ("tls_expiry_critical_days", "tls_expiry_warning_days"),
    ("capacity_critical_days", "capacity_warning_days"),
    ("pitr_window_days", "backup_retention_days"),
)


@dataclass(frozen=True)
class Thresholds:
    """Resolved thresholds: the runbook's values with an environment's overrides applied.

    The defaults here are the runbook's numbers; ``SPECS`` says what each one means.
    """

    p95_warning_seconds: float = 2.0
    apdex_t_seconds: float = 0.5
    apdex_min_percent: float = 85.0
    p99_warning_seconds: float = 5.0
    p99_critical_seconds: float = 10.0
    error_rate_warning_percent: float = 1.0
    error_rate_critical_percent: float = 5.0
    cache_hit_rate_min_percent: float = 85.0
    pool_usage_max_percent: float = 80.0
    cpu_max_percent: float = 80.0
    memory_max_percent: float = 85.0
    disk_warning_percent: float = 90.0
    disk_critical_percent: float = 95.0
    long_query_seconds: float = 300.0
    idle_in_transaction_seconds: float = 60.0
    lock_wait_seconds: float = 30.0
    buffer_cache_hit_min_percent: float = 90.0
    xid_age_max_percent: float = 50.0
    replication_lag_max_seconds: float = 30.0
    maintenance_max_age_hours: float = 168.0
    maintenance_min_changed_rows: float = 1000.0
    maintenance_min_changed_percent: float = 10.0
    cache_memory_max_percent: float = 85.0
    cache_fragmentation_max_ratio: float = 1.5
    cache_fragmentation_min_excess_mib: float = 64.0
    client_error_max_percent: float = 10.0
    request_rate_min_per_second: float = 0.0
    inodes_max_percent: float = 90.0
    log_file_max_mib: float = 100.0
    log_dir_max_mib: float = 1024.0
    log_rotation_max_age_hours: float = 26.0
    compliance_min_percent: float = 95.0
    policy_success_min_percent: float = 99.0
    tls_expiry_warning_days: float = 30.0
    tls_expiry_critical_days: float = 7.0
    slow_query_mean_ms: float = 500.0
    slow_query_min_calls: float = 10.0
    trend_regression_percent: float = 20.0
    capacity_critical_days: float = 30.0
    capacity_warning_days: float = 90.0
    backup_max_age_hours: float = 26.0
    rpo_seconds: float = 3600.0
    rto_seconds: float = 14400.0
    restore_rows_tolerance_percent: float = 10.0
    backup_retention_days: float = 30.0
    pitr_window_days: float = 7.0
    dr_docs_max_age_days: float = 90.0

    @staticmethod
    def spec(key: str) -> ThresholdSpec:
        return _BY_KEY[key]

    @classmethod
    def from_table(cls, table: dict[str, Any], *, source: str) -> Thresholds:
        """Build from a ``[thresholds]`` table; unknown keys and bad values are ConfigErrors."""
        values: dict[str, float] = {}
        for key, written in table.items():
            raw = written
            spec = _BY_KEY.get(key)
            if spec is None:
                raise ConfigError(
                    source=source, key=f"thresholds.{key}", problem="unknown threshold",
                    fix="use one of " + ", ".join(sorted(_BY_KEY)),
                )
            if isinstance(raw, str):  # a ${VAR} expanded to text
                with contextlib.suppress(ValueError):
                    raw = float(raw)
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ConfigError(
                    source=source, key=f"thresholds.{key}",
                    problem=f"{raw!r} is not a number", fix=f"write a number of {spec.unit}",
                )
            value = float(raw)
            floor_ok = value >= 0 if spec.unit == "req/s" else value > 0
            if not floor_ok or (spec.unit == "percent" and value > 100):
                allowed = "between 0 and 100" if spec.unit == "percent" else "of 0 or more" if spec.unit == "req/s" \
                    else "above 0"
                raise ConfigError(
                    source=source, key=f"thresholds.{key}", problem=f"{raw!r} is out of range",
                    fix=f"use a value {allowed} ({spec.unit})",
                )
            values[key] = value
        resolved = cls(**values)
        for low, high in _ORDERED:
            if getattr(resolved, low) > getattr(resolved, high):
                raise ConfigError(
                    source=source, key=f"thresholds.{low}",
                    problem=f"{getattr(resolved, low)} is above {high} = {getattr(resolved, high)}",
                    fix=f"keep {low} at or below {high}",
                )
        return resolved

    def overrides(self) -> dict[str, float]:
        """The values that differ from the runbook's, for the report header."""
        default = Thresholds()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)(?::([^{}]*))?\}")


def placeholders(text: str) -> list[str]:
    """The threshold names a text refers to as ``{name}`` or ``{name:spec}``."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(text)]


def in_words(text: str, thresholds: Thresholds) -> str:
    """``text`` (a check's docstring) with each ``{threshold}`` placeholder replaced by the value in force.

    Docstrings name thresholds instead of writing their defaults, so a team that sets 90 % reads 90 % in its
    report. A name that is not a threshold is left as written (a self-test refuses such docstrings).
    """
    def value(match: re.Match[str]) -> str:
        name, spec = match.group(1), match.group(2) or "g"
        if name not in _FIELDS:
            return match.group(0)
        try:
            return format(getattr(thresholds, name), spec)
        except ValueError:
            return match.group(0)

    return _PLACEHOLDER.sub(value, text)


_FIELDS = frozenset(f.name for f in fields(Thresholds))
