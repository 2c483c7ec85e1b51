"""The schema's two primitives: the strict frozen model every section is, and the one-line error it raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError


def problem(text: str, fix: str, *, at: str = "") -> PydanticCustomError:
    """An error the loader prints as ``file: key: text; fix: fix`` (``at`` replaces the key when set)."""
    return PydanticCustomError("acgs", "{problem}", {"problem": text, "fix": fix, "at": at})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
