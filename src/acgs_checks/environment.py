"""Environment files: TOML that names the targets of a run and overrides thresholds.

``${VAR}`` and ``${VAR:-default}`` are expanded from the process environment in every
string value, so secrets stay out of files; ``$$`` is a literal dollar sign.
Everything wrong with a file is a :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from acgs_checks import redaction
from acgs_checks.errors import ConfigError
from acgs_checks.thresholds import Thresholds

SANDBOX = "sandbox"
ENVIRONMENTS_DIR = Path("fixtures") / "environments"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_TIMEOUT = 60.0


@dataclass(frozen=True)
class Tls:
    """How to trust a target and how to prove who we are: the same four keys on every kind."""

    verify: bool = True                # check the certificate chain and the host name
    ca_file: str | None = None         # PEM bundle to trust instead of the system store
    client_cert: str | None = None     # PEM certificate for targets that require mutual TLS
    client_key: str | None = None      # its private key (default: inside client_cert)


NO_TLS = Tls()

@dataclass(frozen=True, repr=False)
class Service:
    """One HTTP service of the stack, checked at ``url + health_path``."""

    name: str
    title: str
    url: str
    health_path: str = "/health"
    timeout_seconds: float = 2.0
    tls: Tls = NO_TLS
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
    """A PostgreSQL database: any libpq connection string (URI, multi-host URI or keywords).

    ``dsn`` goes to libpq unchanged; ``connect_params`` are added beside it (TLS files from
    ``ca_file``/``client_cert``/``client_key``, relative ``ssl*`` paths resolved against the
    environment file), and never replace a parameter the DSN sets itself.
    ``hosts`` is how many hosts libpq may try: each gets its own connect timeout.
    """

    name: str
    title: str
    dsn: str
    timeout_seconds: float = 2.0
    tls: Tls = NO_TLS
    connect_params: tuple[tuple[str, str], ...] = ()
    hosts: int = 1

    def __repr__(self) -> str:
        return f"Database({self.name!r})"


@dataclass(frozen=True, repr=False)
class Pooler(Database):
    """A PgBouncer admin console (``postgresql://user@host:6432/pgbouncer``)."""

    def __repr__(self) -> str:
        return f"Pooler({self.name!r})"


@dataclass(frozen=True, repr=False)
class Cache:
    """A Redis, reached with a ``redis://`` or ``rediss://`` URL."""

    name: str
    title: str
    url: str
    timeout_seconds: float = 2.0
    tls: Tls = NO_TLS

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
    keepalive: bool = True             # synthetic: reuse connections (false: a new one per request)


@dataclass(frozen=True, repr=False)
class Prometheus:
    """A Prometheus HTTP API; credentials come from variables and are redacted."""

    url: str
    timeout_seconds: float = 2.0
    username: str = ""
    password: str = ""
    bearer_token: str = ""
    tls: Tls = NO_TLS
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
    tls: Tls = NO_TLS
    headers: tuple[tuple[str, str], ...] = ()


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

    @functools.cached_property
    def _redactor(self) -> redaction.Redactor:
        return redaction.Redactor(self.secrets)

    def redact(self, text: str) -> str:
        """Replace every known secret in ``text``, and anything shaped like credentials, with ``***``."""
        return self._redactor(text)


def display_url(url: str) -> str:
    """The URL or DSN with any password or secret parameter replaced, for messages and reports."""
    return redaction.display(url)


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
    """Walks the parsed TOML, expanding variables and naming keys in every error.

    Every error line passes through the secrets found so far, so no message can echo a
    password: not from a value that parsed, not from one that did not.
    """

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.secrets: set[str] = set()

    def fail(self, key: str, problem: str, fix: str) -> ConfigError:
        redact = redaction.Redactor(self.secrets)
        return ConfigError(source=self.source, key=key, problem=redact(problem), fix=redact(fix))

    def expand(self, key: str, value: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            var, default = match.group(1), match.group(2)
            if var in self.environ:
                # Whatever a variable brings may carry credentials: hunt them in every field.
                self.secrets.update(redaction.secrets_in(self.environ[var]))
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

    def secret(self, key: str, value: Any) -> str:
        """A value that is a secret as a whole (a password, a token, a header)."""
        text = self.string(key, value)
        if len(text) >= redaction.MIN_SECRET_LENGTH:
            self.secrets.add(text)
        return text

    def number(self, key: str, value: Any, *, low: float, high: float) -> float:
        if isinstance(value, str):
            text = self.expand(key, value)
            try:
                value = float(text)
            except ValueError:
                raise self.fail(key, f"{redaction.display(text)!r} is not a number", "write a number") from None
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
        # Secrets first: the value may not parse, and the error below must not show them.
        self.secrets.update(redaction.secrets_in(text))
        shown = redaction.display(text)
        try:
            parts = urlsplit(text)
            _ = parts.port  # a port that is not a number raises here
        except ValueError:
            parts = None
        userinfo = redaction.split_userinfo(text)
        if parts is None or (parts.scheme in schemes and not parts.hostname) or (
                userinfo is not None and userinfo[2] != parts.password):
            raise self.fail(key, f"{shown!r} is not a valid URL: the part between '://' and the host does not parse",
                            f"write {schemes[0]}://user:password@host:port; {PERCENT_ENCODING}")
        if parts.scheme not in schemes:
            raise self.fail(
                key, f"{shown!r} is not an {' or '.join(schemes)} URL",
                f"write {schemes[0]}://host:port",
            )
        return text

    def tls(self, key: str, table: dict[str, Any], base_dir: Path | None) -> Tls:
        def file(name: str) -> str | None:
            return None if table.get(name) is None else self.path(f"{key}.{name}", table[name], base_dir)

        tls = Tls(verify=self.boolean(f"{key}.verify_tls", table.get("verify_tls", True)),
                  ca_file=file("ca_file"), client_cert=file("client_cert"), client_key=file("client_key"))
        if tls.client_key and not tls.client_cert:
            raise self.fail(f"{key}.client_key", "is set without client_cert", "add client_cert = \"client.pem\"")
        return tls

    def libpq(self, key: str, value: Any, tls: Tls, base_dir: Path | None) -> tuple[
            str, tuple[tuple[str, str], ...], int]:
        """A libpq connection string, any form: (the text, parameters to add, how many hosts)."""
        text = self.string(key, value).strip()
        self.secrets.update(redaction.secrets_in(text))
        shown = redaction.display(text)
        fix = ("write postgresql://user:password@host:port/db (several hosts: host1:5432,host2:5432) or "
               f"keywords host=... port=... user=... dbname=...; {PERCENT_ENCODING}, or quote a keyword value "
               "(password='...', with \\' for a quote)")
        scheme = text.split("://", 1)[0] if "://" in text else ""
        if scheme and scheme not in ("postgresql", "postgres"):
            raise self.fail(key, f"{shown!r} is not a postgresql:// URL or libpq keyword string", fix)
        from psycopg import Error as PsycopgError  # noqa: PLC0415 - only environments with databases need it
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

        try:
            params = {k: str(v) for k, v in conninfo_to_dict(text).items() if v is not None}
        except PsycopgError as exc:
            # libpq quotes the fragment it choked on, which may be part of a password (quotes included):
            # mask from the first quote to the last, never echo it.
            reason = re.sub(r'".*"', '"…"', str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            raise self.fail(key, f"{shown!r} is not a valid connection string ({reason})", fix) from None
        self.secrets.update(v for k, v in params.items()
                            if k in ("password", "sslpassword") and len(v) >= redaction.MIN_SECRET_LENGTH)
        userinfo = redaction.split_userinfo(text) if scheme else None
        if userinfo is not None and unquote(userinfo[2]) != params.get("password", ""):
            # libpq ends the userinfo at the first '@': a raw '@' (or '/', '?', '#') in the password
            # would send the rest of it to DNS as a host name, and into every error message.
            raise self.fail(key, f"{shown!r} is not a valid connection string (the password holds a reserved "
                            "character that is not percent-encoded)", fix)
        added: dict[str, str] = {}
        for name in ("sslrootcert", "sslcert", "sslkey", "sslcrl"):
            given = params.get(name)
            if given and given != "system" and base_dir is not None and not Path(given).expanduser().is_absolute():
                added[name] = str(base_dir / given)  # like ca_file: relative to the environment file
        for name, chosen in (("sslrootcert", tls.ca_file), ("sslcert", tls.client_cert), ("sslkey", tls.client_key)):
            if chosen and name not in params:
                added[name] = chosen
        if "sslmode" not in params and tls.ca_file:
            added["sslmode"] = "verify-full" if tls.verify else "require"
        hosts = max(len(params.get("host", "").split(",")), len(params.get("hostaddr", "").split(",")), 1)
        return text, tuple(sorted(added.items())), hosts


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
            tls=r.tls(key, s, base_dir),
            headers=_headers(r, key, s),
            slo_path=_path(r, f"{key}.slo_path", s.get("slo_path", s.get("health_path", "/health"))),
            metrics_path=_path(r, f"{key}.metrics_path", s.get("metrics_path", "/metrics")),
            prometheus_selector=r.string(f"{key}.prometheus_selector", s.get("prometheus_selector", "")),
            queries=_queries(r, f"{key}.queries", s.get("queries", {})),
        )
        for key, tname, s in _targets(r, top, "services", ("name", "title", "url", "health_path", "timeout_seconds",
                                                          *TLS_KEYS, "headers", "slo_path",
                                                          "metrics_path", "prometheus_selector", "queries"), "url")
    )

    def postgres(kind: type[D], section: str) -> tuple[D, ...]:
        found = []
        for key, tname, t in _targets(r, top, section, ("name", "title", "dsn", "timeout_seconds", *TLS_KEYS), "dsn"):
            tls = r.tls(key, t, base_dir)
            dsn, params, hosts = r.libpq(f"{key}.dsn", t["dsn"], tls, base_dir)
            found.append(kind(name=tname, title=r.string(f"{key}.title", t.get("title", tname)), dsn=dsn,
                              timeout_seconds=timeout(key, t), tls=tls, connect_params=params, hosts=hosts))
        return tuple(found)

    databases = postgres(Database, "databases")
    poolers = postgres(Pooler, "poolers")
    caches = tuple(
        Cache(name=tname, title=r.string(f"{key}.title", t.get("title", tname)),
              url=r.url(f"{key}.url", t["url"], ("redis", "rediss")), timeout_seconds=timeout(key, t),
              tls=r.tls(key, t, base_dir))
        for key, tname, t in _targets(r, top, "caches", ("name", "title", "url", "timeout_seconds", *TLS_KEYS), "url")
    )

    prometheus = _prometheus(r, top.get("prometheus"), defaults.timeout_seconds, base_dir)
    slo = _slo(r, top.get("slo", {}), prometheus is not None)
    if slo.source == "prometheus" and prometheus is None:
        raise r.fail("slo.source", "is prometheus, but there is no [prometheus] section",
                     'add [prometheus] url = "..." or choose source = "synthetic"')
    business = _business(r, top.get("business", {}), defaults.timeout_seconds, prometheus is not None, base_dir)

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


TLS_KEYS = ("verify_tls", "ca_file", "client_cert", "client_key")
# The one hint for a password that breaks a URL, in every URL and DSN error.
PERCENT_ENCODING = ("percent-encode a URL password's reserved characters "
                    "(/ as %2F, ? as %3F, # as %23, @ as %40, : as %3A, % as %25)")
D = TypeVar("D", bound=Database)


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
    t = r.table("prometheus", raw, ("url", "timeout_seconds", "username", "password", "bearer_token", *TLS_KEYS,
                                    "queries"), ("url",))
    url = r.url("prometheus.url", t["url"], ("http", "https"))
    username = r.string("prometheus.username", t.get("username", ""))
    password = r.secret("prometheus.password", t.get("password", ""))
    token = r.secret("prometheus.bearer_token", t.get("bearer_token", ""))
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL become basic auth, unless they are also given separately.
        if username or password or token:
            raise r.fail("prometheus.url", "has user:password@ and username, password or bearer_token is set too",
                         "give the credentials once: in the URL or in username/password/bearer_token")
        username, password = unquote(parts.username or ""), unquote(parts.password or "")
        url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return Prometheus(
        url=url,
        timeout_seconds=r.number("prometheus.timeout_seconds", t.get("timeout_seconds", timeout),
                                 low=0.0, high=_MAX_TIMEOUT),
        username=username, password=password, bearer_token=token,
        tls=r.tls("prometheus", t, base_dir),
        queries=_queries(r, "prometheus.queries", t.get("queries", {})),
    )


_DURATION = re.compile(r"^\d+(ms|s|m|h|d)$")


def _slo(r: _Reader, raw: Any, has_prometheus: bool) -> SloSettings:
    t = r.table("slo", raw, ("source", "window", "samples", "concurrency", "max_seconds",
                             "request_timeout_seconds", "scrape_window_seconds", "keepalive"))
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
        keepalive=r.boolean("slo.keepalive", t.get("keepalive", True)),
    )


def _business(r: _Reader, raw: Any, timeout: float, has_prometheus: bool,
              base_dir: Path | None) -> tuple[BusinessMetric, ...]:
    table = r.table("business", raw, BUSINESS_METRICS)
    metrics = []
    for name, spec in table.items():
        key = f"business.{name}"
        t = r.table(key, spec, ("query", "url", "field", "unit", "timeout_seconds", "headers", *TLS_KEYS))
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
            field=field, unit=unit, tls=r.tls(key, t, base_dir), headers=_headers(r, key, t),
            timeout_seconds=r.number(f"{key}.timeout_seconds", t.get("timeout_seconds", timeout),
                                     low=0.0, high=_MAX_TIMEOUT)))
    return tuple(metrics)


def _headers(r: _Reader, key: str, table: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = table.get("headers", {})
    headers_raw = r.table(f"{key}.headers", raw, raw.keys() if isinstance(raw, dict) else ())
    # Header values usually carry tokens; treat every one as a secret.
    return tuple((hname, r.secret(f"{key}.headers.{hname}", hvalue)) for hname, hvalue in headers_raw.items())
