"""The environment file as a whole: settings sections, the file model, and the validated Environment.

The target models (services, databases, poolers, caches, Prometheus) are in :mod:`.model`;
both modules together are the one schema (``acgs-checks schema`` prints it as JSON Schema).
"""

from __future__ import annotations

import datetime
import functools
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from acgs_checks import redaction
from acgs_checks.environment.base import Strict, problem
from acgs_checks.environment.maintenance import Maintenance
from acgs_checks.environment.model import (
    DEFAULT_TIMEOUT,
    DURATION,
    NAME_RE,
    VARIABLE,
    Cache,
    Database,
    Flag,
    Headers,
    Pooler,
    Prometheus,
    Seconds,
    Service,
    Target,
    TlsKeys,
    checked_url,
    context_of,
    glob_pattern,
    number_or_variable,
)
from acgs_checks.environment.weekly import Alertmanager, DrDocs, History, Security
from acgs_checks.policy.runbook import AREAS
from acgs_checks.policy.thresholds import SPECS, Thresholds

SloSource = Literal["prometheus", "synthetic", "scrape"]


class SloSettings(Strict):
    """Where latency and error numbers come from, and the bounds on measuring them."""

    source: SloSource = Field("synthetic", description="default: prometheus when [prometheus] is set")
    window: str = Field("5m", description="PromQL range for the prometheus source")
    samples: Annotated[int, Field(gt=0, le=10_000), number_or_variable("integer")] = Field(
        50, description="synthetic: requests per service")
    concurrency: Annotated[int, Field(gt=0, le=256), number_or_variable("integer")] = Field(
        10, description="synthetic: requests in flight per service")
    max_seconds: Annotated[float, Field(gt=0, le=300), number_or_variable("number")] = Field(
        10.0, description="synthetic: no new request after this long")
    request_timeout_seconds: Annotated[float, Field(gt=0, le=120), number_or_variable("number")] = Field(
        15.0, description="synthetic: each request (above the 10 s P99 critical)")
    scrape_window_seconds: Annotated[float, Field(gt=0, le=600), number_or_variable("number")] = Field(
        10.0, description="scrape: seconds between the two /metrics scrapes")
    keepalive: Flag = Field(True, description="synthetic: reuse connections (false: a new one per request)")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not DURATION.match(value):
            raise problem(f"{value!r} is not a PromQL duration", 'write e.g. "5m", "30s" or "1h"')
        return value



class BusinessMetric(TlsKeys):
    """A business metric from a PromQL query, or from a JSON endpoint and a dotted field path."""

    name: str = Field("", description="set from the table's key")
    query: str = Field("", description="PromQL giving the value (needs [prometheus])")
    url: str = Field("", description="a JSON endpoint holding the value (with field)")
    field: str = Field("", description='dotted path of the value in the JSON document, e.g. "data.score"')
    unit: Literal["ratio", "percent"] = Field("ratio", description="ratio (0..1) or percent (0..100)")
    timeout_seconds: Seconds = DEFAULT_TIMEOUT
    headers: Headers = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        return checked_url(value, ("http", "https"), info) if value else value

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> BusinessMetric:
        if bool(self.query) == bool(self.url):
            raise problem("needs exactly one of query or url", 'write query = "PromQL" or url = "..." with field')
        if self.query and not context_of(info).get("has_prometheus", True):
            raise problem("a PromQL query needs a [prometheus] section", "add [prometheus] url", at="query")
        if self.url and not self.field:
            raise problem("missing: which JSON field holds the value", 'write field = "data.score"', at="field")
        return self



class Business(Strict):
    """The runbook's business metrics (default: PromQL on the conventional metric names)."""

    compliance: BusinessMetric | None = None
    policy_success: BusinessMetric | None = None

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: ({**v, "name": k} if isinstance(v, dict) else v) for k, v in data.items()}
        return data

    def metrics(self) -> tuple[BusinessMetric, ...]:
        found = []
        for key in ("compliance", "policy_success"):
            metric = getattr(self, key)
            if metric is not None:
                found.append(metric)
        return tuple(found)


class Waiver(Strict):
    """A known failure accepted for a while: reported as waived, not counted for --fail-on, until it expires."""

    check: str = Field(description="the case, e.g. test_cache_hit_rate[main]; * and ? are wildcards, [ ] literal")
    reason: str = Field(min_length=1, description="why the failure is accepted")
    owner: str = Field(min_length=1, description="who answers for it")
    expires: datetime.date = Field(description="the last day it applies (UTC), e.g. 2026-12-31")

    @property
    def name(self) -> str:
        """The id of its own case (test_waiver_not_expired[...])."""
        return self.check

    def matches(self, case: str) -> bool:
        return glob_pattern(self.check).fullmatch(case) is not None

    def active(self, today: datetime.date) -> bool:
        return today <= self.expires


RETRY_BUDGET_SECONDS = 60.0  # the longest a case may spend waiting between its attempts


