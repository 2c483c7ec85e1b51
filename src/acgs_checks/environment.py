"""Environment files: TOML that names the targets of a run and overrides thresholds.

``${VAR}`` and ``${VAR:-default}`` are expanded from the process environment in every
string value, so secrets stay out of files; ``$$`` is a literal dollar sign.
Everything wrong with a file is a :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from acgs_checks.errors import ConfigError
from acgs_checks.thresholds import Thresholds

SANDBOX = "sandbox"
ENVIRONMENTS_DIR = Path("fixtures") / "environments"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_TIMEOUT = 60.0


@dataclass(frozen=True, repr=False)
class Service:
    """One HTTP service of the stack, checked at ``url + health_path``."""

    name: str
    title: str
    url: str
    health_path: str = "/health"
    timeout_seconds: float = 2.0
    verify_tls: bool = True
    ca_file: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # For the SLO checks: what synthetic sampling requests, where /metrics is, how PromQL selects it.
    slo_path: str = "/health"
    metrics_path: str = "/metrics"
    prometheus_selector: str = ""
    queries: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        # Short and secret-free: reports and histories show targets by name.
        return f"Service({self.name!r})"

    @property
    def slo_url(self) -> str:
        return self.url.rstrip("/") + self.slo_path

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


@dataclass(frozen=True, repr=False)
class Database:
    """A PostgreSQL database, reached with a ``postgresql://`` DSN."""

    name: str
    title: str
    dsn: str
    timeout_seconds: float = 2.0

    def __repr__(self) -> str:
        return f"Database({self.name!r})"


@dataclass(frozen=True, repr=False)
class Pooler:
    """A PgBouncer admin console (``postgresql://user@host:6432/pgbouncer``)."""

    name: str
    title: str
    dsn: str
    timeout_seconds: float = 2.0

    def __repr__(self) -> str:
        return f"Pooler({self.name!r})"


@dataclass(frozen=True, repr=False)
class Cache:
    """A Redis, reached with a ``redis://`` or ``rediss://`` URL."""

    name: str
    title: str
    url: str
    timeout_seconds: float = 2.0
    ca_file: str | None = None

    def __repr__(self) -> str:
        return f"Cache({self.name!r})"


SLO_QUERY_KEYS = ("p50", "p95", "p99", "error_rate", "client_error_rate", "request_rate", "active_connections")
SLO_SOURCES = ("prometheus", "synthetic", "scrape")
BUSINESS_METRICS = ("compliance", "policy_success")


@dataclass(frozen=True)
class SloSettings:
    """Where latency and error numbers come from, and the bounds on measuring them."""

    source: str = "synthetic"
    window: str = "5m"                 # PromQL range for the prometheus source
    samples: int = 50                  # synthetic: requests per service
    concurrency: int = 10              # synthetic: requests in flight per service
    max_seconds: float = 10.0          # synthetic: no new request after this long
    request_timeout_seconds: float = 15.0  # synthetic: each request (above the 10 s P99 critical)
    scrape_window_seconds: float = 10.0    # scrape: seconds between the two /metrics scrapes


@dataclass(frozen=True, repr=False)
class Prometheus:
    """A Prometheus HTTP API; credentials come from variables and are redacted."""

    url: str
    timeout_seconds: float = 2.0
    username: str = ""
    password: str = ""
    bearer_token: str = ""
    ca_file: str | None = None
    queries: tuple[tuple[str, str], ...] = ()

    name: str = "prometheus"

    def __repr__(self) -> str:
        return "Prometheus('prometheus')"


@dataclass(frozen=True)
class BusinessMetric:
    """A business metric from a PromQL query, or from a JSON endpoint and a dotted field path."""

    name: str
    query: str = ""
    url: str = ""
    field: str = ""
    unit: str = "ratio"  # "ratio" (0..1) or "percent" (0..100)
    timeout_seconds: float = 2.0


@dataclass(frozen=True)
class Defaults:
    timeout_seconds: float = 2.0
    concurrency: int = 64
    # Cache hit rate is measured between two INFO samples this far apart.
    cache_window_seconds: float = 3.0


