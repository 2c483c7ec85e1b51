"""Sandbox faults: ``TARGET:FAULT[=ARG]`` makes one check fail for the reason it exists."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from acgs_checks.errors import ConfigError

SERVICE_NAMES = ("auth", "constitutional-ai", "policy-governance", "governance-synthesis")


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 600:
        raise ValueError("must be between 0 and 600 seconds")
    return value


@dataclass(frozen=True)
class FaultSpec:
    name: str
    help: str
    parse_arg: Callable[[str], float] | None = None  # None: the fault takes no argument


SERVICE_FAULTS: dict[str, FaultSpec] = {
    spec.name: spec for spec in (
        FaultSpec("down", "nothing listens on the service's port (connection refused)"),
        FaultSpec("503", "the health endpoint answers 503 with status fail"),
        FaultSpec("slow", "the health endpoint answers after SECONDS", _seconds),
        FaultSpec("hang", "the service accepts the connection and never answers"),
        FaultSpec("degraded", "the health endpoint answers 200 with status warn"),
    )
}


@dataclass(frozen=True)
class Fault:
    target: str
    name: str
    arg: float | None = None

    def __str__(self) -> str:
        arg = "" if self.arg is None else f"={self.arg:g}"
        return f"{self.target}:{self.name}{arg}"


def _usage(text: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(source="--sandbox-fault", key=text, problem=problem, fix=fix)


def parse(text: str) -> Fault:
    """Parse one ``--sandbox-fault`` value; a bad one is a one-line ConfigError."""
    target, sep, rest = text.strip().partition(":")
    if not sep or not target or not rest:
        raise _usage(text, "not of the form TARGET:FAULT[=ARG]",
                     "write e.g. auth:down or auth:slow=3")
    if target not in SERVICE_NAMES:
        raise _usage(text, f"unknown sandbox target {target!r}",
                     "use one of " + ", ".join(SERVICE_NAMES))
    name, has_arg, raw_arg = rest.partition("=")
    spec = SERVICE_FAULTS.get(name)
    if spec is None:
        raise _usage(text, f"unknown fault {name!r} for a service",
                     "use one of " + ", ".join(f"{n}{'=ARG' if s.parse_arg else ''}"
                                               for n, s in SERVICE_FAULTS.items()))
    if spec.parse_arg is None:
        if has_arg:
            raise _usage(text, f"fault {name!r} takes no argument", f"write {target}:{name}")
        return Fault(target, name)
    if not has_arg:
        raise _usage(text, f"fault {name!r} needs an argument", f"write {target}:{name}=VALUE")
    try:
        return Fault(target, name, spec.parse_arg(raw_arg))
    except ValueError as exc:
        raise _usage(text, f"bad argument {raw_arg!r} ({exc})", f"write {target}:{name}=VALUE") from None


def parse_all(texts: Iterable[str]) -> tuple[Fault, ...]:
    faults = tuple(parse(text) for text in texts)
    seen: dict[str, Fault] = {}
    for fault in faults:
        if fault.target in seen:
            raise _usage(str(fault), f"{fault.target} already has fault {seen[fault.target]}",
                         "give each target at most one fault")
        seen[fault.target] = fault
    return faults


def describe() -> str:
    return "; ".join(f"<service>:{n}{'=ARG' if s.parse_arg else ''} ({s.help})"
                     for n, s in SERVICE_FAULTS.items())
