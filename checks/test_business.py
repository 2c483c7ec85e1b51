"""Business Metrics: constitutional compliance score (> 95 %) and policy evaluation success (> 99 %).

Each comes from a PromQL query or a JSON endpoint and field, as the environment says.
A metric that is configured but cannot be read is a failure, never a pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from acgs_checks.environment import Environment
from acgs_checks.verdict import fail, judge, no_data, unreachable

if TYPE_CHECKING:  # the probe modules load only when such checks run
    from acgs_checks.probes.business import BusinessSnapshot

pytestmark = [pytest.mark.daily, pytest.mark.business]


def _at_least(seen: BusinessSnapshot, label: str, minimum_percent: float) -> None:
    if seen.value is None and seen.denied:
        unreachable(f"{label}: {seen.error} (source: {seen.source})", denied=seen.denied)
    if seen.value is None and seen.error.startswith("unit:"):
        fail(f"{label}: {seen.error} (source: {seen.source})")
    if seen.value is None:
        no_data(f"{label}: {seen.error} (source: {seen.source})")
    judge(seen.value * 100 <= minimum_percent, f"{label} {seen.value * 100:.2f} % (source: {seen.source})",
          f"> {minimum_percent:g} %", value=seen.value * 100, threshold=minimum_percent)


@pytest.mark.p1
@pytest.mark.runbook("monitoring.business.compliance")
def test_constitutional_compliance(compliance_probe: BusinessSnapshot, acgs_environment: Environment) -> None:
    """The constitutional compliance score stays above {compliance_min_percent:g} %."""
    _at_least(compliance_probe, "constitutional compliance score", acgs_environment.thresholds.compliance_min_percent)


@pytest.mark.p1
@pytest.mark.runbook("monitoring.business.policy-success")
def test_policy_evaluation_success(policy_success_probe: BusinessSnapshot, acgs_environment: Environment) -> None:
    """The policy evaluation success rate stays above {policy_success_min_percent:g} %."""
    _at_least(policy_success_probe, "policy evaluation success rate",
              acgs_environment.thresholds.policy_success_min_percent)
