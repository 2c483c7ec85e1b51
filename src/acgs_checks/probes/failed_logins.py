"""Monday security review: failed logins of the last 24 h, one target per ``[[security.failed_logins]]`` source.

A source is a PromQL query; a Redis ``ACL LOG`` (entries with reason ``auth``, needs ``+acl|log``); or
PostgreSQL's "password authentication failed" lines, grepped on a host or read with ``pg_read_file`` (needs
``pg_read_server_files``) in a read-only transaction. Every read is bounded and read-only.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from acgs_checks import kinds
from acgs_checks.environment import Environment, display_url
from acgs_checks.environment.weekly import FailedLoginSource
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


@dataclass(frozen=True)
class FailedLogins(JsonRecord):
    target: str
    source: str
    answered: bool
    error: str = ""
    total: float = 0.0
    by_user: dict[str, float] = field(default_factory=dict)
    by_client: dict[str, float] = field(default_factory=dict)
    note: str = ""                 # how far back the read reached, when not the whole 24 h
    denied: str = ""  # the read was refused: the grant that fixes it


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
        return FailedLogins(source.name, shown, answered=False, error="the query returned no series; if none means no "
                            "failed logins, end it with `or vector(0)`")
    if error:
        return FailedLogins(source.name, shown, answered=False, error=error)
    users: dict[str, float] = {}
    clients: dict[str, float] = {}
    for labels, value in series:
        key = labels.get("user") or labels.get("username") or ",".join(f"{k}={v}" for k, v in labels.items()) or "all"
        users[key] = users.get(key, 0.0) + value
        client = labels.get("client") or labels.get("client_addr") or labels.get("instance")
        if client:
            clients[client] = clients.get(client, 0.0) + value
    return FailedLogins(source.name, shown, answered=True, total=sum(v for _, v in series), by_user=users,
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
            return FailedLogins(source.name, shown, answered=False, error=str(exc),
                                denied=f"ACL SETUSER <user> +acl|log (on {cache.name})")
        return FailedLogins(source.name, shown, answered=False, error=f"ACL LOG failed: {exc}")
    except (OSError, redis.exceptions.RedisError, TimeoutError) as exc:
        return FailedLogins(source.name, shown, answered=False, error=failure_text(exc, source.timeout_seconds))
    except Exception as exc:  # noqa: BLE001 - bytes that are not RESP make the client library raise anything
        return FailedLogins(source.name, shown, answered=False, error=protocol_error("ACL LOG's entries", exc))
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
            return FailedLogins(source.name, shown, answered=False, error=protocol_error("ACL LOG's entries", exc))
        users[str(entry.get("username", "?"))] += count
        info = str(entry.get("client-info", ""))
        addr = re.search(r"addr=(\S+)", info)
        clients[addr.group(1).rsplit(":", 1)[0] if addr else "?"] += count
    return FailedLogins(source.name, shown, answered=True, total=float(sum(users.values())), by_user=dict(users),
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
            return FailedLogins(source.name, shown, answered=False, error=error)
    else:
        shown = f"pg_read_file('{source.path}') on {source.database}"
        text, error, privilege = await _pg_read_file(source, env)
        if error:
            return FailedLogins(source.name, shown, answered=False, error=error, denied=privilege)
    total, users, clients, note = count_pg_lines(text, now)
    return FailedLogins(source.name, shown, answered=True, total=total, by_user=users, by_client=clients, note=note)


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
        return FailedLogins(source.name, source.query or source.cache or source.path, answered=False,
                            error=f"no answer within {bound:g} s")


FAILED_LOGINS = kinds.register(kinds.ProbeKind(
    name="failed_logins", section="security.failed_logins", record=FailedLogins, param="source",
    fixture="failed_logins_probe", probe=probe_failed_logins, targets=lambda env: env.security.failed_logins,
    doc="failed logins of the last 24 h from one source (PromQL, Redis ACL LOG, PostgreSQL server log)",
))
