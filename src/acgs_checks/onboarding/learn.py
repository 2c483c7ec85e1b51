"""What init learns about each service from Prometheus, after finding it: the target that is the service (for a
``--service`` URL, the one Prometheus scrapes at that address), its metric dialect, whether a blackbox probe of its
health URL exists, and the business metrics' names. Read-only, bounded, capped like every other read.

A target Prometheus cannot scrape holds no series; its dialect is then read from the target's own ``/metrics`` (one
bounded GET, the suite's client), and init says so: the checks fail, naming the scrape error, until it is fixed.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

from acgs_checks import redaction
from acgs_checks.environment import Prometheus
from acgs_checks.probes import dialects, http
from acgs_checks.probes import prometheus as prom

METRICS_LIMIT = 4 * 1024 * 1024
_COMPLIANCE = re.compile(r"compliance.*score|score.*compliance")
_POLICY = re.compile(r"polic(?:y|ies).*evaluat|evaluat.*polic")
_SUCCESS = re.compile(r"success|succeeded|passed|allow|ok$")
_FAILURE = re.compile(r"fail|error|denied|reject")


def target_for(targets: list[dict[str, Any]], url: str) -> dict[str, Any] | None:
    """The active target Prometheus scrapes at ``url``'s host and port (a --service URL), if any."""
    want = urlsplit(url)
    for target in targets:
        scrape = urlsplit(str(target.get("scrapeUrl", "")))
        if scrape.hostname == want.hostname and (scrape.port or 80) == (want.port or 80):
            return target
    return None


def selector_of(target: dict[str, Any]) -> str:
    labels = target.get("labels") if isinstance(target.get("labels"), dict) else {}
    assert isinstance(labels, dict)
    return (f'job="{prom.label_value(str(labels.get("job", ""))[:200])}",'
            f'instance="{prom.label_value(str(labels.get("instance", ""))[:200])}"')


async def _direct(target: dict[str, Any], timeout: float) -> dict[str, dialects.Family]:
    """The families of a target's own /metrics (one bounded GET), when Prometheus holds none."""
    url = str(target.get("scrapeUrl", ""))
    if urlsplit(url).scheme not in ("http", "https"):
        return {}
    result, body = await http.exchange(url, target="init", timeout=timeout, body_limit=METRICS_LIMIT)
    if not result.answered or result.status != 200 or result.body_truncated:
        return {}
    return dialects.from_exposition(body.decode("utf-8", errors="replace"))


async def learn_service(prometheus: Prometheus, service: dict[str, Any], targets: list[dict[str, Any]],
                        timeout: float) -> list[str]:
    """Fill ``service``'s selector (when Prometheus scrapes its URL), ``metrics`` table and ``dialect`` note; return
    the lines to say about it in the terminal."""
    said: list[str] = []
    target = None
    if not service.get("selector"):
        target = target_for(targets, service["url"]) if service["url"].startswith("http") else None
        if target is not None:
            service["selector"] = selector_of(target)
            said.append(f"{service['name']}: Prometheus scrapes {redaction.display(service['url'])} as "
                        f"{service['selector']}")
    selector = service.get("selector", "")
    if not selector:
        said.append(f"{service['name']}: no Prometheus target scrapes {redaction.display(service['url'])}: no metric "
                    "dialect learned (the SLO checks read the defaults; doctor will say what is missing)")
        return said
    target = target or next((t for t in targets if selector_of(t) == selector), None)
    found = await dialects.learn(prometheus, selector)
    down = prom.down_reason([target] if target else [], selector)
    if not found.usable and target is not None and down:
        direct = dialects.decide(await _direct(target, timeout))
        if direct.usable:
            found = dialects.Found(direct.table, f"{direct.evidence} (read from the target's own /metrics)",
                                   direct.seen)
    if down:
        said.append(f"{service['name']}: {down}; its metric cases fail naming this until Prometheus can scrape it")
    if found.usable:
        service["metrics"] = dict(found.table)
        service["dialect"] = found.evidence
    else:
        service["metrics"] = {"histogram": "", "counter": ""}
        service["dialect"] = ("no request metrics of a known shape; seen: " + (", ".join(found.seen[:12]) or
                                                                             "no series"))
        said.append(f"{service['name']}: no request-duration histogram or request counter found (seen: "
                    f"{', '.join(found.seen[:12]) or 'no series'}); written without SLO metrics: write its metrics "
                    "table by hand (docs/metric-dialects.md)")
    health = service["url"].rstrip("/") + "/health"
    value, _error = await prom.query(prometheus, f'count(probe_success{{instance="{prom.label_value(health)}"}})')
    service["metrics"]["service_down"] = "probe_success" if value else "up"
    return said


