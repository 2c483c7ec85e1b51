"""The environment file's weekly-review sections: ``[security]``, ``[alertmanager]``, ``[history]`` and ``[dr]``.

Backups (``[[backups]]``) and TLS endpoints (``[[tls_endpoints]]``) are target lists that their probe
kinds declare; these tables are settings the Monday, Wednesday and Friday checks read.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from acgs_checks.environment.base import Strict, problem
from acgs_checks.environment.model import (
    NAME_PATTERN,
    Headers,
    Seconds,
    Target,
    checked_url,
    context_of,
    number_or_variable,
)

Count = Annotated[float, Field(ge=0), number_or_variable("number")]


class FailedLoginSource(Target):
    """One place failed logins of the last 24 h are counted; exactly one of query, cache or database."""

    query: str = Field("", description="PromQL giving failed logins over the last 24 h (needs [prometheus]); "
                       "each series is one user or client, e.g. sum by (user) (increase(auth_failures_total[24h]))")
    cache: str = Field("", description="a [[caches]] name: its ACL LOG entries with reason auth (needs +acl|log)")
    database: str = Field("", description="a [[databases]] name whose server log holds "
                          "'password authentication failed' lines")
    host: str = Field("", description="with database: the [[hosts]] entry the log is read on")
    path: str = Field("", description="with database: the server log's path (on the host, or for pg_read_file "
                      "relative to the data directory)")
    max: Count = Field(20, description="more failed logins than this in 24 h fail the case (P1)")

    @model_validator(mode="after")
    def _one_source(self) -> FailedLoginSource:
        chosen = [k for k in ("query", "cache", "database") if getattr(self, k)]
        if len(chosen) != 1:
            raise problem(f"sets {', '.join(chosen) or 'none'} of query, cache and database",
                          "set exactly one: query = \"PromQL\", cache = \"main\" or database = \"primary\" "
                          "(with path, and host to read it on a host)", at="query")
        if self.database and not self.path:
            raise problem("is missing", 'write path = "/var/log/postgresql/postgresql-15-main.log" (with host) '
                          'or the data-directory-relative path for pg_read_file', at="path")
        if self.host and not self.database:
            raise problem("is set without database", "host only applies to a database's log", at="host")
        return self


class AccessLog(Strict):
    """Access logs in the combined format on a host (``path`` may hold wildcards: rotated files too)."""

    host: str = Field(description="a [[hosts]] name")
    path: str = Field("/var/log/nginx/access.log*", description="the log files to read (shell wildcards allowed)")


MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')


class Security(Strict):
    """Monday security review: where failed logins and access statistics come from."""

    failed_logins: tuple[FailedLoginSource, ...] = Field((), description="sources of failed logins (one case each)")
    alert_matchers: tuple[str, ...] = Field((), description="which firing alerts are this environment's, as "
                                            "Alertmanager matchers (label=\"v\", !=, =~, !~); default: "
                                            "env=\"<the environment's name>\". An alert without the label is judged")
    access_query: str = Field("", description="PromQL giving requests per status class over the 24 h before its "
                              "evaluation time (it is evaluated at now and at each of the 7 days before), labelled "
                              "'class' (2xx, 4xx, 5xx), e.g. sum by (class) (label_replace(increase("
                              "<request counter>[24h]), \"class\", \"${1}xx\", \"<status label>\", \"(.)..\"))")
    access_clients_query: str = Field("", description="optional PromQL: requests per client over the same 24 h, "
                                      "labelled 'client' (for new top clients)")
    access_logs: tuple[AccessLog, ...] = Field((), description="or read access logs on hosts")
    anomaly_k: Annotated[float, Field(gt=0, le=20), number_or_variable("number")] = Field(
        3.0, description="flag a value outside median ± k·MAD of the previous 7 days")
    anomaly_min_requests: Count = Field(100, description="days with fewer requests are too few to judge shares")
    top_clients: Annotated[int, Field(ge=1, le=100), number_or_variable("integer")] = Field(
        5, description="how many of the last day's top clients must be known from the previous 7 days")

    @field_validator("alert_matchers")
    @classmethod
    def _matchers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            if not MATCHER.fullmatch(text):
                raise problem(f"{text!r} is not a matcher", 'write label="value" (or !=, =~, !~)',
                              at="security.alert_matchers")
        return value

    @field_validator("failed_logins")
    @classmethod
    def _unique(cls, value: tuple[FailedLoginSource, ...]) -> tuple[FailedLoginSource, ...]:
        names = [s.name for s in value]
        for name in names:
            if names.count(name) > 1:
                raise problem(f"{name!r} is defined twice", "give each source its own name",
                              at=f"security.failed_logins[{name}].name")
        return value


class Alertmanager(Strict):
    """Where the Monday review lists firing alerts (``/api/v2/alerts``); without it, Prometheus' ALERTS."""

    url: str = Field(description="http(s)://alertmanager:9093")
    headers: Headers = Field(default_factory=dict)
    timeout_seconds: Seconds = 2.0
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        return checked_url(value, ("http", "https"), info)


class History(Strict):
    """Where every run's measured values are kept (SQLite), for the Wednesday trends and capacity projections."""

    path: str = Field("", description="the SQLite file (default: history.sqlite beside summary.json, i.e. "
                      "reports/); keep it in a CI cache between runs")
    weeks: Annotated[int, Field(ge=1, le=52), number_or_variable("integer")] = Field(
        4, description="this week's median is compared with each of this many weeks before it")


class DrDocs(Strict):
    """Friday: the disaster-recovery documents that must exist and be kept current."""

    documents: tuple[str, ...] = Field((), description="files (relative to the environment file; their git history "
                                       "counts when they are in a repository) or http(s) URLs (Last-Modified)")
    timeout_seconds: Seconds = 2.0

    @field_validator("documents")
    @classmethod
    def _relative_to_the_file(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        from pathlib import Path  # noqa: PLC0415


        base = context_of(info).get("base_dir")

        def resolved(doc: str) -> str:
            if doc.startswith(("http://", "https://")) or base is None or Path(doc).expanduser().is_absolute():
                return doc
            return str(Path(base) / doc)

        return tuple(resolved(doc) for doc in value)


__all__ = ["NAME_PATTERN", "AccessLog", "Alertmanager", "DrDocs", "FailedLoginSource", "History", "Security"]
