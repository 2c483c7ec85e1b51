"""Monday security review: the alerts firing now (the fixed target ``alerts``).

From Alertmanager's ``/api/v2/alerts`` (active, not silenced, not inhibited) or Prometheus' ``/api/v1/alerts``.
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass, field
from typing import Any

from acgs_checks import kinds
from acgs_checks.environment import display_url
from acgs_checks.environment.weekly import MATCHER
from acgs_checks.kinds import Fixed
from acgs_checks.probes import http
from acgs_checks.probes import prometheus as prom
from acgs_checks.records import JsonRecord


def matchers(texts: tuple[str, ...], env_name: str) -> list[tuple[str, str, str]]:
    """(label, operator, value) of the environment's alert matchers; default ``env="<name>"``."""
    if not texts:
        return [("env", "=", env_name)]
    found = []
    for text in texts:
        match = MATCHER.fullmatch(text)
        if match is not None:
            found.append((match.group(1), match.group(2), match.group(3).replace('\\"', '"')))
    return found


def belongs(labels: dict[str, Any], wanted: list[tuple[str, str, str]]) -> bool:
    """Whether an alert is this environment's: every matcher holds, or its label is absent (an alert nobody
    labelled cannot be put elsewhere, so it is judged: hiding it would be a silent pass)."""
    for label, op, value in wanted:
        if label not in labels:
            continue
        seen = str(labels[label])
        ok = {"=": seen == value, "!=": seen != value,
              "=~": re.fullmatch(value, seen) is not None, "!~": re.fullmatch(value, seen) is None}[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class FiringAlerts(JsonRecord):
    target: str
    source: str
    answered: bool
    error: str = ""
    alerts: list[dict[str, Any]] = field(default_factory=list)  # name, severity, labels, firing_seconds
    others: int = 0   # firing alerts of other environments (counted, never judged)
    matchers: str = ""  # what "this environment's" meant
    denied: str = ""  # the target refused the suite: the credential or grant to check


def _started(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def probe_alerts(target: Fixed, job: kinds.Job) -> FiringAlerts:
    env = job.env
    now = time.time()
    if env.alertmanager is not None:
        am = env.alertmanager
        url = am.url.rstrip("/") + "/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false"
        result, body = await http.exchange(url, target="alerts", timeout=am.timeout_seconds, headers=am.headers,
                                           body_limit=8 * 1024 * 1024)
        source = f"Alertmanager {display_url(am.url)}"
        document, unread = http.json_body(result, body) if result.answered and result.status == 200 else (None, "")
        if not isinstance(document, list):
            why = result.detail or f"HTTP {result.status}, {unread or 'expected 200 with a JSON list'}"
            return FiringAlerts("alerts", source, answered=False, error=f"GET {display_url(url)} → {why}")
        raw = [(a.get("labels") or {}, a.get("startsAt")) for a in document if isinstance(a, dict)
               and (a.get("status") or {}).get("state", "active") == "active"]
    else:

        assert env.prometheus is not None
        source = f"Prometheus {display_url(env.prometheus.url)} /api/v1/alerts"
        result, document, unread = await prom.api_document(env.prometheus, "/api/v1/alerts")
        alerts = ((document or {}).get("data") or {}).get("alerts") if isinstance(document, dict) else None
        if not result.answered or not isinstance(alerts, list):
            return FiringAlerts("alerts", source, answered=False, error=result.detail or
                                f"HTTP {result.status}, {unread or 'expected the alerts API JSON'}")
        raw = [(a.get("labels") or {}, a.get("activeAt")) for a in alerts if a.get("state") == "firing"]
    wanted = matchers(env.security.alert_matchers, env.name)
    found, others = [], 0
    for labels, started in raw:
        if not belongs(labels, wanted):
            others += 1
            continue
        since = _started(started)
        found.append({"name": labels.get("alertname", "?"), "severity": str(labels.get("severity", "")).lower(),
                      "labels": labels, "firing_seconds": None if since is None else round(now - since, 1)})
    shown = ",".join(f'{label}{op}"{value}"' for label, op, value in wanted)
    return FiringAlerts("alerts", source, answered=True, alerts=found, others=others, matchers=shown)


ALERTS = kinds.register(kinds.ProbeKind(
    name="alerts", section="alertmanager", record=FiringAlerts, probe=probe_alerts,
    fixed={"alerts_probe": "alerts"},
    targets=lambda env: (Fixed("alerts"),) if env.alertmanager is not None or env.prometheus is not None else (),
    grant="read access to the Alertmanager API (/api/v2/alerts) or the Prometheus API",
    doc="the alerts firing now, from Alertmanager or Prometheus",
))
