"""Pure metric arithmetic: the Prometheus text format, histogram_quantile, sample percentiles.

No I/O here; the probes fetch, these functions compute, and the self-tests check them
against hand-computed cases.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse_text(text: str) -> list[Sample]:
    """Parse the Prometheus text exposition format with prometheus_client's parser.

    Samples keep their full names (``_bucket``, ``_count``, ``_total``); garbage raises ValueError.
    """
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415 - scrape source only

    try:
        return [Sample(s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ValueError(f"not the Prometheus text format: {exc}") from None


def parse_value(text: str) -> float:
    lowered = text.lower()
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    return float(text)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """``histogram_quantile`` as Prometheus computes it, from (upper bound, cumulative count) pairs.

    Linear interpolation inside the bucket that holds the rank; the lowest bucket starts
    at 0 (unless its bound is not positive); a rank in the +Inf bucket returns the
    highest finite bound; no +Inf bucket, fewer than two buckets or no observations
    give NaN. Counts that decrease (a scrape race) are made monotonic first.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    running = 0.0
    monotonic: list[tuple[float, float]] = []
    for bound, count in ordered:
        running = max(running, count)
        monotonic.append((bound, running))
    observations = monotonic[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    index = next(i for i, (_, count) in enumerate(monotonic) if count >= rank)
    if rank == 0 and monotonic[index][1] == 0:
        # q = 0 with an empty lowest bucket: Prometheus divides 0 by 0 there, which is NaN.
        return math.nan
    if index == len(monotonic) - 1:
        return monotonic[-2][0]
    if index == 0 and monotonic[0][0] <= 0:
        return monotonic[0][0]
    start = 0.0 if index == 0 else monotonic[index - 1][0]
    end, count = monotonic[index]
    if index > 0:
        count -= monotonic[index - 1][1]
        rank -= monotonic[index - 1][1]
    return start + (end - start) * (rank / count)


def beyond_top_bucket(q: float, buckets: Iterable[tuple[float, float]]) -> tuple[float, float, float] | None:
    """When the q-quantile's rank falls in the +Inf bucket: (top finite bound, observations beyond it, total).

    ``histogram_quantile`` then returns the top finite bound, Prometheus's own cap: the true
    quantile is only known to lie above it. None when the quantile is measurable.
    """
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]) or not 0 < q <= 1:
        return None
    total = max(count for _, count in ordered)
    top_bound = ordered[-2][0]
    top_count = max(count for bound, count in ordered if not math.isinf(bound))
    if total <= 0 or q * total <= top_count:
        return None
    return top_bound, total - top_count, total


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of samples by linear interpolation between closest ranks.

    This is Hyndman and Fan's definition 7, the default of numpy and R: with sorted
    values x[0..n-1], h = (n-1)q, result = x[floor h] + (h - floor h)(x[floor h + 1] - x[floor h]).
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def bucket_deltas(before: Sequence[Sample], after: Sequence[Sample], name: str,
                  selector: Mapping[str, str]) -> list[tuple[float, float]]:
    """Per-bucket increase between two scrapes of a histogram (summed over matching series).

    A series whose count went down was reset (a restart): its increase is its new value.
    """
    def by_series(samples: Sequence[Sample]) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(s.labels.items())): s.value for s in samples
                if s.name == name and matches(s.labels, selector)}

    old, new = by_series(before), by_series(after)
    totals: dict[float, float] = {}
    for key, value in new.items():
        previous = old.get(key, 0.0)
        increase = value - previous if value >= previous else value
        bound = parse_value(dict(key)["le"])
        totals[bound] = totals.get(bound, 0.0) + increase
    return sorted(totals.items())


def counter_delta(before: Sequence[Sample], after: Sequence[Sample], name: str,
                  selector: Mapping[str, str], *, where: str | None = None, pattern: str = "") -> float:
    """Increase of a counter between two scrapes, optionally only series whose label ``where`` matches ``pattern``."""
    def keep(sample: Sample) -> bool:
        if sample.name != name or not matches(sample.labels, selector):
            return False
        return where is None or re.fullmatch(pattern, sample.labels.get(where, "")) is not None

    old = {tuple(sorted(s.labels.items())): s.value for s in before if keep(s)}
    total = 0.0
    for sample in after:
        if keep(sample):
            previous = old.get(tuple(sorted(sample.labels.items())), 0.0)
            total += sample.value - previous if sample.value >= previous else sample.value
    return total


@dataclass(frozen=True)
class Apdex:
    """An Apdex score (satisfied + tolerating / 2) / total, or None with why it cannot be told from the data.

    ``note`` says how the counts were read: exact at bucket bounds, or interpolated inside a bucket.
    """

    score: float | None
    satisfied: float
    tolerating: float
    total: float
    note: str


def _count_at(x: float, ordered: Sequence[tuple[float, float]]) -> tuple[float | None, str]:
    """The cumulative count at ``x`` from (bound, cumulative count) pairs ending with +Inf: exact at a bound,
    linear inside a bucket (the first bucket starts at 0), None beyond the top finite bound when observations
    lie beyond it (the data cannot say how many of them are within ``x``)."""
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if math.isinf(bound):
            if below == count:  # nothing beyond the top finite bound: everything is within x
                return count, "exact (no observation beyond the top bucket)"
            return None, (f"{x:g} s lies beyond the top finite bucket le={lower:g} ({count - below:.4g} "
                          "observations above it)")
        if x == bound:
            return count, "exact at a bucket bound"
        if x < bound:
            share = (x - lower) / (bound - lower) if bound > lower else 1.0
            return below + (count - below) * share, f"interpolated inside le={lower:g}..{bound:g}"
        lower, below = bound, count
    return None, "no +Inf bucket"


def apdex_from_buckets(buckets: Iterable[tuple[float, float]], t: float) -> Apdex:
    """Apdex from a latency histogram (cumulative counts or rates by upper bound): satisfied within T, tolerating
    within 4T. Counts at T and 4T are exact where they are bucket bounds, else interpolated (and said so)."""
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered, running = [], 0.0
    for bound, count in sorted(merged.items()):
        running = max(running, count)  # cumulative counts never decrease (a scrape race can make them)
        ordered.append((bound, running))
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return Apdex(None, 0, 0, 0, "no histogram with a +Inf bucket")
    total = ordered[-1][1]
    if total <= 0:
        return Apdex(None, 0, 0, 0, "no requests in the window")
    satisfied, how_t = _count_at(t, ordered)
    within, how_4t = _count_at(4 * t, ordered)
    if satisfied is None or within is None:
        return Apdex(None, 0, 0, total, f"T or 4T cannot be read: {how_t if satisfied is None else how_4t}")
    tolerating = within - satisfied
    return Apdex((satisfied + tolerating / 2) / total, satisfied, tolerating, total,
                 f"T={t:g} s {how_t}; 4T={4 * t:g} s {how_4t}")


def apdex_from_samples(latencies: Sequence[float], failed: Sequence[bool], t: float) -> Apdex:
    """Apdex from individual requests; a failed request (no answer, or a 5xx) is frustrated, as the Apdex
    specification counts errors."""
    total = len(latencies)
    if total == 0:
        return Apdex(None, 0, 0, 0, "no requests")
    satisfied = sum(1 for s, bad in zip(latencies, failed, strict=True) if not bad and s <= t)
    tolerating = sum(1 for s, bad in zip(latencies, failed, strict=True) if not bad and t < s <= 4 * t)
    return Apdex((satisfied + tolerating / 2) / total, satisfied, tolerating, total,
                 f"{total} requests; failed ones count as frustrated")
