"""The runbook's requirements, loaded from ``runbook.toml`` (package data of acgs_checks).

Checks declare the requirements they cover with ``@pytest.mark.runbook("ID", ...)``.
Each requirement names where it sits in the runbook (epic / feature / story in Allure),
whether it is automated, and the remediation to follow when its check fails.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from acgs_checks.errors import ConfigError

# A project may keep its own map here (relative to its rootdir); otherwise the packaged one applies.
MAP_NAME = Path("fixtures") / "runbook.toml"
# Package data: present in editable, wheel and image installs alike.
_BUNDLED = Path(__file__).resolve().parent / "runbook.toml"


# The review days and areas the check markers name (the runbook's schedule and sections).
REVIEW_DAYS = {
    "daily": "the 09:00 UTC morning health check",
    "monday": "the Monday security review",
    "wednesday": "the Wednesday performance review",
    "friday": "the Friday backup verification",
}
# Declarations a check carries for the Wednesday review: the run stores them with each measurement, so the
# review selects its series by what the check declared, never by a list of check names.
TREND_MARKERS = {
    "trended": "the measured value is a performance figure the Wednesday review compares week on week",
    "capacity": "capacity(what): the measured value is a usage share of a hard limit, projected to the day it "
                "reaches 100 % (what: what running out means, e.g. 'disk full')",
}



def trend_role(trended: Any, capacity: Any) -> str:
    """What the history store keeps beside a check's measurements, from its markers: ``trended`` (or
    ``trended:<promql key>`` when Prometheus range queries can stand in for the stored series), or
    ``capacity:<what running out means>``; "" for neither."""
    if capacity is not None:
        return f"capacity:{capacity.args[0] if capacity.args else 'limit reached'}"
    if trended is not None:
        key = trended.kwargs.get("promql", "")
        return f"trended:{key}" if key else "trended"
    return ""


AREAS = {
    "health": "service health endpoints",
    "database": "PostgreSQL and its connection pool",
    "cache": "Redis",
    "slo": "latency and error-rate objectives",
    "security": "authentication, TLS and access",
    "performance": "performance trends and slow queries",
    "backup": "backups and restoration",
    "infra": "hosts: CPU, memory, disk, network",
    "business": "compliance score and policy evaluation",
    "alerting": "the deployed Prometheus alert rules against the runbook's thresholds",
}

# What to do depends on how a check failed. A breach (or an unreachable target, which only the reachability
# checks report) gets the requirement's own remediation; the other kinds say that nothing was measured, so the
# requirement's remediation (free space, restart a service) would be advice about a value nobody read.
# The keys are acgs_checks.verdict's failure kinds (a self-test keeps them equal).
KIND_REMEDIATION = {
    "no data": "Nothing was measured, so the remediation for a breach does not apply yet. Make the read named "
               "in the message work for the monitoring account: the source must answer, the metric, query, path "
               "or selector must exist, and the timeout must allow the answer. Then re-run the check and act on "
               "the value it reads.",
    "insufficient privilege": "The monitoring account lacks a grant, so nothing was measured. Apply the grant "
                              "the message names (docs/security.md, Monitoring accounts; acgs-checks doctor "
                              "names every missing one in one pass), then re-run.",
    "access denied": "The target answered and refused the suite's credentials: the target itself may be fine. "
                     "Check the account and its secret in the environment file (through ${VAR}) and the target's "
                     "access rules (pg_hba.conf, the Redis ACL, the token the service expects).",
    "probe error": "The suite's own probe failed, not the target: the attached traceback is the evidence. Check "
                   "the target by hand meanwhile, and report the message to the acgs-checks maintainers.",
}


def remediation_for(kind: str, requirement_remediation: str) -> str:
    """The remediation to show for a failure of ``kind`` (a breach keeps the requirement's own)."""
    return KIND_REMEDIATION.get(kind, requirement_remediation)


@dataclass(frozen=True)
class Requirement:
    id: str
    epic: str
    feature: str
    story: str
    remediation: str
    automated: bool = True


def map_path(rootdir: Path | None = None) -> Path:
    if rootdir is not None and (rootdir / MAP_NAME).is_file():
        return rootdir / MAP_NAME
    return _BUNDLED


@cache
def load(path: Path) -> dict[str, Requirement]:
    """The requirements by id; a broken map is a ConfigError naming the entry."""
    shown = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(source=shown, key="", problem=f"cannot be read ({exc})", fix="restore the file") from None
    requirements: dict[str, Requirement] = {}
    for index, entry in enumerate(data.get("requirement", [])):
        try:
            requirement = Requirement(
                id=entry["id"], epic=entry["epic"], feature=entry["feature"], story=entry["story"],
                remediation=entry.get("remediation", ""), automated=bool(entry.get("automated", False)))
        except (KeyError, TypeError) as exc:
            raise ConfigError(source=shown, key=f"requirement[{index}]", problem=f"missing {exc}",
                              fix="give every requirement id, epic, feature and story") from None
        if requirement.id in requirements:
            raise ConfigError(source=shown, key=f"requirement[{index}].id", problem=f"{requirement.id!r} twice",
                              fix="give every requirement its own id")
        requirements[requirement.id] = requirement
    return requirements
