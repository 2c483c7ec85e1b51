"""Friday backup verification: completion, WAL archiving, a real restore drill, retention, DR documents."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import allure
import pytest

from acgs_checks.environment import Environment
from acgs_checks.verdict import blocked_by, breached, judge, measure, no_data, not_applicable, require_read

if TYPE_CHECKING:
    from acgs_checks.probes.backup import Backup, BackupListing, Documents

pytestmark = [pytest.mark.friday, pytest.mark.backup]

HOUR = 3600.0
DAY = 86400.0


def _age(seconds: float) -> str:
    return f"{seconds / HOUR:.1f} h" if seconds < 3 * DAY else f"{seconds / DAY:.1f} days"


@pytest.mark.p1
@pytest.mark.runbook("friday.backup-completion")
@pytest.mark.reachability
def test_backup_completion(backup_probe: BackupListing, acgs_environment: Environment) -> None:
    """The newest backup is younger than {backup_max_age_hours:g} h, not empty, and reads back (pg_restore --list)."""
    seen = backup_probe
    require_read(seen, f"listing {seen.source}")
    limit = acgs_environment.thresholds.backup_max_age_hours
    if not seen.backups:
        breached(f"{seen.target}: no backup in {seen.source}", f"a backup younger than {limit:g} h",
                 value=None, threshold=limit)
    newest = seen.backups[0]
    age = time.time() - newest["time"]
    problems = []
    if age > limit * HOUR:
        problems.append(f"the newest is {_age(age)} old")
    if newest["size"] <= 0:
        problems.append("the newest is empty (0 bytes)")
    if seen.newest_readable is False:
        problems.append(seen.newest_check)
    shown = f"{seen.target}: newest of {len(seen.backups)} backup(s) in {seen.source}: {newest['name']}, " \
            f"{_age(age)} old, {newest['size'] / 1024 / 1024:.1f} MiB"
    judge(bool(problems), shown + ("; " + "; ".join(problems) if problems else f"; {seen.newest_check}"),
          f"younger than {limit:g} h, not empty, readable", value=age / HOUR, threshold=limit)


@pytest.mark.p1
@pytest.mark.runbook("friday.backup-completion")
def test_wal_archiving(backups: BackupListing, acgs_environment: Environment) -> None:
    """The last WAL segment was archived within the RPO ({rpo_seconds:g} s), with no failure since."""
    seen = backups
    if "connect" in seen.db_errors or "archiver" in seen.db_errors:
        no_data(f"{seen.target}: pg_stat_archiver on {seen.database}: "
                f"{seen.db_errors.get('connect') or seen.db_errors.get('archiver')}")
    archiver = seen.archiver
    rpo = acgs_environment.thresholds.rpo_seconds
    if archiver.get("archive_mode") == "off":
        breached(f"{seen.database}: archive_mode = off: no WAL is archived, so nothing can be recovered past the "
                 "last backup", f"WAL archived within {rpo:g} s")
    since = archiver.get("since_archived_seconds")
    if since is None:
        breached(f"{seen.database}: no WAL segment archived since the statistics were reset "
                 f"({archiver.get('failed_count', 0):.0f} failure(s))", f"WAL archived within {rpo:g} s")
    failed_since = archiver.get("since_failed_seconds")
    failing = failed_since is not None and failed_since < since
    shown = (f"{seen.database}: last WAL {archiver.get('last_archived_wal')} archived {since:.0f} s ago; "
             f"{archiver.get('failed_count', 0):.0f} failure(s) in all")
    if failing:
        shown += f"; the last failure ({archiver.get('last_failed_wal')}, {failed_since:.0f} s ago) came after it"
    judge(since > rpo or failing, shown, f"archived within {rpo:g} s, no failure since", value=since,
          threshold=rpo)


@pytest.mark.p1
@pytest.mark.runbook("friday.backup-restore-test")
@pytest.mark.grant("read access to the dump files; nothing on the production server (the drill restores here)")
def test_restore_drill(backups: BackupListing, backup: Backup, acgs_environment: Environment) -> None:
    """The newest pg_dump restores into a scratch server here, with production's tables, its row counts
    within tolerance, recent data, and within the RTO."""
    from acgs_checks import restore  # noqa: PLC0415 - starts servers: only when the drill runs

    seen = backups
    t = acgs_environment.thresholds
    if backup.kind != "pg_dump":
        not_applicable(f"{backup.name}: restore drills of {backup.kind} backups are not automated "
                       f"(restore one with {backup.kind} on a scratch host)")
    if backup.host:
        not_applicable(f"{backup.name}: the dumps are on host {backup.host}; the drill restores local files only "
                       "(mount or copy the directory here)")
    newest = seen.backups[0]
    if seen.newest_readable is not True or time.time() - newest["time"] > t.backup_max_age_hours * HOUR:
        blocked_by("backup", backup.name, "has no fresh readable backup")
    if "connect" in seen.db_errors or "tables" in seen.db_errors:
        no_data(f"{backup.name}: production's catalog ({seen.database}) could not be read: "
                f"{seen.db_errors.get('connect') or seen.db_errors.get('tables')}")
    bound = backup.restore_timeout_seconds or t.rto_seconds
    drill = restore.restore(Path(newest["name"]), timeout=bound, timestamp_column=backup.timestamp_column)
    allure.attach("\n".join(drill.steps), name="restore drill steps", attachment_type=allure.attachment_type.TEXT)
    expected = (f"restores within the RTO {t.rto_seconds:g} s, production's tables, rows within "
                f"{t.restore_rows_tolerance_percent:g} %, newest row within the RPO")
    if drill.error:
        breached(f"{backup.name}: restoring {newest['name']} failed after {drill.seconds:.1f} s: {drill.error}",
                 expected)
    production = {f"{r['schema']}.{r['table']}": r["estimated_rows"] for r in seen.tables}
    problems = restore.problems(drill, production, backup_time=newest["time"], timestamp_column=backup.timestamp_column,
                                tolerance_percent=t.restore_rows_tolerance_percent, rpo_seconds=t.rpo_seconds,
                                rto_seconds=t.rto_seconds)
    shown = (f"{backup.name}: restored {Path(newest['name']).name} in {drill.seconds:.1f} s: "
             f"{len(drill.tables)} table(s), {sum(drill.tables.values()):.0f} row(s)")
    judge(bool(problems), shown + ("; " + "; ".join(problems) if problems else ""), expected,
          value=drill.seconds, threshold=t.rto_seconds)


@pytest.mark.p2
@pytest.mark.runbook("friday.backup-retention")
def test_backup_retention(backups: BackupListing, backup: Backup, acgs_environment: Environment) -> None:
    """Backups reach back the retention period ({backup_retention_days:g} days; at least the
    {pitr_window_days:g}-day PITR window) and no further,
    with about one backup a day."""
    t = acgs_environment.thresholds
    now = time.time()
    good = [b for b in backups.backups if b.get("status") == "ok" and b["time"] > 0]
    if not good:
        no_data(f"{backup.name}: no usable backup with a time in {backups.source}")
    oldest = now - min(b["time"] for b in good)
    expected_count = backup.min_backups or int(t.backup_retention_days)
    problems = []
    if oldest < (t.backup_retention_days - 1) * DAY:
        problems.append(f"the oldest is {_age(oldest)} old: the retention keeps less than "
                        f"{t.backup_retention_days:g} days" + (f" (and less than the {t.pitr_window_days:g}-day PITR "
                                                               "window)" if oldest < t.pitr_window_days * DAY else ""))
    if oldest > (t.backup_retention_days + 2) * DAY:
        problems.append(f"the oldest is {_age(oldest)} old: expiry beyond {t.backup_retention_days:g} days is not "
                        "running")
    if len(good) < expected_count:
        problems.append(f"{len(good)} backup(s), expected at least {expected_count}")
    judge(bool(problems), f"{backup.name}: {len(good)} backup(s), the oldest {_age(oldest)} old"
          + ("; " + "; ".join(problems) if problems else ""),
          f"{t.backup_retention_days:g} days kept (±1), at least {expected_count} backups",
          value=oldest / DAY, threshold=t.backup_retention_days)


@pytest.mark.p3
@pytest.mark.runbook("friday.dr-documentation")
def test_dr_documentation_current(dr_documents_probe: Documents, acgs_environment: Environment) -> None:
    """Every disaster-recovery document exists and changed within {dr_docs_max_age_days:g} days."""
    limit = acgs_environment.thresholds.dr_docs_max_age_days
    now = time.time()
    problems, shown = [], []
    for doc in dr_documents_probe.documents:
        if "error" in doc:
            problems.append(f"{doc['where']}: {doc['error']}")
            continue
        age = (now - doc["changed"]) / DAY
        shown.append(f"{doc['where']} {age:.0f} days ({doc['how']})")
        if age > limit:
            problems.append(f"{doc['where']} last changed {age:.0f} days ago ({doc['how']})")
    if problems:
        breached("DR documents: " + "; ".join(problems), f"every document changed within {limit:g} days")
    measure("DR documents: " + "; ".join(shown), f"every document changed within {limit:g} days")
