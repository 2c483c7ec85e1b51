"""The environment's waivers: each one is in force, or it has expired and needs a decision.

A waiver turns a known failure into a skip that says "waived until <date> by <owner>: <reason>"
(see docs/configuration.md). Once its date has passed it no longer applies, and this case says so at P2,
so an expired waiver is noticed instead of silently ending.
"""

from __future__ import annotations

import pytest

from acgs_checks.environment import Environment, Waiver
from acgs_checks.verdict import fail, measure

pytestmark = [pytest.mark.daily]


@pytest.mark.p2
@pytest.mark.runbook("suite.waivers")
def test_waiver_not_expired(waiver: Waiver, pytestconfig: pytest.Config, acgs_environment: Environment) -> None:
    """The waiver's expiry date has not passed (UTC)."""
    from acgs_checks.run.state import armed  # noqa: PLC0415 - the run's date, as waivers are judged on it

    today = armed(pytestconfig).settings.today
    if not waiver.active(today):
        fail(f"waiver for {waiver.check} expired on {waiver.expires} (owner {waiver.owner}: {waiver.reason}); "
             f"the failure counts again (expected a date on or after {today}: renew it, or fix the check)")
    days = (waiver.expires - today).days
    measure(f"waiver for {waiver.check} in force for {days} more day(s) (owner {waiver.owner})",
            f"a date on or after {today}", value=days, threshold=0)
