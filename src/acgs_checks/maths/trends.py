"""The weekly reviews' statistics: robust bounds, weekly medians and linear projections.

Pure functions over plain numbers, so every rule here is tested without a server.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

DAY = 86400.0
WEEK = 7 * DAY
# MAD times this estimates the standard deviation of normally distributed values.
MAD_SCALE = 1.4826


@dataclass(frozen=True)
class Bound:
    """median ± k·MAD·1.4826 of a history, with a floor on the spread so a flat history still has a band."""

    median: float
    spread: float
    k: float

    @property
    def low(self) -> float:
        return self.median - self.k * self.spread

    @property
    def high(self) -> float:
        return self.median + self.k * self.spread

    def outside(self, value: float) -> bool:
        return value < self.low or value > self.high

    def __str__(self) -> str:
        return f"{self.low:.4g}..{self.high:.4g} (median {self.median:.4g} ± {self.k:g}·{self.spread:.3g})"


def robust_bound(history: Sequence[float], k: float, *, floor: float) -> Bound:
    median = statistics.median(history)
    mad = statistics.median(abs(v - median) for v in history) * MAD_SCALE
    return Bound(median, max(mad, floor), k)


def access_anomalies(days: Sequence[dict[str, object]], *, k: float, min_requests: float,
                     top: int) -> tuple[list[str], list[str]]:
    """(findings, what was compared) for day 0 against days 1..7: volume, class shares, new top clients."""
    today, before = days[0], [d for d in days[1:] if float(d["total"]) > 0]  # type: ignore[arg-type]
    findings: list[str] = []
    compared: list[str] = []
    if len(before) < 3:
        return findings, compared
    total = float(today["total"])  # type: ignore[arg-type]
    volumes = [float(d["total"]) for d in before]  # type: ignore[arg-type]
    bound = robust_bound(volumes, k, floor=0.05 * statistics.median(volumes))
    compared.append(f"volume {total:.0f} vs {bound}")
    if bound.outside(total):
        findings.append(f"volume {total:.0f} requests outside {bound}")
    classes = sorted({c for d in [today, *before] for c in d["classes"]})  # type: ignore[attr-defined]
    if total >= min_requests:
        for cls in classes:
            share = 100 * float(today["classes"].get(cls, 0)) / total  # type: ignore[attr-defined]
            history = [100 * float(d["classes"].get(cls, 0)) / float(d["total"]) for d in before  # type: ignore[attr-defined,arg-type]
                       if float(d["total"]) >= min_requests]  # type: ignore[arg-type]
            if len(history) < 3:
                continue
            share_bound = robust_bound(history, k, floor=1.0)  # at least a percentage point either side
            compared.append(f"{cls} {share:.2f} % vs {share_bound}")
            if share_bound.outside(share):
                findings.append(f"{cls} share {share:.2f} % outside {share_bound} %")
    known = {c for d in before for c in d["clients"]}  # type: ignore[attr-defined]
    leaders = sorted(today["clients"].items(), key=lambda kv: -float(kv[1]))[:top]  # type: ignore[attr-defined]
    new = [f"{client} ({float(count):.0f})" for client, count in leaders if client not in known]
    if leaders:
        compared.append(f"top {len(leaders)} clients against the previous days' top 20")
    if new and known:
        findings.append("new top client(s): " + ", ".join(new))
    return findings, compared


def weekly_medians(points: Sequence[tuple[float, float]], now: float, weeks: int) -> list[float | None]:
    """Median of each week ending now: index 0 is this week, 1 the week before, ...; None when empty."""
    out: list[float | None] = []
    for w in range(weeks + 1):
        inside = [v for t, v in points if now - (w + 1) * WEEK < t <= now - w * WEEK]
        out.append(statistics.median(inside) if inside else None)
    return out


@dataclass(frozen=True)
class Fit:
    """A least-squares line through (time, value) points: value = intercept + slope·t (slope per day)."""

    slope_per_day: float
    intercept: float
    points: int
    days: float

    def at(self, t: float) -> float:
        return self.intercept + self.slope_per_day * t / DAY

    def days_until(self, limit: float, now: float) -> float | None:
        """Days from now until the line reaches ``limit``; None when it never does (flat or falling)."""
        if self.slope_per_day <= 0:
            return None
        return max(0.0, (limit - self.at(now)) / self.slope_per_day)


def linear_fit(points: Sequence[tuple[float, float]]) -> Fit | None:
    """Ordinary least squares; None with fewer than 3 points or less than a day of span."""
    if len(points) < 3:
        return None
    ts = [t / DAY for t, _ in points]
    span = max(ts) - min(ts)
    if span < 1:
        return None
    mean_t = statistics.fmean(ts)
    mean_v = statistics.fmean(v for _, v in points)
    var = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (v - mean_v) for t, (_, v) in zip(ts, points, strict=True)) / var
    return Fit(slope_per_day=slope, intercept=mean_v - slope * mean_t, points=len(points), days=span)
