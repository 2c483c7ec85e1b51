"""Sandbox faults: ``TARGET:FAULT[=ARG]`` makes one check fail for the reason it exists."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from acgs_checks.errors import ConfigError

SERVICE_NAMES = ("auth", "constitutional-ai", "policy-governance", "governance-synthesis")
DATABASE = "db"
POOLER = "pgbouncer"
CACHE = "cache"


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 600:
        raise ValueError("must be between 0 and 600 seconds")
    return value


def _share(text: str) -> float:
    """A share as a ratio: 0.05, 5% and 5 all mean five percent."""
    raw = text.strip()
    value = float(raw.rstrip("%")) / 100 if raw.endswith("%") else float(raw)
    if value > 1:
        value /= 100
    if not 0 <= value <= 1:
        raise ValueError("must be a share between 0 and 1 (or a percentage)")
    return value


def _count(text: str) -> float:
    value = float(text)
    if not value.is_integer() or not 1 <= value <= 1000:
        raise ValueError("must be a whole number from 1 to 1000")
    return value


def _days(text: str) -> float:
    value = float(text)
    if not -3650 <= value <= 3650:
        raise ValueError("must be a number of days between -3650 and 3650")
    return value


def _positive_days(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3650:
        raise ValueError("must be a number of days above 0 and at most 3650")
    return value


def _percent(text: str) -> float:
    value = float(text.rstrip("%"))
    if not 0 < value <= 100:
        raise ValueError("must be a percentage between 0 and 100")
    return value


@dataclass(frozen=True)
class FaultSpec:
    name: str
    help: str
    parse_arg: Callable[[str], float] | None = None  # None: the fault takes no argument


SERVICE_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("down", "nothing listens on the service's port (connection refused)"),
        FaultSpec("503", "the health endpoint answers 503 with status fail"),
        FaultSpec("slow", "the health endpoint answers after SECONDS", _seconds),
        FaultSpec("hang", "the service accepts the connection and never answers"),
        FaultSpec("degraded", "the health endpoint answers 200 with status warn"),
        FaultSpec("latency", "the SLO endpoint's latency is spread so that its P95 is SECONDS", _seconds),
        FaultSpec("errors", "this SHARE of the SLO endpoint's responses are 500", _share),
        FaultSpec("info-type", "(constitutional-ai) /metrics declares # TYPE acgs_service_info info, as ACGS-2's "
                  "middleware writes it: Prometheus refuses the whole scrape"),
        FaultSpec("failed-logins", "(auth only) N failed logins hit the stack's Redis and PostgreSQL", _count),
    )
}
GLOBAL_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("compliance", "the constitutional compliance score becomes SCORE (0..1 or %)", _share),
        FaultSpec("policy-success", "the policy evaluation success rate becomes SHARE (0..1 or %)", _share),
    )
}
DATABASE_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("down", "PostgreSQL is not running (connection refused)"),
        FaultSpec("long-query", "a statement keeps running past the long-query threshold"),
        FaultSpec("idle-in-transaction", "a session sits idle inside an open transaction"),
        FaultSpec("connections", "idle sessions fill PERCENT of the usable connection slots", _percent),
        FaultSpec("blocked-lock", "one session holds a table lock another one waits for"),
        FaultSpec("slow-query", "a statement is called 12 times at 600 ms each (pg_stat_statements)"),
    )
}
POOLER_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("saturated", "clients hold every server connection of the pool; more clients wait"),
    )
}
CACHE_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("down", "Redis is not running (connection refused)"),
        FaultSpec("misses", "the application's lookups start missing: the hit rate collapses"),
        FaultSpec("memory", "used_memory reaches PERCENT of maxmemory", _percent),
        FaultSpec("evictions", "keys are evicted under memory pressure during the measuring window"),
    )
}


HOST = "host"
LOGS = "logs"
SERVICE = "service"
HOST_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("disk", "the sandbox host's own filesystem is filled to PERCENT (needs root to mount it)",
                  _percent),
        FaultSpec("inodes", "95 % of that filesystem's inodes are used (needs root)"),
        FaultSpec("cpu", "every core is kept busy for a bounded 20 s and the CPU line is put at 50 %"),
    )
}
LOGS_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("oversize", "the current log file grows to 101 MiB (sparse)"),
        FaultSpec("no-rotation", "the newest rotated log file is three days old"),
        FaultSpec("access-spike", "30 % of the last 24 h's requests in the access log are 5xx (before: 1 %)"),
    )
}
TLS = "tls"
BACKUP = "backup"
RETENTION = "retention"
DOCS = "docs"
ALERTS = "alerts"
HISTORY = "history"
TLS_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("expiring", "the endpoint's certificate expires in DAYS days", _days),
        FaultSpec("expired", "the endpoint's certificate expired yesterday"),
        FaultSpec("self-signed", "the endpoint presents a self-signed certificate no store trusts"),
        FaultSpec("wrong-host", "the certificate names wrong.example, not the endpoint"),
        FaultSpec("old-protocol", "the endpoint also accepts TLS 1.0 and 1.1"),
    )
}
BACKUP_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("stale", "the newest backup is 30 hours old (the job stopped)"),
        FaultSpec("missing", "the backup directory is empty"),
        FaultSpec("corrupt", "the newest backup's data is cut off: its table of contents still lists (pg_restore "
                  "--list), restoring it fails"),
    )
}
RETENTION_FAULTS = {"short": FaultSpec("short", "only the last 5 days of backups are kept (policy: 30)")}
DOCS_FAULTS = {"stale": FaultSpec("stale", "a DR document last changed 120 days ago")}
ALERTS_FAULTS = {"critical": FaultSpec("critical", "a critical alert has been firing for 20 minutes")}
HISTORY_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("regression", "the history store holds a week of auth P95 60 % above the weeks before"),
        FaultSpec("disk-fills", "the history store holds a sandbox disk that fills up in DAYS days", _positive_days),
    )
}
SERVICE_HOST_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("stopped", "the sandbox host's service process is not running"),
    )
}


def _faults_for(target: str) -> dict[str, FaultSpec] | None:
    if target in SERVICE_NAMES:
        return SERVICE_FAULTS
    return {DATABASE: DATABASE_FAULTS, POOLER: POOLER_FAULTS, CACHE: CACHE_FAULTS, HOST: HOST_FAULTS,
            LOGS: LOGS_FAULTS, SERVICE: SERVICE_HOST_FAULTS, TLS: TLS_FAULTS, BACKUP: BACKUP_FAULTS,
            RETENTION: RETENTION_FAULTS, DOCS: DOCS_FAULTS, ALERTS: ALERTS_FAULTS, HISTORY: HISTORY_FAULTS}.get(target)


@dataclass(frozen=True)
class Fault:
    target: str
    name: str
    arg: float | None = None

    def __str__(self) -> str:
        arg = "" if self.arg is None else f"={self.arg:g}"
        return f"{self.target}:{self.name}{arg}" if self.target else f"{self.name}{arg}"


def _usage(text: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(source="--sandbox-fault", key=text, problem=problem, fix=fix)


def parse(text: str) -> Fault:
    """Parse one ``--sandbox-fault`` value; a bad one is a one-line ConfigError."""
    target, sep, rest = text.strip().partition(":")
    if not sep and "=" in text:
        return _parse_global(text.strip())
    if not sep or not target or not rest:
        raise _usage(text, "not of the form TARGET:FAULT[=ARG]",
                     "write e.g. auth:down or auth:slow=3")
    specs = _faults_for(target)
    if specs is None:
        raise _usage(text, f"unknown sandbox target {target!r}",
                     "use one of " + ", ".join((*SERVICE_NAMES, DATABASE, POOLER, CACHE, HOST, LOGS, SERVICE, TLS,
                                                BACKUP, RETENTION, DOCS, ALERTS, HISTORY)))
    name, has_arg, raw_arg = rest.partition("=")
    spec = specs.get(name)
    if spec is None:
        kind = "a service" if specs is SERVICE_FAULTS else target
        raise _usage(text, f"unknown fault {name!r} for {kind}",
                     "use one of " + ", ".join(f"{n}{'=ARG' if s.parse_arg else ''}" for n, s in specs.items()))
    if name == "failed-logins" and target != "auth":
        raise _usage(text, "failed-logins applies to the auth service only", "write auth:failed-logins=N")
    if spec.parse_arg is None:
        if has_arg:
            raise _usage(text, f"fault {name!r} takes no argument", f"write {target}:{name}")
        return Fault(target, name)
    if not has_arg:
        raise _usage(text, f"fault {name!r} needs an argument", f"write {target}:{name}=VALUE")
    try:
        return Fault(target, name, spec.parse_arg(raw_arg))
    except ValueError as exc:
        raise _usage(text, f"bad argument {raw_arg!r} ({exc})", f"write {target}:{name}=VALUE") from None


def _parse_global(text: str) -> Fault:
    name, _, raw_arg = text.partition("=")
    spec = GLOBAL_FAULTS.get(name)
    if spec is None or spec.parse_arg is None:
        raise _usage(text, f"unknown fault {name!r}",
                     "use TARGET:FAULT[=ARG], or one of " + ", ".join(f"{n}=ARG" for n in GLOBAL_FAULTS))
    try:
        return Fault("", name, spec.parse_arg(raw_arg))
    except ValueError as exc:
        raise _usage(text, f"bad argument {raw_arg!r} ({exc})", f"write {name}=VALUE") from None


def parse_all(texts: Iterable[str]) -> tuple[Fault, ...]:
    faults = tuple(parse(text) for text in texts)
    seen: dict[str, Fault] = {}
    for fault in faults:
        key = fault.target or fault.name  # a global fault is its own target
        if key in seen:
            raise _usage(str(fault), f"{key} already has fault {seen[key]}", "give each target at most one fault")
        seen[key] = fault
    return faults


def describe() -> str:
    """Every fault with its help, for an argparse help string (so a literal % is written %%)."""
    groups = (("<service>", SERVICE_FAULTS), (DATABASE, DATABASE_FAULTS), (POOLER, POOLER_FAULTS),
              (CACHE, CACHE_FAULTS), (HOST, HOST_FAULTS), (LOGS, LOGS_FAULTS), (SERVICE, SERVICE_HOST_FAULTS),
              (TLS, TLS_FAULTS), (BACKUP, BACKUP_FAULTS), (RETENTION, RETENTION_FAULTS), (DOCS, DOCS_FAULTS),
              (ALERTS, ALERTS_FAULTS), (HISTORY, HISTORY_FAULTS))
    scoped = [f"{target}:{n}{'=ARG' if s.parse_arg else ''} ({s.help})"
              for target, specs in groups for n, s in specs.items()]
    text = "; ".join(scoped + [f"{n}=ARG ({s.help})" for n, s in GLOBAL_FAULTS.items()])
    return text.replace("%", "%%")