class Retry(Strict):
    """An opt-in retry policy: a failure is tried again, and a pass on a later attempt is reported as flaky."""

    check: str | None = Field(None, description="the cases it applies to, e.g. test_p95_latency[*]; * and ? "
                              "are wildcards")
    area: str | None = Field(None, description="or every case of a runbook area: health, database, cache, slo, "
                             "business, ...")
    attempts: Annotated[int, Field(ge=2, le=5)] = Field(description="attempts in all, the first one included")
    backoff_seconds: Annotated[float, Field(ge=0, le=30)] = Field(
        2.0, description="the wait before the second attempt; each later wait doubles")

    @field_validator("area")
    @classmethod
    def _known_area(cls, value: str | None) -> str | None:
        if value is not None and value not in AREAS:
            raise problem(f"{value!r} is not an area", "use one of " + ", ".join(AREAS))
        return value

    @model_validator(mode="after")
    def _one_selector(self) -> Retry:
        if (self.check is None) == (self.area is None):
            raise problem("a retry policy needs either check or area", 'write check = "test_p95_latency[*]" '
                          'or area = "slo"')
        if self.total_wait() > RETRY_BUDGET_SECONDS:
            raise problem(f"waits {self.total_wait():g} s in all between attempts, over the "
                          f"{RETRY_BUDGET_SECONDS:g} s budget", "use fewer attempts or a shorter backoff_seconds",
                          at="backoff_seconds")
        return self

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2, 3, ...): backoff, then doubling."""
        return float(self.backoff_seconds * 2.0 ** (attempt - 2))

    def total_wait(self) -> float:
        return sum(self.wait_before(a) for a in range(2, self.attempts + 1))

    def applies(self, case: str, area: str) -> bool:
        if self.check is not None:
            return glob_pattern(self.check).fullmatch(case) is not None
        return area == self.area


class Defaults(Strict):
    timeout_seconds: Seconds = Field(DEFAULT_TIMEOUT, description="every target's bound unless it sets its own")
    concurrency: Annotated[int, Field(gt=0, le=1024), number_or_variable("integer")] = Field(
        64, description="probes in flight at once")
    cache_window_seconds: Seconds = Field(3.0, description="cache hit rate: seconds between the two INFO samples")
    sql_literals: Literal["masked", "raw"] = Field(
        "masked", description="other sessions' SQL in messages and evidence: literals masked ('…'), or raw")


_THRESHOLDS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "overrides of the runbook's thresholds",
    "properties": {spec.key: {"anyOf": [{"type": "number"}, VARIABLE], "description": f"{spec.meaning} ({spec.unit})"}
                   for spec in SPECS},
}


class EnvironmentFile(Strict):
    """An ACGS-2 environment for acgs-checks: the targets of a run, and threshold overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="acgs-checks environment")

    name: str = Field(description="the environment's name, as reports and metrics label it")
    description: str = ""
    defaults: Defaults = Field(default_factory=Defaults)
    services: tuple[Service, ...] = ()
    databases: tuple[Database, ...] = ()
    poolers: tuple[Pooler, ...] = ()
    caches: tuple[Cache, ...] = ()
    prometheus: Prometheus | None = None
    slo: SloSettings = Field(default_factory=SloSettings)
    business: Business = Field(default_factory=Business)
    waivers: tuple[Waiver, ...] = ()
    maintenance: tuple[Maintenance, ...] = ()
    retries: tuple[Retry, ...] = ()
    security: Security = Field(default_factory=Security)
    alertmanager: Alertmanager | None = None
    history: History = Field(default_factory=History)
    dr: DrDocs = Field(default_factory=DrDocs)
    absent: dict[str, str] = Field(default_factory=dict, description="sections this environment has none of, each "
                                   "with its reason (caches = \"no Redis here\"): doctor and the run's runbook "
                                   "coverage name their lines as declared absent, not as gaps")
    threshold_overrides: Annotated[dict[str, Any], WithJsonSchema(_THRESHOLDS_SCHEMA)] = Field(
        default_factory=dict, alias="thresholds")

    @model_validator(mode="before")
    @classmethod
    def _slo_source(cls, data: Any, info: ValidationInfo) -> Any:
        """The SLO source defaults to Prometheus when there is one; PromQL needs one."""
        if not isinstance(data, dict):
            return data
        has_prometheus = data.get("prometheus") is not None
        context_of(info)["has_prometheus"] = has_prometheus
        slo = data.get("slo", {})
        if isinstance(slo, dict) and "source" not in slo:
            data = {**data, "slo": {**slo, "source": "prometheus" if has_prometheus else "synthetic"}}
        return data

    @field_validator("absent")
    @classmethod
    def _reasons(cls, value: dict[str, str]) -> dict[str, str]:
        for key, reason in value.items():
            if not reason.strip():
                raise problem(f"{key!r} has no reason", f'write {key} = "why this environment has none"',
                              at=f"absent.{key}")
        return value

    @model_validator(mode="after")
    def _slo_needs_prometheus(self) -> EnvironmentFile:
        if self.slo.source == "prometheus" and self.prometheus is None:
            raise problem("is prometheus, but there is no [prometheus] section",
                          'add [prometheus] url = "..." or choose source = "synthetic"', at="slo.source")
        return self

    @model_validator(mode="after")
    def _sources_name_targets(self) -> EnvironmentFile:
        for source in self.security.failed_logins:
            for key, names in (("cache", [c.name for c in self.caches]),
                               ("database", [d.name for d in self.databases])):
                chosen = getattr(source, key)
                if chosen and chosen not in names:
                    raise problem(f"{chosen!r} is not a [[{key}s]] name", "use one of " + (", ".join(names) or
                                  f"(none: add a [[{key}s]] entry)"),
                                  at=f"security.failed_logins[{source.name}].{key}")
            if source.query and self.prometheus is None:
                raise problem("needs [prometheus]", 'add [prometheus] url = "..."',
                              at=f"security.failed_logins[{source.name}].query")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise problem(f"{value!r} is not a valid environment name",
                          "use lower-case letters, digits, '-', '_' or '.'")
        return value

    @field_validator("services", "databases", "poolers", "caches")
    @classmethod
    def _unique(cls, targets: tuple[Target, ...], info: ValidationInfo) -> tuple[Target, ...]:
        return _unique_names(targets, info)


