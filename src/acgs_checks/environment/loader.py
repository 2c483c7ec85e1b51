"""Environment files: read the TOML, expand ``${VAR}``, validate against the model, report every error at once.

``${VAR}`` and ``${VAR:-default}`` are expanded from the process environment in every
string value, so secrets stay out of files; ``$$`` is a literal dollar sign. Each problem
is one line naming the file and the key (``file: services[auth].url: ...; fix: ...``),
and every line passes through the secrets found in the file, so none can echo a password.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from acgs_checks import redaction
from acgs_checks.environment.document import Environment, model_with
from acgs_checks.environment.model import MAX_TIMEOUT, Target
from acgs_checks.errors import ConfigError
from acgs_checks.policy.thresholds import Thresholds

SANDBOX = "sandbox"
# An environment file larger than this is refused before it is parsed (every byte of it is read, validated
# and shown in reports: its cost stays bounded).
FILE_LIMIT = 1024 * 1024
ENVIRONMENTS_DIR = Path("fixtures") / "environments"
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Keys whose whole value is a secret (a password, a token); header values are secrets too.
_SECRET_KEYS = ("password", "bearer_token")
# Sections of targets that take the [defaults] timeout when they do not set their own.
_TIMED = ("services", "databases", "poolers", "caches")


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


def load(spec: str, *, rootdir: Path, environ: Mapping[str, str] | None = None,
         sandbox: bool = True) -> Environment:
    """Load and validate the environment named or pointed to by ``spec``; ``sandbox``: whether the command that
    asks also accepts the name ``sandbox`` (a run does; the file commands do not), so the fix names only what works."""
    path = resolve_path(spec, rootdir=rootdir)
    shown = _shown_path(path, rootdir)
    if not path.is_file():
        names = [n for n in known_names(rootdir) if sandbox or n != SANDBOX]
        fix = ("pass --env with one of " + ", ".join(names) + " or a path to a .toml file" if names else
               "pass --env with the path of a .toml file")
        if spec == SANDBOX and not sandbox:
            fix = "the embedded sandbox has no file here (acgs-sandbox --write sandbox.toml writes one); or " + fix
        raise ConfigError(source=shown, key="", problem="environment file not found", fix=fix)
    try:
        size = path.stat().st_size
        if size > FILE_LIMIT:
            raise ConfigError(source=shown, key="", problem=f"is {size} bytes, more than the "
                              f"{FILE_LIMIT // 1024} KiB an environment file may be",
                              fix="check that --env names the environment file; keep long text out of it")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source=shown, key="", problem=f"not valid TOML ({exc})",
                          fix="correct the syntax at that line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source=shown, key="", problem=f"cannot be read ({exc})", fix="check the file") from None
    return from_mapping(data, source=shown, environ=os.environ if environ is None else environ,
                        base_dir=path.parent)


def _shown_path(path: Path, rootdir: Path) -> str:
    try:
        return str(path.resolve().relative_to(rootdir.resolve()))
    except ValueError:
        return str(path)


def from_mapping(data: Mapping[str, Any], *, source: str, environ: Mapping[str, str],
                 base_dir: Path | None = None) -> Environment:
    """Validate an already-parsed environment (the sandbox builds one this way too).

    Relative file paths in it are taken relative to ``base_dir`` (the file's folder).
    """
    secrets: set[str] = set()
    problems: list[tuple[str, str, str]] = []  # (key, problem, fix)
    model = environment_model()
    expanded = _expand(dict(data), "", environ, secrets, problems)
    _with_default_timeouts(expanded, (*_TIMED, *(f.alias or n for n, f in model.model_fields.items()
                                                 if n not in Environment.model_fields)))
    context: dict[str, Any] = {"base_dir": base_dir, "secrets": secrets}
    env: Environment | None = None
    try:
        env = model.model_validate(expanded, context=context)
    except ValidationError as exc:
        failed = {key for key, _, _ in problems}
        problems += [p for p in (_explain(e, expanded, model) for e in exc.errors()) if p[0] not in failed]
    thresholds = Thresholds()
    table = expanded.get("thresholds", {})
    if isinstance(table, dict):
        try:
            thresholds = Thresholds.from_table(table, source=source)
        except ConfigError as exc:
            problems.append((exc.key, exc.problem, exc.fix))
    if problems or env is None:
        redact = redaction.Redactor(secrets)
        raise ConfigError.of([ConfigError(source=source, key=key, problem=redact(text), fix=redact(fix))
                              for key, text, fix in problems])
    return env.resolved(source=source, secrets=frozenset(secrets), thresholds=thresholds)


# Sections that probe kinds add (``[[hosts]]``: name -> the model of one entry). The registry hands them over
# as kinds register (acgs_checks.kinds.register): the loader depends on no registry, the registry on it.
_ADDED: dict[str, type[Target]] = {}


def add_section(name: str, entry: type[Target]) -> None:
    """A section a probe kind brings: the environment model and its JSON Schema gain it."""
    _ADDED[name] = entry


def environment_model() -> type[Environment]:
    """The environment model, with the sections that registered probe kinds add."""
    return model_with(tuple(sorted(_ADDED.items())))


def _entry_key(section: str, index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{section}[{name}]" if isinstance(name, str) and name else f"{section}[{index}]"


def _expand(value: Any, key: str, environ: Mapping[str, str], secrets: set[str],
            problems: list[tuple[str, str, str]]) -> Any:
    """Every string with its variables expanded; what they bring is searched for credentials."""
    if isinstance(value, dict):
        return {k: _expand(v, f"{key}.{k}" if key else k, environ, secrets, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, _entry_key(key, i, v), environ, secrets, problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        var, default = match.group(1), match.group(2)
        if var in environ:
            secrets.update(redaction.secrets_in(environ[var]))
            return environ[var]
        if default is not None:
            return default
        problems.append((key, f"variable {var} is not set and has no default",
                         f"export {var}=... before the run, or write ${{{var}:-default}}"))
        return ""

    text = _VAR_RE.sub(substitute, value)
    last = key.rsplit(".", 1)[-1]
    if (last in _SECRET_KEYS or ".headers." in key) and len(text) >= redaction.MIN_SECRET_LENGTH:
        secrets.add(text)
    return text


def _with_default_timeouts(data: dict[str, Any], sections: tuple[str, ...]) -> None:
    """[defaults] timeout_seconds is every target's bound unless the target sets its own: filled in here, once."""
    defaults = data.get("defaults", {})
    raw = defaults.get("timeout_seconds") if isinstance(defaults, dict) else None
    if raw is None:
        return
    try:
        default = float(raw)
    except (TypeError, ValueError):
        return  # reported at defaults.timeout_seconds; targets keep the built-in default
    if not 0 < default <= MAX_TIMEOUT:
        return  # the same: reported once, where it is written
    tables: list[Any] = [t for section in sections if isinstance(data.get(section), list) for t in data[section]]
    tables.append(data.get("prometheus"))
    business = data.get("business")
    if isinstance(business, dict):
        tables += list(business.values())
    for table in tables:
        if isinstance(table, dict):
            table.setdefault("timeout_seconds", default)


def _explain(error: Any, data: dict[str, Any], model: type[BaseModel]) -> tuple[str, str, str]:
    """One pydantic error as (key, problem, fix), in the words of the file."""
    loc = tuple(error["loc"])
    key = _key(loc, data)
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    shown = redaction.display(given) if isinstance(given, str) else given
    last = str(loc[-1]) if loc else ""
    if kind == "acgs":
        at = str(ctx.get("at", ""))
        if at:
            sections = {f.alias or n for n, f in model.model_fields.items()}
            key = at if re.split(r"[.\[]", at, maxsplit=1)[0] in sections else f"{key}.{at}" if key else at
        return key, str(ctx["problem"]), str(ctx["fix"])
    if kind == "missing":
        return key, "missing required key", f"add {last} = ..."
    if kind == "extra_forbidden":
        return key, "unknown key", "remove it or use one of " + ", ".join(_allowed(loc[:-1], model))
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "int_from_float"):
        fix = "write a number" if kind.startswith("float") else "write a whole number"
        return key, f"{shown!r} is not a number", fix
    if kind in ("greater_than", "less_than_equal", "greater_than_equal", "less_than"):
        bound = {"greater_than": "above", "greater_than_equal": "at least", "less_than": "below",
                 "less_than_equal": "at most"}[kind]
        limit = next(iter(ctx.values()), "")
        return key, f"{shown!r} is out of range", f"use a value {bound} {limit:g}" if isinstance(
            limit, int | float) else f"use a value {bound} {limit}"
    if kind in ("bool_parsing", "bool_type"):
        return key, f"{shown!r} is not true or false", "write true or false"
    if kind == "string_type":
        return key, f"{shown!r} is not a string", "quote the value"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return key, f"expected a table, got {type(given).__name__}", f"write [{key}] as a table"
    if kind in ("tuple_type", "list_type"):
        return key, "expected an array of tables", f"write each entry as [[{key}]]"
    if kind == "literal_error":
        return key, f"{shown!r} is not a {last}", f"use one of {ctx.get('expected', '')}"
    return key, str(error["msg"]), "see `acgs-checks schema` for what this key takes"


def _key(loc: tuple[Any, ...], data: Any) -> str:
    """``('services', 0, 'url')`` as ``services[auth].url``, with the entry's name when it has one."""
    parts: list[str] = []
    node = data
    for index, step in enumerate(loc):
        if isinstance(step, int):
            entry = node[step] if isinstance(node, list) and step < len(node) else None
            parts[-1] = _entry_key(parts[-1], step, entry) if parts else f"[{step}]"
            node = entry
            continue
        label = "thresholds" if step == "threshold_overrides" else str(step)
        parts.append(label) if index == 0 or not parts else parts.append(f".{label}")
        node = node.get(step) if isinstance(node, dict) else None
    return "".join(parts)


def _allowed(loc: tuple[Any, ...], model: type[BaseModel]) -> list[str]:
    """The keys the table at ``loc`` takes (for "unknown key" errors)."""
    for step in loc:
        if isinstance(step, int):
            continue
        field = next((f for n, f in model.model_fields.items() if step in (n, f.alias)), None)
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
