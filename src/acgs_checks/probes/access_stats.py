"""Monday security review: access statistics (the fixed target ``access``).

Requests by status class and by client for the last 24 h and each of the 7 days before, from PromQL
evaluated at each day's end or from access logs aggregated on the host (awk; only counts leave the host).
"""

from __future__ import annotations

import datetime
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from acgs_checks import kinds
from acgs_checks.environment import Environment
from acgs_checks.kinds import Fixed
from acgs_checks.probes import prometheus as prom
from acgs_checks.probes.host import read_on_host
from acgs_checks.records import JsonRecord

DAY = 86400.0


@dataclass(frozen=True)
class AccessStats(JsonRecord):
    """Day 0 is the last 24 h, day k the 24 h before that by k days; each with totals by class and top clients."""

    target: str
    source: str
    answered: bool
    error: str = ""
    days: list[dict[str, Any]] = field(default_factory=list)   # {"day": k, "total", "classes": {}, "clients": {}}
    denied: str = ""  # the target refused the suite: the credential or grant to check


# One pass of awk over the files: hour buckets (dd/Mon/yyyy:HH) by status class and by client.
_AWK = r"""
{ if (match($0, /\[[0-9][0-9]\/[A-Za-z][A-Za-z][A-Za-z]\/[0-9][0-9][0-9][0-9]:[0-9][0-9]/)) {
    b = substr($0, RSTART + 1, 14); n = split($0, q, "\""); split(q[3], r, " "); c = substr(r[1], 1, 1) "xx";
    k[b " " c]++; a[b " " $1]++ } }
END { for (x in k) print "K", x, k[x]; for (x in a) print "A", x, a[x] }
"""
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                       "Dec"), start=1)}


def _bucket_time(bucket: str) -> float | None:
    """The Unix time of an hour bucket dd/Mon/yyyy:HH (access-log times are read as UTC)."""
    try:
        day, month, rest = bucket.split("/")
        year, hour = rest.split(":")
        return datetime.datetime(int(year), _MONTHS[month], int(day), int(hour), tzinfo=datetime.UTC).timestamp()
    except (ValueError, KeyError):
        return None


def aggregate_access(lines: str, now: float) -> list[dict[str, Any]]:
    """awk's hour buckets into 8 days of 24 h ending now (an hour counts in the day its start falls in: day 0 holds
    the current, partial hour and the 23 before it)."""
    days: list[dict[str, Any]] = [{"day": k, "total": 0.0, "classes": Counter(), "clients": Counter()}
                                  for k in range(8)]
    for line in lines.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[0] not in ("K", "A"):
            continue
        start = _bucket_time(parts[1])
        if start is None:
            continue
        k = int((now - start) // DAY) if start <= now else 0
        if not 0 <= k < 8:
            continue
        if parts[0] == "K":
            days[k]["classes"][parts[2]] += float(parts[3])
            days[k]["total"] += float(parts[3])
        else:
            days[k]["clients"][parts[2]] += float(parts[3])
    for day in days:
        day["classes"] = dict(day["classes"])
        day["clients"] = dict(Counter(day["clients"]).most_common(20))
    return days


async def _access_from_hosts(env: Environment) -> AccessStats:
    text: list[str] = []
    shown = ", ".join(f"{a.path} on {a.host}" for a in env.security.access_logs)
    for log in env.security.access_logs:
        # Only the files' names are globbed by the shell; zcat -f reads rotated .gz files too.
        command = (f"set -- {log.path}; [ -e \"$1\" ] || {{ echo 'no file matches {log.path}' >&2; exit 1; }}; "
                   f"zcat -f -- \"$@\" | awk {shlex.quote(_AWK)}")
        stdout, error = await read_on_host(env, log.host, command, timeouts=5)
        if error:
            return AccessStats("access", shown, answered=False, error=error)
        text.append(stdout)
    return AccessStats("access", shown, answered=True, days=aggregate_access("\n".join(text), time.time()))


async def _access_from_prometheus(env: Environment) -> AccessStats:
    assert env.prometheus is not None
    now = time.time()
    days: list[dict[str, Any]] = []
    for k in range(8):
        at = now - k * DAY
        series, error = await prom.vector(env.prometheus, env.security.access_query, at)
        if error and not error.startswith("no data for"):
            return AccessStats("access", f"PromQL {env.security.access_query}", answered=False, error=error)
        classes = {labels.get("class", "?"): value for labels, value in series}
        clients: dict[str, float] = {}
        if env.security.access_clients_query:
            found, error = await prom.vector(env.prometheus, env.security.access_clients_query, at)
            clients = dict(Counter({labels.get("client", "?"): v for labels, v in found}).most_common(20))
        days.append({"day": k, "total": sum(classes.values()), "classes": classes, "clients": clients})
    return AccessStats("access", f"PromQL {env.security.access_query}", answered=True, days=days)


async def probe_access(target: Fixed, job: kinds.Job) -> AccessStats:
    env = job.env
    if env.security.access_query and env.prometheus is not None:
        return await _access_from_prometheus(env)
    return await _access_from_hosts(env)


ACCESS = kinds.register(kinds.ProbeKind(
    name="access", section="security", record=AccessStats, probe=probe_access,
    fixed={"access_probe": "access"},
    targets=lambda env: (Fixed("access"),) if (env.security.access_query and env.prometheus is not None)
    or env.security.access_logs else (),
    grant=("read access to the access log files on their host (the ssh account, often group adm), or to the "
           "Prometheus API for access_query"),
    doc="requests by status class and client for the last 24 h and each of the 7 days before",
))
