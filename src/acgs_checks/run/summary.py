"""What a run reports: one record per check, summary.json, metrics, the webhook, the terminal summary."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from _pytest import junitxml

from acgs_checks import measurements as history
from acgs_checks import verdict
from acgs_checks.environment import SANDBOX, maintenance
from acgs_checks.policy import runbook
from acgs_checks.policy.severity import Severity
from acgs_checks.reporting import access, allure_files, outputs
from acgs_checks.run import env_coverage, reports
from acgs_checks.run.selection import why_nothing_selected
from acgs_checks.run.state import STATE, RunState, is_worker, is_xdist_controller

_PACKAGE = Path(verdict.__file__).resolve().parent


class Recorder:
    """One record per check from the reports, workers' included (controller side)."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.by_name: dict[str, outputs.CheckRecord] = {}
        reports.WRITTEN.annotate = self.annotate

    def annotate(self, result: dict[str, object]) -> None:
        """Allure's result of one case, finished as it is written (once): what it measured, whether it passed
        only on a retry, and its failure kind's remediation; from the record of this process."""
        record = self.by_name.get(str(result.get("name")))
        if record is None:
            return
        allure_files.annotate(result, measurement=record.measurement if record.outcome == "passed" else "",
                              flaky=record.message if record.flaky else "",
                              failure_kind=record.kind if record.outcome == "failed" else "")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[
            None, pytest.TestReport, pytest.TestReport]:
        """A skip raised by the suite's own verdicts (blocked, not applicable, waived) is reported at the check,
        not at the line of acgs_checks that raised it."""
        report = yield
        longrepr = report.longrepr
        if report.skipped and isinstance(longrepr, tuple) and _PACKAGE in Path(str(longrepr[0])).resolve().parents:
            path, line, _ = item.reportinfo()
            report.longrepr = (str(path), (line or 0) + 1, longrepr[2])
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        """After every writer (JUnit writes last): a run whose verdicts passed but whose outputs were not all
        written exits 6; a worker hands what it could not write to the controller."""
        reports.flush_writes()  # the Allure files of every case are on disk before anything reads or links them
        result = yield
        reports.flush_writes()
        if is_worker(session.config):
            session.config.workeroutput["acgs_output_problems"] = reports.CURRENT.lines()  # type: ignore[attr-defined]
        elif reports.CURRENT.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = reports.OUTPUTS_INCOMPLETE
        return result

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if "severity" not in props and report.when != "call" and report.outcome == "passed":
            return
        record = self.state.records.get(report.nodeid)
        if record is None:
            record = outputs.CheckRecord(
                id=report.nodeid, name=report.nodeid.rsplit("::", 1)[-1], outcome="passed",
                severity=str(props.get("severity", "")), review_day=str(props.get("review_day", "")),
                area=str(props.get("area", "")), runbook=[r for r in str(props.get("runbook", "")).split(",") if r],
                role=str(props.get("role", "")))
            self.state.records[report.nodeid] = record
            self.by_name[record.name] = record
        if report.when == "call":
            record.duration_seconds = report.duration
        if "measured" in props:
            record.measured = float(props["measured"])  # type: ignore[arg-type]
        if "threshold" in props:
            record.threshold = float(props["threshold"])  # type: ignore[arg-type]
        if "measurement" in props:
            record.measurement = str(props["measurement"])
        if report.when == "call" and "flaky" in props:
            record.flaky, record.message = True, str(props["flaky"])
        if record.outcome == "failed" or (report.passed and report.when != "call"):
            return
        record.outcome = report.outcome
        if report.failed or report.skipped:
            longrepr = report.longrepr
            if isinstance(longrepr, tuple):
                message = str(longrepr[2])
            else:
                crash = getattr(longrepr, "reprcrash", None)
                message = crash.message if crash is not None else str(longrepr)
            record.message = message.removeprefix("Failed: ").removeprefix("Skipped: ").strip().splitlines()[0] \
                if message.strip() else ""
            record.kind = verdict.failure_kind(record.message) if report.failed else verdict.skip_kind(record.message)


def runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Carry what the case measured (a breach's numbers, a pass's line) into the report, for every output."""
    report = yield
    if call.when == "call":
        raised = call.excinfo.value if call.excinfo is not None else None
        found: list[tuple[str, object]] = list(raised.numbers().items()) if isinstance(raised, verdict.Breach) else []
        seen = verdict.take_measurement()
        if report.passed and seen is not None:  # what a passing case measured, against which threshold
            found.append(("measurement", seen.text))
            found.extend((key, number) for key, number in (("measured", seen.value), ("threshold", seen.threshold))
                         if number is not None)
        if report.failed and call.excinfo is not None:
            found.append(("failure_kind", verdict.failure_kind(str(call.excinfo.value))))
        if report.skipped and call.excinfo is not None and verdict.skip_kind(str(call.excinfo.value)):
            found.append(("skip_kind", verdict.skip_kind(str(call.excinfo.value))))
        # The report carries them to the controller; the item too, since JUnit writes the properties
        # of the teardown report, which pytest builds from the item.
        report.user_properties.extend(found)
        item.user_properties.extend(found)
    return report


def not_run(state: RunState) -> dict[str, str]:
    """The selected cases that have no record: they never ran (the run was interrupted), by id, with their level."""
    return {nodeid: level for nodeid, level in state.planned.items() if nodeid not in state.records}


def _status(exit_status: int) -> str:
    return "interrupted" if exit_status == pytest.ExitCode.INTERRUPTED else "finished"


def _summary(state: RunState, exit_status: int) -> outputs.RunSummary:
    return outputs.RunSummary(
        status=_status(exit_status),
        environment=state.environment.name, review=state.settings.review_label,
        fail_on=state.settings.fail_on.name, started=state.started_ms / 1000, finished=time.time(),
        exit_status=exit_status, checks=sorted(state.records.values(), key=lambda r: r.id),
        coverage=env_coverage.of(state).to_json(),
        not_run=not_run(state) if exit_status == pytest.ExitCode.INTERRUPTED else {})


def _finish_doctor(session: pytest.Session, state: RunState) -> None:
    settings = state.settings
    if not state.records:
        return  # nothing selected: pytest's own exit status (5) and the terminal's line say so
    state.doctor = access.access(state.records.values(), access.accounts(state.environment))
    coverage = env_coverage.of(state)
    ok = all(t.ok for t in state.doctor) and not coverage.gaps
    session.exitstatus = pytest.ExitCode.OK if ok else pytest.ExitCode.TESTS_FAILED
    if settings.doctor_json is not None:
        cover = {**coverage.to_json(), "lines": coverage.lines(), "gaps": len(coverage.gaps)}
        try:
            settings.doctor_json.write_text(access.as_json(state.doctor, cover), encoding="utf-8")
        except OSError as exc:
            reports.CURRENT.failed("doctor JSON", settings.doctor_json, exc)


def sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None or is_worker(config):
        return
    settings = state.settings
    if settings.coverage:
        session.exitstatus = pytest.ExitCode.OK
        return
    if settings.doctor:  # what each case could read; no report, history or metric is written
        _finish_doctor(session, state)
        return
    failures = [r for r in state.records.values() if r.outcome == "failed"]
    # A failure of a test that carries no severity is never waived.
    waivable = all(r.severity and not Severity.parse(r.severity).at_or_above(settings.fail_on) for r in failures)
    if exitstatus == pytest.ExitCode.TESTS_FAILED and failures and waivable:
        session.exitstatus = pytest.ExitCode.OK
    status = _status(exitstatus)
    xml = config.stash.get(junitxml.xml_key, None)
    if xml is not None:  # JUnit is written after this hook; it says whether the run finished
        xml.add_global_property("acgs_run_status", status)
    results_dir = config.getoption("allure_report_dir", None)
    if results_dir:
        try:
            _finish_allure(Path(results_dir), state, status, scan=is_xdist_controller(config))
        except OSError as exc:
            reports.CURRENT.failed("allure results", results_dir, exc)
    summary = _summary(state, int(session.exitstatus))
    try:
        outputs.write_summary(settings.summary_path, summary)  # also with no record: it replaces "running"
    except OSError as exc:
        reports.CURRENT.failed("summary", settings.summary_path, exc)
    if not state.records:
        return
    _keep_history(state, summary)
    problems: list[str] = []
    if settings.textfile is not None:
        try:
            outputs.write_textfile(settings.textfile, summary)
        except OSError as exc:
            reports.CURRENT.failed("metrics textfile", settings.textfile, exc)
    if settings.pushgateway:
        problems.append(outputs.push(settings.pushgateway, summary))
    if settings.webhook and summary.failures_at_or_above(settings.fail_on):
        problems.append(outputs.notify(settings.webhook, outputs.webhook_payload(summary, settings.fail_on)))
    if settings.alertmanager:
        remediation = {rid: r.remediation for rid, r in runbook.load(runbook.map_path(state.rootpath)).items()}
        problems.append(outputs.alert(settings.alertmanager,
                                      outputs.alertmanager_alerts(summary, settings.fail_on, remediation)))
    state.delivery_problems = [state.environment.redact(p) for p in problems if p]


def _finish_allure(results_dir: Path, state: RunState, status: str, *, scan: bool) -> None:
    settings = state.settings
    allure_files.write_launch_files(results_dir, state.environment, fail_on=settings.fail_on,
                                    faults=[str(f) for f in settings.faults], status=status)
    # Each result was finished as it was written; what remains is linking blocked cases to their blocker. Under
    # xdist the workers wrote the results, so this run's files are scanned; in one process, the writer's index says.
    written = reports.WRITTEN
    if scan:
        allure_files.link_blocked(results_dir, since_ms=state.started_ms)
    else:
        allure_files.link_blocked(results_dir, since_ms=state.started_ms, failed=written.failed,
                                  blocked=written.blocked)


def _keep_history(state: RunState, summary: outputs.RunSummary) -> None:
    """Append every measured value of this run to the history store; a problem is an output not written."""
    path = history.path_for(state.environment.history.path)
    if path is None:
        return
    rows = [history.Row(at=summary.started, environment=summary.environment, review=summary.review,
                        case_name=r.name, value=r.measured, threshold=r.threshold, outcome=r.outcome,
                        worse=history.worse_direction(r.measured, r.threshold, r.outcome), role=r.role)
            for r in summary.checks if r.measured is not None and r.outcome in ("passed", "failed")]
    try:
        history.append(path, rows)
    except (OSError, history.Error) as exc:
        reports.CURRENT.failed("history", path, exc)


def terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or is_worker(config):
        return
    tr = terminalreporter
    if state.settings.coverage:
        _print_coverage(tr, state)
        return
    if state.settings.doctor and state.doctor:
        _print_doctor(tr, state)
        return
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:

        tr.write_line(why_nothing_selected(state, (config.getoption("markexpr", "") or "").strip()), yellow=True)
        return
    if not state.records and exitstatus != pytest.ExitCode.INTERRUPTED:
        return
    summary = _summary(state, exitstatus)
    tr.section("acgs-checks summary")
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        _print_not_run(tr, state)
    for severity, row in summary.counts().items():
        if any(row.values()):
            tr.write_line(f"{severity}: {row['failed']} failed, {row['passed']} passed, {row['skipped']} skipped")
    failures = sorted((r for r in summary.checks if r.outcome == "failed"),
                      key=lambda r: (r.severity or "P9", r.id))
    for record in failures:
        tr.write_line(f"FAILED {record.severity or '--'} {record.id}: {record.message}")
    denied = [r for r in failures if r.kind == verdict.ACCESS_DENIED_KIND]
    if denied:
        tr.write_line(f"access denied: {len(denied)} check(s) were refused by their target; check credentials "
                      "and grants, not the network: " + ", ".join(r.name for r in denied), yellow=True)
    if any(r.kind in (verdict.ACCESS_DENIED_KIND, verdict.PRIVILEGE_KIND) for r in failures):
        tr.write_line(f"next: acgs-checks doctor --env {state.settings.env_spec} names every grant the selected checks "
                      "are missing, per target, in one pass", yellow=True)
    rated = [Severity.parse(r.severity) for r in failures if r.severity]
    if rated:
        worst = min(rated)
        tr.write_line(f"{worst.name} failing: {worst.response.summary()}", bold=True, red=True)
        fail_on = state.settings.fail_on
        waived = [s for s in rated if not s.at_or_above(fail_on)]
        if waived:
            tr.write_line(f"--fail-on {fail_on.name}: {len(waived)} failure(s) below {fail_on.name} "
                          "are reported but do not fail the run")
    for kind, said in ((verdict.WAIVED, "under a waiver"), (verdict.IN_MAINTENANCE, "in a maintenance window"),
                       (verdict.WARMING_UP, "until the history store covers the review's window (not a pass)")):
        suppressed = [r for r in summary.checks if r.outcome == "skipped" and r.kind == kind]
        if suppressed:
            tr.write_line(f"{kind}: {len(suppressed)} check(s) reported as skipped {said}: "
                          + ", ".join(r.name for r in suppressed), yellow=True)
    flaky = [r for r in summary.checks if r.flaky]
    if flaky:
        tr.write_line(f"flaky: {len(flaky)} check(s) passed only on a retry:", yellow=True)
        for record in flaky:
            tr.write_line(f"FLAKY {record.severity or '--'} {record.id}: {record.message}", yellow=True)
    for window, end in maintenance.active(state.environment.maintenance, state.settings.now):
        tr.write_line(f"maintenance window open until {end:%Y-%m-%d %H:%M} UTC for {window.name}: {window.reason}")
    names = [r.name for r in summary.checks]
    for waiver in state.environment.waivers:
        if not any(waiver.matches(name) for name in names):
            tr.write_line(f"warning: waiver {waiver.check!r} (owner {waiver.owner}) matches no case in this run",
                          yellow=True)
    for line in env_coverage.of(state).lines():
        tr.write_line(line)
    _print_outputs(tr, state, config, exitstatus)
    if state.settings.env_spec == SANDBOX:
        tr.write_line("next: point the suite at your own ACGS-2: acgs-checks init (a first production.toml from "
                      "DATABASE_URL, REDIS_URL and PROMETHEUS_URL), then acgs-checks doctor --env production.toml")
    for problem in state.delivery_problems:
        tr.write_line(f"could not deliver: {problem}", yellow=True)


def _print_doctor(tr: Any, state: RunState) -> None:
    tr.section("acgs-checks doctor")
    for line in access.table(state.doctor):
        tr.write_line(line)
    coverage = env_coverage.of(state)
    for line in coverage.lines():
        tr.write_line(line, red=bool(coverage.gaps))
    if coverage.gaps:
        tr.write_line(f"doctor: {len(coverage.gaps)} daily runbook line(s) have no target in this environment "
                      "(exit 1)", red=True)


def _print_not_run(tr: Any, state: RunState) -> None:
    never = not_run(state)
    if never:
        levels = Counter(level or "--" for level in never.values())
        tr.write_line(f"interrupted: {len(never)} selected case(s) never ran ("
                      + ", ".join(f"{level}: {n}" for level, n in sorted(levels.items())) + "); "
                      "summary.json lists them under not_run. Nothing about them is known: run them again", red=True)


def _print_outputs(tr: Any, state: RunState, config: pytest.Config, exitstatus: int) -> None:
    """What was written where, how to open the HTML report, and what could not be written."""
    lost = reports.CURRENT.problems
    written = [] if "summary" in lost else [f"summary {state.settings.summary_path}"]
    if state.settings.textfile is not None and "metrics textfile" not in lost:
        written.append(f"metrics {state.settings.textfile}")
    if written:
        tr.write_line("wrote " + ", ".join(written))
    results_dir = config.getoption("allure_report_dir", None)
    if results_dir and "allure results" not in lost:
        default = Path(results_dir) == config.rootpath / "reports" / "allure-results"
        tr.write_line(f"HTML report: npm run report{'' if default else f' -- --results {results_dir}'}, then open "
                      "it with npm run report:open (a served folder; a file:// page needs npm run report:single-file)")
    for line in reports.CURRENT.lines():
        tr.write_line(f"could not write: {line}", yellow=True)
    if lost:
        tr.write_line("every verdict above stands; only the outputs named were not written"
                      + (f" (exit {reports.OUTPUTS_INCOMPLETE} when every check passed)" if exitstatus == 0 else ""),
                      yellow=True)


def _print_coverage(tr: Any, state: RunState) -> None:
    coverage = state.coverage
    requirements = runbook.load(runbook.map_path(state.rootpath))
    covered = [rid for rid in requirements if coverage.get(rid)]
    tr.section("runbook coverage")
    tr.write_line(f"{len(covered)} of {len(requirements)} requirements have checks "
                  f"({runbook.map_path(state.rootpath)})")
    for rid, requirement in requirements.items():
        checks = coverage.get(rid, [])
        mark = "x" if checks else " "
        place = f"{requirement.epic} > {requirement.feature} > {requirement.story}"
        note = ""
        if requirement.automated and not checks:
            note = "  LOST ITS CHECKS (the map says automated)"
        elif not requirement.automated and not checks:
            note = "  not automated"
        elif checks and not requirement.automated:
            note = "  has checks, but the map says automated = false"
        tr.write_line(f"[{mark}] {rid}: {place}{note}")
        for check in checks:
            tr.write_line(f"      {check}")
