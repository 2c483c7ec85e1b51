"""What ``acgs-checks doctor`` says: per target, which selected checks can see what they need, and which cannot,
with the fix each one's message names (a grant, a credential, the network).

Doctor runs the selected checks once, read-only and bounded as any run; a threshold breach is not its concern (the
check could read what it judges), nor is warming up or not applicable. What cannot be read is: access denied,
target unreachable, insufficient privilege, no data and probe error, and a case blocked by one of those.
"""

from __future__ import annotations

import contextlib
import json
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from acgs_checks import verdict
from acgs_checks.environment import Environment
from acgs_checks.reporting.outputs import CheckRecord

# Failure kinds that mean "the check could not see what it needs".
BLIND = (verdict.ACCESS_DENIED_KIND, verdict.UNREACHABLE_KIND, verdict.PRIVILEGE_KIND, verdict.NO_DATA_KIND,
         verdict.PROBE_ERROR_KIND, "other")
_FIX = re.compile(r";\s*(fix: .*|check .*)$")
# A statement a message names inside it (GRANT pg_monitor TO acgs_plain, CREATE ROLE ..., ALTER ROLE ...).
_STATEMENT = re.compile(r"\b((?:GRANT|CREATE ROLE|ALTER ROLE|ALTER SYSTEM) [^;)]*)")
# What a doctor line shows of a case's own message.
MESSAGE_LIMIT = 400
_PARAM = re.compile(r"\[(.+)\]$")
# What to do when the message names no fix, by kind.
_DEFAULT_FIX = {
    verdict.UNREACHABLE_KIND: "make the target reachable from this machine: the address, DNS, firewall or TLS "
                              "the line above names",
    verdict.ACCESS_DENIED_KIND: "check the credential the line above names, and its grants",
    verdict.PROBE_ERROR_KIND: "the probe raised on an answer it could not handle: run the case alone with "
                              "--tb=short and report it, with the case's evidence attachment",
    verdict.NO_DATA_KIND: "make the source named above answer this read (its address, its account's grants, "
                          "the names the environment file gives it), then run doctor again",
    verdict.PRIVILEGE_KIND: "grant the account named above the read the message names (docs/security.md lists "
                            "each monitoring account's grants)",
    "other": "run the case alone with --tb=short: it failed without a verdict the doctor knows",
}


@dataclass
class Missing:
    check: str
    severity: str
    kind: str
    message: str
    fix: str


@dataclass
class TargetAccess:
    target: str
    works: list[str] = field(default_factory=list)      # checks that could read what they judge
    missing: list[Missing] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing


def target_of(record: CheckRecord) -> str:
    found = _PARAM.search(record.name)
    return found.group(1) if found else (record.area or "suite")


def fix_of(message: str, kind: str) -> str:
    """The fix a message names (its ``fix:`` clause, a statement inside it, or a closing ``check ...``), else the
    kind's own concrete step."""
    found = _FIX.search(message)
    if found:
        return found.group(1).removeprefix("fix: ").strip()
    at = message.rfind("fix: ")
    if at >= 0:
        return message[at + 5:].split("; source:", 1)[0].rstrip(" )")
    statement = _STATEMENT.search(message)
    if statement:
        return f"run {statement.group(1).strip()}"
    return _DEFAULT_FIX.get(kind, _DEFAULT_FIX["other"])


def accounts(env: Environment) -> dict[str, str]:
    """The account each target is read with (a database's role, a cache's ACL user), so a fix names it instead of
    ``<role>``; a failed-logins source reads with its cache's or database's account. No password is read."""
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - only the doctor needs it

    found: dict[str, str] = {}
    for database in env.databases:
        with contextlib.suppress(Exception):  # a DSN the loader accepted; no user: libpq's default, left unnamed
            user = conninfo_to_dict(database.dsn).get("user")
            if user:
                found[database.name] = str(user)
    for cache in env.caches:
        with contextlib.suppress(ValueError):
            found[cache.name] = unquote(urlsplit(cache.url).username or "") or "default"
    for source in env.security.failed_logins:
        owner = getattr(source, "cache", "") or getattr(source, "database", "")
        if owner in found:
            found[source.name] = found[owner]
    return found


