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

    def __repr__(self) -> str:
        # Short and secret-free: reports and histories show targets by name.
        return f"Service({self.name!r})"

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
                                   "caches", "thresholds"), ("name",))
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
        )
        for key, tname, s in _targets(r, top, "services", ("name", "title", "url", "health_path", "timeout_seconds",
                                                          "verify_tls", "ca_file", "headers"), "url")
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
        databases=databases, poolers=poolers, caches=caches, thresholds=thresholds, secrets=frozenset(r.secrets),
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
    health_path = r.string(f"{key}.health_path", table.get("health_path", "/health"))
    if not health_path.startswith("/"):
        raise r.fail(f"{key}.health_path", f"{health_path!r} does not start with '/'", f'write "/{health_path}"')
    return health_path


def _headers(r: _Reader, key: str, table: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = table.get("headers", {})
    headers_raw = r.table(f"{key}.headers", raw, raw.keys() if isinstance(raw, dict) else ())
    headers = tuple((hname, r.string(f"{key}.headers.{hname}", hvalue)) for hname, hvalue in headers_raw.items())
    # Header values usually carry tokens; treat every one as a secret.
    r.secrets.update(value for _, value in headers if len(value) >= 4)
    return headers
