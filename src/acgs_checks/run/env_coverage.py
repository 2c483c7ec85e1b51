"""Runbook coverage for this environment: which of the runbook's lines have a target here, and which none.

A line is covered when at least one of its checks has a target in the environment file (a check whose section is
empty is left out of the run; that must never read as green). ``[absent]`` in the file declares a section this
environment has none of, with the reason (``caches = "no Redis in this deployment"``): its lines are then named as
declared absent, not as gaps. doctor exits 1 while a daily line has no target and is not declared absent.
"""

from __future__ import annotations

from dataclasses import dataclass

from acgs_checks.policy import runbook
from acgs_checks.run.state import RunState


@dataclass(frozen=True)
class Line:
    rid: str
    story: str
    daily: bool
    lacks: tuple[str, ...]     # the sections whose absence leaves it without a target
    absent: str = ""           # the reason [absent] gives, when every section it lacks is declared absent

    def describe(self) -> str:
        sections = ", ".join(f"[{s}]" if s in ("prometheus", "slo", "business") else f"[[{s}]]" for s in self.lacks)
        why = f"declared absent: {self.absent}" if self.absent else f"no {sections} in this environment"
        return f"{self.rid} ({self.story}): {why}"


@dataclass(frozen=True)
class Coverage:
    covered: int
    total: int
    uncovered: tuple[Line, ...]
    daily_selected: bool = True  # the run selected daily checks: only then are daily lines without a target gaps

    @property
    def gaps(self) -> tuple[Line, ...]:
        """Daily lines with no target that the file does not declare absent, in a run that selected daily checks:
        doctor's exit 1."""
        return tuple(line for line in self.uncovered if line.daily and not line.absent and self.daily_selected)

    def lines(self) -> list[str]:
        head = f"runbook coverage: {self.covered} of {self.total} runbook lines have a target in this environment"
        if not self.uncovered:
            return [head]
        out = [head + f"; {len(self.uncovered)} have none:"]
        out += [f"  {'DAILY ' if line in self.gaps else ''}{line.describe()}" for line in self.uncovered]
        if self.gaps:
            out.append("  add the targets, or declare a part absent with its reason: [absent] caches = \"...\"")
        return out

    def to_json(self) -> dict[str, object]:
        return {"covered": self.covered, "total": self.total,
                "uncovered": [{"runbook": x.rid, "story": x.story, "daily": x.daily, "lacks": list(x.lacks),
                               "absent": x.absent} for x in self.uncovered]}


def of(state: RunState) -> Coverage:
    """The environment's coverage, from the checks collected (state.coverage and state.catalog)."""
    requirements = runbook.load(runbook.map_path(state.rootpath))
    declared = dict(state.environment.absent)
    total = covered = 0
    uncovered = []
    for rid, requirement in requirements.items():
        checks = [c.split("::")[-1] for c in state.coverage.get(rid, [])]
        entries = [state.catalog[c] for c in checks if c in state.catalog]
        if not entries:
            continue  # not automated: the runbook map says so (pytest --runbook-coverage)
        total += 1
        if any(not lacks for _day, _area, _names, lacks in entries):
            covered += 1
            continue
        lacks = tuple(sorted({lacks for *_, lacks in entries}))
        if lacks == ("waivers",):
            total -= 1  # the waiver audit has nothing to audit without waivers: no runbook line goes unlooked at
            continue
        daily = any(day == "daily" for day, *_ in entries)
        reason = "; ".join(dict.fromkeys(declared[s] for s in lacks if s in declared)) \
            if all(s in declared for s in lacks) else ""
        uncovered.append(Line(rid, requirement.story, daily, lacks, reason))
    daily = any(record.review_day == "daily" for record in state.records.values())
    return Coverage(covered, total, tuple(uncovered), daily)
