"""What ``acgs-checks doctor`` says: per target, which selected checks can see what they need, and which cannot,
with the fix each one's message names (a grant, a credential, the network).

Doctor runs the selected checks once, read-only and bounded as any run; a threshold breach is not its concern (the
check could read what it judges), nor is warming up or not applicable. What cannot be read is: access denied,
target unreachable, insufficient privilege, no data and probe error, and a case blocked by one of those.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from acgs_checks import verdict
from acgs_checks.reporting.outputs import CheckRecord

# Failure kinds that mean "the check could not see what it needs".
BLIND = (verdict.ACCESS_DENIED_KIND, verdict.UNREACHABLE_KIND, verdict.PRIVILEGE_KIND, verdict.NO_DATA_KIND,
         verdict.PROBE_ERROR_KIND, "other")
_FIX = re.compile(r";\s*(fix: .*|check .*)$")
_PARAM = re.compile(r"\[(.+)\]$")
# What to do when the message names no fix, by kind.
_DEFAULT_FIX = {
    verdict.UNREACHABLE_KIND: "make the target reachable from this machine (address, DNS, firewall, TLS: the "
                              "message says which)",
    verdict.ACCESS_DENIED_KIND: "check the credential and the grants the message names",
    verdict.PROBE_ERROR_KIND: "the probe raised: read the case's evidence in the report",
    verdict.NO_DATA_KIND: "the message says what could not be read",
}


@dataclass
class Missing:
    check: str
    severity: str
    kind: str
    message: str
    fix: str


@dataclass
class TargetAccess:
    target: str
    works: list[str] = field(default_factory=list)      # checks that could read what they judge
    missing: list[Missing] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing


def target_of(record: CheckRecord) -> str:
    found = _PARAM.search(record.name)
    return found.group(1) if found else (record.area or "suite")


def fix_of(message: str, kind: str) -> str:
    found = _FIX.search(message)
    if found:
        return found.group(1).removeprefix("fix: ").strip()
    return _DEFAULT_FIX.get(kind, "see the message")


def access(records: Iterable[CheckRecord]) -> list[TargetAccess]:
    """Every selected case, by target (in the order they ran)."""
    by_target: dict[str, TargetAccess] = {}
    for record in records:
        seen = by_target.setdefault(target_of(record), TargetAccess(target_of(record)))
        if record.outcome == "failed" and record.kind in BLIND:
            seen.missing.append(Missing(record.name, record.severity, record.kind, record.message,
                                        fix_of(record.message, record.kind)))
        elif record.outcome == "skipped" and record.kind == verdict.BLOCKED:
            seen.missing.append(Missing(record.name, record.severity, "blocked", record.message,
                                        "fix the case it names first"))
        elif record.outcome == "skipped" and record.kind == verdict.NOT_APPLICABLE:
            seen.not_applicable.append(record.name)
        else:  # passed, breached, waived, in maintenance, warming up: it could read what it judges
            seen.works.append(record.name)
    return list(by_target.values())


def table(found: list[TargetAccess], *, width: int = 110) -> list[str]:
    """One line per target, and under a target that misses something, each check with its kind and its fix (the
    whole fix, wrapped at ``width``: a cut command would not run)."""
    lines, name_width = [], min(max((len(t.target) for t in found), default=6), 28)
    for seen in found:
        works = f"{len(seen.works)} check(s) can read what they judge" + (
            f", {len(seen.not_applicable)} not applicable" if seen.not_applicable else "")
        lines.append(f"{'ok' if seen.ok else 'MISSING':<8}{seen.target:<{name_width}}  {works}")
        for gap in seen.missing:
            lines.append(f"{'':<8}{'':<{name_width}}  {gap.severity or '--'} {gap.check}: {gap.kind}")
            indent = " " * (8 + name_width + 7)
            lines += textwrap.wrap(gap.fix, width=max(width, len(indent) + 40), initial_indent=indent[:-5] + "fix: ",
                                   subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
    blind = sum(len(t.missing) for t in found)
    lines.append(f"doctor: {sum(len(t.works) for t in found)} check(s) can read what they judge; {blind} cannot"
                 + (" (exit 1)" if blind else " (exit 0)"))
    return lines


def as_json(found: list[TargetAccess]) -> str:
    return json.dumps({"ok": all(t.ok for t in found),
                       "targets": [{**asdict(t), "ok": t.ok} for t in found]}, indent=2) + "\n"


def from_json(text: str) -> list[TargetAccess]:
    """The findings :func:`as_json` wrote (the doctor command reads what its run wrote)."""
    found = []
    for item in json.loads(text)["targets"]:
        found.append(TargetAccess(item["target"], list(item["works"]), [Missing(**gap) for gap in item["missing"]],
                                  list(item["not_applicable"])))
    return found
