"""Friday backup verification: what backups exist, whether the newest one reads, and WAL archiving.

A ``[[backups]]`` entry names the database it backs up and one source of backups:

* ``directory`` of ``pg_dump`` custom-format files, local or (with ``host``) on a ``[[hosts]]``
  entry; the newest file is read with ``pg_restore --list`` where it lies;
* ``pgbackrest_stanza``: ``pgbackrest --stanza=S info --output=json``, locally or on the host;
* ``barman_server``: ``barman list-backups S``, locally or on the host.

Besides the listing, the probe opens one read-only connection to the database for
``pg_stat_archiver``, ``archive_mode`` and the catalog's table set with its row estimates
(``pg_class.reltuples``: nothing is scanned), which the restore drill compares against.
The drill itself (:mod:`acgs_checks.restore`) runs in its case, not in the probe pass.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from acgs_checks import kinds
from acgs_checks.environment import Environment, Target, display_url
from acgs_checks.environment.base import problem
from acgs_checks.probes import aio, http
from acgs_checks.probes.host import run_on_host, why_failed
from acgs_checks.probes.postgres import connect_budget, connect_error, jsonable, read_only_session, run_query
from acgs_checks.records import JsonRecord
from acgs_checks.scratch import SandboxError, postgres_bindir

ROW_LIMIT = 500
_ARCHIVER = """
SELECT current_setting('archive_mode') AS archive_mode, archived_count::float8, last_archived_wal,
       extract(epoch FROM now() - last_archived_time)::float8 AS since_archived_seconds,
       failed_count::float8, last_failed_wal,
       extract(epoch FROM now() - last_failed_time)::float8 AS since_failed_seconds
