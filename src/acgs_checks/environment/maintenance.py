"""Maintenance windows: a one-off UTC start and end, or a cron-like recurrence with a duration.

Inside a window, a failure of one of its targets is reported as "in maintenance" (a skip that
says so), not as a failure; outside it nothing changes.
"""

from __future__ import annotations

import datetime
import functools
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from acgs_checks.environment.base import Strict, problem
from acgs_checks.environment.model import glob_pattern

UTC = datetime.UTC
MINUTE = datetime.timedelta(minutes=1)
MAX_DURATION_MINUTES = 7 * 24 * 60  # a week: a longer "maintenance" is a waiver

# (name, lowest, highest) of the five cron fields; day of week 0 and 7 are both Sunday.
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


@dataclass(frozen=True)
class Cron:
    """A five-field cron expression (minute hour day-of-month month day-of-week), read in UTC."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *

    def matches(self, at: datetime.datetime) -> bool:
        if at.minute not in self.minutes or at.hour not in self.hours or at.month not in self.months:
            return False
        day, weekday = at.day in self.days, (at.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:  # cron's rule: both restricted means either one
            return day and weekday
        return day or weekday

    def last_start(self, now: datetime.datetime, within: datetime.timedelta) -> datetime.datetime | None:
        """The latest start at or before ``now`` and later than ``now - within`` (None when there is none)."""
        at = now.replace(second=0, microsecond=0)
        while now - at < within:
            if self.matches(at):
                return at
            at -= MINUTE
        return None


@functools.cache
def parse_cron(expression: str) -> Cron:
    """Read ``expression``; raise ValueError saying which field is wrong and why."""
    fields = expression.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(f"{expression!r} has {len(fields)} field(s); cron has 5: minute hour day-of-month "
                         "month day-of-week")
    sets = [_parse_field(text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(0 if d == 7 else d for d in sets[4])
    return Cron(sets[0], sets[1], sets[2], sets[3], weekdays, any_day=fields[2] == "*", any_weekday=fields[4] == "*")


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if match is None:
            raise ValueError(f"{name} {part!r} is not a number, a range a-b, * or a step /n")
        if match.group(1) == "*":
            first, last = low, high
        else:
            first = int(match.group(2))
            last = int(match.group(3)) if match.group(3) else (high if match.group(4) else first)
        step = int(match.group(4) or 1)
        if not low <= first <= last <= high or step < 1:
            raise ValueError(f"{name} {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


Minutes = Annotated[int, Field(gt=0, le=MAX_DURATION_MINUTES)]


class Maintenance(Strict):
    """A planned window in which the targets' failures are expected: reported as "in maintenance"."""

    targets: tuple[str, ...] = Field(min_length=1, description="target names (services, databases, poolers, "
                                     "caches, ...); * and ? are wildcards")
    reason: str = Field(min_length=1, description="what is being done, e.g. the change ticket")
    start: datetime.datetime | None = Field(None, description="a one-off window: its start (UTC unless an offset "
                                            "is given), e.g. 2026-12-01T02:00:00Z")
    end: datetime.datetime | None = Field(None, description="a one-off window: its end (exclusive)")
    every: str | None = Field(None, description='a recurring window: when it starts, as cron in UTC, e.g. '
                              '"0 3 * * 0" (Sundays 03:00)')
    duration_minutes: Minutes | None = Field(None, description="a recurring window: how long it lasts")

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime.datetime | None) -> datetime.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # the environment file speaks UTC
        return value

    @field_validator("every")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_cron(value)
            except ValueError as error:
                raise problem(str(error), 'write five fields, e.g. "30 2 * * 1-5" (weekdays 02:30 UTC)') from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Maintenance:
        one_off = self.start is not None or self.end is not None
        recurring = self.every is not None or self.duration_minutes is not None
        if one_off == recurring:
            raise problem("a window needs either start and end, or every and duration_minutes",
                          'write start = 2026-12-01T02:00:00Z and end = ..., or every = "0 3 * * 0" and '
                          "duration_minutes = 60")
        if one_off and (self.start is None or self.end is None):
            raise problem("a one-off window needs both start and end", "add the missing one")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise problem(f"end {self.end.isoformat()} is not after start {self.start.isoformat()}",
                          "swap them, or fix the date", at="end")
        if recurring and (self.every is None or self.duration_minutes is None):
            raise problem("a recurring window needs both every and duration_minutes", "add the missing one")
        return self

    @property
    def name(self) -> str:
        return ", ".join(self.targets)

    def covers(self, target: str) -> bool:
        return any(glob_pattern(p).fullmatch(target) is not None for p in self.targets)

    def until(self, now: datetime.datetime) -> datetime.datetime | None:
        """The end of the window ``now`` lies in, or None when ``now`` is outside every occurrence."""
        if self.start is not None and self.end is not None:
            return self.end if self.start <= now < self.end else None
        assert self.every is not None
        assert self.duration_minutes is not None
        length = datetime.timedelta(minutes=self.duration_minutes)
        began = parse_cron(self.every).last_start(now, length)
        return None if began is None else began + length

    def describe(self) -> str:
        if self.every is not None:
            return f"every {self.every!r} (UTC) for {self.duration_minutes} min: {self.reason}"
        assert self.start is not None
        assert self.end is not None
        return f"{_utc(self.start)} to {_utc(self.end)}: {self.reason}"


def _utc(at: datetime.datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def in_maintenance(windows: tuple[Maintenance, ...], targets: list[str], now: datetime.datetime) -> str:
    """What a case of ``targets`` says when one is in a window now ("in maintenance until ...: reason"), or ""."""
    for window in windows:
        if any(window.covers(target) for target in targets):
            end = window.until(now)
            if end is not None:
                return f"in maintenance until {_utc(end)} ({window.reason})"
    return ""


def active(windows: tuple[Maintenance, ...], now: datetime.datetime) -> list[tuple[Maintenance, datetime.datetime]]:
    """The windows ``now`` lies in, with their ends (for the terminal summary)."""
    found = []
    for window in windows:
        end = window.until(now)
        if end is not None:
            found.append((window, end))
    return found
