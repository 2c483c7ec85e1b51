"""Wednesday performance review: tables that need the runbook's VACUUM ANALYZE.

A user table whose data changed significantly since its last (auto)vacuum or
(auto)analyze, and whose last one is older than the threshold (a week), needs
maintenance. System catalogs are never flagged (only pg_stat_user_tables is read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from acgs_checks.environment import Environment
from acgs_checks.verdict import breached, measure, no_data

if TYPE_CHECKING:  # the client libraries load only when such checks run
    from acgs_checks.probes.postgres import PgSnapshot

pytestmark = [pytest.mark.wednesday, pytest.mark.database]


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds / 3600:.1f} h ago"


@pytest.mark.p2
@pytest.mark.runbook("maintenance.database")
def test_tables_vacuumed_and_analyzed(db: PgSnapshot, acgs_environment: Environment) -> None:
    """Changed tables were vacuumed and analyzed within {maintenance_max_age_hours:g} h."""
    if "maintenance" in db.errors:
        no_data(f"{db.target}: the maintenance query on {db.url} failed: {db.errors['maintenance']}")
    t = acgs_environment.thresholds
    max_age = t.maintenance_max_age_hours * 3600

    def significant(changed: float, row: dict[str, Any]) -> bool:
        return changed >= t.maintenance_min_changed_rows and changed >= (
            t.maintenance_min_changed_percent / 100.0) * (row.get("live_rows") or 0)

    def stale(seconds: float | None) -> bool:
        return seconds is None or seconds > max_age

    findings = []
    for row in db.maintenance:
        name = f"{row['schema']}.{row['table']}"
        if significant(row.get("changed_since_analyze") or 0, row) and stale(row.get("since_analyze_seconds")):
            findings.append(f"{name}: {row['changed_since_analyze']:.0f} rows changed, last analyze "
                            f"{_age(row.get('since_analyze_seconds'))}")
        if significant(row.get("dead_rows") or 0, row) and stale(row.get("since_vacuum_seconds")):
            findings.append(f"{name}: {row['dead_rows']:.0f} dead rows, last vacuum "
                            f"{_age(row.get('since_vacuum_seconds'))}")
    if findings:
        more = f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
        breached(f"{db.target}: {len(findings)} table(s) need maintenance: " + "; ".join(findings[:5]) + more,
                 f"changed tables vacuumed/analyzed within {t.maintenance_max_age_hours:g} h")
    measure(f"{db.target}: {len(db.maintenance)} table(s) read, none with significant changes left unmaintained",
            f"changed tables vacuumed/analyzed within {t.maintenance_max_age_hours:g} h", value=0, threshold=0)
