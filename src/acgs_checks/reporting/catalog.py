"""The catalog of checks, generated from the checks themselves: ``acgs-checks catalog`` prints it as a table, and the
documentation's check catalog (:mod:`acgs_checks.reporting.pages`) is made from the same entries.

Read statically (the check modules are parsed, not imported or run): each check's name, the target argument its
cases are parametrized by (from the probe-kind registry), its first docstring sentence with the default
thresholds filled in, the runbook requirement it cites first, its severity, review day and area markers, the probe
kinds it reads, the thresholds it names and the grants it declares (``@pytest.mark.grant``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acgs_checks import kinds
from acgs_checks.policy import runbook
from acgs_checks.policy.runbook import AREAS, REVIEW_DAYS
from acgs_checks.policy.severity import Severity
from acgs_checks.policy.thresholds import Thresholds, in_words, placeholders

# Targets that are not a kind's: the suite's own check of each [[waivers]] entry.
OWN_PARAMS = {"waiver": "check"}


@dataclass(frozen=True)
class Entry:
    check: str
    what: str
    runbook: str
    severity: str
    day: str
    area: str
    name: str = ""                      # the function: test_cache_hit_rate
    module: str = ""                    # its file under checks/
    requirement: str = ""               # the runbook id it cites first
    kinds: tuple[str, ...] = ()         # the probe kinds whose records it judges
    thresholds: tuple[str, ...] = ()    # the [thresholds] keys its docstring names
    grants: tuple[str, ...] = ()        # access beyond its kinds' own, from @pytest.mark.grant


def _marks(decorators: list[ast.expr]) -> list[tuple[str, list[str]]]:
    found = []
    for deco in decorators:
        call = deco if isinstance(deco, ast.Call) else None
        target = call.func if call is not None else deco
        text = ast.unparse(target)
        if text.startswith("pytest.mark."):
            args = [a.value for a in (call.args if call else []) if isinstance(a, ast.Constant) and isinstance(
                a.value, str)]
            found.append((text.removeprefix("pytest.mark."), args))
    return found


def _module_marks(tree: ast.Module) -> list[tuple[str, list[str]]]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(ast.unparse(t) == "pytestmark" for t in node.targets):
            value = node.value
            items = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
            return _marks(list(items))
    return []


def _fixture_kinds() -> dict[str, kinds.ProbeKind[Any, Any]]:
    """The kind behind each probe or gate fixture a check may take (a gate's fixture names its kind too)."""
    found = {fixture: kind for fixture, (kind, _arg) in kinds.by_fixture().items()}
    found.update({k.gate.fixture: k for k in kinds.discover().values() if k.gate is not None and k.gate.fixture})
    return found


def _param(args: list[str], by_fixture: dict[str, kinds.ProbeKind[Any, Any]]) -> str:
    params = kinds.params()
    for arg in args:
        if arg in OWN_PARAMS:
            return OWN_PARAMS[arg]
        if arg in params:
            return arg
        kind = by_fixture.get(arg)
        if kind is not None and kind.param:
            return kind.param
    return ""


def _kinds(args: list[str], by_fixture: dict[str, kinds.ProbeKind[Any, Any]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(by_fixture[a].name for a in args if a in by_fixture))


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def entries(checks: Path, requirements: dict[str, runbook.Requirement] | None = None) -> list[Entry]:
    """Every check in ``checks/test_*.py``, ordered by review day, then as the modules define them."""
    requirements = requirements if requirements is not None else runbook.load(runbook.map_path(None))
    defaults = Thresholds()
    severities = {s.marker: s.name for s in Severity}
    by_fixture = _fixture_kinds()
    found: list[tuple[int, Entry]] = []
    for path in sorted(checks.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = _module_marks(tree)
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            marks = module + _marks(node.decorator_list)
            names = [name for name, _ in marks]
            cited = next((args for name, args in marks if name == "runbook"), [])
            requirement = requirements.get(cited[0]) if cited else None
            param = _param([a.arg for a in node.args.args], by_fixture)
            day = next((d for d in REVIEW_DAYS if d in names), "")
            doc = ast.get_docstring(node) or ""
            found.append((list(REVIEW_DAYS).index(day) if day else len(REVIEW_DAYS), Entry(
                check=f"`{node.name}[<{param}>]`" if param else f"`{node.name}`",
                what=_first_sentence(in_words(doc, defaults)).replace("|", "\\|"),
                runbook=f"{requirement.feature}: {requirement.story}" if requirement else "",
                severity=next((severities[n] for n in names if n in severities), ""),
                day=day, area=next((a for a in AREAS if a in names), ""),
                name=node.name, module=path.name, requirement=cited[0] if cited else "",
                kinds=_kinds([a.arg for a in node.args.args], by_fixture),
                thresholds=tuple(dict.fromkeys(k for k in placeholders(doc) if hasattr(defaults, k))),
                grants=tuple(g for name, args in marks if name == "grant" for g in args))))
    return [entry for _, entry in sorted(found, key=lambda pair: pair[0])]


HEADER = "| check | what it checks (default thresholds) | runbook | severity | day | area |\n|---|---|---|---|---|---|"


def markdown(rows: list[Entry]) -> str:
    lines = [HEADER]
    lines += [f"| {e.check} | {e.what} | {e.runbook} | {e.severity} | {e.day} | {e.area} |" for e in rows]
    return "\n".join(lines) + "\n"
