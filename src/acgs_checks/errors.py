"""The one error type a user sees: a problem with their input, said in one line."""

from __future__ import annotations

PROBLEM_LIMIT = 600


def _clip(text: str, limit: int) -> str:
    # redaction.clip's twin: errors is the bottom layer, below redaction, and imports nothing of the package.
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


class ConfigError(Exception):
    """A user's mistake: which file, which key, what is wrong and what to do.

    ``str(error)`` is the whole line shown to the user; the plugin turns it into
    pytest's usage error (exit code 4) and never prints a traceback for it.
    """

    def __init__(self, *, source: str, key: str, problem: str, fix: str) -> None:
        # What a file said is quoted in the problem: a line stays a line, however long the value was.
        self.source = source
        self.key = _clip(key, 200)
        self.problem = _clip(problem, PROBLEM_LIMIT)
        self.fix = _clip(fix, PROBLEM_LIMIT)
        self.more: tuple[ConfigError, ...] = ()
        super().__init__(self.line())

    def line(self) -> str:
        where = f"{self.source}: {self.key}" if self.key else self.source
        return f"{where}: {self.problem}; fix: {self.fix}"

    def __str__(self) -> str:
        """Every problem found, one line each (a file with three mistakes says all three)."""
        return "\n".join(e.line() for e in (self, *self.more))

    @classmethod
    def of(cls, errors: list[ConfigError]) -> ConfigError:
        first = errors[0]
        first.more = tuple(errors[1:])
        return first
