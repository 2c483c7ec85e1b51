"""Allure labels for a check and the launch files only the controller writes."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path

import allure
import pytest

from acgs_checks import __version__
from acgs_checks.environment import Environment
from acgs_checks.policy import runbook
from acgs_checks.policy.runbook import Requirement
from acgs_checks.policy.severity import Severity
from acgs_checks.policy.thresholds import Thresholds, in_words

LEVEL_LABEL = "level"

# Category names are matched on the one-line messages the checks produce.
CATEGORIES = [
    {
        "name": "Access denied",
        "description": "The target answered and refused the suite: credentials, pg_hba, ACL or HTTP 401/403.",
        "matchedStatuses": ["failed", "broken"],
        "messageRegex": r"(?s)^(?:Failed: )?access denied:.*",
    },
    {
        "name": "Target unreachable",
        "description": "The target did not answer: refused, DNS, TLS, timeout or closed.",
        "matchedStatuses": ["failed", "broken"],
        "messageRegex": r"(?s).*\(target unreachable\).*",
    },
    {
        "name": "No data",
        "description": "What the check needs could not be read: a failed, refused or timed-out read, or no series.",
        "matchedStatuses": ["failed"],
        "messageRegex": r"(?s)^(?:Failed: )?no data:.*",
    },
    {
        "name": "Insufficient privilege",
        "description": "The monitoring role cannot see what the check needs; the message names the grant.",
        "matchedStatuses": ["failed"],
        "messageRegex": r"(?s)^(?:Failed: )?insufficient privilege:.*",
    },
    {
        "name": "Probe error",
        "description": "The probe raised; its traceback is the evidence. Only this target's cases are affected.",
        "matchedStatuses": ["failed", "broken"],
        "messageRegex": r"(?s)^(?:Failed: )?probe error:.*",
    },
    {
        "name": "Threshold breached",
        "description": "The target answered, and the measured value broke the runbook's threshold.",
        "matchedStatuses": ["failed"],
        "messageRegex": r"(?s).*\(expected .*",
    },
    {
        "name": "Warming up",
        "description": "The history store is younger than the review's window; the message says when the first "
                       "verdict is expected. Never a pass, never a page.",
        "matchedStatuses": ["skipped"],
        "messageRegex": r"(?s)^(?:Skipped: )?warming up:.*",
    },
    {
        "name": "Configuration error",
        "description": "The check could not run as configured (a broken fixture or environment).",
        "matchedStatuses": ["broken"],
    },
]


REMEDIATION = "**Remediation:**"


def description(requirement: Requirement, severity: Severity, doc: str | None,
                thresholds: Thresholds | None = None) -> str:
    """The case's Allure description: its runbook place, what it checks (thresholds in force, not defaults),
    its severity's response and the remediation."""
    response = severity.response
    doc = inspect.cleandoc(doc or "")
    if thresholds is not None:
        doc = in_words(doc, thresholds)
    parts = [
        f"**Runbook:** {requirement.epic} → {requirement.feature} → {requirement.story} "
        f"(`{requirement.id}`)",
        "",
        f"**What it checks:** {doc or 'see the check.'}",
        "",
        f"**Severity {severity.name}** ({response.meaning}). If it fails: {response.summary()}.",
        "",
        f"{REMEDIATION} {requirement.remediation}",
    ]
    return "\n".join(parts)


def markers_for(requirement: Requirement, severity: Severity, environment: Environment,
                doc: str | None) -> list[pytest.MarkDecorator]:
    """Allure reads these markers when it writes the result, under xdist too.

    The pytest markers (p0, daily, health) become Allure tags by themselves.
    """
    return [
        allure.severity(severity.response.allure_severity),
        allure.epic(requirement.epic),
        allure.feature(requirement.feature),
        allure.story(requirement.story),
        allure.label("environment", environment.name),
        # The runbook's words for the level (the report's tree groups by it; see allurerc.mjs).
        allure.label(LEVEL_LABEL, severity.level),
        allure.label("runbook", requirement.id),
        allure.description(description(requirement, severity, doc, environment.thresholds)),
    ]


def write_launch_files(results_dir: Path, environment: Environment, *, fail_on: Severity,
                       faults: Iterable[str], status: str = "finished") -> None:
    """environment.properties and categories.json; no secret goes in either."""
    results_dir.mkdir(parents=True, exist_ok=True)
    props = {
        "run.status": status,  # "interrupted": the results hold only what was judged before the run stopped
        "environment": environment.name,
        "environment.source": environment.source,
        "environment.description": environment.description,
        "services": ", ".join(s.name for s in environment.services),
        "fail_on": fail_on.name,
        "sandbox.faults": ", ".join(faults),
        "thresholds.overridden": ", ".join(f"{k}={v:g}" for k, v in environment.thresholds.overrides().items()),
        "acgs_checks.version": __version__,
        "python": platform.python_version(),
        "ci": os.environ.get("CI", ""),
    }
    lines = [f"{key}={environment.redact(str(value))}" for key, value in props.items() if value]
    (results_dir / "environment.properties").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (results_dir / "categories.json").write_text(json.dumps(CATEGORIES, indent=2), encoding="utf-8")


