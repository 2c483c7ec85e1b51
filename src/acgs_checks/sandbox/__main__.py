"""Run the sandbox on its own: ``acgs-sandbox [--fault auth:503 ...]`` (or ``python -m acgs_checks.sandbox``).

Prints the environment file it serves, then serves until interrupted, so the stack
can be explored with curl, psql or redis-cli, or checked with ``pytest --env FILE``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from acgs_checks.errors import ConfigError
from acgs_checks.sandbox.dialects import DEFAULT_DIALECTS, DIALECTS
from acgs_checks.sandbox.faults import describe, parse_all
from acgs_checks.sandbox.servers import SandboxError
from acgs_checks.sandbox.stack import Sandbox


def _write_private(path: Path, text: str) -> None:
    """The file holds passwords: mode 0600 from the start, and renamed into place whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acgs-sandbox", description=__doc__)
    parser.add_argument("--fault", action="append", default=[], metavar="TARGET:FAULT[=ARG]",
                        help=f"inject a fault; repeatable. {describe()}")
    parser.add_argument("--dialect", action="append", default=[], metavar="SERVICE=NAME",
                        help=f"the metric dialect a service's /metrics speaks ({', '.join(DIALECTS)}; default: its "
                        "ACGS-2 counterpart's); repeatable")
    parser.add_argument("--write", metavar="PATH", help="also write the environment file to PATH")
    parser.add_argument("--no-backends", action="store_true", help="do not start PostgreSQL and Redis")
    args = parser.parse_args(argv)
    try:
        faults = parse_all(args.fault)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    dialects = dict(spec.partition("=")[::2] for spec in args.dialect)
    for service, name in dialects.items():
        if service not in DEFAULT_DIALECTS or name not in DIALECTS:
            print(f"error: --dialect {service}={name}: expected SERVICE=NAME with SERVICE one of "
                  f"{', '.join(DEFAULT_DIALECTS)} and NAME one of {', '.join(DIALECTS)}", file=sys.stderr)
            return 4
    stop = threading.Event()
    for each in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(each, lambda *_: stop.set())
    sandbox = Sandbox(faults, dialects=dialects)
    try:
        sandbox.start()
        if not args.no_backends:
            sandbox.start_backends()
        text = sandbox.to_toml()
        if args.write:
            _write_private(Path(args.write), text)
        print(text, flush=True)
        print("# serving; stop with Ctrl-C", file=sys.stderr, flush=True)
        stop.wait()
    except SandboxError as exc:
        print(f"error: sandbox: {exc}", file=sys.stderr)
        return 1
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
