"""The run's options: declared for pytest, resolved once into :class:`Settings`, bad values exit 4."""

from __future__ import annotations

import datetime
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from acgs_checks import environment
from acgs_checks import measurements as history
from acgs_checks.errors import ConfigError
from acgs_checks.policy.runbook import REVIEW_DAYS
from acgs_checks.policy.severity import Severity
from acgs_checks.sandbox import faults

ENV_VAR = "ACGS_ENV"
REPORTS_WAIT_SECONDS = 900.0


@dataclass(frozen=True)
class Settings:
    """The run's options, resolved once in pytest_configure."""

    env_spec: str
    fail_on: Severity
    faults: tuple[faults.Fault, ...]
    review: str | None          # the review day --review selects (daily + that day), if any
    review_label: str           # how metrics and summaries name this run: daily, monday, ... or adhoc
    today: datetime.date        # the UTC date waivers are judged on
    now: datetime.datetime      # the UTC time maintenance windows are judged on
    summary_path: Path
    textfile: Path | None
    pushgateway: str
    webhook: str
    alertmanager: str
    coverage: bool
    doctor: bool = False        # report what each case can read, not verdicts; write no output but --doctor-json
    doctor_json: Path | None = None
    reports_wait: float = REPORTS_WAIT_SECONDS  # how long to wait for another run writing into the same folder


def addoption(parser: pytest.Parser) -> None:
    parser.addini("acgs_checks", type="bool", default=False,
                  help="arm the acgs-checks plugin for this rootdir (the suite's pyproject sets it)")
    group = parser.getgroup("acgs-checks", "ACGS-2 runbook checks")
    group.addoption(
        "--env", dest="acgs_env", default=None, metavar="NAME|PATH",
        help=f"environment to check: NAME for fixtures/environments/NAME.toml, a path, "
        f"or 'sandbox' (default; also from ${ENV_VAR}). Required when CI is set.",
    )
    group.addoption(
        "--fail-on", dest="acgs_fail_on", default="P3", metavar="P0|P1|P2|P3",
        help="only failures at or above this severity make the exit code non-zero (default P3)",
    )
    group.addoption(
        "--review", dest="acgs_review", default=None, metavar="today|daily|monday|wednesday|friday",
        help="select the daily checks plus that review day's (today: the UTC weekday; ACGS_TODAY=YYYY-MM-DD fixes it)",
    )
    group.addoption("--summary-json", dest="acgs_summary", default=None, metavar="PATH",
                    help="where to write the machine-readable summary (default reports/summary.json)")
    group.addoption("--metrics-textfile", dest="acgs_textfile", default=None, metavar="PATH",
                    help="also write the results as a node_exporter textfile (atomically)")
    group.addoption("--pushgateway", dest="acgs_pushgateway", default=None, metavar="URL",
                    help="also push the results to this Prometheus Pushgateway, grouped by env and review")
    group.addoption("--alertmanager", dest="acgs_alertmanager", default=None, metavar="URL",
                    help="post the failures at or above --fail-on as alerts to this Alertmanager (/api/v2/alerts), "
                    "and the checks that pass as resolved")
    group.addoption("--notify-webhook", dest="acgs_webhook", default=None, metavar="URL",
                    help="POST the failures at or above --fail-on (Alertmanager webhook JSON with a Slack text)")
    group.addoption("--reports-wait", dest="acgs_reports_wait", default=None, metavar="SECONDS",
                    help="wait this long for another run writing into the same reports folder "
                    f"(default {REPORTS_WAIT_SECONDS:g})")
    group.addoption("--runbook-coverage", dest="acgs_coverage", action="store_true",
                    help="print each runbook requirement with the checks that cover it, and run nothing")
    group.addoption("--acgs-doctor", dest="acgs_doctor", action="store_true",
                    help="doctor: run the selected checks once and report, per target, what each can read and the "
                    "grant that fixes what it cannot (exit 0 only when nothing is missing); writes no report, "
                    "history or metrics")
    group.addoption("--acgs-doctor-json", dest="acgs_doctor_json", default=None, metavar="PATH",
                    help="with --acgs-doctor: also write the doctor's findings as JSON here")
    group.addoption(
        "--sandbox-fault", dest="acgs_faults", action="append", default=[],
        metavar="TARGET:FAULT[=ARG]",
        help=f"inject a fault into the sandbox; repeatable. {faults.describe()}",
    )


