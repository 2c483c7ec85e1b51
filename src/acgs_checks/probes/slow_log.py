"""The PostgreSQL server log's slow statements (``log_min_duration_statement`` lines), read on the database's
``log_host`` when pg_stat_statements is not there to ask: the Wednesday slow-query review's second source."""

from __future__ import annotations

import re
import shlex
import time
from typing import Any

from acgs_checks.environment import Database, Environment
from acgs_checks.probes.host import read_on_host
from acgs_checks.probes.logs import seconds_since
from acgs_checks.redaction import mask_sql_literals

_DURATION = re.compile(r"duration: ([0-9.]+) ms\s+(?:statement|execute [^:]*): (.*)$")
SLOW_LOG_DAYS = 7.0


def slow_statements(text: str, now: float, *, days: float = SLOW_LOG_DAYS) -> list[dict[str, Any]]:
    """Statements in ``log_min_duration_statement`` lines of the last ``days``, grouped with literals masked:
    calls, mean and total milliseconds, slowest first by mean."""
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        match = _DURATION.search(line)
        if match is None:
            continue
        age = seconds_since(line, now)
        if age is not None and age > days * 86400:
            continue
        found.setdefault(mask_sql_literals(match.group(2).strip())[:300], []).append(float(match.group(1)))
    rows = [{"query": query, "calls": float(len(times)), "mean_ms": sum(times) / len(times),
             "total_ms": sum(times)} for query, times in found.items()]
    return sorted(rows, key=lambda r: -r["mean_ms"])


async def slow_log(db: Database, env: Environment) -> tuple[list[dict[str, Any]], str, str]:
    """(statements, source, error) from the server log on the database's log_host; bounded."""
    source = f"log_min_duration_statement lines of {db.log_path} on {db.log_host} (last {SLOW_LOG_DAYS:g} days)"
    path = shlex.quote(db.log_path)
    command = (f"if [ ! -r {path} ]; then echo 'No such file or not readable: {db.log_path}' >&2; exit 1; fi; "
               f"tail -c 4194304 -- {path} | grep -a 'duration: '")
    # grep's 1 is "no such line": a clean log.
    stdout, error = await read_on_host(env, db.log_host, command, quiet_codes=(0, 1))
    return ([], source, error) if error else (slow_statements(stdout, time.time()), source, "")
