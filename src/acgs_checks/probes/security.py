"""Monday security review: failed logins, access statistics, firing alerts, and whether Redis lets strangers in.

Every read is bounded and read-only:

* ``failed_logins`` (one target per ``[[security.failed_logins]]`` source): a PromQL query; a
  Redis ``ACL LOG`` (entries with reason ``auth``, needs ``+acl|log``); or PostgreSQL's
  "password authentication failed" lines, grepped on a host or read with ``pg_read_file``
  (needs ``pg_read_server_files``) in a read-only transaction;
* ``access`` (fixed): requests by status class and by client for the last 24 h and each of the
  7 days before, from PromQL evaluated at each day's end or from access logs aggregated on the
  host (awk; only counts leave the host);
* ``alerts`` (fixed): the firing alerts from Alertmanager's ``/api/v2/alerts`` (active, not
  silenced, not inhibited) or Prometheus' ``/api/v1/alerts``;
* ``cache_security`` (per cache): one unauthenticated connection that sends PING and expects
  to be refused. It waits for the daily cache probe of the same Redis, if that runs too.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from acgs_checks import kinds
from acgs_checks.environment import Cache, Environment, display_url
from acgs_checks.environment.weekly import FailedLoginSource
from acgs_checks.kinds import Fixed
from acgs_checks.probes import http
from acgs_checks.probes import prometheus as prom
from acgs_checks.probes.cache import client_options, failure_text, protocol_error
from acgs_checks.probes.host import read_on_host
from acgs_checks.probes.logs import seconds_since
from acgs_checks.probes.postgres import connect_budget, connect_error, open_connection, run_query
from acgs_checks.records import JsonRecord

DAY = 86400.0
LOG_BYTES = 1024 * 1024
PG_FAILED = "password authentication failed"
_USER = re.compile(r'for user "([^"]*)"')
_CLIENT = re.compile(r"(?:host=|\[|\s)((?:\d{1,3}\.){3}\d{1,3}|[0-9a-f]*:[0-9a-f:]+)(?:\(\d+\)|\]|\s|$)")


# --- failed logins ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FailedLogins(JsonRecord):
    target: str
    source: str
    read: bool
    error: str = ""
    privilege: str = ""            # the grant that fixes a refused read
    total: float = 0.0
    by_user: dict[str, float] = field(default_factory=dict)
    by_client: dict[str, float] = field(default_factory=dict)
    note: str = ""                 # how far back the read reached, when not the whole 24 h


def count_pg_lines(text: str, now: float) -> tuple[float, dict[str, float], dict[str, float], str]:
    """Failed password logins of the last 24 h in a server log excerpt: (total, by user, by client, note)."""
    users: Counter[str] = Counter()
    clients: Counter[str] = Counter()
    undated = 0
    oldest: float | None = None
    for line in text.splitlines():
        age = seconds_since(line, now)
        if age is not None:
            oldest = age if oldest is None else max(oldest, age)
        if PG_FAILED not in line:
            continue
        if age is None:
            undated += 1
        elif age > DAY:
            continue
        user = _USER.search(line)
        client = _CLIENT.search(line.split("FATAL", 1)[0])
        users[user.group(1) if user else "?"] += 1
        clients[client.group(1) if client else "?"] += 1
    note = ""
    if undated:
        note = f"{undated} line(s) without a timestamp counted as recent (log_line_prefix should start with %m)"
    elif oldest is not None and oldest < DAY and len(text.encode()) >= LOG_BYTES:
        note = f"the excerpt reaches back {oldest / 3600:.1f} h only (the last {LOG_BYTES // 1024} KiB)"
    return float(sum(users.values())), dict(users), dict(clients), note


async def _from_query(source: FailedLoginSource, env: Environment) -> FailedLogins:
    assert env.prometheus is not None
    series, error = await prom.vector(env.prometheus, source.query)
    shown = f"PromQL {source.query}"
    if error.startswith("no data for"):
        # An empty answer is also what a misspelt metric gives: it is not read as zero unless the query says so.
        return FailedLogins(source.name, shown, read=False, error="the query returned no series; if none means no "
                            "failed logins, end it with `or vector(0)`")
    if error:
        return FailedLogins(source.name, shown, read=False, error=error)
    users: dict[str, float] = {}
    clients: dict[str, float] = {}
    for labels, value in series:
        key = labels.get("user") or labels.get("username") or ",".join(f"{k}={v}" for k, v in labels.items()) or "all"
        users[key] = users.get(key, 0.0) + value
        client = labels.get("client") or labels.get("client_addr") or labels.get("instance")
        if client:
            clients[client] = clients.get(client, 0.0) + value
    return FailedLogins(source.name, shown, read=True, total=sum(v for _, v in series), by_user=users,
                        by_client=clients)


async def _from_acl_log(source: FailedLoginSource, env: Environment) -> FailedLogins:
    import redis.asyncio as aioredis  # noqa: PLC0415
    import redis.exceptions  # noqa: PLC0415


    cache = next(c for c in env.caches if c.name == source.cache)
    shown = f"ACL LOG of {display_url(cache.url)}"
    client = aioredis.Redis.from_url(cache.url, socket_timeout=source.timeout_seconds,
                                     socket_connect_timeout=source.timeout_seconds, **client_options(cache))
    try:
        async with asyncio.timeout(source.timeout_seconds * 2):
            entries = await client.execute_command("ACL", "LOG", "128")  # type: ignore[no-untyped-call]
    except redis.exceptions.ResponseError as exc:
        if "NOPERM" in str(exc) or "no permissions" in str(exc):
            return FailedLogins(source.name, shown, read=False, error=str(exc),
                                privilege=f"ACL SETUSER <user> +acl|log (on {cache.name})")
        return FailedLogins(source.name, shown, read=False, error=f"ACL LOG failed: {exc}")
    except (OSError, redis.exceptions.RedisError, TimeoutError) as exc:
        return FailedLogins(source.name, shown, read=False, error=failure_text(exc, source.timeout_seconds))
    except Exception as exc:  # noqa: BLE001 - bytes that are not RESP make the client library raise anything
        return FailedLogins(source.name, shown, read=False, error=protocol_error("ACL LOG's entries", exc))
    finally:
        await client.aclose()
    users: Counter[str] = Counter()
    clients: Counter[str] = Counter()
    for raw in entries if isinstance(entries, list) else []:
        try:
            entry = _pairs(raw)
            if entry.get("reason") != "auth" or float(entry.get("age-seconds", 0)) > DAY:
                continue
            count = int(entry.get("count", 1))
        except (ValueError, TypeError, AttributeError) as exc:
            return FailedLogins(source.name, shown, read=False, error=protocol_error("ACL LOG's entries", exc))
        users[str(entry.get("username", "?"))] += count
        info = str(entry.get("client-info", ""))
        addr = re.search(r"addr=(\S+)", info)
        clients[addr.group(1).rsplit(":", 1)[0] if addr else "?"] += count
    return FailedLogins(source.name, shown, read=True, total=float(sum(users.values())), by_user=dict(users),
                        by_client=dict(clients),
                        note="ACL LOG keeps the last 128 entries; a repeated failure counts in the entry it joined")


def _pairs(raw: Any) -> dict[str, Any]:
    """An ACL LOG entry, as a dict whether the client gave a flat list or a mapping."""
    if isinstance(raw, dict):
        return {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}
    items = [x.decode() if isinstance(x, bytes) else x for x in raw]
    return dict(zip(items[::2], items[1::2], strict=False))


async def _from_pg_log(source: FailedLoginSource, env: Environment) -> FailedLogins:
    now = time.time()
    if source.host:

        shown = f"{source.path} on host {source.host}"
        path = shlex.quote(source.path)
        command = (f"if [ ! -r {path} ]; then echo 'No such file or not readable: {source.path}' >&2; exit 1; fi; "
                   f"tail -c {LOG_BYTES} -- {path}")
        text, error = await read_on_host(env, source.host, command)
        if error:
            return FailedLogins(source.name, shown, read=False, error=error)
    else:
        shown = f"pg_read_file('{source.path}') on {source.database}"
        text, error, privilege = await _pg_read_file(source, env)
        if error:
            return FailedLogins(source.name, shown, read=False, error=error, privilege=privilege)
    total, users, clients, note = count_pg_lines(text, now)
    return FailedLogins(source.name, shown, read=True, total=total, by_user=users, by_client=clients, note=note)


async def _pg_read_file(source: FailedLoginSource, env: Environment) -> tuple[str, str, str]:
    """The last MiB of the server log through SQL, in a read-only transaction: (text, error, grant)."""
    import psycopg  # noqa: PLC0415


    db = next(d for d in env.databases if d.name == source.database)
    try:
        async with asyncio.timeout(connect_budget(db) + 0.5):
            conn = await open_connection(db, autocommit=False)
            await conn.set_read_only(True)
    except (OSError, psycopg.Error, TimeoutError) as exc:
        return "", connect_error(exc, db)[0], ""
    errors: dict[str, str] = {}
    try:
        rows = await run_query(conn, errors, "log", "SELECT pg_read_file(%(p)s, greatest(0, (pg_stat_file(%(p)s)).size "
                            f"- {LOG_BYTES}), {LOG_BYTES}) AS text", {"p": source.path}, timeout=db.timeout_seconds)
    finally:
        await conn.close()
    if "log" in errors:
        denied = "permission denied" in errors["log"]
        return "", errors["log"], "GRANT pg_read_server_files TO <role> (or read the log on a host: set host)" \
            if denied else ""
    return str(rows[0]["text"] or "") if rows else "", "", ""


async def probe_failed_logins(source: FailedLoginSource, job: kinds.Job) -> FailedLogins:
    env = job.env
    reader = _from_query if source.query else _from_acl_log if source.cache else _from_pg_log
    bound = source.timeout_seconds * 3 + 2
    try:
        return await asyncio.wait_for(reader(source, env), timeout=bound)
    except TimeoutError:
        return FailedLogins(source.name, source.query or source.cache or source.path, read=False,
                            error=f"no answer within {bound:g} s")


FAILED_LOGINS = kinds.register(kinds.ProbeKind(
    name="failed_logins", section="security.failed_logins", record=FailedLogins, param="source",
    fixture="failed_logins_probe", probe=probe_failed_logins, targets=lambda env: env.security.failed_logins,
    doc="failed logins of the last 24 h from one source (PromQL, Redis ACL LOG, PostgreSQL server log)",
))


# --- access statistics --------------------------------------------------------------------------

@dataclass(frozen=True)
class AccessStats(JsonRecord):
    """Day 0 is the last 24 h, day k the 24 h before that by k days; each with totals by class and top clients."""

    target: str
    source: str
    read: bool
    error: str = ""
    days: list[dict[str, Any]] = field(default_factory=list)   # {"day": k, "total", "classes": {}, "clients": {}}


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
            return AccessStats("access", shown, read=False, error=error)
        text.append(stdout)
    return AccessStats("access", shown, read=True, days=aggregate_access("\n".join(text), time.time()))


async def _access_from_prometheus(env: Environment) -> AccessStats:
    assert env.prometheus is not None
    now = time.time()
    days: list[dict[str, Any]] = []
    for k in range(8):
        at = now - k * DAY
        series, error = await prom.vector(env.prometheus, env.security.access_query, at)
        if error and not error.startswith("no data for"):
            return AccessStats("access", f"PromQL {env.security.access_query}", read=False, error=error)
        classes = {labels.get("class", "?"): value for labels, value in series}
        clients: dict[str, float] = {}
        if env.security.access_clients_query:
            found, error = await prom.vector(env.prometheus, env.security.access_clients_query, at)
            clients = dict(Counter({labels.get("client", "?"): v for labels, v in found}).most_common(20))
        days.append({"day": k, "total": sum(classes.values()), "classes": classes, "clients": clients})
    return AccessStats("access", f"PromQL {env.security.access_query}", read=True, days=days)


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
    doc="requests by status class and client for the last 24 h and each of the 7 days before",
))


# --- firing alerts ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FiringAlerts(JsonRecord):
    target: str
    source: str
    read: bool
    error: str = ""
    alerts: list[dict[str, Any]] = field(default_factory=list)  # name, severity, labels, firing_seconds


def _started(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def probe_alerts(target: Fixed, job: kinds.Job) -> FiringAlerts:
    env = job.env
    now = time.time()
    if env.alertmanager is not None:
        am = env.alertmanager
        url = am.url.rstrip("/") + "/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false"
        result, body = await http.exchange(url, target="alerts", timeout=am.timeout_seconds, headers=am.headers,
                                           body_limit=8 * 1024 * 1024)
        source = f"Alertmanager {display_url(am.url)}"
        document, unread = http.json_body(result, body) if result.reachable and result.status == 200 else (None, "")
        if not isinstance(document, list):
            why = result.detail or f"HTTP {result.status}, {unread or 'expected 200 with a JSON list'}"
            return FiringAlerts("alerts", source, read=False, error=f"GET {display_url(url)} → {why}")
        raw = [(a.get("labels") or {}, a.get("startsAt")) for a in document if isinstance(a, dict)
               and (a.get("status") or {}).get("state", "active") == "active"]
    else:

        assert env.prometheus is not None
        source = f"Prometheus {display_url(env.prometheus.url)} /api/v1/alerts"
        result, document, unread = await prom.api_document(env.prometheus, "/api/v1/alerts")
        alerts = ((document or {}).get("data") or {}).get("alerts") if isinstance(document, dict) else None
        if not result.reachable or not isinstance(alerts, list):
            return FiringAlerts("alerts", source, read=False, error=result.detail or
                                f"HTTP {result.status}, {unread or 'expected the alerts API JSON'}")
        raw = [(a.get("labels") or {}, a.get("activeAt")) for a in alerts if a.get("state") == "firing"]
    found = []
    for labels, started in raw:
        since = _started(started)
        found.append({"name": labels.get("alertname", "?"), "severity": str(labels.get("severity", "")).lower(),
                      "labels": labels, "firing_seconds": None if since is None else round(now - since, 1)})
    return FiringAlerts("alerts", source, read=True, alerts=found)


ALERTS = kinds.register(kinds.ProbeKind(
    name="alerts", section="alertmanager", record=FiringAlerts, probe=probe_alerts,
    fixed={"alerts_probe": "alerts"},
    targets=lambda env: (Fixed("alerts"),) if env.alertmanager is not None or env.prometheus is not None else (),
    doc="the alerts firing now, from Alertmanager or Prometheus",
))


# --- Redis: refuses strangers -------------------------------------------------------------------

@dataclass(frozen=True)
class CacheAccess(JsonRecord):
    target: str
    url: str
    answered: bool
    error: str = ""
    anonymous: str = ""     # "refused" (what we want), "accepted", or "" when not reached
    reply: str = ""


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
    doc="one unauthenticated PING per Redis: it must be refused",
))

__all__ = ["ACCESS", "ALERTS", "CACHE_ACCESS", "FAILED_LOGINS", "AccessStats", "CacheAccess", "FailedLogins",
           "FiringAlerts", "aggregate_access", "count_pg_lines"]
