"""The house rules that keep checks short and honest (issue: declare apart from run, one record contract).

* Every kind's record says whether its target answered in the same names, and every kind with a gate has a
  case marked ``reachability`` that reports it; no probe names a check by string.
* Trending and capacity are what the checks declare by marker, and the sandbox's seeded history agrees.
* Words from numbers: a check's docstring names a threshold (``{cache_hit_rate_min_percent:g} %``) instead of
  writing its default, and a non-default threshold is what the Allure description and the message show.
* The Wednesday review's arithmetic lives in the library (acgs_checks.maths.review), tested here on plain numbers.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest

from acgs_checks import kinds
from acgs_checks.maths import review
from acgs_checks.maths.trends import DAY
from acgs_checks.policy import runbook
from acgs_checks.policy.thresholds import Thresholds, in_words, placeholders
from acgs_checks.records import Answer
from conftest import RunSuite

ROOT = Path(__file__).resolve().parents[1]
CHECKS = sorted((ROOT / "checks").glob("test_*.py"))
DEFAULTS = {f.name: f.default for f in fields(Thresholds)}


def _checks() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in CHECKS:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                found.append((path.name, node))
    return found


def _markers(node: ast.FunctionDef) -> dict[str, ast.expr]:
    out = {}
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Attribute) and ast.unparse(target).startswith("pytest.mark."):
            out[target.attr] = deco
    return out


def test_every_kind_record_keeps_the_answer_contract() -> None:
    for kind in kinds.discover().values():
        record = kind.record.empty("x")
        assert isinstance(record, Answer), kind.name
        assert record.target == "x"


def test_a_kind_whose_record_breaks_the_contract_is_refused_at_registration() -> None:
    from dataclasses import dataclass  # noqa: PLC0415

    from acgs_checks.records import JsonRecord  # noqa: PLC0415

    @dataclass(frozen=True)
    class Bare(JsonRecord):
        target: str
        reachable: bool  # the old name: refused

    async def probe(target: object, job: kinds.Job) -> Bare:
        return Bare("x", True)

    with pytest.raises(ValueError, match="lacks answered, error, denied"):
        kinds.register(kinds.ProbeKind(name="bare-contract-test", section="bare", record=Bare, probe=probe))
    assert "bare-contract-test" not in kinds.REGISTRY


def test_every_gated_kind_has_one_reachability_case_and_no_probe_names_a_check() -> None:
    registry = kinds.discover()
    reachability: dict[str, list[str]] = {}
    for _module, node in _checks():
        if "reachability" not in _markers(node):
            continue
        args = {a.arg for a in node.args.args}
        owners = [k.name for k in registry.values() for fixture in k.fixtures() if fixture in args]
        assert len(owners) == 1, (node.name, owners)  # the raw probe fixture of exactly one kind
        reachability.setdefault(owners[0], []).append(node.name)
    gated = {k.name for k in registry.values() if k.gate is not None and _blocks_by_itself(k)}
    assert {"database", "pooler", "cache", "host", "tls", "backup"} <= gated
    # Kinds that other kinds' gates name as the blocker (slo waits on the health probe and on Prometheus).
    probes = "".join(p.read_text() for p in (ROOT / "src" / "acgs_checks" / "probes").glob("*.py"))
    named_blockers = set(re.findall(r'kinds\.(?:Blocked|unanswered)\("([a-z_]+)"', probes))
    assert {"service", "metrics_source"} <= named_blockers
    assert gated | named_blockers <= reachability.keys(), (gated | named_blockers) - reachability.keys()
    assert all(len(cases) == 1 for cases in reachability.values()), reachability
    # Blocked names a kind and a target; the case is found by marker. No library module spells a case name.
    named = re.compile(r"[\"']test_[a-z0-9_]+(\[|[\"'])")
    # (Examples in messages, and the sandbox's seeded history, which is data, are not probes.)
    package = ROOT / "src" / "acgs_checks"
    scanned = [*package.glob("probes/*.py"), *package.glob("run/*.py"), package / "kinds.py",
               package / "maths" / "review.py", *CHECKS]
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in scanned
                 for n, line in enumerate(p.read_text().splitlines(), 1) if named.search(line)]
    assert offenders == []


def _blocks_by_itself(kind: kinds.ProbeKind[object, object]) -> bool:
    """Whether the kind's gate blocks an unanswered record on a case of its own kind (the default gate does)."""
    assert kind.gate is not None
    record = kind.record.empty("x")
    if kind.gate.decide is None:
        return True
    try:
        decision = kind.gate.decide(record, None)  # type: ignore[arg-type]  # gates that read no environment
    except AttributeError:
        return False  # it reads the environment (slo: blocked by other kinds' cases)
    return isinstance(decision, kinds.Blocked) and decision.kind == kind.name


