"""acgs-checks: the ACGS-2 operations runbook as an executable pytest suite."""

from __future__ import annotations

__version__ = "0.1.0"
