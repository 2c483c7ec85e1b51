"""Alerting: the live Prometheus holds the alert rules the runbook makes, unchanged (the drift check).

`acgs-checks alert-rules` writes the rules from this environment's thresholds, PromQL and severities; this check
reads what Prometheus holds (its rules API, read-only) and names every difference. Between runs it is these rules
that page: when they drift, the runbook and the pager disagree silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from acgs_checks.alerting import drift, rules
from acgs_checks.environment import Environment
from acgs_checks.policy import runbook
from acgs_checks.verdict import NOT_SET_UP, breached, judge, require_read

if TYPE_CHECKING:
    from acgs_checks.probes.deployed_rules import DeployedRules

pytestmark = [pytest.mark.daily, pytest.mark.alerting]


@pytest.mark.p1
@pytest.mark.runbook("monitoring.alert-rules")
def test_alert_rules_match_the_runbook(deployed_rules_probe: DeployedRules, acgs_environment: Environment,
                                       pytestconfig: pytest.Config) -> None:
    """Prometheus holds every alert rule the runbook makes for this environment, with the same expression,
    threshold, `for:` and severity, and no rule marked as this project's that the runbook does not make."""
    seen = deployed_rules_probe
    require_read(seen, f"alerting rules from {seen.source}")
    requirements = runbook.load(runbook.map_path(pytestconfig.rootpath))
    wanted = drift.expected(rules.rule_groups(rules.Source(acgs_environment, requirements)))
    found = drift.differences(wanted, seen.rules)
    if wanted and len(found) == len(wanted) and all(line.endswith(": missing in Prometheus") for line in found):
        # None deployed at all: a setup step never taken (doctor names it too), not a drift of one rule.
        breached(f"{NOT_SET_UP} none of the {len(wanted)} alert rules generated for this environment is in "
                 f"{seen.source}; fix: acgs-checks alert-rules --env {acgs_environment.source or '<file>'} --output "
                 "acgs-rules.yml, add it to Prometheus's rule_files and reload it",
                 "the rules as `acgs-checks alert-rules` makes them", value=float(len(found)), threshold=0)
    judge(bool(found), (f"{len(found)} difference(s) in {seen.source}: " + "; ".join(found[:12])) if found else
          f"{len(wanted)} generated rule(s) deployed as generated in {seen.source}",
          "the rules as `acgs-checks alert-rules` makes them", value=float(len(found)), threshold=0)
