"""What a run hands to people and machines besides Allure: summary.json, metrics, a webhook.

The controller builds one :class:`CheckRecord` per check from the reports (workers'
reports included) and writes everything from those, so all outputs agree.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

if TYPE_CHECKING:  # prometheus_client and stamina load when metrics are written or pushed, not with the plugin
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily

from acgs_checks import __version__
from acgs_checks.policy import runbook
from acgs_checks.policy.severity import Severity

PUSH_TIMEOUT_SECONDS = 5.0


@dataclass
class CheckRecord:
    """One check's outcome, with the metadata its markers carried."""

    id: str
    name: str
    outcome: str  # passed, failed, skipped
    severity: str = ""
    review_day: str = ""
    area: str = ""
    runbook: list[str] = field(default_factory=list)
    message: str = ""
    # For failures: access denied, target unreachable, no data, threshold breached (or other);
    # for skips: waived, in maintenance, blocked, not applicable, warming up.
    kind: str = ""
    measured: float | None = None
    threshold: float | None = None
    # A passing case's line: what it measured against which threshold (a failure's is its message).
    measurement: str = ""
    # Passed only on a retry ([[retries]]): the message then says which attempts failed, and how.
    flaky: bool = False
    duration_seconds: float = 0.0
    # What the Wednesday review does with the measured value (runbook.trend_role): trended, capacity:<what>, or "".
    role: str = ""


@dataclass
class RunSummary:
    status: str  # finished, or interrupted (what was judged before the run was stopped)
    environment: str
    review: str
    fail_on: str
    started: float
    finished: float
    exit_status: int
    checks: list[CheckRecord]
    coverage: dict[str, object] = field(default_factory=dict)  # the runbook lines with a target here, and not
    not_run: dict[str, str] = field(default_factory=dict)  # interrupted: the selected cases that never ran, by level

    def counts(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter[str]] = {s.name: Counter() for s in Severity}
        for check in self.checks:
            if check.severity in table:
                table[check.severity][check.outcome] += 1
        return {sev: {o: c[o] for o in ("passed", "failed", "skipped")} for sev, c in table.items()}

    def kinds(self) -> dict[str, int]:
        """How many failures of each kind: access denied is counted apart from unreachable."""
        return dict(Counter(c.kind for c in self.checks if c.outcome == "failed" and c.kind))

    def failures_at_or_above(self, level: Severity) -> list[CheckRecord]:
        return [c for c in self.checks if c.outcome == "failed"
                and (not c.severity or Severity.parse(c.severity).at_or_above(level))]

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status, "pid": os.getpid(), "environment": self.environment, "review": self.review,
            "fail_on": self.fail_on,
            "started": self.started, "finished": self.finished, "exit_status": self.exit_status,
            "acgs_checks_version": __version__, "counts": self.counts(),
            "failure_kinds": self.kinds(),
            "checks": [asdict(c) for c in self.checks],
            "runbook_coverage": self.coverage,
            "not_run": [{"id": nodeid, "severity": level} for nodeid, level in sorted(self.not_run.items())],
        }