@dataclass(frozen=True)
class Environment:
    """A validated environment: the targets of a run and its thresholds."""

    name: str
    source: str
    description: str = ""
    defaults: Defaults = field(default_factory=Defaults)
    services: tuple[Service, ...] = ()
    databases: tuple[Database, ...] = ()
    poolers: tuple[Pooler, ...] = ()
    caches: tuple[Cache, ...] = ()
    prometheus: Prometheus | None = None
    slo: SloSettings = field(default_factory=SloSettings)
    business: tuple[BusinessMetric, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    secrets: frozenset[str] = frozenset()

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def targets(self, kind: str) -> tuple[Service | Database | Pooler | Cache, ...]:
        """The targets of one kind: ``service``, ``database``, ``pooler`` or ``cache``."""
        by_kind: dict[str, tuple[Service | Database | Pooler | Cache, ...]] = {
            "service": self.services, "database": self.databases, "pooler": self.poolers, "cache": self.caches}
        return by_kind[kind]

    def redact(self, text: str) -> str:
        """Replace every known secret in ``text`` with ``***``."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def display_url(url: str) -> str:
    """The URL with any password in it replaced, for messages and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def resolve_path(spec: str, *, rootdir: Path) -> Path:
    """``NAME`` means ``fixtures/environments/NAME.toml``; anything path-like is a path."""
    if spec.endswith(".toml") or os.sep in spec or "/" in spec:
        path = Path(spec).expanduser()
        return path if path.is_absolute() else (Path.cwd() / path)
    return rootdir / ENVIRONMENTS_DIR / f"{spec}.toml"


def known_names(rootdir: Path) -> list[str]:
    folder = rootdir / ENVIRONMENTS_DIR
    names = sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []
    return [SANDBOX, *names]


def load(spec: str, *, rootdir: Path, environ: Mapping[str, str] | None = None) -> Environment:
    """Load and validate the environment named or pointed to by ``spec``."""
    path = resolve_path(spec, rootdir=rootdir)
    shown = _shown_path(path, rootdir)
    if not path.is_file():
        raise ConfigError(
            source=shown, key="", problem="environment file not found",
            fix="pass --env with one of " + ", ".join(known_names(rootdir)) + " or a path to a .toml file",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            source=shown, key="", problem=f"not valid TOML ({exc})",
            fix="correct the syntax at that line",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            source=shown, key="", problem=f"cannot be read ({exc})", fix="check the file",
        ) from None
    return from_mapping(data, source=shown, environ=os.environ if environ is None else environ,
                        base_dir=path.parent)


def _shown_path(path: Path, rootdir: Path) -> str:
    try:
        return str(path.resolve().relative_to(rootdir.resolve()))
    except ValueError:
        return str(path)


class _Reader:
    """Walks the parsed TOML, expanding variables and naming keys in every error."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.secrets: set[str] = set()

    def fail(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(source=self.source, key=key, problem=problem, fix=fix)

    def expand(self, key: str, value: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            var, default = match.group(1), match.group(2)
            if var in self.environ:
                return self.environ[var]
            if default is not None:
                return default
            raise self.fail(
                key, f"variable {var} is not set and has no default",
                f"export {var}=... before the run, or write ${{{var}:-default}}",
            )

        return _VAR_RE.sub(substitute, value)

    def table(self, key: str, value: Any, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {type(value).__name__}", f"write [{key}] as a table")
        allowed = set(allowed)
        for name in value:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, "unknown key", "remove it or use one of " + ", ".join(sorted(allowed)))
        for name in required:
            if name not in value:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, "missing required key", f"add {name} = ...")
        return value

    def string(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"{value!r} is not a string", "quote the value")
        return self.expand(key, value)

    def number(self, key: str, value: Any, *, low: float, high: float) -> float:
        if isinstance(value, str):
            text = self.expand(key, value)
            try:
                value = float(text)
            except ValueError:
                raise self.fail(key, f"{text!r} is not a number", "write a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"{value!r} is not a number", "write a number")
        if not low < float(value) <= high:
            raise self.fail(key, f"{value!r} is out of range", f"use a value above {low} and at most {high}")
        return float(value)

    def boolean(self, key: str, value: Any) -> bool:
        if isinstance(value, str):
            text = self.expand(key, value).strip().lower()
            if text in {"true", "1", "yes", "on"}:
                return True
            if text in {"false", "0", "no", "off"}:
                return False
        if not isinstance(value, bool):
            raise self.fail(key, f"{value!r} is not true or false", "write true or false")
        return value

    def path(self, key: str, value: Any, base_dir: Path | None) -> str:
        path = Path(self.string(key, value)).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise self.fail(key, f"file {str(path)!r} does not exist", "point it at a readable PEM file")
        return str(path)

    def url(self, key: str, value: Any, schemes: tuple[str, ...]) -> str:
        text = self.string(key, value).strip()
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise self.fail(key, f"{display_url(text)!r} is not a valid URL ({exc})",
                            "write scheme://host:port") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise self.fail(
                key, f"{display_url(text)!r} is not an {' or '.join(schemes)} URL",
                f"write {schemes[0]}://host:port",
            )
        del port
        if parts.password:
            self.secrets.add(parts.password)
        for pair in parts.query.split("&"):
            qkey, _, qvalue = pair.partition("=")
            if qkey == "password" and qvalue:
                self.secrets.add(qvalue)
        return text


def from_mapping(data: Mapping[str, Any], *, source: str, environ: Mapping[str, str],
                 base_dir: Path | None = None) -> Environment:
    """Validate an already-parsed environment (the sandbox builds one this way too).

    Relative file paths in it are taken relative to ``base_dir`` (the file's folder).
    """
    r = _Reader(source, environ)
    top = r.table("", dict(data), ("name", "description", "defaults", "services", "databases", "poolers",
                                   "caches", "prometheus", "slo", "business", "thresholds"), ("name",))
    name = r.string("name", top["name"])
    if not _NAME_RE.match(name):
        raise r.fail("name", f"{name!r} is not a valid environment name",
                     "use lower-case letters, digits, '-', '_' or '.'")
    description = r.string("description", top.get("description", ""))

    d = r.table("defaults", top.get("defaults", {}), ("timeout_seconds", "concurrency", "cache_window_seconds"))
    defaults = Defaults(
        timeout_seconds=r.number("defaults.timeout_seconds", d.get("timeout_seconds", 2.0),
                                 low=0.0, high=_MAX_TIMEOUT),
        concurrency=int(r.number("defaults.concurrency", d.get("concurrency", 64), low=0, high=1024)),
        cache_window_seconds=r.number("defaults.cache_window_seconds", d.get("cache_window_seconds", 3.0),
                                      low=0.0, high=_MAX_TIMEOUT),
    )

    def timeout(key: str, table: dict[str, Any]) -> float:
        return r.number(f"{key}.timeout_seconds", table.get("timeout_seconds", defaults.timeout_seconds),
                        low=0.0, high=_MAX_TIMEOUT)

    services = tuple(
        Service(
            name=tname,
            title=r.string(f"{key}.title", s.get("title", tname)),
            url=r.url(f"{key}.url", s["url"], ("http", "https")),
            health_path=_health_path(r, key, s),
            timeout_seconds=timeout(key, s),
            verify_tls=r.boolean(f"{key}.verify_tls", s.get("verify_tls", True)),
            ca_file=None if s.get("ca_file") is None else r.path(f"{key}.ca_file", s["ca_file"], base_dir),
            headers=_headers(r, key, s),
            slo_path=_path(r, f"{key}.slo_path", s.get("slo_path", s.get("health_path", "/health"))),
            metrics_path=_path(r, f"{key}.metrics_path", s.get("metrics_path", "/metrics")),
            prometheus_selector=r.string(f"{key}.prometheus_selector", s.get("prometheus_selector", "")),
            queries=_queries(r, f"{key}.queries", s.get("queries", {})),
        )
        for key, tname, s in _targets(r, top, "services", ("name", "title", "url", "health_path", "timeout_seconds",
                                                          "verify_tls", "ca_file", "headers", "slo_path",
                                                          "metrics_path", "prometheus_selector", "queries"), "url")
    )
    databases = tuple(
        Database(name=tname, title=r.string(f"{key}.title", t.get("title", tname)),
                 dsn=r.url(f"{key}.dsn", t["dsn"], ("postgresql", "postgres")), timeout_seconds=timeout(key, t))
        for key, tname, t in _targets(r, top, "databases", ("name", "title", "dsn", "timeout_seconds"), "dsn")
    )
    poolers = tuple(
        Pooler(name=tname, title=r.string(f"{key}.title", t.get("title", tname)),
               dsn=r.url(f"{key}.dsn", t["dsn"], ("postgresql", "postgres")), timeout_seconds=timeout(key, t))
        for key, tname, t in _targets(r, top, "poolers", ("name", "title", "dsn", "timeout_seconds"), "dsn")
    )
    caches = tuple(
        Cache(name=tname, title=r.string(f"{key}.title", t.get("title", tname)),
              url=r.url(f"{key}.url", t["url"], ("redis", "rediss")), timeout_seconds=timeout(key, t),
              ca_file=None if t.get("ca_file") is None else r.path(f"{key}.ca_file", t["ca_file"], base_dir))
        for key, tname, t in _targets(r, top, "caches", ("name", "title", "url", "timeout_seconds", "ca_file"), "url")
    )

    prometheus = _prometheus(r, top.get("prometheus"), defaults.timeout_seconds, base_dir)
    slo = _slo(r, top.get("slo", {}), prometheus is not None)
    if slo.source == "prometheus" and prometheus is None:
        raise r.fail("slo.source", "is prometheus, but there is no [prometheus] section",
                     'add [prometheus] url = "..." or choose source = "synthetic"')
    business = _business(r, top.get("business", {}), defaults.timeout_seconds, prometheus is not None)

    thresholds_raw = r.table("thresholds", top.get("thresholds", {}), top.get("thresholds", {}).keys()
                             if isinstance(top.get("thresholds", {}), dict) else ())
    expanded = {
        k: (r.number(f"thresholds.{k}", v, low=float("-inf"), high=float("inf"))
            if isinstance(v, str) else v)
        for k, v in thresholds_raw.items()
    }
    thresholds = Thresholds.from_table(expanded, source=source)
    return Environment(
        name=name, source=source, description=description, defaults=defaults, services=services,
        databases=databases, poolers=poolers, caches=caches, prometheus=prometheus, slo=slo, business=business,
        thresholds=thresholds, secrets=frozenset(r.secrets),
    )


def _targets(r: _Reader, top: dict[str, Any], section: str, allowed: tuple[str, ...],
             address_key: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Each ``[[section]]`` table as (key for messages, validated name, table)."""
    raw_list = top.get(section, [])
    if not isinstance(raw_list, list):
        raise r.fail(section, "expected an array of tables", f"write each entry as [[{section}]]")
    seen: set[str] = set()
    for index, raw in enumerate(raw_list):
        key = f"{section}[{index}]"
        table = r.table(key, raw, allowed, ("name", address_key))
        tname = r.string(f"{key}.name", table["name"])
        if not _NAME_RE.match(tname):
            raise r.fail(f"{key}.name", f"{tname!r} is not a valid name",
                         "use lower-case letters, digits, '-', '_' or '.' (it becomes the test id)")
        key = f"{section}[{tname}]"
        if tname in seen:
            raise r.fail(f"{key}.name", f"{tname!r} is defined twice", "give each entry its own name")
        seen.add(tname)
        yield key, tname, table


def _health_path(r: _Reader, key: str, table: dict[str, Any]) -> str:
    return _path(r, f"{key}.health_path", table.get("health_path", "/health"))


def _path(r: _Reader, key: str, value: Any) -> str:
    path = r.string(key, value)
    if not path.startswith("/"):
        raise r.fail(key, f"{path!r} does not start with '/'", f'write "/{path}"')
    return path


def _queries(r: _Reader, key: str, raw: Any) -> tuple[tuple[str, str], ...]:
    table = r.table(key, raw, SLO_QUERY_KEYS)
    return tuple((name, r.string(f"{key}.{name}", text)) for name, text in table.items())


def _prometheus(r: _Reader, raw: Any, timeout: float, base_dir: Path | None) -> Prometheus | None:
    if raw is None:
        return None
    t = r.table("prometheus", raw, ("url", "timeout_seconds", "username", "password", "bearer_token", "ca_file",
                                    "queries"), ("url",))
    password = r.string("prometheus.password", t.get("password", ""))
    token = r.string("prometheus.bearer_token", t.get("bearer_token", ""))
    r.secrets.update(v for v in (password, token) if v)
    return Prometheus(
        url=r.url("prometheus.url", t["url"], ("http", "https")),
        timeout_seconds=r.number("prometheus.timeout_seconds", t.get("timeout_seconds", timeout),
                                 low=0.0, high=_MAX_TIMEOUT),
        username=r.string("prometheus.username", t.get("username", "")), password=password, bearer_token=token,
        ca_file=None if t.get("ca_file") is None else r.path("prometheus.ca_file", t["ca_file"], base_dir),
        queries=_queries(r, "prometheus.queries", t.get("queries", {})),
    )


_DURATION = re.compile(r"^\d+(ms|s|m|h|d)$")


def _slo(r: _Reader, raw: Any, has_prometheus: bool) -> SloSettings:
    t = r.table("slo", raw, ("source", "window", "samples", "concurrency", "max_seconds",
                             "request_timeout_seconds", "scrape_window_seconds"))
    source = r.string("slo.source", t.get("source", "prometheus" if has_prometheus else "synthetic"))
    if source not in SLO_SOURCES:
        raise r.fail("slo.source", f"{source!r} is not a source", "use one of " + ", ".join(SLO_SOURCES))
    window = r.string("slo.window", t.get("window", "5m"))
    if not _DURATION.match(window):
        raise r.fail("slo.window", f"{window!r} is not a PromQL duration", 'write e.g. "5m", "30s" or "1h"')
    return SloSettings(
        source=source, window=window,
        samples=int(r.number("slo.samples", t.get("samples", 50), low=0, high=10_000)),
        concurrency=int(r.number("slo.concurrency", t.get("concurrency", 10), low=0, high=256)),
        max_seconds=r.number("slo.max_seconds", t.get("max_seconds", 10.0), low=0, high=300),
        request_timeout_seconds=r.number("slo.request_timeout_seconds", t.get("request_timeout_seconds", 15.0),
                                         low=0, high=120),
        scrape_window_seconds=r.number("slo.scrape_window_seconds", t.get("scrape_window_seconds", 10.0),
                                       low=0, high=600),
    )


def _business(r: _Reader, raw: Any, timeout: float, has_prometheus: bool) -> tuple[BusinessMetric, ...]:
    table = r.table("business", raw, BUSINESS_METRICS)
    metrics = []
    for name, spec in table.items():
        key = f"business.{name}"
        t = r.table(key, spec, ("query", "url", "field", "unit", "timeout_seconds"))
        query, url = r.string(f"{key}.query", t.get("query", "")), t.get("url", "")
        if bool(query) == bool(url):
            raise r.fail(key, "needs exactly one of query or url", 'write query = "PromQL" or url = "..." with field')
        if query and not has_prometheus:
            raise r.fail(f"{key}.query", "a PromQL query needs a [prometheus] section", "add [prometheus] url")
        field = r.string(f"{key}.field", t.get("field", ""))
        if url and not field:
            raise r.fail(f"{key}.field", "missing: which JSON field holds the value", 'write field = "data.score"')
        unit = r.string(f"{key}.unit", t.get("unit", "ratio"))
        if unit not in ("ratio", "percent"):
            raise r.fail(f"{key}.unit", f"{unit!r} is not a unit", 'use "ratio" (0..1) or "percent" (0..100)')
        metrics.append(BusinessMetric(
            name=name, query=query, url=r.url(f"{key}.url", url, ("http", "https")) if url else "",
            field=field, unit=unit,
            timeout_seconds=r.number(f"{key}.timeout_seconds", t.get("timeout_seconds", timeout),
                                     low=0.0, high=_MAX_TIMEOUT)))
    return tuple(metrics)


def _headers(r: _Reader, key: str, table: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = table.get("headers", {})
    headers_raw = r.table(f"{key}.headers", raw, raw.keys() if isinstance(raw, dict) else ())
    headers = tuple((hname, r.string(f"{key}.headers.{hname}", hvalue)) for hname, hvalue in headers_raw.items())
    # Header values usually carry tokens; treat every one as a secret.
    r.secrets.update(value for _, value in headers if len(value) >= 4)
    return headers