def access(records: Iterable[CheckRecord], named: Mapping[str, str] | None = None) -> list[TargetAccess]:
    """Every selected case, by target (in the order they ran); ``named`` gives each target's account for the fixes."""
    by_target: dict[str, TargetAccess] = {}
    for record in records:
        target = target_of(record)
        seen = by_target.setdefault(target, TargetAccess(target))
        if record.outcome == "failed" and (record.kind in BLIND or verdict.NOT_SET_UP in record.message):
            fix = fix_of(record.message, record.kind)
            account = (named or {}).get(target)
            if account:
                fix = fix.replace("<role>", account).replace("<user>", account)
            seen.missing.append(Missing(record.name, record.severity, record.kind, record.message, fix))
        elif record.outcome == "skipped" and record.kind == verdict.BLOCKED:
            seen.missing.append(Missing(record.name, record.severity, "blocked", record.message,
                                        "fix the case it names first"))
        elif record.outcome == "skipped" and record.kind == verdict.NOT_APPLICABLE:
            seen.not_applicable.append(record.name)
        else:  # passed, breached, waived, in maintenance, warming up: it could read what it judges
            seen.works.append(record.name)
    return list(by_target.values())


def table(found: list[TargetAccess], *, width: int = 110) -> list[str]:
    """One line per target, and under a target that misses something, each check with its kind and its fix (the
    whole fix, wrapped at ``width``: a cut command would not run)."""
    lines, name_width = [], min(max((len(t.target) for t in found), default=6), 28)
    for seen in found:
        works = f"{len(seen.works)} check(s) can read what they judge" + (
            f", {len(seen.not_applicable)} not applicable" if seen.not_applicable else "")
        lines.append(f"{'ok' if seen.ok else 'MISSING':<8}{seen.target:<{name_width}}  {works}")
        for gap in seen.missing:
            lines.append(f"{'':<8}{'':<{name_width}}  {gap.severity or '--'} {gap.check}: {gap.kind}")
            indent = " " * (8 + name_width + 7)
            said = gap.message.removeprefix("Failed: ")
            said = said if len(said) <= MESSAGE_LIMIT else said[:MESSAGE_LIMIT - 1] + "…"
            lines += textwrap.wrap(said, width=max(width, len(indent) + 40), initial_indent=indent[:-5] + "saw: ",
                                   subsequent_indent=indent, break_long_words=True, break_on_hyphens=False)
            lines += textwrap.wrap(gap.fix, width=max(width, len(indent) + 40), initial_indent=indent[:-5] + "fix: ",
                                   subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
    blind = sum(len(t.missing) for t in found)
    lines.append(f"doctor: {sum(len(t.works) for t in found)} check(s) can read what they judge; {blind} cannot"
                 + (" (exit 1)" if blind else " (exit 0)"))
    return lines


def as_json(found: list[TargetAccess], coverage: Mapping[str, object] | None = None) -> str:
    """The findings, and the environment's runbook coverage (``lines`` to print, ``gaps``: daily lines with no
    target) when given."""
    cover = dict(coverage or {})
    return json.dumps({"ok": all(t.ok for t in found) and not cover.get("gaps"),
                       "targets": [{**asdict(t), "ok": t.ok} for t in found], "runbook_coverage": cover},
                      indent=2) + "\n"


def coverage_of(text: str) -> dict[str, Any]:
    """The runbook coverage :func:`as_json` wrote."""
    found = json.loads(text).get("runbook_coverage")
    return found if isinstance(found, dict) else {}


def from_json(text: str) -> list[TargetAccess]:
    """The findings :func:`as_json` wrote (the doctor command reads what its run wrote)."""
    found = []
    for item in json.loads(text)["targets"]:
        found.append(TargetAccess(item["target"], list(item["works"]), [Missing(**gap) for gap in item["missing"]],
                                  list(item["not_applicable"])))
    return found
