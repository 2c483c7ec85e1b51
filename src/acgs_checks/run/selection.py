"""Which cases run: one case per target, the check-marker rules (exit 4), review days, applicable kinds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from acgs_checks import kinds, verdict
from acgs_checks.errors import ConfigError
from acgs_checks.policy import runbook
from acgs_checks.policy.runbook import AREAS, REVIEW_DAYS, TREND_MARKERS
from acgs_checks.policy.severity import SEVERITY_MARKERS, Severity
from acgs_checks.reporting import allure_files
from acgs_checks.run.state import STATE, RunState

WAIVER_ARG = "waiver"  # one case per [[waivers]] entry: is it still in force?


def add_markers(config: pytest.Config) -> None:
    for day, meaning in REVIEW_DAYS.items():
        config.addinivalue_line("markers", f"{day}: review day; runs in {meaning}")
    for severity in Severity:
        config.addinivalue_line(
            "markers", f"{severity.marker}: severity {severity.name}, {severity.response.meaning}")
    for area, meaning in AREAS.items():
        config.addinivalue_line("markers", f"{area}: runbook area: {meaning}")
    config.addinivalue_line(
        "markers", "runbook(*requirement_ids): the runbook requirements this check covers, e.g. "
        "runbook('daily.service-health'); the first one places it in the report")
    config.addinivalue_line(
        "markers", "reachability: this case fails when its probe's target did not answer; the kind's other "
        "cases for that target are skipped as blocked by it")
    for name, meaning in TREND_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")
    config.addinivalue_line(
        "markers", "grant(*statements): access this check needs beyond its probe kind's minimum (the check catalog "
        "lists it; doctor names it when it is missing)")


def generate_tests(metafunc: pytest.Metafunc) -> None:
    """Targets the testinfra way: one case per target of the environment, its name as the id."""
    state = metafunc.config.stash.get(STATE, None)
    if state is None:
        return
    selected = _may_be_selected(metafunc, state)
    if WAIVER_ARG in metafunc.fixturenames:  # the suite's own check of the environment's waivers
        waivers = state.environment.waivers if selected else ()
        metafunc.parametrize(WAIVER_ARG, waivers, ids=[w.check for w in waivers], scope="function")
    for param, kind in kinds.params().items():
        if param in metafunc.fixturenames:
            # A check that -m or --review leaves out gets no cases per target: with hundreds of
            # targets, building and then deselecting them would cost more than the checks that run.
            targets = kind.targets(state.environment) if selected else ()
            metafunc.parametrize(param, targets, ids=[t.name for t in targets], scope="function")


def _may_be_selected(metafunc: pytest.Metafunc, state: RunState) -> bool:
    """Whether this check's own markers can pass ``-m`` and ``--review`` (True when unsure)."""
    marks = list(metafunc.definition.iter_markers())
    names = {m.name for m in marks}
    review = state.settings.review
    if review is not None and not names & {"daily", review}:
        return False
    expression = (metafunc.config.getoption("markexpr", "") or "").strip()
    if not expression:
        return True
    try:
        from _pytest.mark import MarkMatcher  # noqa: PLC0415 - pytest's own matcher for -m
        from _pytest.mark.expression import Expression  # noqa: PLC0415

        return bool(Expression.compile(expression).evaluate(MarkMatcher.from_markers(marks)))
    except Exception:  # noqa: BLE001 - pytest's private API moved: build every case and let -m deselect
        return True


def is_check(item: pytest.Item, rootpath: Path) -> bool:
    if item.get_closest_marker("runbook") is not None:
        return True
    try:
        return item.path.relative_to(rootpath).parts[0] == "checks"
    except (ValueError, IndexError):
        return False


def _check_markers(item: pytest.Item, requirements: dict[str, runbook.Requirement]) -> tuple[
        list[str], Severity | None, runbook.Requirement | None]:
    """What is wrong with a check's markers, and its severity and requirement when nothing is."""
    names = {m.name for m in item.iter_markers()}
    problems: list[str] = []
    severities = sorted(names & SEVERITY_MARKERS.keys())
    days = sorted(names & REVIEW_DAYS.keys())
    if len(severities) != 1:
        problems.append("needs exactly one severity marker (p0, p1, p2 or p3), has "
                        + (", ".join(severities) or "none"))
    if len(days) != 1:
        problems.append("needs exactly one review-day marker (daily, monday, wednesday or friday), has "
                        + (", ".join(days) or "none"))
    requirement = None
    mark = item.get_closest_marker("runbook")
    if mark is None or not mark.args:
        problems.append("needs @pytest.mark.runbook('REQUIREMENT-ID')")
    else:
        unknown = [a for a in mark.args if not isinstance(a, str) or a not in requirements]
        if unknown:
            problems.append(f"runbook marker names unknown requirement(s) {unknown}; known: "
                            + ", ".join(sorted(requirements)))
        else:
            requirement = requirements[mark.args[0]]
    return problems, SEVERITY_MARKERS[severities[0]] if len(severities) == 1 else None, requirement


def collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse checks without one severity and one review day; label the rest for Allure."""
    state = config.stash.get(STATE, None)
    if state is None:
        return
    errors: list[str] = []
    try:
        requirements = runbook.load(runbook.map_path(config.rootpath))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    with_allure = config.pluginmanager.hasplugin("allure_pytest")
    for item in items:
        if not is_check(item, config.rootpath):
            continue
        problems, severity, requirement = _check_markers(item, requirements)
        if problems:
            errors.append(f"{item.nodeid}: " + "; ".join(problems))
            continue
        assert severity is not None
        assert requirement is not None
        names = {m.name for m in item.iter_markers()}
        ids = [str(a) for a in item.get_closest_marker("runbook").args]  # type: ignore[union-attr]
        item.user_properties.extend([
            ("severity", severity.name), ("review_day", next(d for d in REVIEW_DAYS if d in names)),
            ("area", next((a for a in AREAS if a in names), "")), ("runbook", ",".join(ids)),
            ("environment", state.environment.name),
        ])
        role = runbook.trend_role(item.get_closest_marker("trended"), item.get_closest_marker("capacity"))
        if role:
            item.user_properties.append(("role", role))
        for rid in ids:
            check = f"{item.nodeid.split('::')[0]}::{getattr(item, 'originalname', item.name)}"
            if check not in state.coverage.setdefault(rid, []):
                state.coverage[rid].append(check)
        if with_allure:
            doc = getattr(getattr(item, "function", None), "__doc__", None)
            for mark in allure_files.markers_for(requirement, severity, state.environment, doc):
                item.add_marker(mark)
    if errors:
        raise pytest.UsageError("invalid checks:\n  " + "\n  ".join(dict.fromkeys(errors)))
    missing_sections = _missing_sections(state)
    _catalog(state, items, config.rootpath, missing_sections)
    if state.settings.coverage:
        # Only the map is wanted: report it (pytest_terminal_summary) and run nothing.
        config.hook.pytest_deselected(items=list(items))
        items[:] = []
        return
    review = state.settings.review
    if review is not None:
        days = {"daily", review}
        chosen = [i for i in items if not is_check(i, config.rootpath)
                  or {m.name for m in i.iter_markers()} & days]
        if len(chosen) != len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
            items[:] = chosen
    _leave_out(config, items, set(missing_sections))
    state.selection_done = True


def _leave_out(config: pytest.Config, items: list[pytest.Item], missing: set[str]) -> None:
    """Checks of a kind the environment has none of (say, no poolers) do not apply: leave them out rather than
    report pytest's "empty parameter set" skip for each (the run's runbook coverage names what that leaves)."""
    if missing:
        keep = [i for i in items if not missing & set(getattr(i, "fixturenames", ()))]
        dropped = [i for i in items if missing & set(getattr(i, "fixturenames", ()))]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep


def _absent_sections_exist(state: RunState) -> None:
    """Each key of [absent] names a section of the environment file (a misspelt one would hide nothing silently)."""
    known = {kind.section for kind in kinds.REGISTRY.values()} | {"waivers"}
    for key in state.environment.absent:
        if key not in known:
            raise pytest.UsageError(f"{state.environment.source}: absent.{key}: not a section of the environment "
                                    f"file; fix: use one of {', '.join(sorted(known))}")


def _missing_sections(state: RunState) -> dict[str, str]:
    """Fixture (or target argument) -> the environment section whose absence leaves its checks out."""
    _absent_sections_exist(state)
    found = {param: kind.section for param, kind in kinds.params().items() if not kind.targets(state.environment)}
    if not state.environment.waivers:
        found[WAIVER_ARG] = "waivers"
    found.update({f: kind.section for f, (kind, _arg) in kinds.by_fixture().items()
                  if not kinds.applicable(state.environment, f)})
    return found


def _catalog(state: RunState, items: list[pytest.Item], rootpath: Path, missing: dict[str, str]) -> None:
    for item in items:
        if not is_check(item, rootpath):
            continue
        names = frozenset(m.name for m in item.iter_markers())
        lacks = next((missing[f] for f in getattr(item, "fixturenames", ()) if f in missing), "")
        state.catalog.setdefault(getattr(item, "originalname", item.name), (
            next((d for d in REVIEW_DAYS if d in names), ""), next((a for a in AREAS if a in names), ""), names, lacks))


def why_nothing_selected(state: RunState, markexpr: str) -> str:
    """One line for a run that selected no check: the marker, what it matches, and what each day would select."""
    from collections import Counter  # noqa: PLC0415

    matches = {name: entry for name, entry in state.catalog.items() if _matches(markexpr, entry[2])} \
        if markexpr else dict(state.catalog)
    review = state.settings.review
    shown = f"-m {markexpr!r}" if markexpr else "this selection"
    if review is not None:
        shown += f" with --review {review}"
    env = state.environment.name
    if not state.catalog:  # an xdist controller: its workers collected, it did not
        return (f"acgs-checks: {shown} selects no check in environment {env!r} (run it without -n to see what "
                "each review day would select)")
    if matches:
        lacking = sorted({entry[3] for entry in matches.values() if entry[3]})
        if lacking and all(entry[3] for entry in matches.values()):
            return (f"acgs-checks: {shown} matches {len(matches)} check(s), but environment {env!r} has nothing for "
                    f"them to check: add {', '.join(f'[{s}]' for s in lacking)} (see docs/configuration.md)")
        days = sorted({entry[0] for entry in matches.values()})
        if review is not None and review not in days and "daily" not in days:
            return (f"acgs-checks: {shown} selects nothing: the {len(matches)} matching check(s) run on "
                    f"{', '.join(days)}, not in the {review} review (drop --review, or use --review {days[0]})")
    by_day: dict[str, Counter[str]] = {day: Counter() for day in REVIEW_DAYS}
    for day, area, _names, lacks in state.catalog.values():
        if day and not lacks:
            by_day[day][area or "other"] += 1
    offer = "; ".join(f"-m {day} selects {sum(areas.values())} checks ("
                      + ", ".join(f"{a} {n}" for a, n in areas.most_common()) + ")"
                      for day, areas in by_day.items() if areas)
    return f"acgs-checks: {shown} selects no check in environment {env!r}; {offer or 'no check applies to it'}"


def unknown_markers(config: pytest.Config) -> str:
    """The one line that stops a run whose ``-m`` names a marker no check can carry, before anything starts
    (pytest would select, start the sandbox, and only then refuse it)."""
    markexpr = (config.getoption("markexpr", "") or "").strip()
    if not markexpr:
        return ""
    known = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    # Every name the expression uses (evaluating it would skip names behind a short-circuit): strings and
    # keyword arguments (mark(key="value")) left out.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", markexpr)
    names = re.findall(r"(?<![\w.])[A-Za-z_][\w.]*+(?!\s*=)", bare)
    used = [name for name in names if name not in ("and", "or", "not")]
    unknown = sorted({name for name in used if name not in known})
    if not unknown:
        return ""
    return (f"acgs-checks: -m {markexpr!r}: {', '.join(repr(n) for n in unknown)} is not a marker of this suite; "
            f"fix: use a review day ({', '.join(REVIEW_DAYS)}), a level (p0..p3) or an area ({', '.join(AREAS)})")


def _matches(markexpr: str, names: frozenset[str]) -> bool:
    try:
        from _pytest.mark.expression import Expression  # noqa: PLC0415

        return bool(Expression.compile(markexpr).evaluate(lambda name, **_: name in names))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - pytest's private API moved or the expression is odd: say what we can
        return False


def collection_finish(session: pytest.Session) -> None:
    """Remember which targets the selected checks need, so only those get probed."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    verdict.set_selected({item.name for item in session.items})
    if state.selection_done:  # pytest calls this hook after an interrupted collection too: then nothing was planned
        state.planned.update({item.nodeid: str(dict(item.user_properties).get("severity", ""))
                              for item in session.items})
    probe_fixtures = kinds.by_fixture()
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for fixture in set(getattr(item, "fixturenames", ())) & probe_fixtures.keys():
            kind, arg = probe_fixtures[fixture]
            name = arg[1:] if arg.startswith("=") else getattr(params.get(arg), "name", None)
            if name is not None:
                state.selected.setdefault(kind.name, set()).add(name)
                state.needs.setdefault(item.nodeid, []).append((kind.name, name))
                if item.get_closest_marker("reachability") is not None:
                    state.reachability.setdefault((kind.name, name), item.name)
    verdict.set_reachability(state.reachability)


