"""The environment file's schema, part 1: its primitives and the target models (the file itself: ``document``).

Why pydantic v2: one declaration gives validation with every error at once (not only the
first), typed attribute access for probes and checks, and ``model_json_schema()`` for
editors; ``extra="forbid"`` turns a misspelt key into an error instead of a silent default.

Every string value may hold ``${VAR}`` or ``${VAR:-default}`` (expanded before validation,
see :mod:`acgs_checks.environment.loader`), so numbers and booleans also accept such a string.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import (
    Field,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from acgs_checks import redaction
from acgs_checks.environment.base import Strict, problem
from acgs_checks.environment.metric_names import PrometheusMetrics, ServiceMetrics
from acgs_checks.environment.tls import Tls

MAX_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 2.0
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
NAME_RE = re.compile(NAME_PATTERN)
DURATION = re.compile(r"^\d+(ms|s|m|h|d)$")
# The one hint for a password that breaks a URL, in every URL and DSN error.
PERCENT_ENCODING = ("percent-encode a URL password's reserved characters "
                    "(/ as %2F, ? as %3F, # as %23, @ as %40, : as %3A, % as %25)")
VARIABLE = {"type": "string", "pattern": r"\$\{", "description": "a ${VAR} or ${VAR:-default} reference"}


def number_or_variable(kind: str) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [{"type": kind}, VARIABLE]})


Seconds = Annotated[float, Field(gt=0, le=MAX_TIMEOUT), number_or_variable("number")]
Flag = Annotated[bool, number_or_variable("boolean")]


@functools.cache
def glob_pattern(glob: str) -> re.Pattern[str]:
    """A case or target pattern: ``*`` and ``?`` are wildcards, anything else (``[ ]`` too) is literal."""
    return re.compile(re.escape(glob).replace(r"\*", ".*").replace(r"\?", "."))


def context_of(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def _secrets(info: ValidationInfo) -> set[str]:
    found: set[str] = context_of(info).setdefault("secrets", set())
    return found


def checked_url(text: str, schemes: tuple[str, ...], info: ValidationInfo) -> str:
    """An http(s)/redis(s) URL whose password reads the same to every parser; secrets noted first."""
    text = text.strip()
    _secrets(info).update(redaction.secrets_in(text))
    shown = redaction.display(text)
    try:
        parts = urlsplit(text)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        parts = None
    userinfo = redaction.split_userinfo(text)
    if parts is None or (parts.scheme in schemes and not parts.hostname) or (
            userinfo is not None and userinfo[2] != parts.password):
        raise problem(f"{shown!r} is not a valid URL: the part between '://' and the host does not parse",
                      f"write {schemes[0]}://user:password@host:port; {PERCENT_ENCODING}")
    if parts.scheme not in schemes:
        raise problem(f"{shown!r} is not an {' or '.join(schemes)} URL", f"write {schemes[0]}://host:port")
    return text


def existing_file(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    base = context_of(info).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if not path.is_file():
        raise problem(f"file {str(path)!r} does not exist", "point it at a readable PEM file")
    return str(path)


class TlsKeys(Strict):
    """The same four TLS keys on everything the suite connects to."""

    verify_tls: Flag = Field(True, description="check the certificate chain and host name")
    ca_file: str | None = Field(None, description="PEM bundle to trust instead of the system store "
                                "(relative to the environment file)")
    client_cert: str | None = Field(None, description="PEM certificate for targets that require mutual TLS")
    client_key: str | None = Field(None, description="its private key (default: inside client_cert)")

    @field_validator("ca_file", "client_cert", "client_key")
    @classmethod
    def _files(cls, value: str | None, info: ValidationInfo) -> str | None:
        return existing_file(value, info)

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsKeys:
        if self.client_key and not self.client_cert:
            raise problem("is set without client_cert", 'add client_cert = "client.pem"', at="client_key")
        return self

    @property
    def tls(self) -> Tls:
        return Tls(verify=self.verify_tls, ca_file=self.ca_file, client_cert=self.client_cert,
                   client_key=self.client_key)


class Target(TlsKeys):
    """What every target has: a name (its test id), a title, a time bound and the four TLS keys."""

    name: str = Field(description="lower-case id; becomes the test id, e.g. test_service_health[auth]",
                      pattern=NAME_PATTERN)
    title: str = Field("", description="a readable name for reports (default: the name)")
    timeout_seconds: Seconds = Field(DEFAULT_TIMEOUT, description="bound on the whole probe "
                                     "(default: [defaults] timeout_seconds)")

    @model_validator(mode="before")
    @classmethod
    def _unfold(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            tls = data.pop("tls", None)
            if isinstance(tls, Tls):  # built in code: Service(..., tls=Tls(...))
                data.update(verify_tls=tls.verify, ca_file=tls.ca_file, client_cert=tls.client_cert,
                            client_key=tls.client_key)
            if not data.get("title") and isinstance(data.get("name"), str):
                data["title"] = data["name"]
        return data

    @field_validator("name", mode="before")
    @classmethod
    def _valid_name(cls, value: Any) -> Any:
        if isinstance(value, str) and not NAME_RE.match(value):
            raise problem(f"{value!r} is not a valid name",
                          "use lower-case letters, digits, '-', '_' or '.' (it becomes the test id)")
        return value

    def __repr__(self) -> str:
        # Short and secret-free: reports and histories show targets by name.
        return f"{type(self).__name__}({self.name!r})"

    __str__ = __repr__


Headers = Annotated[dict[str, str], Field(description="extra request headers; every value is treated as a secret")]


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise problem(f"{value!r} does not start with '/'", f'write "/{value}"')
    return value


class SloQueries(Strict):
    """PromQL per SLO number; {selector} and {window} are filled in."""

    p50: str | None = None
    p95: str | None = None
    p99: str | None = None
    error_rate: str | None = None
    client_error_rate: str | None = None
    request_rate: str | None = None
    active_connections: str | None = None

    def items(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in self.model_dump().items() if v is not None)


class Service(Target):
    """One HTTP service of the stack, checked at ``url + health_path``."""

    url: str = Field(description="http(s)://host:port of the service")
    health_path: str = "/health"
    headers: Headers = Field(default_factory=dict)
    slo_path: str = Field("", description="what synthetic sampling requests (default: health_path)")
    metrics_path: str = "/metrics"
    prometheus_selector: str = Field("", description='PromQL label matcher (default: service="<name>")')
    queries: SloQueries = Field(default_factory=SloQueries)
    metrics: ServiceMetrics = Field(default_factory=ServiceMetrics, description="the service's metric dialect")
    follow_redirects: bool = Field(True, description="follow the health URL's redirects and judge the final "
                                   "answer (as blackbox_exporter does); false: a 3xx is judged as it is")
    max_redirects: int = Field(10, ge=0, le=50, description="more redirects than this fail the health case, "
                               "naming the chain")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        return checked_url(value, ("http", "https"), info)

    @field_validator("health_path", "metrics_path")
    @classmethod
    def _paths(cls, value: str) -> str:
        return _path(value)

    @field_validator("slo_path")
    @classmethod
    def _slo_path(cls, value: str) -> str:
        return _path(value) if value else value

    @property
    def slo_url(self) -> str:
        return self.url.rstrip("/") + (self.slo_path or self.health_path)

    @property
    def metrics_url(self) -> str:
        return self.url.rstrip("/") + self.metrics_path

    @property
    def selector(self) -> str:
        """The PromQL label matcher for this service's series (default ``service="<name>"``)."""
        return self.prometheus_selector or f'service="{self.name}"'

    @property
    def health_url(self) -> str:
        return self.url.rstrip("/") + self.health_path


