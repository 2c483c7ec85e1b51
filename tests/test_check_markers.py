"""Every check carries one severity and one review day; markers are strict."""

from __future__ import annotations

import pytest

PYPROJECT = """
[tool.pytest.ini_options]
acgs_checks = true
addopts = ["--strict-markers"]
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.mkdir("checks")
    return pytester


def write_check(pytester: pytest.Pytester, body: str) -> None:
    (pytester.path / "checks" / "test_sample.py").write_text("import pytest\n" + body)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--env", "sandbox", "-p", "no:cacheprovider",
                                         f"--alluredir={pytester.path / 'allure'}", *args)


def test_a_well_marked_check_runs(project: pytest.Pytester) -> None:
    write_check(project, (
        "@pytest.mark.daily\n@pytest.mark.p2\n@pytest.mark.health\n"
        "@pytest.mark.runbook('daily.service-health')\n"
        "def test_ok(health):\n    assert health.status == 200\n"))
    result = run(project)
    result.assert_outcomes(passed=4)


def test_missing_severity_names_the_check(project: pytest.Pytester) -> None:
    write_check(project, "@pytest.mark.daily\n@pytest.mark.runbook('daily.service-health')\n"
                         "def test_no_severity():\n    pass\n")
    result = run(project)
    assert result.ret == 4
    result.stderr.fnmatch_lines([
        "*checks/test_sample.py::test_no_severity: needs exactly one severity marker (p0, p1, p2 or p3), has none*"])


def test_two_review_days_is_an_error(project: pytest.Pytester) -> None:
    write_check(project, "@pytest.mark.daily\n@pytest.mark.friday\n@pytest.mark.p1\n"
                         "@pytest.mark.runbook('daily.service-health')\ndef test_two_days():\n    pass\n")
    result = run(project)
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*test_two_days: needs exactly one review-day marker*has daily, friday*"])


def test_unknown_requirement_is_an_error(project: pytest.Pytester) -> None:
    write_check(project, "@pytest.mark.daily\n@pytest.mark.p1\n@pytest.mark.runbook('daily.coffee')\n"
                         "def test_coffee():\n    pass\n")
    result = run(project)
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*test_coffee: runbook marker names unknown requirement(s) *daily.coffee*; known: *"])


def test_unknown_marker_is_an_error(project: pytest.Pytester) -> None:
    write_check(project, "@pytest.mark.dialy\n@pytest.mark.p1\n@pytest.mark.runbook('daily.service-health')\n"
                         "def test_typo():\n    pass\n")
    result = run(project)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*'dialy' not found in `markers` configuration option*"])


def test_plugin_is_inert_where_not_armed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "acgs-checks" not in result.stdout.str().split("plugins:")[0]

