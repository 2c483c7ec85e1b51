"""The environment under check: its model (the schema), its loader and its TLS settings.

* :mod:`.model` (targets) and :mod:`.document` (the file) declare the schema once, with pydantic;
  the same models publish the JSON Schema.
* :mod:`.loader` reads the TOML, expands ``${VAR}`` and reports every error in the file at once.
* Secrets are handled by :mod:`acgs_checks.redaction`.
"""

from __future__ import annotations

from acgs_checks.environment.document import (
    Business,
    BusinessMetric,
    Defaults,
    Environment,
    EnvironmentFile,
    Retry,
    SloSettings,
    Waiver,
)
from acgs_checks.environment.loader import ENVIRONMENTS_DIR, SANDBOX, from_mapping, known_names, load, resolve_path
from acgs_checks.environment.maintenance import Maintenance
from acgs_checks.environment.model import PERCENT_ENCODING, Cache, Database, Pooler, Prometheus, Service, Target
from acgs_checks.environment.tls import NO_TLS, Tls
from acgs_checks.redaction import display as display_url

__all__ = [
    "ENVIRONMENTS_DIR", "NO_TLS", "PERCENT_ENCODING", "SANDBOX", "Business", "BusinessMetric", "Cache",
    "Database", "Defaults", "Environment", "EnvironmentFile", "Maintenance", "Pooler", "Prometheus", "Retry", "Service",
    "SloSettings", "Target", "Tls", "Waiver", "display_url", "from_mapping", "known_names", "load", "resolve_path",
]