def test_roles_are_declared_by_marker_and_the_sandbox_seeds_them_alike() -> None:
    declared: dict[str, str] = {}
    for _module, node in _checks():
        marks = _markers(node)
        trended, capacity = marks.get("trended"), marks.get("capacity")
        if trended is None and capacity is None:
            continue

        class Mark:
            def __init__(self, deco: ast.expr | None) -> None:
                call = deco if isinstance(deco, ast.Call) else None
                self.args = [ast.literal_eval(a) for a in call.args] if call else []
                self.kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords} if call else {}

        declared[node.name] = runbook.trend_role(None if trended is None else Mark(trended),
                                                 None if capacity is None else Mark(capacity))
    assert declared["test_host_disk_usage"] == "capacity:disk full"
    assert declared["test_p95_latency"] == "trended:p95"
    assert declared["test_host_cpu"] == "trended:cpu"  # node_exporter's history stands in where a host has it
    assert declared["test_cache_hit_rate"] == "trended"
    seeded = (ROOT / "src" / "acgs_checks" / "sandbox" / "weekly.py").read_text()
    pairs = re.findall(r'"(test_[a-z0-9_]+)\[[^\]]+\]": \([^)]*"([a-z_:]+[^"]*)"\)', seeded)
    assert len(pairs) >= 8
    for case, role in pairs:
        assert declared.get(case) == role, (case, role)


def test_docstrings_name_thresholds_and_never_write_the_default_of_one_they_read() -> None:
    problems = []
    for module, node in _checks():
        doc = ast.get_docstring(node) or ""
        unknown = [n for n in placeholders(doc) if n not in DEFAULTS]
        if unknown:
            problems.append(f"{module}::{node.name}: no threshold named {unknown}")
        read = {a.attr for a in ast.walk(node) if isinstance(a, ast.Attribute) and a.attr in DEFAULTS}
        literal = re.sub(r"\{[^{}]*\}", "", doc)
        numbers = {float(n) for n in re.findall(r"(?<![\w.^])\d+(?:\.\d+)?(?![\w.])", literal)}
        for name in read:
            if DEFAULTS[name] in numbers:
                problems.append(f"{module}::{node.name}: writes {DEFAULTS[name]:g}, the default of {name}; "
                                f"write {{{name}:g}}")
    assert problems == []


def test_checks_judge_with_verdicts_never_a_bare_assert() -> None:
    """The suite runs with --assert=plain (nothing rewritten): a bare assert in a check would lose its message."""
    found = [f"{m}::{n.name}" for m, n in _checks() if any(isinstance(x, ast.Assert) for x in ast.walk(n))]
    assert found == []
    assert "--assert=plain" in (ROOT / "pyproject.toml").read_text()


def test_the_self_tests_start_http_servers_in_one_place() -> None:
    """servers.serving is the one HTTP server of the self-tests; hostile ones are raw sockets, on purpose."""
    hand_rolled = [f"{p.name}:{n}" for p in (ROOT / "tests").glob("*.py")
                   if p.name not in ("servers.py", "test_house.py")
                   for n, line in enumerate(p.read_text().splitlines(), 1)
                   if "serve_forever" in line or re.search(r"HTTPServer\(\(", line)]
    assert hand_rolled == []


def test_in_words_uses_the_value_in_force() -> None:
    doc = "stays above {cache_hit_rate_min_percent:g} % ({unknown} and {p95_warning_seconds:.1f} s; SELECT {1})"
    assert in_words(doc, Thresholds()) == "stays above 85 % ({unknown} and 2.0 s; SELECT {1})"
    assert in_words(doc, Thresholds(cache_hit_rate_min_percent=90.5)).startswith("stays above 90.5 %")


