"""The record contract: every probe result is a frozen dataclass that makes the JSON round trip (results cross
process boundaries under xdist)."""

from __future__ import annotations

from dataclasses import MISSING, asdict
from typing import Any, Self


class JsonRecord:
    """Mixin for frozen dataclasses of JSON-safe fields."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)  # type: ignore[call-overload]  # mixed into dataclasses only
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)

    @classmethod
    def empty(cls, target: str) -> Self:
        """A stand-in record for a target whose probe raised: required fields blank, ``target`` set.

        Nothing reads it: the case fails with the probe error before its body runs.
        """
        blank = {"str": "", "bool": False, "float": 0.0, "int": 0}
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]  # mixed into dataclasses only
        required = {name: blank.get(str(f.type).split(" ")[0]) for name, f in fields.items()
                    if f.default is MISSING and f.default_factory is MISSING}
        return cls(**{**required, "target": target})