def annotate(data: dict[str, object], *, measurement: str = "", flaky: str = "", failure_kind: str = "") -> None:
    """Finish one case's result, in memory, before it is written (once):

    * A passing case shows what it measured against its threshold: as its status message, so the
      report's History shows the value run after run (allure-pytest writes no message for a pass),
      and as an excluded parameter, so its page shows it without changing its identity.
    * A case that passed only on a retry is marked flaky, with what its failed attempts said.
    * A failed case's remediation is the one for its kind of failure: a case that read nothing is told
      how to read, not how to fix the value it did not read.
    """
    if data.get("status") == "failed" and failure_kind in runbook.KIND_REMEDIATION:
        _remediation_for_kind(data, failure_kind)
    text = measurement
    if data.get("status") == "passed" and flaky:
        # Allure's own flaky mark (its "Flaky" filter and icon), and what failed before the pass.
        data.setdefault("statusDetails", {})["flaky"] = True  # type: ignore[index]
        text = f"{text} — {flaky}" if text else flaky
    if data.get("status") == "passed" and text:
        details = data.setdefault("statusDetails", {})
        assert isinstance(details, dict)
        details["message"] = text
        # Shown on the case's page; "excluded" keeps it out of the history id.
        parameters = data.setdefault("parameters", [])
        assert isinstance(parameters, list)
        parameters.append({"name": "measured", "value": text, "excluded": True})


def prune_finalizers(container: dict[str, object]) -> bool:
    """Leave out pytest's own fixture finalizers, which allure-pytest records as ``<fixture>::<lambda>`` teardown
    steps: they did nothing a reader needs."""
    afters = container.get("afters") or []
    assert isinstance(afters, list)
    kept = [a for a in afters if not _plain_finalizer(a)]
    if len(kept) == len(afters):
        return False
    container["afters"] = kept
    return True


def worth_writing(container: dict[str, object]) -> bool:
    """Whether a fixture container shows a reader anything: a set-up or tear-down that failed, or that recorded
    steps or attachments. The suite's fixtures never fail in set-up (their verdicts are the case's own), so for a
    passing run this leaves out two files per case (the probe fixture's and the parameter's)."""
    fixtures = [*(container.get("befores") or []), *(container.get("afters") or [])]  # type: ignore[misc]
    return any(f.get("status") not in (None, "passed") or f.get("steps") or f.get("attachments")
               or f.get("statusDetails") for f in fixtures)


def link_blocked(results_dir: Path, *, since_ms: int, failed: dict[str, str] | None = None,
                 blocked: list[Path] | None = None) -> int:
    """Link each case skipped as blocked to the failed case it names, once every result is written (under xdist
    too). With the writer's own index (``failed``: name -> uuid, ``blocked``: the files to link) only those files
    are read and rewritten; without it (xdist workers wrote them), this run's results are scanned. Returns how
    many files were rewritten."""
    if failed is None or blocked is None:
        results = _this_run(results_dir, "*-result.json", since_ms)
        failed = {str(d["name"]): str(d["uuid"]) for _, d in results if d.get("status") in ("failed", "broken")}
    else:
        results = []
        for path in blocked:
            try:
                results.append((path, json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                continue
    rewritten = 0
    for path, data in results:
        if _link_blocked(data, failed):
            path.write_text(json.dumps(data), encoding="utf-8")
            rewritten += 1
    return rewritten


def _remediation_for_kind(data: dict[str, object], kind: str) -> bool:
    description = str(data.get("description") or "")
    head, found, _ = description.partition(REMEDIATION)
    if not found:
        return False
    data["description"] = f"{head}{REMEDIATION} ({kind}) {runbook.remediation_for(kind, '')}"
    return True


def _this_run(results_dir: Path, pattern: str, since_ms: int) -> list[tuple[Path, dict[str, object]]]:
    found: list[tuple[Path, dict[str, object]]] = []
    for path in results_dir.glob(pattern):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if int(data.get("start") or since_ms) >= since_ms:
            found.append((path, data))
    return found


def _plain_finalizer(step: dict[str, object]) -> bool:
    """A fixture finalizer of pytest's own (a lambda) that did not fail and recorded nothing.

    allure-pytest leaves such steps without a status, which Allure shows as a "?" icon.
    """
    return (str(step.get("name", "")).endswith("::<lambda>") and step.get("status") in (None, "passed")
            and not step.get("steps") and not step.get("attachments"))


def _link_blocked(data: dict[str, object], failed: dict[str, str]) -> bool:
    """Link a case skipped as blocked to the failed case it names (its Allure 3 id is the md5 of its uuid).

    The link is relative (``#/<id>``); ``npm run report`` makes it absolute with the report's URL,
    as Allure 3 only makes http(s) links clickable.
    """
    labels = data.get("labels") or []
    assert isinstance(labels, list)
    linked = False
    for label in labels:
        if label.get("name") == "blocked_by" and label.get("value") in failed:
            target = str(label["value"])
            result_id = hashlib.md5(failed[target].encode(), usedforsecurity=False).hexdigest()
            links = data.setdefault("links", [])
            assert isinstance(links, list)
            links.append({"name": f"blocked by {target}", "url": f"#/{result_id}", "type": "link"})
            linked = True
    return linked