def write_whole(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_summary(path: Path, summary: RunSummary) -> None:
    write_whole(path, json.dumps(summary.to_json(), indent=2, default=str) + "\n")


class _Results:
    """The run as a prometheus_client collector: one series per judged check, and the run's timestamp."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - see TYPE_CHECKING

        summary = self.summary
        labels = ["check", "severity", "env", "review"]
        success = GaugeMetricFamily("acgs_check_success",
                                    "Whether the runbook check passed (1) or failed (0) in the last run.",
                                    labels=labels)
        duration = GaugeMetricFamily("acgs_check_duration_seconds", "How long the check took in the last run.",
                                     labels=labels)
        for check in summary.checks:
            if check.outcome not in ("passed", "failed"):
                continue  # a skipped check has no success sample
            values = [check.name, check.severity, summary.environment, summary.review]
            success.add_metric(values, 1 if check.outcome == "passed" else 0)
            duration.add_metric(values, round(check.duration_seconds, 6))
        suppressed = GaugeMetricFamily(
            "acgs_check_suppressed", "A check whose result was set aside in the last run (reason: waived or "
            "in maintenance); it has no success sample.", labels=[*labels, "reason"])
        for check in summary.checks:
            if check.outcome == "skipped" and check.kind in ("waived", "in maintenance"):
                suppressed.add_metric([check.name, check.severity, summary.environment, summary.review,
                                       check.kind.replace(" ", "_")], 1)
        warming = GaugeMetricFamily(
            "acgs_check_warming_up", "A review whose history is still younger than its window in the last run "
            "(skipped, not failed: its message says when the first verdict is expected); no success sample.",
            labels=labels)
        for check in summary.checks:
            if check.outcome == "skipped" and check.kind == "warming up":
                warming.add_metric([check.name, check.severity, summary.environment, summary.review], 1)
        flaky = GaugeMetricFamily("acgs_check_flaky", "Whether the check passed only on a retry (1) in the last "
                                  "run; 0 when it passed or failed outright.", labels=labels)
        for check in summary.checks:
            if check.outcome in ("passed", "failed"):
                flaky.add_metric([check.name, check.severity, summary.environment, summary.review],
                                 1 if check.flaky else 0)
        finished = GaugeMetricFamily("acgs_checks_last_run_timestamp_seconds",
                                     "When the last run finished (Unix time).", labels=["env", "review"])
        finished.add_metric([summary.environment, summary.review], round(summary.finished, 3))
        yield from (success, duration, suppressed, warming, flaky, finished)


def _registry(summary: RunSummary) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415 - see TYPE_CHECKING

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Results(summary))
    return registry


def prometheus_text(summary: RunSummary) -> str:
    """The text exposition format: one series per check (bounded by the environment's targets),
    labelled check, severity, env and review; skipped checks have no success sample."""
    from prometheus_client import generate_latest  # noqa: PLC0415 - see TYPE_CHECKING

    return generate_latest(_registry(summary)).decode("utf-8")


def write_textfile(path: Path, summary: RunSummary) -> None:
    """The node_exporter textfile, written to a temporary file beside it and renamed (never half a file)."""
    from prometheus_client import write_to_textfile  # noqa: PLC0415 - see TYPE_CHECKING

    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), _registry(summary))


# Delivery retries transient failures (refused, reset, 5xx) a few times within a bound; a probe never retries.
_DELIVERY_ATTEMPTS = 3
_DELIVERY_BOUND_SECONDS = 15.0


class _Transient(Exception):
    """A 5xx answer: worth another attempt."""


def _retrying(send: Callable[[], None]) -> None:
    import stamina  # noqa: PLC0415 - see TYPE_CHECKING

    retry = stamina.retry(on=(_Transient, urllib.error.URLError, httpx.TransportError, OSError),
                          attempts=_DELIVERY_ATTEMPTS, timeout=_DELIVERY_BOUND_SECONDS,
                          wait_initial=0.2, wait_max=2.0, wait_jitter=0.1)
    retry(send)()


def push(url: str, summary: RunSummary) -> str:
    """PUT the metrics to a Pushgateway, grouped by env and review. Returns an error line or ''."""
    from prometheus_client import push_to_gateway  # noqa: PLC0415 - see TYPE_CHECKING
    from prometheus_client.exposition import basic_auth_handler, default_handler  # noqa: PLC0415

    parts = urlsplit(url)
    gateway = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    username, password = unquote(parts.username or ""), unquote(parts.password or "")

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:  # prometheus_client passes these by keyword
        if username or password:
            return basic_auth_handler(url, method, timeout, headers, data, username, password)
        return default_handler(url, method, timeout, headers, data)

    def send() -> None:
        try:
            push_to_gateway(gateway, job="acgs_checks", registry=_registry(summary),
                            grouping_key={"env": summary.environment, "review": summary.review},
                            timeout=PUSH_TIMEOUT_SECONDS, handler=handler)
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
            raise

    return _delivered("pushgateway", send)


def webhook_payload(summary: RunSummary, level: Severity) -> dict[str, object]:
    """Alertmanager's webhook shape (``alerts`` with labels and annotations), plus ``text`` for Slack."""
    failures = summary.failures_at_or_above(level)
    worst = min((Severity.parse(c.severity) for c in failures if c.severity), default=None)
    headline = (f"acgs-checks: {len(failures)} check(s) failing at or above {level.name} in {summary.environment}"
                + (f" (worst {worst.name}: {worst.response.summary()})" if worst is not None else ""))
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(summary.finished))
    alerts = [{
        "status": "firing",
        "labels": {"alertname": "ACGSRunbookCheckFailed", "check": c.name, "severity": c.severity,
                   "env": summary.environment, "review": summary.review, "area": c.area, "kind": c.kind},
        "annotations": {"summary": c.message, "runbook": ", ".join(c.runbook)},
        "startsAt": starts,
    } for c in failures]
    lines = [headline] + [f"• [{c.severity}] {c.name}: {c.message}" for c in failures[:20]]
    if len(failures) > 20:
        lines.append(f"… and {len(failures) - 20} more")
    return {
        "version": "4", "status": "firing", "receiver": "acgs-checks",
        "groupLabels": {"env": summary.environment, "review": summary.review},
        "commonLabels": {"env": summary.environment}, "alerts": alerts, "text": "\n".join(lines),
    }


# A firing alert lasts past the next daily run; a check that passes later sends its alert resolved.
ALERT_HOLD_SECONDS = 26 * 3600


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def alertmanager_alerts(summary: RunSummary, level: Severity, remediation: dict[str, str]) -> list[dict[str, object]]:
    """Alertmanager API v2 alerts: the failures at or above ``level`` firing, the other judged checks
    at those levels resolved (``endsAt`` now), so an alert clears once its check passes."""
    now = summary.finished
    alerts: list[dict[str, object]] = []
    for check in summary.checks:
        relevant = not check.severity or Severity.parse(check.severity).at_or_above(level)
        if check.outcome not in ("passed", "failed") or not relevant:
            continue  # a skipped (blocked) check says nothing new: its alert stays as it was
        firing = check.outcome == "failed"
        first = check.runbook[0] if check.runbook else ""
        alerts.append({
            "labels": {"alertname": "ACGSRunbookCheckFailed", "severity": check.severity, "check": check.name,
                       "env": summary.environment, "runbook": first},
            "annotations": {"summary": check.message if firing else "passed",
                            "remediation": runbook.remediation_for(check.kind, remediation.get(first, ""))
                            if firing else remediation.get(first, ""),
                            "runbook_ids": ", ".join(check.runbook), "review": summary.review},
            "startsAt": _iso(now), "endsAt": _iso(now + ALERT_HOLD_SECONDS if firing else now),
        })
    return alerts


def alert(url: str, alerts: list[dict[str, object]]) -> str:
    """POST the alerts to ``url/api/v2/alerts``. Returns an error line or ''."""
    def send() -> None:
        response = httpx.post(url.rstrip("/") + "/api/v2/alerts", json=alerts, timeout=PUSH_TIMEOUT_SECONDS)
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code} {response.reason_phrase}")
        if response.status_code >= 300:
            raise _Refused(f"HTTP {response.status_code} {response.reason_phrase}: {response.text[:200]}")

    return _delivered("alertmanager", send) if alerts else ""


def notify(url: str, payload: dict[str, object]) -> str:
    """POST the payload as JSON. Returns an error line or ''."""
    def send() -> None:
        response = httpx.post(url, json=payload, timeout=PUSH_TIMEOUT_SECONDS)
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code} {response.reason_phrase}")
        if response.status_code >= 300:
            raise _Refused(f"HTTP {response.status_code} {response.reason_phrase}")

    return _delivered("webhook", send)


class _Refused(Exception):
    """A 3xx or 4xx answer: another attempt would get the same."""


def _delivered(what: str, send: Callable[[], None]) -> str:
    try:
        _retrying(send)
    except urllib.error.HTTPError as exc:
        return f"{what}: HTTP {exc.code} {exc.reason}"
    except (_Transient, _Refused) as exc:
        return f"{what}: {exc}"
    except urllib.error.URLError as exc:
        return f"{what}: {exc.reason}"
    except httpx.HTTPError as exc:
        return f"{what}: {type(exc).__name__}: {exc}"
    except OSError as exc:
        return f"{what}: {exc}"
    return ""