async def business_names(prometheus: Prometheus) -> tuple[dict[str, str], list[str]]:
    """The compliance gauge and the policy evaluation counters among every metric Prometheus knows, by shape."""
    result, document, _why = await prom.api_document(prometheus, "/api/v1/metadata?limit=20000")
    data = document.get("data") if result.answered and isinstance(document, dict) else None
    kinds: dict[str, str] = {}
    for name, entries in (data.items() if isinstance(data, dict) else []):
        if not dialects.METRIC_NAME.fullmatch(str(name)):
            continue  # untrusted: only names Prometheus's grammar allows are ever written into the file
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            kinds[str(name)] = str(entries[0].get("type", ""))
    names: dict[str, str] = {}
    said: list[str] = []
    gauges = sorted((not n.startswith("constitutional"), len(n), n) for n, k in kinds.items()
                    if k == "gauge" and _COMPLIANCE.search(n))
    if gauges:
        names["compliance_score"] = gauges[0][2]
    counters = [n for n, k in kinds.items() if k == "counter" and _POLICY.search(n)]
    good = sorted((len(n), n) for n in counters if _SUCCESS.search(n))
    bad = sorted((len(n), n) for n in counters if _FAILURE.search(n))
    if good and bad:
        names["policy_successful"], names["policy_failed"] = good[0][1], bad[0][1]
    elif counters:
        counter = sorted(counters, key=len)[0]
        label, value = await _result_label(prometheus, counter)
        if label:
            names.update(policy_evaluations=counter, policy_result_label=label, policy_success_value=value)
    if "compliance_score" not in names:
        said.append("business: no gauge named like a compliance score in Prometheus (ACGS-2's rules expect "
                    "constitutional_compliance_score): test_constitutional_compliance has no data until "  # prose
                    "one is exported, or [business.compliance] names a JSON endpoint")
    if not any(key.startswith("policy") for key in names):
        said.append("business: no policy evaluation counters in Prometheus (ACGS-2's rules expect "
                    "policy_evaluations_successful_total and policy_evaluations_failed_total): "  # prose
                    "test_policy_evaluation_success has no data until they are exported")
    return names, said


async def _result_label(prometheus: Prometheus, counter: str) -> tuple[str, str]:
    """The label of a policy counter whose values say success, and that value."""
    inner = quote(counter, safe="")
    result, document, _why = await prom.api_document(prometheus, f"/api/v1/labels?match[]={inner}")
    labels = document.get("data") if result.answered and isinstance(document, dict) else None
    for label in (labels if isinstance(labels, list) else [])[:dialects.LABELS_PER_FAMILY + 3]:
        if not isinstance(label, str) or label in dialects.NOT_LABELS or not dialects.LABEL_NAME.fullmatch(label):
            continue
        result, document, _why = await prom.api_document(
            prometheus, f"/api/v1/label/{quote(label, safe='')}/values?match[]={inner}")
        values = document.get("data") if result.answered and isinstance(document, dict) else None
        for value in values if isinstance(values, list) else []:
            if isinstance(value, str) and value.isprintable() and len(value) <= 100 and _SUCCESS.search(value.lower()):
                return label, value
    return "", ""
