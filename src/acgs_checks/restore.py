"""The Friday restore drill: restore a pg_dump into a scratch PostgreSQL on this machine, then compare.

Never on the production server. The scratch cluster comes from the same binaries the sandbox
uses (initdb, pg_ctl, pg_restore), listens on a Unix socket in its own folder only (no TCP),
runs as an unprivileged account when started as root, and is stopped and removed when the
drill ends, whatever happened. A run killed outright leaves a folder marked with its pid;
the next run's :func:`acgs_checks.scratch.reap_leftovers` removes it.

The folder is on disk (``$ACGS_RESTORE_TMPDIR``, else the system temp folder), not in memory:
a production dump can be large.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acgs_checks.scratch import (
    OWNER_FILE,
    SandboxError,
    postgres_bindir,
    reap_leftovers,
    unprivileged_user,
)

PREFIX = "acgs-sandbox-restore-"


@dataclass
class Drill:
    """What a drill found: the restored tables with their row counts, the newest timestamp, how long it took."""

    seconds: float = 0.0
    tables: dict[str, float] = field(default_factory=dict)   # schema.table -> rows (count(*))
    newest: float | None = None                               # Unix time of the timestamp column's max
    error: str = ""
    steps: list[str] = field(default_factory=list)


def _reachable(folder: Path, uid: int) -> str:
    """The first ancestor of ``folder`` the account cannot pass through (as root, PostgreSQL runs as another)."""
    for parent in reversed(folder.parents):
        info = parent.stat()
        if info.st_uid != uid and not info.st_mode & 0o001:
            return str(parent)
    return ""


def _folder() -> Path:
    base = os.environ.get("ACGS_RESTORE_TMPDIR") or tempfile.gettempdir()
    account = unprivileged_user()
    blocked = _reachable(Path(base).resolve() / "x", account.pw_uid) if account is not None else ""
    if blocked:
        raise SandboxError(f"the scratch server runs as {account.pw_name} (PostgreSQL refuses root), which cannot "  # type: ignore[union-attr]
                           f"enter {blocked}; set ACGS_RESTORE_TMPDIR to a folder it can reach, e.g. /var/tmp")
    reap_leftovers(base)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    (path / OWNER_FILE).write_text(str(os.getpid()))
    account = unprivileged_user()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


def _run(args: list[str], deadline: float, what: str, *, stdin: Any = None) -> str:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"the drill's bound ran out before {what}")
    account = unprivileged_user()
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=left, stdin=stdin,
                              user=account.pw_uid if account else None, group=account.pw_gid if account else None)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{what} did not finish within the drill's bound") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise SandboxError(f"{what} failed: {said[-1] if said else f'exit status {done.returncode}'}")
    return done.stdout


def _ident(name: str) -> str:
    """A quoted SQL identifier (the names are validated as plain identifiers by the environment model)."""
    return '"' + name.replace('"', '""') + '"'


def restore(dump: Path, *, timeout: float, timestamp_column: str = "") -> Drill:
    """Restore ``dump`` into a fresh cluster and read back every user table's row count; always cleans up."""
    drill = Drill()
    start = time.monotonic()
    deadline = start + timeout
    folder: Path | None = None
    bindir: Path | None = None
    data: Path | None = None
    try:
        bindir = postgres_bindir()
        folder = _folder()
        data = folder / "data"
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--no-sync", "--no-instructions"], deadline, "initdb")
        drill.steps.append("initdb")
        options = f"-c listen_addresses='' -k {folder} -c fsync=off -c full_page_writes=off -c port=5432"
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w",
              "-t", "60", "start"], deadline, "starting the scratch server")
        drill.steps.append("scratch server started (Unix socket only)")
        psql = [str(bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(folder), "-U",
                "postgres"]
        _run([*psql, "-d", "postgres", "-c", "CREATE DATABASE drill"], deadline, "CREATE DATABASE")
        # The dump is opened here and handed over on stdin: the account the scratch server runs as (as root,
        # another one) need not read the backup folder, and the dump is not copied.
        with dump.open("rb") as archive:
            _run([str(bindir / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "-h", str(folder),
                  "-U", "postgres", "-d", "drill"], deadline, "pg_restore", stdin=archive)
        drill.steps.append(f"pg_restore {dump.name}")
        # One psql session counts every restored table: the query writes one count per table, \gexec runs them.
        script = folder / "count.sql"
        script.write_text(
            "SELECT format('SELECT %L, count(*) FROM %I.%I', n.nspname || '.' || c.relname, n.nspname, c.relname) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
            "AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname !~ '^pg_' ORDER BY 1 \\gexec\n")
        script.chmod(0o644)
        counts = _run([*psql, "-d", "drill", "-F", "\t", "-f", str(script)], deadline, "counting the restored rows")
        for line in counts.splitlines():
            name, _, count = line.rpartition("\t")
            if name:
                drill.tables[name] = float(count or 0)
        if timestamp_column:
            schema, table, column = timestamp_column.split(".")
            newest = _run([*psql, "-d", "drill", "-c", "SELECT extract(epoch FROM max(%s)) FROM %s.%s" % (  # noqa: S608, UP031 - validated identifiers, quoted
                _ident(column), _ident(schema), _ident(table))], deadline, f"reading max({timestamp_column})")
            drill.newest = float(newest.strip()) if newest.strip() else None
        drill.steps.append("row counts read")
    except (SandboxError, TimeoutError, OSError, ValueError) as exc:
        drill.error = str(exc)
    finally:
        drill.seconds = round(time.monotonic() - start, 3)
        if data is not None and bindir is not None and (data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                account = unprivileged_user()
                subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                               capture_output=True, timeout=30, check=False,
                               user=account.pw_uid if account else None, group=account.pw_gid if account else None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            drill.steps.append("scratch server stopped and removed")
    return drill


def problems(drill: Drill, production: dict[str, float], *, backup_time: float, timestamp_column: str,
             tolerance_percent: float, rpo_seconds: float, rto_seconds: float) -> list[str]:
    """What a finished drill shows against production: tables missing or gone, row counts beyond the tolerance
    (production's planner estimates; never-analyzed tables, -1, are not compared), the newest row older than the
    RPO before the backup, and a restore slower than the RTO. Empty when the drill matches."""
    found = []
    missing = sorted(set(production) - set(drill.tables))
    extra = sorted(set(drill.tables) - set(production))
    if missing:
        found.append(f"missing table(s) {', '.join(missing[:5])}")
    if extra:
        found.append(f"table(s) production no longer has {', '.join(extra[:5])}")
    off = [f"{name} {drill.tables[name]:.0f} restored vs ~{estimate:.0f} in production"
           for name, estimate in production.items()
           if name in drill.tables and estimate >= 0
           and abs(drill.tables[name] - estimate) > max(10.0, estimate * tolerance_percent / 100)]
    if off:
        found.append("row counts off: " + "; ".join(off[:5]))
    if timestamp_column:
        if drill.newest is None:
            found.append(f"{timestamp_column} has no value")
        elif backup_time - drill.newest > rpo_seconds:
            found.append(f"newest {timestamp_column} is {_age(backup_time - drill.newest)} older than the backup "
                         "itself")
    if drill.seconds > rto_seconds:
        found.append(f"took {drill.seconds:.0f} s, beyond the RTO")
    return found


def _age(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds < 3 * 86400 else f"{seconds / 86400:.1f} days"