@pytest.mark.skipif(not os.environ.get("ACGS_TEST_REDIS_URL"), reason="needs ACGS_TEST_REDIS_URL (a real Redis)")
def test_a_team_threshold_is_what_the_report_and_the_message_say(
        run_suite: RunSuite, write_env: Callable[[str], Path]) -> None:
    env = write_env(f'name = "team"\n[[caches]]\nname = "main"\nurl = "{os.environ["ACGS_TEST_REDIS_URL"]}"\n'
                    "[thresholds]\ncache_memory_max_percent = 0.0001\n")
    run = run_suite("-m", "daily and cache", "-k", "cache_memory", "--env", str(env))
    assert run.statuses() == {"test_cache_memory[main]": "failed"}, run.output
    result = run.results()["test_cache_memory[main]"]
    assert "used_memory stays below 0.0001 % of maxmemory" in result["description"]
    assert "85 %" not in result["description"]
    assert "(expected < 0.0001 %)" in result["statusDetails"]["message"]


NOW = 1_800_000_000.0


def _daily(value: Callable[[int], float], days: int = 35) -> list[tuple[float, float]]:
    return [(NOW - d * DAY - 3600, value(d)) for d in range(days)]


def test_trends_compare_this_week_with_the_weeks_before() -> None:
    series = {
        "test_p95_latency[auth]": {"points": _daily(lambda d: 0.8 if d < 7 else 0.4), "threshold": 2.0,
                                   "worse": "higher", "role": "trended:p95"},
        "test_cache_hit_rate[main]": {"points": _daily(lambda d: 95.0), "threshold": 85.0, "worse": "lower",
                                      "role": "trended"},
        "test_tls_certificate_expiry[api]": {"points": _daily(lambda d: 40.0), "threshold": 30.0,
                                             "worse": "lower", "role": ""},
    }
    trended = review.trended_series(series, {}, NOW)
    assert set(trended) == {"test_p95_latency[auth]", "test_cache_hit_rate[main]"}  # undeclared: not trended
    found = review.compare_weeks(trended, weeks=4, limit_percent=20, now=NOW)
    assert found.judged == ["test_cache_hit_rate[main]", "test_p95_latency[auth]"]
    assert [r.split(" ")[0] for r in found.regressions] == ["test_p95_latency[auth]"]
    assert "+100 % worse" in found.regressions[0]
    assert review.compare_weeks(trended, weeks=4, limit_percent=150, now=NOW).regressions == []


def test_promql_weekly_medians_stand_in_for_the_declared_series() -> None:
    series = {"test_p95_latency[auth]": {"points": _daily(lambda d: 0.4), "threshold": 2.0, "worse": "higher",
                                         "role": "trended:p95"}}
    weekly = {"p95[auth]": {"weekly": [0.9, 0.4, 0.4], "threshold": 2.0, "worse": "higher", "query": "q"},
              "p95[other]": {"weekly": [0.5, None], "threshold": 2.0, "worse": "higher", "query": "q"}}
    trended = review.trended_series(series, weekly, NOW)
    assert set(trended) == {"test_p95_latency[auth]", "p95[other]"}
    assert trended["test_p95_latency[auth]"]["weekly"] == [0.9, 0.4, 0.4]
    found = review.compare_weeks(trended, weeks=2, limit_percent=20, now=NOW, promql=list(weekly))
    assert len(found.regressions) == 1
    assert found.regressions[0].startswith("test_p95_latency[auth] 0.9")
    assert found.waiting == ["p95[auth]", "p95[other]"]