FROM pg_stat_archiver
"""
# Production's table set and row estimates (reltuples: no table is scanned).
_TABLES = """
SELECT n.nspname AS schema, c.relname AS table, c.reltuples::float8 AS estimated_rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
ORDER BY 1, 2 LIMIT 500
"""
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")


class Backup(Target):
    """Backups of one database: a pg_dump directory, a pgBackRest stanza or a Barman server."""

    database: str = Field(description="the [[databases]] entry these backups are of")
    directory: str = Field("", description="a directory of pg_dump custom-format files (-Fc)")
    pattern: str = Field("*.dump", description="which files in directory are backups (shell wildcard)")
    host: str = Field("", description="a [[hosts]] entry the directory or command is on (default: this machine)")
    pgbackrest_stanza: str = Field("", description="or: list with pgbackrest --stanza=... info --output=json")
    pgbackrest_config: str = Field("", description="with pgbackrest_stanza: its --config file (default: "
                                   "pgBackRest's own, /etc/pgbackrest/pgbackrest.conf)")
    barman_server: str = Field("", description="or: list with barman list-backups SERVER")
    timestamp_column: str = Field("", description="schema.table.column whose newest value in the restored copy "
                                  "must be within the RPO of the backup's time, e.g. acgs.audit_log.created_at")
    min_backups: int = Field(0, ge=0, description="backups expected within the retention (default: one a day)")
    restore_timeout_seconds: float = Field(0, ge=0, description="bound on the restore drill (default: the RTO)")

    @model_validator(mode="after")
    def _one_source(self) -> Backup:
        chosen = [k for k in ("directory", "pgbackrest_stanza", "barman_server") if getattr(self, k)]
        if len(chosen) != 1:
            raise problem(f"sets {', '.join(chosen) or 'none'} of directory, pgbackrest_stanza and barman_server",
                          'set exactly one, e.g. directory = "/var/backups/postgresql"', at="directory")
        if self.timestamp_column and not _COLUMN.match(self.timestamp_column):
            raise problem(f"{self.timestamp_column!r} is not schema.table.column",
                          'write e.g. timestamp_column = "acgs.policy_evaluations.evaluated_at"',
                          at="timestamp_column")
        return self

    @property
    def kind(self) -> str:
        return "pg_dump" if self.directory else "pgbackrest" if self.pgbackrest_stanza else "barman"


@dataclass(frozen=True)
class BackupListing(JsonRecord):
    """The backups found, newest first, and what the database says about WAL archiving and its tables."""

    target: str
    source: str
    answered: bool
    error: str = ""
    backups: list[dict[str, Any]] = field(default_factory=list)   # name, time (Unix), size, status
    newest_check: str = ""            # pg_restore --list said: "N entries" or why it failed
    newest_readable: bool | None = None
    database: str = ""
    archiver: dict[str, Any] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)
    db_errors: dict[str, str] = field(default_factory=dict)
    checked_at: float = 0.0
    denied: str = ""  # the target refused the suite: the credential or grant to check


def _run(backup: Backup, env: Environment, command: str, bound: float) -> tuple[int, str, str]:
    """Run ``command`` (sh) on the backup's host, or here; bounded."""
    if backup.host:

        host = next((h for h in env.section("hosts") if h.name == backup.host), None)
        if host is None:
            return 2, "", f"no [[hosts]] entry named {backup.host!r}"
        return run_on_host(host, command, bound)
    try:
        done = subprocess.run(["timeout", "-k", "1", f"{bound:g}", "sh", "-c", command], capture_output=True,
                              text=True, timeout=bound + 2, check=False, env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        return 124, "", "timed out"
    return done.returncode, done.stdout, done.stderr


def _pg_dump_files(backup: Backup, env: Environment, bound: float) -> tuple[list[dict[str, Any]], str]:
    folder = shlex.quote(backup.directory.rstrip("/") or "/")
    command = (f"[ -d {folder} ] || {{ echo 'no such directory: {backup.directory}' >&2; exit 1; }}; "
               f"find {folder} -maxdepth 1 -type f -name {shlex.quote(backup.pattern)} -printf '%T@ %s %p\\n'")
    rc, stdout, stderr = _run(backup, env, command, bound)
    if rc != 0:

        return [], why_failed(rc, stderr)
    found = []
    for line in stdout.splitlines():
        stamp, size, path = [*line.split(" ", 2), "", ""][:3]
        try:
            found.append({"name": path, "time": float(stamp), "size": float(size), "status": "ok"})
        except ValueError:
            continue
    return sorted(found, key=lambda b: -b["time"]), ""


def _pg_restore(backup: Backup) -> str:
    """pg_restore on the host's PATH; here, the newest PostgreSQL's (the drill's), which reads every older dump."""
    if not backup.host:
        try:
            found = postgres_bindir() / "pg_restore"
        except SandboxError:
            return "pg_restore"
        if found.exists():
            return shlex.quote(str(found))
    return "pg_restore"


def _restore_list(backup: Backup, env: Environment, path: str, bound: float) -> tuple[bool, str]:
    """pg_restore --list on the newest file: it reads the archive's table of contents end to end."""
    rc, stdout, stderr = _run(backup, env, f"{_pg_restore(backup)} --list -- {shlex.quote(path)}", bound)
    if rc != 0:

        return False, f"pg_restore --list {path} failed: {why_failed(rc, stderr)}"
    entries = [line for line in stdout.splitlines() if line and not line.startswith(";")]
    data = [line for line in entries if " TABLE DATA " in line]
    return True, f"pg_restore --list {path}: {len(entries)} entries, {len(data)} with table data"


def parse_pgbackrest(text: str) -> list[dict[str, Any]]:
    """Backups from ``pgbackrest info --output=json`` (every stanza in it), newest first."""
    found = []
    for stanza in json.loads(text):
        for item in stanza.get("backup", []):
            stamp = item.get("timestamp", {})
            error = item.get("error")
            found.append({"name": f"{stanza.get('name')}/{item.get('label')}", "time": float(stamp.get("stop", 0)),
                          "size": float((item.get("info") or {}).get("size", 0) or 0), "type": item.get("type", ""),
                          "status": "error" if error else "ok"})
    return sorted(found, key=lambda b: -b["time"])


_BARMAN = re.compile(r"^\S+\s+(\S+)\s+-\s+(?:\S+\s+-\s+)?(.+?)\s+-\s+Size:\s+([\d.]+)\s+(\w+)")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}