class Database(Target):
    """A PostgreSQL database: any libpq connection string (URI, multi-host URI or keywords).

    ``dsn`` goes to libpq unchanged; ``connect_params`` are added beside it (TLS files from
    ``ca_file``/``client_cert``/``client_key``, relative ``ssl*`` paths resolved against the
    environment file), and never replace a parameter the DSN sets itself.
    ``hosts`` is how many hosts libpq may try: each gets its own connect timeout.
    """

    dsn: str = Field(description="postgresql://user:password@host:port/db, several hosts, or libpq keywords")
    tls_required: Flag = Field(True, description="Monday: the server must have ssl = on (false: TLS ends "
                               "elsewhere, e.g. a local socket only; the check is then not applicable)")
    log_host: str = Field("", description="Wednesday: a [[hosts]] entry where the server log is read when "
                          "pg_stat_statements is missing (log_min_duration_statement lines)")
    log_path: str = Field("", description="with log_host: the server log's path on that host")
    _params: tuple[tuple[str, str], ...] = PrivateAttr(default=())
    _hosts: int = PrivateAttr(default=1)

    @model_validator(mode="after")
    def _libpq(self, info: ValidationInfo) -> Database:
        text, params, hosts = libpq(self.dsn, self.tls, context_of(info).get("base_dir"), _secrets(info))
        object.__setattr__(self, "dsn", text)
        self._params, self._hosts = params, hosts
        return self

    @property
    def connect_params(self) -> tuple[tuple[str, str], ...]:
        return self._params

    @property
    def hosts(self) -> int:
        return self._hosts


