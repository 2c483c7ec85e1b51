"""Probe results computed once per run and shared by every check, under xdist too.

Without xdist the results live in memory. Under xdist every worker collects the same
items, so the first worker to ask probes all selected targets and writes the results
to the run's shared folder; the others wait on a file lock and read them. That keeps
one connection per target per run, whatever the number of workers.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

Results = dict[str, dict[str, Any]]


class SharedResults:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._memo: dict[str, Results] = {}

    def get(self, kind: str, compute: Callable[[], Results]) -> Results:
        if kind not in self._memo:
            self._memo[kind] = compute() if self.directory is None else self._shared(kind, compute)
        return self._memo[kind]

    def _shared(self, kind: str, compute: Callable[[], Results]) -> Results:
        assert self.directory is not None
        path = self.directory / f"{kind}.json"
        with open(self.directory / f"{kind}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():
                data: Results = json.loads(path.read_text(encoding="utf-8"))
                return data
            data = compute()
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data), encoding="utf-8")
            tmp.replace(path)
            return data
