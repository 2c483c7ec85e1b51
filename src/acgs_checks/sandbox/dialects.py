"""The metric dialects the sandbox's services speak (docs/metric-dialects.md), and the environment-file tables that
name them."""

from __future__ import annotations

# The metric dialects the sandbox speaks (docs/metric-dialects.md): each service by default speaks its ACGS-2
# counterpart's; ``acgs-sandbox --dialect SERVICE=NAME`` changes one.
DIALECTS = ("prefix", "acgs-http", "otel", "generic")
DEFAULT_DIALECTS = {"auth": "prefix", "constitutional-ai": "acgs-http", "policy-governance": "prefix",
                    "governance-synthesis": "prefix"}
PREFIXES = {"auth": "auth_service_", "constitutional-ai": "ac_service_", "policy-governance": "pgc_service_",
            "governance-synthesis": "gs_service_"}


def dialect_table(service: str, dialect: str) -> dict[str, str]:
    """The ``metrics`` table of a sandbox service's environment entry: the names its /metrics speaks."""
    if dialect == "prefix":
        prefix = PREFIXES[service]
        return {"histogram": f"{prefix}request_duration_seconds", "counter": f"{prefix}requests_total",
                "status_label": "status", "in_flight": ""}
    if dialect == "acgs-http":
        return {"histogram": "acgs_http_request_duration_seconds", "counter": "acgs_http_requests_total",
                "status_label": "status_code", "in_flight": ""}
    if dialect == "otel":
        return {"histogram": "http_server_request_duration_seconds", "counter": "histogram_count",
                "status_label": "http_response_status_code", "in_flight": ""}
    return {}  # generic: the suite's defaults


# What [prometheus.metrics] says of the sandbox's business metrics (ACGS-2's own rule names; init finds the same).
BUSINESS_NAMES = {"compliance_score": "constitutional_compliance_score",
                  "policy_successful": "policy_evaluations_successful_total",
                  "policy_failed": "policy_evaluations_failed_total"}