class Pooler(Database):
    """A PgBouncer admin console (``postgresql://user@host:6432/pgbouncer``)."""


class Cache(Target):
    """A Redis, reached with a ``redis://`` or ``rediss://`` URL."""

    url: str = Field(description="redis(s)://user:password@host:port/db")
    prometheus_selector: str = Field("", description='PromQL label matcher of this Redis in redis_exporter\'s '
                                     'series, e.g. \'instance="cache1:9121"\'; only the generated alert rules '
                                     "use it (the checks read INFO)")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        return checked_url(value, ("redis", "rediss"), info)


def libpq(value: str, tls: Tls, base_dir: Any, secrets: set[str]) -> tuple[str, tuple[tuple[str, str], ...], int]:
    """A libpq connection string, any form: (the text, parameters to add, how many hosts)."""
    text = value.strip()
    secrets.update(redaction.secrets_in(text))
    shown = redaction.display(text)
    fix = ("write postgresql://user:password@host:port/db (several hosts: host1:5432,host2:5432) or "
           f"keywords host=... port=... user=... dbname=...; {PERCENT_ENCODING}, or quote a keyword value "
           "(password='...', with \\' for a quote)")
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme and scheme not in ("postgresql", "postgres"):
        raise problem(f"{shown!r} is not a postgresql:// URL or libpq keyword string", fix, at="dsn")
    from psycopg import Error as PsycopgError  # noqa: PLC0415 - only environments with databases need it
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(text).items() if v is not None}
    except PsycopgError as exc:
        # libpq quotes the fragment it choked on, which may be part of a password (quotes included):
        # mask from the first quote to the last, never echo it.
        reason = re.sub(r'".*"', '"…"', str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        raise problem(f"{shown!r} is not a valid connection string ({reason})", fix, at="dsn") from None
    secrets.update(v for k, v in params.items()
                   if k in ("password", "sslpassword") and len(v) >= redaction.MIN_SECRET_LENGTH)
    userinfo = redaction.split_userinfo(text) if scheme else None
    if userinfo is not None and unquote(userinfo[2]) != params.get("password", ""):
        # libpq ends the userinfo at the first '@': a raw '@' (or '/', '?', '#') in the password
        # would send the rest of it to DNS as a host name, and into every error message.
        raise problem(f"{shown!r} is not a valid connection string (the password holds a reserved "
                      "character that is not percent-encoded)", fix, at="dsn")
    added: dict[str, str] = {}
    for name in ("sslrootcert", "sslcert", "sslkey", "sslcrl"):
        given = params.get(name)
        if given and given != "system" and base_dir is not None and not Path(given).expanduser().is_absolute():
            added[name] = str(Path(base_dir) / given)  # like ca_file: relative to the environment file
    for name, chosen in (("sslrootcert", tls.ca_file), ("sslcert", tls.client_cert), ("sslkey", tls.client_key)):
        if chosen and name not in params:
            added[name] = chosen
    if "sslmode" not in params and tls.ca_file:
        added["sslmode"] = "verify-full" if tls.verify else "require"
    hosts = max(len(params.get("host", "").split(",")), len(params.get("hostaddr", "").split(",")), 1)
    return text, tuple(sorted(added.items())), hosts


class Prometheus(Target):
    """A Prometheus HTTP API; credentials come from variables and are redacted."""

    name: str = Field("prometheus", pattern=NAME_PATTERN)
    url: str = Field(description="http(s)://host:9090 (user:password@ here becomes basic auth)")
    username: str = ""
    password: str = Field("", description="basic auth password; write ${VAR}")
    bearer_token: str = Field("", description="sent as Authorization: Bearer; write ${VAR}")
    queries: SloQueries = Field(default_factory=SloQueries)
    metrics: PrometheusMetrics = Field(default_factory=PrometheusMetrics, description="the metric dialect every "
                                       "service inherits, and the business metrics' names")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        return checked_url(value, ("http", "https"), info)

    @model_validator(mode="after")
    def _credentials_once(self, info: ValidationInfo) -> Prometheus:
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL become basic auth, unless they are also given separately.
            if self.username or self.password or self.bearer_token:
                raise problem("has user:password@ and username, password or bearer_token is set too",
                              "give the credentials once: in the URL or in username/password/bearer_token",
                              at="url")
            object.__setattr__(self, "username", unquote(parts.username or ""))
            object.__setattr__(self, "password", unquote(parts.password or ""))
            object.__setattr__(self, "url", urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])))
        if self.password:  # the Basic header built from them is a secret in every output too
            _secrets(info).add(redaction.basic_credentials(self.username, self.password))
        return self