def test_capacity_projects_declared_usage_shares_to_100_percent() -> None:
    series = {
        "test_host_disk_usage[h]": {"points": _daily(lambda d: 60.0 - 2.0 * d), "role": "capacity:disk full"},
        "test_cache_memory[main]": {"points": _daily(lambda d: 8.0), "role": "capacity:Redis maxmemory reached"},
        "test_host_cpu[h]": {"points": _daily(lambda d: 50.0 - d), "role": "trended"},
        "test_connection_usage[p]": {"points": [(NOW, 10.0)], "role": "capacity:max_connections reached"},
    }
    found, too_short = review.project_capacity(series, weeks=4, now=NOW)
    by_name = {p.resource: p for p in found}
    assert set(by_name) == {"test_host_disk_usage[h]", "test_cache_memory[main]"}
    assert by_name["test_host_disk_usage[h]"].days == pytest.approx(20.0, abs=0.1)
    assert by_name["test_host_disk_usage[h]"].line().startswith("test_host_disk_usage[h]: disk full in 20 days")
    assert by_name["test_cache_memory[main]"].days is None
    assert too_short == ["test_connection_usage[p]"]


def test_the_restore_drill_is_judged_by_the_library() -> None:
    from acgs_checks.restore import Drill, problems  # noqa: PLC0415 - the module starts no server on import

    production = {"public.policies": 1000.0, "public.audit": 50_000.0, "public.fresh": -1.0, "public.gone": 5.0}
    drill = Drill(seconds=12.0, tables={"public.policies": 1004.0, "public.audit": 30_000.0, "public.fresh": 7.0,
                                        "public.extra": 1.0}, newest=NOW - 7200)
    said = problems(drill, production, backup_time=NOW, timestamp_column="created_at", tolerance_percent=10,
                    rpo_seconds=3600, rto_seconds=10)
    assert said == ["missing table(s) public.gone", "table(s) production no longer has public.extra",
                    "row counts off: public.audit 30000 restored vs ~50000 in production",
                    "newest created_at is 2.0 h older than the backup itself", "took 12 s, beyond the RTO"]
    same = Drill(seconds=1.0, tables={"public.policies": 1000.0}, newest=NOW - 60)
    assert problems(same, {"public.policies": 995.0}, backup_time=NOW, timestamp_column="created_at",
                    tolerance_percent=10, rpo_seconds=3600, rto_seconds=10) == []


def test_the_catalog_command_lists_every_check_once() -> None:
    from acgs_checks.reporting import catalog  # noqa: PLC0415

    generated = catalog.markdown(catalog.entries(ROOT / "checks"))
    assert generated.startswith(catalog.HEADER)
    assert len(generated.splitlines()) - 2 == sum(1 for _ in _checks())  # every check, once
    assert "`test_cache_hit_rate[<cache>]` | The hit rate over the measuring window stays above 85 %." in generated


def test_the_catalog_command_names_a_missing_folder_in_one_line(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    done = subprocess.run([sys.executable, "-m", "acgs_checks.cli", "catalog", "--checks", str(tmp_path / "none")],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1
    assert "no such folder of checks; fix: pass --checks DIR" in done.stderr


def test_the_terminal_names_the_check_a_skip_belongs_to_and_how_to_open_the_report(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily and health", "--env", "sandbox", "--sandbox-fault", "auth:down")  # default -rs
    assert run.returncode == 1, run.output
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped, run.stdout
    assert all("checks/test_service_health.py:" in line for line in skipped), skipped
    assert "verdict.py" not in run.stdout
    assert "HTML report: npm run report -- --results " in run.stdout
    # Each failure once, with its level; after a sandbox run, the next step.
    assert [line for line in run.stdout.splitlines() if "test_service_health[auth]" in line and "SKIPPED" not in line
            and "blocked" not in line] == [next(line for line in run.stdout.splitlines() if line.startswith(
                "FAILED P0 checks/test_service_health.py::test_service_health[auth]: auth: GET "))], run.stdout
    assert "next: point the suite at your own ACGS-2: acgs-checks init" in run.stdout


def test_an_unknown_marker_stops_the_run_before_it_starts_in_one_line(run_suite: RunSuite) -> None:
    run = run_suite("-m", "daily and weekly", "--env", "sandbox")
    assert run.returncode == 4, run.output
    assert run.stderr.strip().splitlines() == [
        "ERROR: acgs-checks: -m 'daily and weekly': 'weekly' is not a marker of this suite; fix: use a review day "
        "(daily, monday, wednesday, friday), a level (p0..p3) or an area (health, database, cache, slo, security, "
        "performance, backup, infra, business, alerting)"]
    assert "sandbox" not in run.stdout  # nothing started