def ci_is_set() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def resolve(config: pytest.Config) -> Settings:
    spec = config.getoption("acgs_env") or os.environ.get(ENV_VAR, "").strip()
    if not spec:
        # The coverage map runs no check, so it needs no environment, in CI or not.
        if ci_is_set() and not config.getoption("acgs_coverage"):
            raise ConfigError(
                source="--env", key="", problem="CI is set but no environment was given",
                fix=f"pass --env NAME|PATH or set {ENV_VAR}; a pipeline never checks the sandbox by accident",
            )
        spec = environment.SANDBOX
    try:
        fail_on = Severity.parse(config.getoption("acgs_fail_on"))
    except ValueError as exc:
        raise ConfigError(source="--fail-on", key="", problem=str(exc),
                          fix="pass --fail-on P0, P1, P2 or P3") from None
    parsed = faults.parse_all(config.getoption("acgs_faults"))
    if parsed and spec != environment.SANDBOX:
        raise ConfigError(source="--sandbox-fault", key="", problem=f"faults apply only to the sandbox, "
                          f"but the environment is {spec!r}", fix="drop --sandbox-fault or use --env sandbox")
    review = _resolve_review(config.getoption("acgs_review"))
    markexpr = (config.getoption("markexpr", "") or "").strip()
    label = review or (markexpr if markexpr in REVIEW_DAYS else "adhoc")
    doctor = bool(config.getoption("acgs_doctor"))
    textfile = None if doctor else config.getoption("acgs_textfile")
    summary_path = Path(config.getoption("acgs_summary") or config.rootpath / "reports" / "summary.json")

    history.set_default(summary_path.parent / "history.sqlite")  # unless [history] path says otherwise
    return Settings(
        env_spec=spec, fail_on=fail_on, faults=parsed, review=review, review_label=label, today=today(),
        now=now(),
        summary_path=summary_path,
        textfile=Path(textfile) if textfile else None,
        pushgateway="" if doctor else _http_url("--pushgateway", config.getoption("acgs_pushgateway")),
        webhook="" if doctor else _http_url("--notify-webhook", config.getoption("acgs_webhook")),
        alertmanager="" if doctor else _http_url("--alertmanager", config.getoption("acgs_alertmanager")),
        coverage=bool(config.getoption("acgs_coverage")),
        doctor=doctor,
        doctor_json=Path(config.getoption("acgs_doctor_json")) if config.getoption("acgs_doctor_json") else None,
        reports_wait=_seconds("--reports-wait", config.getoption("acgs_reports_wait"), REPORTS_WAIT_SECONDS),
    )


def _seconds(option: str, value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 86400:
        raise ConfigError(source=option, key="", problem=f"{value!r} is not a number of seconds",
                          fix=f"pass {option} with a number from 0 to 86400")
    return seconds


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TODAY_VAR = "ACGS_TODAY"


NOW_VAR = "ACGS_NOW"


def today() -> datetime.date:
    """The UTC date (``ACGS_TODAY=YYYY-MM-DD`` fixes it, for tests and replays; else ``ACGS_NOW``'s date)."""
    fixed = os.environ.get(TODAY_VAR, "").strip()
    try:
        return datetime.date.fromisoformat(fixed) if fixed else now().date()
    except ValueError:
        raise ConfigError(source=TODAY_VAR, key="", problem=f"{fixed!r} is not a date",
                          fix="write YYYY-MM-DD, or unset it") from None


def now() -> datetime.datetime:
    """The UTC time (``ACGS_NOW=2026-12-01T03:00:00Z`` fixes it, for tests and replays)."""
    fixed = os.environ.get(NOW_VAR, "").strip()
    try:
        at = datetime.datetime.fromisoformat(fixed) if fixed else datetime.datetime.now(datetime.UTC)
    except ValueError:
        raise ConfigError(source=NOW_VAR, key="", problem=f"{fixed!r} is not a date and time",
                          fix="write YYYY-MM-DDTHH:MM:SSZ, or unset it") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=datetime.UTC)


def _resolve_review(value: str | None) -> str | None:
    """``today`` is the UTC weekday (``ACGS_TODAY=YYYY-MM-DD`` fixes the date, for tests and replays)."""
    if not value:
        return None
    choice = value.strip().lower()
    if choice == "today":
        weekday = WEEKDAYS[today().weekday()]
        return weekday if weekday in REVIEW_DAYS else "daily"
    if choice not in REVIEW_DAYS:
        raise ConfigError(source="--review", key="", problem=f"{value!r} is not a review",
                          fix="pass --review today, daily, monday, wednesday or friday")
    return choice


def _http_url(option: str, value: str | None) -> str:
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(source=option, key="", problem=f"{environment.display_url(value)!r} is not an http(s) URL",
                          fix=f"pass {option} http://host:port/...")
    return value



PATH_OPTIONS = ("--env", "--alluredir", "--metrics-textfile", "--summary-json")
_RERUN_GUARD = "ACGS_CHECKS_RERUN"


def _armed_suite_above(folder: Path) -> Path | None:
    for candidate in (folder, *folder.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError):
                return None
            options = data.get("tool", {}).get("pytest", {}).get("ini_options", {})
            return candidate if options.get("acgs_checks") in (True, "true") else None
    return None


def rerun_if_path_option_moved_rootdir(config: pytest.Config) -> None:
    """``--env /elsewhere/prod.toml`` must work as ``--env=/elsewhere/prod.toml`` does.

    pytest picks its rootdir before plugins add their options, so a separate option
    value that is an existing path counts as a test path and can move the rootdir
    away from the suite (and make pytest import conftest files of folders named ``test*``
    beside it, such as the self-tests', which need the test extras). Called before any
    conftest is imported: when the suite is in play (the folder pytest runs in, or a path
    it is given), run once more with ``--env=PATH``.
    """
    args = list(config.invocation_params.args)
    here = config.invocation_params.dir
    places = [here, *(here / a for a in args if not a.startswith("-") and (here / a).exists())]
    if os.environ.get(_RERUN_GUARD) or _armed_suite_above(config.rootpath) == config.rootpath:
        return  # the rootdir is the suite's: nothing moved
    if all(_armed_suite_above(p.resolve()) is None for p in places):
        return
    fixed: list[str] = []
    changed = False
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in PATH_OPTIONS and index + 1 < len(args):
            fixed.append(f"{arg}={args[index + 1]}")
            changed = True
            index += 2
            continue
        fixed.append(arg)
        index += 1
    if changed:
        sys.stdout.flush()
        sys.stderr.flush()
        os.environ[_RERUN_GUARD] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "pytest", *fixed])  # noqa: S606 - same interpreter, same args