class Environment(EnvironmentFile):
    """A validated environment: the file's model, where it came from, its secrets and resolved thresholds."""

    _source: str = PrivateAttr(default="")
    _secrets: frozenset[str] = PrivateAttr(default=frozenset())
    _thresholds: Thresholds = PrivateAttr(default_factory=Thresholds)
    _redactor: redaction.Redactor = PrivateAttr(default_factory=redaction.Redactor)

    def resolved(self, *, source: str, secrets: frozenset[str], thresholds: Thresholds) -> Environment:
        self._source, self._secrets, self._thresholds = source, secrets, thresholds
        self._redactor = redaction.Redactor(secrets)
        return self

    @property
    def source(self) -> str:
        return self._source

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    @property
    def thresholds(self) -> Thresholds:
        return self._thresholds

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def retry_for(self, case: str, area: str) -> Retry | None:
        """The first [[retries]] entry that applies to the case, or None (no retry: the default)."""
        return next((r for r in self.retries if r.applies(case, area)), None)

    def section(self, name: str) -> tuple[Any, ...]:
        """The entries of a section a probe kind added (``hosts``), or of a built-in one."""
        found: tuple[Any, ...] = getattr(self, name, ())
        return found

    def redact(self, text: str) -> str:
        """Replace every known secret in ``text``, and anything shaped like credentials, with ``***``."""
        return self._redactor(text)

    def redact_tree(self, value: Any) -> Any:
        """A JSON-shaped value with every string in it redacted: redaction before serialisation."""
        return self._redactor.tree(value)

    @model_validator(mode="after")
    def _host_references(self) -> Environment:
        """Sections that read on a host name a [[hosts]] entry that exists."""
        hosts = [h.name for h in self.section("hosts")]
        uses = [(f"security.failed_logins[{s.name}].host", s.host) for s in self.security.failed_logins]
        uses += [(f"security.access_logs[{i}].host", a.host) for i, a in enumerate(self.security.access_logs)]
        uses += [(f"backups[{b.name}].host", b.host) for b in self.section("backups")]
        uses += [(f"databases[{d.name}].log_host", d.log_host) for d in self.databases]
        uses += [(f"backups[{b.name}].database", "") for b in self.section("backups")
                 if b.database not in [d.name for d in self.databases]]
        for at, host in uses:
            if at.endswith(".database"):
                raise problem("is not a [[databases]] name", "use one of " + (
                    ", ".join(d.name for d in self.databases) or "(none: add a [[databases]] entry)"), at=at)
            if host and host not in hosts:
                raise problem(f"{host!r} is not a [[hosts]] name",
                              "use one of " + (", ".join(hosts) or "(none: add a [[hosts]] entry)"), at=at)
        return self




def _unique_names(targets: tuple[Target, ...], info: ValidationInfo) -> tuple[Target, ...]:
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise problem(f"{target.name!r} is defined twice", "give each entry its own name",
                          at=f"{info.field_name}[{target.name}].name")
        seen.add(target.name)
    return targets


@functools.cache
def model_with(sections: tuple[tuple[str, type[Target]], ...]) -> type[Environment]:
    """The environment model with the sections registered probe kinds add (``[[hosts]]``, ...).

    A kind that brings a new section declares the model of one entry; the file then takes a
    list of such tables under the section's name, validated and published in the schema like
    the built-in ones.
    """
    if not sections:
        return Environment
    fields: dict[str, Any] = {name: (tuple[entry, ...], Field((), description=entry.__doc__ or ""))  # type: ignore[valid-type]
                              for name, entry in sections}
    names = [name for name, _ in sections]
    validators = {"_unique_added": field_validator(*names)(_unique_names)}
    return create_model("Environment", __base__=Environment, __validators__=validators, **fields)
