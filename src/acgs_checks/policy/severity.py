"""The runbook's incident levels, P0 to P3, and what each one obliges on-call to do."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Response:
    """What the runbook expects once a failure of this severity is seen."""

    meaning: str
    respond_within: str
    escalation: str
    communication: str
    allure_severity: str

    def summary(self) -> str:
        return (
            f"respond within {self.respond_within}; escalation: {self.escalation}; "
            f"communication: {self.communication}"
        )


class Severity(enum.IntEnum):
    """Lower value = more urgent, so ``min()`` of failures is the worst one."""

    P0 = 0
    P1 = 1
    P2 = 2
    P3 = 3

    @property
    def marker(self) -> str:
        return self.name.lower()

    @property
    def response(self) -> Response:
        return _RESPONSES[self]

    @property
    def level(self) -> str:
        """The report's words for it: ``P0 critical · respond within 15 minutes`` ("critical" only for P0)."""
        return f"{self.name} {self.response.meaning.split(':')[0]} · respond within {self.response.respond_within}"

    def at_or_above(self, other: Severity) -> bool:
        """True when ``self`` is as urgent as ``other`` or more (P0 is above P1)."""
        return self.value <= other.value

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Accept ``P1``, ``p1`` or ``1``; raise ``ValueError`` otherwise."""
        cleaned = text.strip().upper()
        if cleaned.isdigit():
            cleaned = f"P{cleaned}"
        try:
            return cls[cleaned]
        except KeyError:
            raise ValueError(f"{text!r} is not a severity (use P0, P1, P2 or P3)") from None


_RESPONSES: dict[Severity, Response] = {
    Severity.P0: Response(
        meaning="critical: a service is down or a critical alert fired",
        respond_within="15 minutes",
        escalation="page the on-call engineer immediately; escalate to the secondary "
        "if there is no response in 15 minutes",
        communication="status page update within 30 minutes",
        allure_severity="critical",
    ),
    Severity.P1: Response(
        meaning="high: degraded performance or a warning alert",
        respond_within="1 hour",
        escalation="escalate to the secondary if not resolved within 2 hours",
        communication="internal notification within 1 hour",
        allure_severity="normal",
    ),
    Severity.P2: Response(
        meaning="medium: a minor issue",
        respond_within="4 hours",
        escalation="escalate to the secondary the next business day if not resolved",
        communication="internal tracking only",
        allure_severity="minor",
    ),
    Severity.P3: Response(
        meaning="low: an enhancement request",
        respond_within="the next business day",
        escalation="raise at the weekly review with the team lead",
        communication="planned maintenance window",
        allure_severity="trivial",
    ),
}

SEVERITY_MARKERS: dict[str, Severity] = {s.marker: s for s in Severity}
