"""pytest glue: the hooks, each handing its job to one module of :mod:`acgs_checks.run`.

* :mod:`~acgs_checks.run.settings`: options, resolved once (bad values exit 4)
* :mod:`~acgs_checks.run.state`: the environment, the sandbox, xdist sharing, signals and cleanup
* :mod:`~acgs_checks.run.selection`: one case per target, marker rules, review days
* :mod:`~acgs_checks.run.fixtures`: fixtures derived from the probe-kind registry (:mod:`acgs_checks.kinds`)
* :mod:`~acgs_checks.run.summary`: records, summary.json, metrics, webhook, terminal summary

What is measured lives in ``probes``, what is judged in ``checks/``, and what the runbook says
in ``runbook``, ``severity`` and ``thresholds``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from acgs_checks import verdict
from acgs_checks.errors import ConfigError
from acgs_checks.run import fixtures, ordering, reports, selection, settings, state, summary
from acgs_checks.run.fixtures import acgs_environment, probe_results
from acgs_checks.run.state import STATE

__all__ = ["acgs_environment", "probe_results"]


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.addoption(parser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, None, None]:
    # Before any conftest is imported (a rootdir moved by "--env PATH" would import the wrong ones), and
    # outside pytest's output capture, which starts in this hook: the run started again writes to the terminal.
    settings.rerun_if_path_option_moved_rootdir(early_config)
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    selection.add_markers(config)
    if not config.getini("acgs_checks"):
        # Installed but not armed (another project, or the suite's own self-tests).
        used = [o for o, d in (("--env", "acgs_env"), ("--sandbox-fault", "acgs_faults")) if config.getoption(d)]
        if used:
            raise pytest.UsageError(
                f"{config.inipath or config.rootpath}: acgs_checks: {', '.join(used)} given, but the "
                "acgs-checks plugin is not armed here; fix: run from the suite's folder, or set "
                "acgs_checks = true in the pytest configuration")
        return
    if config.getoption("help", False):
        return  # --help starts nothing and needs no environment, in CI or not
    unknown = selection.unknown_markers(config)
    if unknown:
        raise pytest.UsageError(unknown)
    # Allure results go to reports/allure-results unless --alluredir says otherwise;
    # that default folder holds the latest run only.
    # The coverage map and the doctor write no report of their own (the doctor's JSON only where it is told).
    coverage_only = config.getoption("acgs_coverage") or config.getoption("acgs_doctor")
    if (config.getoption("allure_report_dir", None) is None and hasattr(config.option, "allure_report_dir")
            and not coverage_only):
        config.option.allure_report_dir = str(config.rootpath / "reports" / "allure-results")
        config.option.clean_alluredir = True
    if state.is_worker(config):
        config.option.clean_alluredir = False  # the controller cleaned it before workers started
    if getattr(config.option, "xmlpath", None) is None and not coverage_only:
        config.option.xmlpath = str(config.rootpath / "reports" / "junit.xml")
    # Allure's and JUnit's writers degrade instead of crashing (they configure after this hook).
    reports.reset()
    reports.guard_writers()
    try:
        resolved = settings.resolve(config)
        claim = (lambda: None) if state.is_worker(config) or coverage_only else (
            lambda: reports.claim(config, resolved))
        run = state.start_environment(config, resolved, claim)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    except TimeoutError as exc:
        raise pytest.UsageError(f"acgs-checks: {exc}; fix: wait for it, or give this run its own --alluredir, "
                                "--junitxml and --summary-json") from None
    run.rootpath = config.rootpath
    config.stash[STATE] = run
    verdict.set_redactor(run.environment.redact)
    # The probe and gate fixtures of every registered kind (health, database_probe, db, ...): kinds
    # from the package and any a project's conftest.py registers.
    config.pluginmanager.register(fixtures.kind_fixtures(), "acgs-kind-fixtures")
    config.pluginmanager.register(summary.Recorder(run), "acgs-recorder")
    if state.is_xdist_controller(config):
        config.pluginmanager.register(state.XdistController(run), "acgs-xdist-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    state.unconfigure(config)
    reports.release()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return state.report_header(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    selection.generate_tests(metafunc)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selection.collection_modifyitems(config, items)


def pytest_collection_finish(session: pytest.Session) -> None:
    selection.collection_finish(session)


@pytest.hookimpl(tryfirst=True)
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under xdist the controller collects nothing itself: the ids its workers collected are the run's plan."""
    state = node.config.stash.get(STATE, None)
    if state is not None:
        for nodeid in ids:
            state.planned.setdefault(nodeid, "?")


def pytest_runtestloop(session: pytest.Session) -> bool | None:
    return ordering.runtestloop(session)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from fixtures.runtest_call(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    return (yield from summary.runtest_makereport(item, call))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    summary.sessionfinish(session, exitstatus)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    summary.terminal_summary(terminalreporter, exitstatus, config)
