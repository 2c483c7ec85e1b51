"""Runbook requirements that checks declare with ``@pytest.mark.runbook("ID")``.

Each requirement names where it sits in the runbook (epic / feature / story in Allure)
and the remediation the runbook gives for it. The text is this project's summary of
the runbook, not a copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_RESTART = (
    "Restart the failing service gracefully "
    "(`docker-compose -f docker-compose.production.yml restart <service_name>`); "
    "where downtime is not acceptable, use the rolling restart "
    "(`./scripts/operations/rolling_restart.sh`). Then re-run this check to verify the fix."
)


@dataclass(frozen=True)
class Requirement:
    id: str
    epic: str
    feature: str
    story: str
    remediation: str


REQUIREMENTS: dict[str, Requirement] = {
    r.id: r for r in (
        Requirement(
            "daily.service-health", "Daily Operations", "Morning Health Check (09:00 UTC)",
            "Service Health Verification", SERVICE_RESTART,
        ),
        Requirement(
            "alerts.critical.service-down", "Monitoring and Alerting", "Critical Alerts",
            "Service down (any core service)", SERVICE_RESTART,
        ),
    )
}


def get(requirement_id: str) -> Requirement | None:
    return REQUIREMENTS.get(requirement_id)
