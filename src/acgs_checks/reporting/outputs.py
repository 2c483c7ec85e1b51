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
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from acgs_checks import __version__
from acgs_checks.severity import Severity

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
    # For failures: access denied, target unreachable, no data, threshold breached (or other).
    kind: str = ""
    measured: float | None = None
    threshold: float | None = None
    duration_seconds: float = 0.0


@dataclass
class RunSummary:
    environment: str
    review: str
    fail_on: str
    started: float
    finished: float
    exit_status: int
    checks: list[CheckRecord]

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
            "environment": self.environment, "review": self.review, "fail_on": self.fail_on,
            "started": self.started, "finished": self.finished, "exit_status": self.exit_status,
            "acgs_checks_version": __version__, "counts": self.counts(),
            "failure_kinds": self.kinds(),
            "checks": [asdict(c) for c in self.checks],
        }


def _atomic_write(path: Path, text: str) -> None:
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
    _atomic_write(path, json.dumps(summary.to_json(), indent=2, default=str) + "\n")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(summary: RunSummary) -> str:
    """The node_exporter textfile format. One series per check (bounded by the environment's
    targets), labelled check, severity, env and review; skipped checks have no success sample."""
    env, review = _label(summary.environment), _label(summary.review)
    lines = [
        "# HELP acgs_check_success Whether the runbook check passed (1) or failed (0) in the last run.",
        "# TYPE acgs_check_success gauge",
    ]
    judged = [c for c in summary.checks if c.outcome in ("passed", "failed")]
    for check in judged:
        lines.append(f'acgs_check_success{{check="{_label(check.name)}",severity="{check.severity}",'
                     f'env="{env}",review="{review}"}} {1 if check.outcome == "passed" else 0}')
    lines += ["# HELP acgs_check_duration_seconds How long the check took in the last run.",
              "# TYPE acgs_check_duration_seconds gauge"]
    for check in judged:
        lines.append(f'acgs_check_duration_seconds{{check="{_label(check.name)}",severity="{check.severity}",'
                     f'env="{env}",review="{review}"}} {check.duration_seconds:.6f}')
    lines += ["# HELP acgs_checks_last_run_timestamp_seconds When the last run finished (Unix time).",
              "# TYPE acgs_checks_last_run_timestamp_seconds gauge",
              f'acgs_checks_last_run_timestamp_seconds{{env="{env}",review="{review}"}} {summary.finished:.3f}']
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, summary: RunSummary) -> None:
    _atomic_write(path, prometheus_text(summary))


def push(url: str, summary: RunSummary) -> str:
    """PUT the metrics to a Pushgateway, grouped by env and review. Returns an error line or ''."""
    target = (f"{url.rstrip('/')}/metrics/job/acgs_checks/env/{quote(summary.environment, safe='')}"
              f"/review/{quote(summary.review, safe='')}")
    request = urllib.request.Request(target, data=prometheus_text(summary).encode(), method="PUT",  # noqa: S310
                                     headers={"Content-Type": "text/plain; version=0.0.4"})
    return _send(request, "pushgateway")


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


def notify(url: str, payload: dict[str, object]) -> str:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    return _send(request, "webhook")


def _send(request: urllib.request.Request, what: str) -> str:
    try:
        with urllib.request.urlopen(request, timeout=PUSH_TIMEOUT_SECONDS) as response:  # noqa: S310 - http(s) URLs validated at start
            if response.status >= 300:
                return f"{what}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{what}: HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{what}: {reason}"
    return ""
