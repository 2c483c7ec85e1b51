"""Log windows: how old a log line is, read from its leading timestamp (the weekly reviews' 24 h windows)."""

from __future__ import annotations

import datetime
import re

_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:\.\d+)?\s*([A-Z]{2,5}|[+-]\d{2}:?\d{2})?")


def seconds_since(line: str, now: float) -> float | None:
    """Seconds since a log line's leading timestamp (UTC unless it names an offset), or None."""
    found = _TIMESTAMP.search(line[:64])
    if not found:
        return None
    try:
        stamp = datetime.datetime.fromisoformat(found.group(1).replace(" ", "T"))
    except ValueError:
        return None
    zone = found.group(2) or "UTC"
    if zone[0] in "+-":
        stamp = stamp.replace(tzinfo=datetime.datetime.strptime(zone.replace(":", ""), "%z").tzinfo)
    else:
        stamp = stamp.replace(tzinfo=datetime.UTC)  # named zones other than UTC/GMT are read as UTC
    return now - stamp.timestamp()
