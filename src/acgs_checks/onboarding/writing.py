"""Putting init's file in place: validated as a run would load it, whole, never over a file without --force."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from acgs_checks.environment import load
from acgs_checks.errors import ConfigError


def write(output: Path, text: str, *, force: bool, schema: str) -> str:
    """Validate ``text`` as a run would load it, then put it at ``output`` whole (and the schema beside it when
    absent); returns the problem that stopped it, or ""."""
    if output.exists() and not force:
        return f"{output}: already exists; fix: choose another --output, or pass --force to replace it"
    folder = output.resolve().parent
    if not folder.is_dir():
        return f"{output}: the folder {folder} does not exist; fix: create it or choose another --output"
    try:
        fd, staged = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".toml", dir=folder)
    except OSError as exc:
        return f"{output}: cannot be written ({exc.strerror}); fix: choose a writable --output"
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            load(staged, rootdir=folder)
        except ConfigError as exc:  # a bug here, never the user's: say it in one line all the same
            return f"{output}: the generated file does not validate ({exc}); nothing was written"
        os.chmod(staged, 0o644)  # nothing secret in it: ${VAR} references only
        os.replace(staged, output)
    except OSError as exc:
        return f"{output}: cannot be written ({exc.strerror}); fix: choose a writable --output"
    finally:
        Path(staged).unlink(missing_ok=True)
    beside = folder / "env.schema.json"
    if not beside.exists():
        with contextlib.suppress(OSError):  # an editor's help, not the file's meaning
            beside.write_text(schema, encoding="utf-8")
    return ""


def check(text: str) -> str:
    """Validate ``text`` as a run would load it, without putting it anywhere (``--output -``); the problem, or ""."""
    with tempfile.TemporaryDirectory(prefix="acgs-init-") as folder:
        staged = Path(folder) / "environment.toml"
        staged.write_text(text, encoding="utf-8")
        try:
            load(str(staged), rootdir=Path(folder))
        except ConfigError as exc:  # a bug here, never the user's: say it in one line all the same
            return f"the generated file does not validate ({exc}); nothing was written"
    return ""
