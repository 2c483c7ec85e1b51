"""PgBouncer's admin console: ``SHOW POOLS``, ``SHOW DATABASES`` and ``SHOW CONFIG`` (the ``pooler`` kind).

The console speaks only the simple query protocol and has no transactions; the connection is opened with the
same bounded helpers as a database's (:func:`acgs_checks.probes.postgres.open_connection`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from acgs_checks import kinds
from acgs_checks.environment import Pooler, display_url
from acgs_checks.probes.postgres import connect_budget, connect_error, jsonable, open_connection
from acgs_checks.records import JsonRecord


@dataclass(frozen=True)
class PoolerSnapshot(JsonRecord):
    """``SHOW POOLS``, ``SHOW DATABASES`` and ``SHOW CONFIG`` from a PgBouncer admin console."""

    target: str
    url: str
    answered: bool
    error: str = ""
    connect_seconds: float | None = None
    pools: list[dict[str, Any]] = field(default_factory=list)
    databases: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    denied: str = ""


async def probe_pooler(pooler: Pooler) -> PoolerSnapshot:
    """The admin console speaks only the simple query protocol and has no transactions."""
    import psycopg  # noqa: PLC0415 - see TYPE_CHECKING above

    url = display_url(pooler.dsn)
    start = time.perf_counter()
    try:
        async with asyncio.timeout(connect_budget(pooler) + 0.5):
            conn = await open_connection(pooler, autocommit=True)
    except (OSError, psycopg.Error, TimeoutError) as exc:
        error, denied = connect_error(exc, pooler)
        return PoolerSnapshot(target=pooler.name, url=url, answered=False, error=error, denied=denied)
    connected = time.perf_counter()
    errors: dict[str, str] = {}
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        async with asyncio.timeout(pooler.timeout_seconds * 2):
            for command in ("SHOW POOLS", "SHOW DATABASES", "SHOW CONFIG"):
                try:
                    cursor = psycopg.AsyncClientCursor(conn)
                    await cursor.execute(command)
                    results[command] = jsonable(list(await cursor.fetchall()))
                except psycopg.Error as exc:
                    errors[command] = str(exc).strip()
    except TimeoutError:
        errors["deadline"] = f"the pass did not finish within {pooler.timeout_seconds * 2:g} s"
    finally:
        await conn.close()
    return PoolerSnapshot(
        target=pooler.name, url=url, answered=True, connect_seconds=round(connected - start, 6),
        pools=results.get("SHOW POOLS", []), databases=results.get("SHOW DATABASES", []),
        config={str(row["key"]): str(row["value"]) for row in results.get("SHOW CONFIG", [])}, errors=errors,
    )


async def _probe_pooler(pooler: Pooler, job: kinds.Job) -> PoolerSnapshot:
    return await probe_pooler(pooler)


POOLER = kinds.register(kinds.ProbeKind(
    name="pooler", section="poolers", record=PoolerSnapshot, param="pooler", fixture="pooler_probe",
    probe=_probe_pooler, targets=lambda env: env.poolers,
    gate=kinds.Gate(fixture="pool", doc="the snapshot; blocked when the admin console is unreachable"),
    grant="the monitoring user in PgBouncer's stats_users (and auth_file)",
    doc="SHOW POOLS, DATABASES and CONFIG from a PgBouncer admin console",
))
