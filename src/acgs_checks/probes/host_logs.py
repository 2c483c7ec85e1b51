"""Host logs for the checks that read them (the weekly reviews): the tail of a file, or a unit's journal, read on
the host over its testinfra backend; read-only, bounded, redacted."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from acgs_checks.environment import Environment
from acgs_checks.probes.host import Host, run_on_host, why_failed
from acgs_checks.records import JsonRecord

LOG_MAX_LINES = 2000
LOG_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LogExcerpt(JsonRecord):
    """The end of a log on a host: at most ``lines`` lines and 1 MiB, secrets redacted."""

    target: str
    source: str          # "tail -n 200 /var/log/postgresql/postgresql.log" or "journalctl -u nginx --since -24h"
    text: str = ""
    error: str = ""      # why nothing was read (unreachable, no such file, no journal)


def read_log(host: Host, env: Environment, *, path: str = "", unit: str = "", since_hours: float = 24.0,
             lines: int = 200) -> LogExcerpt:
    """The tail of ``path``, or the last ``since_hours`` of ``unit``'s journal, on ``host``: read-only,
    bounded by the host's timeout, at most ``lines`` lines (up to 2000) and 1 MiB, and redacted."""
    if bool(path) == bool(unit):
        raise ValueError("read_log needs exactly one of path or unit")
    count = max(1, min(int(lines), LOG_MAX_LINES))
    if path:
        source = f"tail -n {count} {path}"
        said = shlex.quote(f"No such file or not readable: {path}")
        command = (f"if [ ! -r {shlex.quote(path)} ]; then echo {said} >&2; exit 1; fi; "
                   f"tail -n {count} -- {shlex.quote(path)} | head -c {LOG_MAX_BYTES}")
    else:
        source = f"journalctl -u {unit} --since -{since_hours:g}h"
        command = ("if ! command -v journalctl >/dev/null 2>&1; then echo 'no journalctl on the host' >&2; "
                   f"exit 1; fi; journalctl -u {shlex.quote(unit)} --since '-{since_hours:g}h' --no-pager -o short-iso "
                   f"-n {count} | head -c {LOG_MAX_BYTES}")
    try:
        rc, stdout, stderr = run_on_host(host, command, host.timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot start is an answer, not a crash
        return LogExcerpt(target=host.name, source=source, error=env.redact(f"{type(exc).__name__}: {exc}"))
    if rc != 0:
        return LogExcerpt(target=host.name, source=source, error=env.redact(why_failed(rc, stderr)))
    return LogExcerpt(target=host.name, source=source, text=env.redact(stdout))
