"""Learning a service's metric dialect from what its target exposes, by the shapes of its series, never by a list of
names: ``acgs-checks init`` writes what this finds, and an SLO case with no series names it as the fix.

The rules (docs/metric-dialects.md):

* **the histogram**: a family of type histogram (or, without metadata, ``_bucket`` series) whose name says it times
  requests (``request``/``http``/``server`` with ``duration``/``latency``/``time``) in seconds (``_seconds``), and
  does not time something else (a database, a cache, a model, an outgoing client call);
* **the counter**: a counter whose name counts requests (``requests_total``, ``request_count``), not errors, sharing
  the histogram's prefix where one does; without one, the histogram's own ``_count``;
* **the status label**: a label of the counter (or histogram) whose values all look like HTTP statuses (``200``,
  ``5xx``), whatever it is called;
* **the in-flight gauge**: a gauge whose name says requests in progress; optional.

Every read is one bounded GET of the Prometheus API (the suite's own client and caps); at most
:data:`LABELS_PER_FAMILY` label-value reads per candidate family.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from acgs_checks.environment import Prometheus, dialect
from acgs_checks.probes.prometheus import api_document

STATUS_VALUE = re.compile(r"[1-5](?:\d\d|xx|XX)")
LABELS_PER_FAMILY = 6
VALUES_KEPT = 20
BOUNDS_KEPT = 64  # a histogram's bucket bounds (prometheus_client has 15, the sandbox 24)
_TIMES = re.compile(r"duration|latency|response_time|request_time|_time_seconds")
_REQUESTS = re.compile(r"request|http|server|rpc")
_ELSEWHERE = re.compile(r"(?:^|_)(?:db|database|sql|query|queries|cache|redis|llm|model|inference|gc|client|"
                        r"outbound|upstream|downstream|dependency|external|celery|task|job|queue|push)(?:_|$)")
_COUNTS = re.compile(r"requests?_(?:total|count)$|requests$")
_NOT_REQUESTS = re.compile(r"error|fail|exception|retry|retries|dropped|rejected")
_IN_FLIGHT = re.compile(r"in_?flight|in_?progress|active_requests|requests_active|concurrent_requests|"
                        r"requests_in_progress|inprogress")
NOT_LABELS = frozenset({"__name__", "le", "quantile", *dialect.TARGET_LABELS})
# What a target sends is untrusted: only names Prometheus's own grammar allows are ever written into a file.
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,199}")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,99}")


@dataclass
class Family:
    """One metric family as a target exposes it: its type, and its labels with (some of) their values."""

    name: str
    type: str
    labels: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Found:
    """A dialect learned from one target, and what it was learned from (for the file's comment and messages)."""

    table: dict[str, Any]         # the service's metrics table: histogram, counter, status_label, in_flight, buckets
    evidence: str                 # the series it used, in words
    seen: tuple[str, ...] = ()    # the families the target exposes (for "nothing fits")

    @property
    def usable(self) -> bool:
        return bool(self.table.get("histogram") or self.table.get("counter"))

    def paste(self) -> str:
        """The environment-file line that declares this dialect."""
        return f"metrics = {inline(self.table)}"


def inline(table: dict[str, Any]) -> str:
    """A TOML inline table of strings and lists of numbers (JSON's escapes and arrays are TOML's)."""
    return "{ " + ", ".join(f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in table.items()) + " }"


def _prefix(name: str) -> str:
    """What precedes the word ``request``/``http`` in a name (``auth_service_`` of ``auth_service_requests...``)."""
    found = re.search(r"(?:requests?|http)", name)
    return name[:found.start()] if found else ""


def _histogram(families: dict[str, Family]) -> tuple[Family | None, str]:
    """The request-duration histogram: the best-scored one (then the shorter name, then the first by name)."""
    scored = []
    why = ""
    for family in families.values():
        name = family.name
        if family.type != "histogram" or not (_TIMES.search(name) and _REQUESTS.search(name)) or _ELSEWHERE.search(
                name):
            continue
        if not name.endswith("_seconds"):
            why = f"{name} times requests but not in seconds (a unit the thresholds cannot be read in)"
            continue
        score = 2 * ("request" in name) + ("http" in name) + ("server" in name) + 2 * ("duration" in name)
        scored.append((-score, len(name), name, family))
    scored.sort(key=lambda item: item[:3])
    return (scored[0][3] if scored else None), why


def _status_label(family: Family | None) -> str:
    if family is None:
        return ""
    candidates = [label for label, values in family.labels.items()
                  if label not in NOT_LABELS and values and all(STATUS_VALUE.fullmatch(v) for v in values)]
    candidates.sort(key=lambda label: (not ("status" in label or "code" in label), len(label), label))
    return candidates[0] if candidates else ""


def _counter(families: dict[str, Family], histogram: Family | None) -> Family | None:
    prefix = _prefix(histogram.name) if histogram is not None else None
    scored = []
    for family in families.values():
        name = family.name
        if family.type != "counter" or not _COUNTS.search(name) or _NOT_REQUESTS.search(name) or _ELSEWHERE.search(
                name):
            continue
        score = (3 * (prefix is not None and _prefix(name) == prefix) + 2 * bool(_status_label(family))
                 + ("http" in name))
        scored.append((-score, len(name), name, family))
    scored.sort(key=lambda item: item[:3])
    return scored[0][3] if scored else None


def _in_flight(families: dict[str, Family], prefix: str) -> str:
    gauges = sorted((not f.name.startswith(prefix), len(f.name), f.name) for f in families.values()
                    if f.type == "gauge" and _IN_FLIGHT.search(f.name) and not _ELSEWHERE.search(f.name))
    return gauges[0][2] if gauges else ""


def decide(families: dict[str, Family]) -> Found:
    """The dialect of one target's families, by their shapes (the module's rules)."""
    histogram, why = _histogram(families)
    counter = _counter(families, histogram)
    table: dict[str, Any] = {}
    notes = []
    if histogram is not None:
        table["histogram"] = histogram.name
        bounds = _bounds(histogram)
        if bounds:
            table["buckets"] = bounds
        notes.append(f"{histogram.name} (histogram, labels: {_labels(histogram)})")
    if counter is not None:
        table["counter"] = counter.name
        status = _status_label(counter)
        notes.append(f"{counter.name} (counter, labels: {_labels(counter)})")
    elif histogram is not None:
        table["counter"] = dialect.HISTOGRAM_COUNT
        status = _status_label(histogram)
        notes.append(f"no request counter: requests are {histogram.name}_count")
    else:
        status = ""
    if table:
        # A counter without a histogram: say so, or the defaults would fill the gap with a name nobody exposes.
        table = {"histogram": table.get("histogram", ""), **table}
        table["status_label"] = status
        notes.append(f'status label "{status}" (values {", ".join(sorted(_values(counter or histogram, status)))})'
                     if status else "no label holds HTTP statuses: no error rate can be read")
        gauge = _in_flight(families, _prefix(histogram.name if histogram else table["counter"]))
        table["in_flight"] = gauge
        if gauge:
            notes.append(f"{gauge} (in-flight gauge)")
    elif why:
        notes.append(why)
    seen = tuple(sorted(families)[:40])
    return Found(table, "; ".join(notes), seen)


def _bounds(family: Family) -> list[float]:
    """The finite bucket bounds of a histogram, when its ``le`` values were read."""
    found = set()
    for text in family.labels.get("le", set()):
        try:
            value = float(text)
        except ValueError:
            continue
        if math.isfinite(value) and value > 0:
            found.add(value)
    return sorted(found)


def _labels(family: Family) -> str:
    return ", ".join(sorted(set(family.labels) - NOT_LABELS)) or "none"


def _values(family: Family | None, label: str) -> list[str]:
    return sorted((family.labels.get(label) or set()) if family else set())[:8]


# --- reading a target's families -------------------------------------------------------------------

def _base(name: str, kind: str) -> str:
    if kind in ("histogram", "summary"):
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
    return name


def from_exposition(text: str) -> dict[str, Family]:
    """The families of a /metrics answer (the text format), with their labels' values (a few of each)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415 - init and hints only

    families: dict[str, Family] = {}
    try:
        parsed = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, KeyError, TypeError):
        return families
    for parsed_family in parsed:
        kind = parsed_family.type if parsed_family.type in ("counter", "gauge", "histogram") else "untyped"
        name = parsed_family.name + ("_total" if kind == "counter" and not parsed_family.name.endswith("_total")
                                     else "")
        if not METRIC_NAME.fullmatch(name):
            continue
        family = families.setdefault(name, Family(name, kind))
        for sample in parsed_family.samples:
            for label, value in sample.labels.items():
                if not LABEL_NAME.fullmatch(label):
                    continue
                values = family.labels.setdefault(label, set())
                if len(values) < (BOUNDS_KEPT if label == "le" else VALUES_KEPT):
                    values.add(str(value))
    return families


async def _get(prometheus: Prometheus, path: str) -> Any:
    result, document, _why = await api_document(prometheus, path)
    if not result.answered or not isinstance(document, dict) or document.get("status") != "success":
        return None
    return document.get("data")


async def from_prometheus(prometheus: Prometheus, selector: str) -> dict[str, Family]:
    """The families Prometheus holds for a target: its metadata (types), the names of its series, and for the
    candidates their labels and values. Bounded: a handful of capped GETs."""
    match = quote("{" + selector + "}", safe="")
    metadata = await _get(prometheus, f"/api/v1/targets/metadata?match_target={match}&limit=5000")
    types: dict[str, str] = {}
    for item in metadata if isinstance(metadata, list) else []:
        if isinstance(item, dict) and isinstance(item.get("metric"), str):
            types[item["metric"]] = str(item.get("type") or "untyped")
    names = await _get(prometheus, f"/api/v1/label/__name__/values?match[]={match}")
    families: dict[str, Family] = {}
    for sample_name in names if isinstance(names, list) else []:
        if not isinstance(sample_name, str) or not METRIC_NAME.fullmatch(sample_name):
            continue
        kind = types.get(sample_name) or next(
            (types[_base(sample_name, "histogram")] for suffix in ("_bucket", "_count", "_sum")
             if sample_name.endswith(suffix) and _base(sample_name, "histogram") in types), "")
        if not kind:
            kind = "histogram" if sample_name.endswith("_bucket") else "counter" if sample_name.endswith(
                "_total") else "untyped"
        base = _base(sample_name, kind)
        families.setdefault(base, Family(base, kind))
        if len(families) > 5000:
            break
    chosen = decide(families)
    for name in {chosen.table.get("histogram", ""), chosen.table.get("counter", "")} - {"", dialect.HISTOGRAM_COUNT}:
        family = families[name]
        series = f"{name}_bucket" if family.type == "histogram" else name
        inner = quote(f"{series}{{{selector}}}", safe="")
        listed = await _get(prometheus, f"/api/v1/labels?match[]={inner}")
        labels = [x for x in (listed if isinstance(listed, list) else [])
                  if isinstance(x, str) and LABEL_NAME.fullmatch(x) and x not in NOT_LABELS]
        if family.type == "histogram":
            bounds = await _get(prometheus, f"/api/v1/label/le/values?match[]={inner}")
            family.labels["le"] = {str(v) for v in bounds[:BOUNDS_KEPT]} if isinstance(bounds, list) else set()
        for label in labels[:LABELS_PER_FAMILY]:
            values = await _get(prometheus, f"/api/v1/label/{quote(label, safe='')}/values?match[]={inner}")
            family.labels[label] = {str(v) for v in values[:VALUES_KEPT]} if isinstance(values, list) else set()
    return families


async def learn(prometheus: Prometheus, selector: str) -> Found:
    """The dialect Prometheus's series of ``selector`` speak."""
    return decide(await from_prometheus(prometheus, selector))
