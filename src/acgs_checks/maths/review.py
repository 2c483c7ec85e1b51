"""The Wednesday review over the history store: week-on-week regressions, capacity projections, the trend plot.

The checks in ``checks/test_performance.py`` hold the requirement, the threshold and the judgement; what they
judge is computed here, from a :class:`~acgs_checks.probes.history.HistorySnapshot`'s plain data, so every rule
is unit-tested without a run. Which series count is what each check declared by marker (``trended``,
``capacity``), stored with its measurements (:func:`acgs_checks.policy.runbook.trend_role`): no list of check names.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from acgs_checks.maths.trends import DAY, WEEK, linear_fit, weekly_medians

TRENDED, CAPACITY = "trended", "capacity:"


@dataclass(frozen=True)
class WarmUp:
    """The history a review needs before it can give a verdict, counted from the environment's first recorded run.

    Until ``days`` (plus a day for schedules that drift) have passed since that run, a review with nothing to judge
    is warming up, not failing; after it, nothing to judge is "no data" and fails.
    """

    what: str   # what the review is waiting for, in words
    runs: int   # runs the store must hold before this one
    days: float  # from the first recorded run to the first verdict, on a daily schedule


# A week-on-week comparison needs a run in an earlier week: the first is a week old.
TRENDS_WARM_UP = WarmUp("a run in an earlier week", runs=2, days=7.0)
# A projection needs 3 runs over a day or more in the store before this run: the fourth daily run.
CAPACITY_WARM_UP = WarmUp("3 runs over a day or more", runs=3, days=3.0)
WARM_UP_SLACK_DAYS = 1.0


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def warming_up(first_at: float | None, runs: int, now: float, needs: WarmUp, *, store: str) -> str:
    """The warming-up line while the store is younger than the review's window, else "" (then missing history is
    no data). ``first_at`` is when the first recorded run started (None: the store holds no run yet)."""
    start = now if first_at is None else first_at
    expected = start + needs.days * DAY
    if now >= expected + WARM_UP_SLACK_DAYS * DAY:
        return ""
    since = (f"since {_utc(start)}" if first_at is not None
             else f"(the history store {store} holds none: this run is its first)")
    counted = f"{runs} of {needs.runs} runs" if runs < needs.runs else f"{runs} runs"
    return (f"{counted} recorded {since}, and the review needs {needs.what}; "
            f"first verdict expected {_utc(max(expected, now))}")


@dataclass(frozen=True)
class Trends:
    """The trended series compared this week against the weeks before."""

    judged: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)   # one line each: this week vs before, % worse
    marks: dict[str, str] = field(default_factory=dict)    # series -> "+35 % worse", for the plot
    points: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # what was judged, for the plot
    considered: int = 0                                     # trended series seen (stored or PromQL)
    waiting: list[str] = field(default_factory=list)        # PromQL series without an earlier week yet


def trended_series(series: Mapping[str, Mapping[str, Any]], weekly: Mapping[str, Mapping[str, Any]],
                   now: float) -> dict[str, dict[str, Any]]:
    """The stored series whose check declared ``trended``; where Prometheus has a declared ``promql`` key's
    weekly medians for the same target, those replace the stored points (PromQL-only series join as well)."""
    found: dict[str, dict[str, Any]] = {}
    replaced: set[str] = set()
    for name, entry in series.items():
        role = str(entry.get("role", ""))
        if role != TRENDED and not role.startswith(TRENDED + ":"):
            continue
        key = role.partition(":")[2]
        standing_in = f"{key}[{name.partition('[')[2].rstrip(']')}]"
        if key and standing_in in weekly:
            found[name] = _from_promql(weekly[standing_in], now)
            replaced.add(standing_in)
        else:
            found[name] = dict(entry)
    for name, entry in weekly.items():
        if name not in replaced:
            found[name] = _from_promql(entry, now)
    return found


def _from_promql(entry: Mapping[str, Any], now: float) -> dict[str, Any]:
    return {**entry, "points": [(now - w * WEEK, m) for w, m in enumerate(entry["weekly"]) if m is not None]}


def compare_weeks(series: Mapping[str, Mapping[str, Any]], *, weeks: int, limit_percent: float, now: float,
                  promql: Sequence[str] = ()) -> Trends:
    """This week's median of each series against the median of the earlier weeks' medians.

    A change counts against the larger of the earlier median and a tenth of the series' threshold, so values
    near zero do not turn noise into large percentages; a series with no earlier week, or no known worse
    direction, is not judged.
    """
    trends = Trends(considered=len(series))
    for name, entry in sorted(series.items()):
        medians = entry.get("weekly") or weekly_medians(entry["points"], now, weeks)
        this, before = medians[0], [m for m in medians[1:] if m is not None]
        if this is None or not before or not entry.get("worse"):
            continue
        base = statistics.median(before)
        scale = max(abs(base), 0.1 * abs(entry.get("threshold") or 0.0))
        if scale == 0:
            continue
        change = 100 * (this - base) / scale * (1 if entry["worse"] == "higher" else -1)
        trends.judged.append(name)
        trends.points[name] = list(entry["points"])
        if change > limit_percent:
            trends.regressions.append(f"{name} {this:.4g} this week vs {base:.4g} before ({change:+.0f} % worse, "
                                      f"{len(before)} earlier week(s))")
            trends.marks[name] = f"{change:+.0f} % worse"
    trends.waiting.extend(n for n in promql if n not in trends.judged)
    return trends


@dataclass(frozen=True)
class Projection:
    resource: str
    what: str
    days: float | None  # None: not growing
    fit: str

    def line(self) -> str:
        if self.days is None:
            when = "not growing"
        elif self.days < 2:  # "0 days" is how eight hours would round
            when = f"{self.what} in {self.days * 24:.1f} hours"
        else:
            when = f"{self.what} in {self.days:.0f} days"
        return f"{self.resource}: {when} ({self.fit})"


def projection_waiting(waiting: list[dict[str, Any]]) -> str:
    """The warming-up line for projections whose Prometheus series spans less than a day, or ""."""
    if not waiting:
        return ""
    first = min(float(w["first_verdict_at"]) for w in waiting)
    shown = ", ".join(f"{w['resource']} ({w['span']} of data)" for w in waiting[:6])
    return (f"warming up: {len(waiting)} projection(s) from Prometheus span less than a day of data: {shown}; "
            f"the first verdict comes at {_utc(first)}")


def project_capacity(series: Mapping[str, Mapping[str, Any]], *, weeks: int,
                     now: float) -> tuple[list[Projection], list[str]]:
    """Days until each declared ``capacity`` series (a usage share in %) reaches 100 %: a least-squares line over
    the last ``weeks`` weeks; and the series with too little history for a fit (3 runs over a day or more)."""
    found, too_short = [], []
    for name, entry in sorted(series.items()):
        role = str(entry.get("role", ""))
        if not role.startswith(CAPACITY):
            continue
        fit = linear_fit([(t, v) for t, v in entry["points"] if t > now - weeks * WEEK])
        if fit is None:
            too_short.append(name)
            continue
        found.append(Projection(name, role.removeprefix(CAPACITY), fit.days_until(100.0, now),
                                f"{fit.at(now):.1f} % now, {fit.slope_per_day:+.3f} points/day over {fit.days:.0f} "
                                f"days ({fit.points} runs; least squares)"))
    return found, too_short


def plot(title: str, lines: Mapping[str, Sequence[tuple[float, float]]], marks: Mapping[str, str]) -> bytes:
    """Small multiples, one panel per series, regressed ones in red; a PNG (matplotlib's Agg backend)."""
    import datetime  # noqa: PLC0415 - only the Wednesday review draws

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    names = sorted(lines)
    cols = 3 if len(names) > 4 else max(1, len(names))
    rows = (len(names) + cols - 1) // cols
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip((a for row in axes for a in row), names, strict=False):
        points = sorted(lines[name])
        ax.plot([datetime.datetime.fromtimestamp(t, datetime.UTC) for t, _ in points], [v for _, v in points],
                marker=".", linewidth=1, color="tab:red" if name in marks else "tab:blue")
        ax.set_title(name + (f"\n{marks[name]}" if name in marks else ""), fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in [a for row in axes for a in row][len(names):]:
        ax.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=90)
    plt.close(figure)
    return out.getvalue()


__all__ = ["DAY", "Projection", "Trends", "compare_weeks", "plot", "project_capacity", "trended_series"]