def parse_barman(text: str) -> list[dict[str, Any]]:
    """Backups from ``barman list-backups SERVER`` lines; FAILED and unparsable ones count as failed."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _BARMAN.match(line)
        if match is None:
            found.append({"name": line.split()[1] if len(line.split()) > 1 else line, "time": 0.0, "size": 0.0,
                          "status": "failed" if "FAILED" in line else "unparsed"})
            continue
        try:
            when = datetime.datetime.strptime(match.group(2).strip(), "%a %b %d %H:%M:%S %Y").replace(
                tzinfo=datetime.UTC).timestamp()
        except ValueError:
            when = 0.0
        found.append({"name": match.group(1), "time": when,
                      "size": float(match.group(3)) * _UNITS.get(match.group(4), 1), "status": "ok"})
    return sorted(found, key=lambda b: -b["time"])


def list_backups(backup: Backup, env: Environment) -> tuple[list[dict[str, Any]], str, str, bool | None]:
    """(backups newest first, error, newest check, newest readable). Blocking; bounded."""
    bound = backup.timeout_seconds * 5
    if backup.directory:
        found, error = _pg_dump_files(backup, env, bound)
        if error or not found:
            return found, error, "", None
        newest = found[0]
        if newest["size"] <= 0:
            return found, "", f"{newest['name']} is empty (0 bytes)", False
        ok, said = _restore_list(backup, env, newest["name"], bound)
        return found, "", said, ok
    if backup.pgbackrest_stanza:
        config = f" --config={shlex.quote(backup.pgbackrest_config)}" if backup.pgbackrest_config else ""
        command = f"pgbackrest{config} --stanza={shlex.quote(backup.pgbackrest_stanza)} info --output=json"
        parse = parse_pgbackrest
    else:
        command = f"barman list-backups {shlex.quote(backup.barman_server)}"
        parse = parse_barman
    rc, stdout, stderr = _run(backup, env, command, bound)
    if rc != 0:

        return [], f"{command}: {why_failed(rc, stderr)}", "", None
    try:
        found = parse(stdout)
    except (ValueError, TypeError, AttributeError) as exc:
        return [], f"{command}: unreadable output ({exc})", "", None
    if not found:
        return found, "", "", None
    return found, "", f"{backup.kind} reports the newest backup {found[0]['status']}", found[0]["status"] == "ok"


async def _database_facts(backup: Backup, env: Environment) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                                     dict[str, str]]:
    import psycopg  # noqa: PLC0415


    db = next((d for d in env.databases if d.name == backup.database), None)
    if db is None:
        return {}, [], {"connect": f"no [[databases]] entry named {backup.database!r}"}
    try:
        async with asyncio.timeout(connect_budget(db) + 0.5):
            conn = await read_only_session(db)
    except (OSError, psycopg.Error, TimeoutError) as exc:
        return {}, [], {"connect": connect_error(exc, db)[0]}
    errors: dict[str, str] = {}
    try:
        async with asyncio.timeout(db.timeout_seconds * 2):
            archiver = await run_query(conn, errors, "archiver", _ARCHIVER, timeout=db.timeout_seconds)
            tables = await run_query(conn, errors, "tables", _TABLES, timeout=db.timeout_seconds)
    except TimeoutError:
        errors["deadline"] = f"not read within {db.timeout_seconds * 2:g} s"
        archiver, tables = [], []
    finally:
        await conn.close()
    return (jsonable(archiver)[0] if archiver else {}), jsonable(tables), errors


async def probe_backup(backup: Backup, job: kinds.Job) -> BackupListing:
    env = job.env
    source = {"pg_dump": f"pg_dump files {backup.directory}/{backup.pattern}",
              "pgbackrest": f"pgbackrest stanza {backup.pgbackrest_stanza}",
              "barman": f"barman server {backup.barman_server}"}[backup.kind]
    if backup.host:
        source += f" on {backup.host}"
    bound = backup.timeout_seconds * 10 + 2
    listing = asyncio.wait_for(aio.in_thread(list_backups, backup, env), timeout=bound)
    try:
        (found, error, said, readable), (archiver, tables, db_errors) = await asyncio.gather(
            listing, _database_facts(backup, env))
    except TimeoutError:
        return BackupListing(backup.name, source, answered=False, error=f"no listing within {bound:g} s",
                             database=backup.database, checked_at=time.time())
    return BackupListing(backup.name, source, answered=not error, error=env.redact(error), backups=found,
                         newest_check=env.redact(said), newest_readable=readable, database=backup.database,
                         archiver=archiver, tables=tables, db_errors=db_errors, checked_at=time.time())


def _gate(seen: BackupListing, env: Environment) -> kinds.Blocked | None:
    del env
    if not seen.answered or not seen.backups:
        return kinds.Blocked("backup", seen.target, "could not be listed" if not seen.answered else "has no backup")
    return None


BACKUPS = kinds.register(kinds.ProbeKind(
    name="backup", section="backups", record=BackupListing, param="backup", fixture="backup_probe",
    probe=probe_backup, entry=Backup, targets=lambda env: env.section("backups"),
    gate=kinds.Gate(_gate, fixture="backups", doc="the listing; blocked when nothing could be listed"),
    grant=("read access to the backup directory (or pgbackrest info / barman list-backups as the monitoring user); "
           "a pg_monitor login on the database for pg_stat_archiver"),
    doc="the backups of one database (pg_dump files, pgBackRest, Barman) and its WAL archiving",
))


# --- disaster-recovery documents ----------------------------------------------------------------

@dataclass(frozen=True)
class Documents(JsonRecord):
    target: str
    documents: list[dict[str, Any]] = field(default_factory=list)  # where, changed (Unix) or error, how
    answered: bool = True
    error: str = ""
    denied: str = ""  # the target refused the suite: the credential or grant to check


def _file_changed(path: str, bound: float) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.exists():
        return {"where": path, "error": "does not exist"}
    try:
        done = subprocess.run(["git", "-C", str(file.parent), "log", "-1", "--format=%ct", "--", file.name],
                              capture_output=True, text=True, timeout=bound, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return {"where": path, "changed": float(done.stdout.strip()), "how": "last git commit"}
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"where": path, "changed": file.stat().st_mtime, "how": "file modification time"}


async def _url_changed(url: str, timeout: float) -> dict[str, Any]:
    from email.utils import parsedate_to_datetime  # noqa: PLC0415


    result, _ = await http.exchange(url, target="dr", timeout=timeout, body_limit=1024)
    shown = display_url(url)
    if not result.answered or result.status != 200:
        return {"where": shown, "error": result.detail or f"HTTP {result.status}"}
    stamp = dict((k.lower(), v) for k, v in result.headers).get("last-modified")
    if not stamp:
        return {"where": shown, "error": "no Last-Modified header: its age cannot be told"}
    try:
        return {"where": shown, "changed": parsedate_to_datetime(stamp).timestamp(), "how": "Last-Modified"}
    except (TypeError, ValueError):
        return {"where": shown, "error": f"unreadable Last-Modified {stamp!r}"}


async def probe_documents(target: Any, job: kinds.Job) -> Documents:
    settings = job.env.dr
    found = await asyncio.gather(*(
        _url_changed(doc, settings.timeout_seconds) if doc.startswith(("http://", "https://"))
        else aio.in_thread(_file_changed, doc, settings.timeout_seconds) for doc in settings.documents))
    return Documents(target.name, list(found))


def _dr_targets(env: Environment) -> tuple[Any, ...]:
    return (kinds.Fixed("dr-documentation"),) if env.dr.documents else ()


DOCUMENTS = kinds.register(kinds.ProbeKind(
    name="dr_documents", section="dr", record=Documents, probe=probe_documents,
    fixed={"dr_documents_probe": "dr-documentation"}, targets=_dr_targets,
    grant="read access to the documents (a git checkout, files or HTTP URLs)",
    doc="when each disaster-recovery document last changed (git, file time or Last-Modified)",
))
