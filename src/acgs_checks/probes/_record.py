"""The JSON round trip every probe result makes (probe results cross process boundaries under xdist)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Self


class JsonRecord:
    """Mixin for frozen dataclasses of JSON-safe fields."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)  # type: ignore[call-overload]  # mixed into dataclasses only
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)
