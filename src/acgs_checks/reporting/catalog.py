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


def _param(args: list[str]) -> str:
    by_fixture = kinds.by_fixture()
    params = kinds.params()
    gates = {k.gate.fixture: k for k in kinds.discover().values() if k.gate is not None and k.gate.fixture}
    for arg in args:
        if arg in OWN_PARAMS:
            return OWN_PARAMS[arg]
        if arg in params:
            return arg
        kind = gates[arg] if arg in gates else by_fixture[arg][0] if arg in by_fixture else None
        if kind is not None and kind.param:
            return kind.param
    return ""


def _kinds(args: list[str]) -> tuple[str, ...]:
    by_fixture = kinds.by_fixture()
    gates = {k.gate.fixture: k for k in kinds.discover().values() if k.gate is not None and k.gate.fixture}
    found = [gates[a].name if a in gates else by_fixture[a][0].name for a in args if a in gates or a in by_fixture]
    return tuple(dict.fromkeys(found))


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def entries(checks: Path, requirements: dict[str, runbook.Requirement] | None = None) -> list[Entry]:
    """Every check in ``checks/test_*.py``, ordered by review day, then as the modules define them."""
    requirements = requirements if requirements is not None else runbook.load(runbook.map_path(None))
    defaults = Thresholds()
    severities = {s.marker: s.name for s in Severity}
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
            param = _param([a.arg for a in node.args.args])
            day = next((d for d in REVIEW_DAYS if d in names), "")
            doc = ast.get_docstring(node) or ""
            found.append((list(REVIEW_DAYS).index(day) if day else len(REVIEW_DAYS), Entry(
                check=f"`{node.name}[<{param}>]`" if param else f"`{node.name}`",
                what=_first_sentence(in_words(doc, defaults)).replace("|", "\\|"),
                runbook=f"{requirement.feature}: {requirement.story}" if requirement else "",
                severity=next((severities[n] for n in names if n in severities), ""),
                day=day, area=next((a for a in AREAS if a in names), ""),
                name=node.name, module=path.name, requirement=cited[0] if cited else "",
                kinds=_kinds([a.arg for a in node.args.args]),
                thresholds=tuple(dict.fromkeys(k for k in placeholders(doc) if hasattr(defaults, k))),
                grants=tuple(g for name, args in marks if name == "grant" for g in args))))
    return [entry for _, entry in sorted(found, key=lambda pair: pair[0])]


HEADER = "| check | what it checks (default thresholds) | runbook | severity | day | area |\n|---|---|---|---|---|---|"


def markdown(rows: list[Entry]) -> str:
    lines = [HEADER]
    lines += [f"| {e.check} | {e.what} | {e.runbook} | {e.severity} | {e.day} | {e.area} |" for e in rows]
    return "\n".join(lines) + "\n"
