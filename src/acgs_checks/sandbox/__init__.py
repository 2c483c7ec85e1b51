"""The embedded sandbox: a real stack shaped like ACGS-2, with injectable faults."""

from __future__ import annotations

from acgs_checks.sandbox.faults import Fault, parse, parse_all
from acgs_checks.sandbox.stack import Sandbox

__all__ = ["Fault", "Sandbox", "parse", "parse_all"]
