"""The record contract: every probe result is a frozen dataclass that makes the JSON round trip (results cross
process boundaries under xdist), and says in the same three fields whether its target answered (:class:`Answer`)."""

from __future__ import annotations

from dataclasses import MISSING, asdict
from typing import Any, Protocol, Self, runtime_checkable


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


@runtime_checkable
class Answer(Protocol):
    """What every kind's record says, in these names, whatever the kind.

    ``answered`` is false when the target gave nothing to judge (no connection, no reply, no read); ``error``
    says why, and ``denied`` names the credential or grant to check when the target refused the suite. From
    these the registry derives each kind's blocked gate (:func:`acgs_checks.kinds.unanswered`), and the checks
    their reachable case (:func:`acgs_checks.verdict.require_answer`).
    """

    @property
    def target(self) -> str: ...

    @property
    def answered(self) -> bool: ...

    @property
    def error(self) -> str: ...

    @property
    def denied(self) -> str: ...
