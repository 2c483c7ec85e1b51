"""The documentation site's generated pages, made from the code, and the sandbox faults that prove each check fails,
read from the self-tests that run them (so the catalog can only name a fault a self-test runs).

    python tests/pages.py --write    # regenerate docs/checks.md and docs/reference/configuration.md
    python tests/pages.py            # exit 1 when a committed page differs from what the code says
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from acgs_checks import kinds  # noqa: E402 - after the path the self-test modules need
from acgs_checks.cli import schema  # noqa: E402
from acgs_checks.policy import runbook  # noqa: E402
from acgs_checks.reporting import catalog, pages  # noqa: E402

# The self-test modules whose parametrized fault tests say which checks each sandbox fault fails.
FAULT_TESTS = ("test_sandbox_suite", "test_backends_sandbox", "test_slo_sandbox", "test_hosts_real",
               "test_fault_sweeps", "test_weekly_reviews")


def _names(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, set | frozenset | list) else []
    return [str(item).split("[", 1)[0] for item in items if str(item).startswith("test_")]


def _failing(params: dict[str, Any]) -> list[str]:
    if "failing" in params:
        return _names(params["failing"])
    if "case" in params and params.get("passes") is False:
        return _names(params["case"])
    if "connectivity" in params:
        return _names(params["connectivity"])
    return []


def _rows(function: Any) -> Iterable[dict[str, Any]]:
    for mark in getattr(function, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names = mark.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        for value in mark.args[1]:
            values = getattr(value, "values", value)
            values = values if isinstance(values, tuple) else (values,)
            yield dict(zip(names, values, strict=False))


def proofs() -> dict[str, list[str]]:
    """Check function -> the sandbox faults a self-test runs and asserts it fails under."""
    found: dict[str, list[str]] = {}

    def add(fault: str, checks: Iterable[str]) -> None:
        for check in checks:
            if fault not in found.setdefault(check, []):
                found[check].append(fault)

    for name in FAULT_TESTS:
        module = importlib.import_module(name)
        table = getattr(module, "FAULTS", None)
        if isinstance(table, dict):  # fault -> (failing cases, blocked cases, word)
            for fault, (failing, *_rest) in table.items():
                add(fault, _names(failing))
        for _, function in inspect.getmembers(module, inspect.isfunction):
            if function.__name__.startswith("test_"):
                for params in _rows(function):
                    if isinstance(params.get("fault"), str):
                        add(params["fault"], _failing(params))
    return found


def generate() -> dict[str, str]:
    requirements = runbook.load(runbook.map_path(ROOT))
    registry = kinds.discover().values()
    entries = catalog.entries(ROOT / "checks", requirements)
    return {
        "checks.md": pages.check_catalog(entries, requirements=requirements,
                                         reads={k.name: k.doc for k in registry},
                                         grants={k.name: k.grant for k in registry}, proofs=proofs()),
        "reference/configuration.md": pages.configuration_reference(schema()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the pages (default: check them)")
    args = parser.parse_args()
    stale = []
    for name, text in generate().items():
        path = ROOT / "docs" / name
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        elif not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(str(path.relative_to(ROOT)))
    if stale:
        sys.stderr.write(f"stale: {', '.join(stale)}; fix: python tests/pages.py --write\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
