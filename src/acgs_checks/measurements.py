"""The history store: every measured value of every run, in SQLite, for the Wednesday trends and capacity.

One row per case and run: when, which environment and review, the case, the measured value,
its threshold, the outcome, and which direction is worse (inferred from how the value sat
against its threshold: a passing value below its threshold means higher is worse). The file
is small (a few hundred rows a day) and safe to keep in a CI cache: writers append inside a
transaction with a busy timeout, so concurrent jobs of one cache do not corrupt it.

Default path: ``history.sqlite`` beside ``summary.json`` (``reports/``); ``[history] path`` moves it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

Error = sqlite3.Error

BUSY_SECONDS = 5.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    at REAL NOT NULL, environment TEXT NOT NULL, review TEXT NOT NULL, case_name TEXT NOT NULL,
    value REAL NOT NULL, threshold REAL, outcome TEXT NOT NULL, worse TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS measurements_case ON measurements (environment, case_name, at);
"""

_default: list[Path] = []


def set_default(path: Path) -> None:
    """The plugin says where this run keeps its history when the environment does not."""
    _default[:] = [path]


def path_for(configured: str) -> Path | None:
    if configured:
        return Path(configured).expanduser()
    return _default[0] if _default else None


@dataclass(frozen=True)
class Row:
    at: float
    environment: str
    review: str
    case_name: str
    value: float
    threshold: float | None
    outcome: str
    worse: str = ""
    role: str = ""  # what the check declared by marker: trended[:promql key], capacity:<what>, or ""


def worse_direction(value: float, threshold: float | None, outcome: str) -> str:
    """Which way is worse for this value: "higher" (latency, usage) or "lower" (hit rates, days left)."""
    if threshold is None:
        return ""
    above = value > threshold
    failed = outcome == "failed"
    return "higher" if above == failed else "lower"


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_SECONDS)
    conn.executescript(_SCHEMA)
    if "role" not in _columns(conn):  # a store written before checks declared their role
        conn.execute("ALTER TABLE measurements ADD COLUMN role TEXT NOT NULL DEFAULT ''")
    return conn


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {str(row[1]) for row in conn.execute("PRAGMA table_info(measurements)")}


def append(path: Path, rows: Iterable[Row]) -> int:
    """Append rows in one transaction; returns how many were written."""
    rows = list(rows)
    if not rows:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(_connect(path)) as conn, conn:
        conn.executemany("INSERT INTO measurements (at, environment, review, case_name, value, threshold, outcome, "
                         "worse, role) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(r.at, r.environment, r.review, r.case_name, r.value, r.threshold, r.outcome, r.worse,
                           r.role) for r in rows])
    return len(rows)


def first_run(path: Path, environment: str) -> tuple[float | None, int]:
    """When the environment's first recorded run started (Unix time; None: no run yet), and how many runs the
    store holds for it (each run's rows share its start time); read-only."""
    if not path.exists():
        return None, 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_SECONDS)
    with contextlib.closing(conn):
        first, runs = conn.execute("SELECT MIN(at), COUNT(DISTINCT at) FROM measurements WHERE environment = ?",
                                   (environment,)).fetchone()
    return (float(first) if first is not None else None), int(runs)


def read(path: Path, environment: str, since: float) -> list[Row]:
    """Every row of the environment since ``since`` (Unix time), oldest first; read-only."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_SECONDS)
    with contextlib.closing(conn):
        role = "role" if "role" in _columns(conn) else "''"  # read-only: an older store is not migrated here
        found = conn.execute(f"SELECT at, environment, review, case_name, value, threshold, outcome, worse, {role} "  # noqa: S608 - a column name or ''
                             "FROM measurements WHERE environment = ? AND at >= ? ORDER BY at",
                             (environment, since)).fetchall()
    return [Row(*row) for row in found]
