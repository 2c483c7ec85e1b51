"""A small YAML writer for the generated files: block style, every string double-quoted (JSON escapes are valid
YAML), so the output needs no YAML library at run time and reads like a hand-written rule file."""

from __future__ import annotations

import json
from typing import Any


def dump(value: Any, indent: int = 0) -> str:
    return "".join(_lines(value, indent))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _empty_or_scalar(item: Any) -> str:
    if isinstance(item, list):
        return "[]"
    if isinstance(item, dict):
        return "{}"
    return _scalar(item)


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:\n")
                out += _lines(item, indent + 2)
            else:
                out.append(f"{pad}{key}: {_empty_or_scalar(item)}\n")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                first, *rest = _lines(item, indent + 2)
                out.append(f"{pad}- {first.lstrip()}")
                out += rest
            else:
                out.append(f"{pad}- {_scalar(item)}\n")
    else:
        out.append(f"{pad}{_scalar(value)}\n")
    return out
