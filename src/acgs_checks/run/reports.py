"""The run's report files: one run at a time per reports folder, each file whole or named as not written.

* **One run at a time.** The controller takes an exclusive lock (``flock``) on ``.acgs-run.lock`` in every
  folder it writes reports into, before Allure cleans its results folder. A second run that shares a
  folder says whose run it waits for, and waits up to ``--reports-wait`` seconds; past that it stops
  with exit 4. The lock dies with its process, so a killed run never blocks the next.
* **Nothing stale.** Once it holds the lock, the run replaces ``summary.json`` with one that says
  ``"status": "running"`` (its pid and start), so a reader never takes an earlier run's verdict for
  this one's. The end of the run writes ``finished`` or ``interrupted``, with every case judged so far.
* **Outputs degrade, checks never stop.** Allure's file writer and pytest's JUnit writer are wrapped:
  a folder that is read-only, missing or full costs the files that could not be written, each output
  named once with the OS error, never a traceback. JUnit is written to a temporary file and renamed.
  A run whose verdicts all passed but whose outputs were not all written exits 6.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acgs_checks.reporting import outputs
from acgs_checks.reporting.allure_files import prune_finalizers, worth_writing
from acgs_checks.verdict import BLOCKED_BY_LABEL as BLOCKED_BY

LOCK_NAME = ".acgs-run.lock"
# A run whose every verdict is known and passed (or is below --fail-on), but that could not write every output.
OUTPUTS_INCOMPLETE = 6


@dataclass
class Outputs:
    """What this process could not write: one line per output (path and OS error), and how many files."""

    problems: dict[str, str] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    locks: list[int] = field(default_factory=list)

    def failed(self, output: str, path: Path | str, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        errno = getattr(exc, "errno", None)
        self.problems.setdefault(output, f"{output}: {path}: {reason}" + (f" [errno {errno}]" if errno else ""))
        self.lost[output] = self.lost.get(output, 0) + 1

    def lines(self) -> list[str]:
        return [f"{line} ({self.lost[key]} file(s) not written)" if self.lost.get(key, 0) > 1 else line
                for key, line in self.problems.items()]

    def merge(self, lines: list[str]) -> None:
        for line in lines:
            self.problems.setdefault(line, line)


CURRENT = Outputs()


def reset() -> Outputs:
    global CURRENT, WRITTEN  # noqa: PLW0603 - one record per run, read by the writers the run's plugins create
    flush_writes()  # an earlier in-process run's files are its own
    CURRENT = Outputs()
    WRITTEN = Written()
    return CURRENT


# --- one run at a time --------------------------------------------------------------------------

def lock_folders(folders: list[Path], *, wait_seconds: float, say: Any = None) -> None:
    """Lock every folder (sorted, so two runs never deadlock). A folder that cannot be created or written is
    left unlocked: nothing can be written there, and the outputs meant for it say so when they fail.

    Raises TimeoutError naming the holder when another run kept a folder longer than ``wait_seconds``.
    """
    for folder in sorted(set(folders)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            continue
        _wait_for(fd, folder, wait_seconds, say or (lambda line: sys.stderr.write(line + "\n")))
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode(), 0)
        CURRENT.locks.append(fd)


def _locked(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_for(fd: int, folder: Path, wait_seconds: float, say: Any) -> None:
    if _locked(fd):
        return
    holder = _holder(fd)
    say(f"acgs-checks: waiting for the run {holder} that is writing reports to {folder} "
        f"(up to {wait_seconds:g} s; --reports-wait changes it)")
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if _locked(fd):
            say(f"acgs-checks: the run {holder} finished; this run goes on")
            return
    os.close(fd)
    raise TimeoutError(f"{folder}: the run {holder} still writes reports there after {wait_seconds:g} s")


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid, _, started = os.pread(fd, 200, 0).decode().strip().partition(" ")
        if pid:
            return f"pid {int(pid)} (started {started})"
    return "(pid unknown)"


def release() -> None:
    flush_writes()  # every queued file is written before the folder is another run's
    for fd in CURRENT.locks:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the last descriptor releases the flock
    CURRENT.locks.clear()


# --- nothing stale, nothing half-written ---------------------------------------------------------

def mark_running(path: Path, *, environment: str, started: float) -> None:
    """Replace an earlier run's summary with one that says this run is under way (no verdict in it)."""
    document = {"status": "running", "environment": environment, "pid": os.getpid(), "started": started,
                "checks": []}
    try:
        outputs.write_whole(path, json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        CURRENT.failed("summary", path, exc)


def claim(config: Any, settings: Any) -> None:
    """The controller's start: lock the folders it writes reports into, then say in summary.json that this
    run is under way (before Allure cleans its results folder, which it does when it configures next)."""
    paths = [Path(p) for p in (getattr(config.option, "allure_report_dir", None),) if p]
    folders = [p.parent for p in paths]
    for path in (getattr(config.option, "xmlpath", None), settings.summary_path, settings.textfile):
        if path:
            folders.append(Path(path).parent)
    lock_folders([f.absolute() for f in folders], wait_seconds=settings.reports_wait)
    mark_running(settings.summary_path, environment=settings.env_spec, started=time.time())


# --- the writers of other plugins, wrapped ----------------------------------------------------------

_patched: list[str] = []


@dataclass
class Written:
    """What this process's Allure writer wrote, kept in memory: each result is annotated as it is written (once),
    so the end of the run rewrites only the cases skipped as blocked, which link to their blocker's result."""

    annotate: Any = None                                   # callable(result dict) -> None, set by the recorder
    failed: dict[str, str] = field(default_factory=dict)   # case name -> result uuid
    blocked: list[Path] = field(default_factory=list)      # result files with a blocked_by label


WRITTEN = Written()


class _Writer:
    """One background thread per process writes the Allure files, in order: the case loop never waits on the disk
    (a file creation costs about a millisecond on this machine's overlay disk, two files per case). The run flushes
    it before it reads what was written or says which outputs were not (``flush_writes``)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | threading.Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="acgs-report-writer", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def flush(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        done = threading.Event()
        self._jobs.put(done)
        done.wait()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if isinstance(job, threading.Event):
                job.set()
                continue
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - a writer must never die with files still queued
                CURRENT.failed("allure results", Path("."), OSError(str(exc)))


_WRITER = _Writer()


def flush_writes() -> None:
    """Wait until every queued report file is written (or named as not written)."""
    _WRITER.flush()


def guard_writers() -> None:
    """Wrap allure-pytest's file writer and pytest's JUnit writer so a write error is a line, not a crash.

    They are looked up by name when the plugins configure (after this plugin's tryfirst configure), so
    replacing the classes in their modules once per process is enough.
    """
    if "done" in _patched:
        return
    _patched.append("done")
    from _pytest import junitxml  # noqa: PLC0415 - pytest's own module, wrapped in place

    junitxml.LogXML = _guarded_junit(junitxml.LogXML)  # type: ignore[misc]
    with contextlib.suppress(ImportError):
        import allure_pytest.plugin as allure_plugin  # noqa: PLC0415

        allure_plugin.AllureFileLogger = _guarded_allure(allure_plugin.AllureFileLogger)


def _guarded_junit(base: Any) -> Any:
    class GuardedLogXML(base):  # type: ignore[misc]
        """pytest's JUnit writer, writing a temporary file and renaming it; an OSError is named, not raised."""

        def pytest_sessionfinish(self) -> None:
            real = Path(str(getattr(self, "logfile", "")))
            tmp = real.parent / f".{real.name}.{os.getpid()}.tmp"
            self.logfile = str(tmp)
            try:
                super().pytest_sessionfinish()
                os.replace(tmp, real)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                CURRENT.failed("junit", real, exc)
            finally:
                self.logfile = str(real)

    return GuardedLogXML


def _guarded_allure(base: Any) -> Any:
    from allure_commons import hookimpl  # noqa: PLC0415

    class GuardedFileLogger(base):  # type: ignore[misc]
        """allure-pytest's file writer: a folder it cannot create or a file it cannot write is named once, and
        its half-written temporary file removed; the other files are still tried."""

        def __init__(self, report_dir: Any, clean: bool = False) -> None:
            self._report_dir = Path(report_dir).absolute()
            try:
                super().__init__(report_dir, clean)
            except OSError as exc:
                CURRENT.failed("allure results", self._report_dir, exc)

        def _guarded(self, write: Any, *args: Any) -> None:
            try:
                write(*args)
            except OSError as exc:
                CURRENT.failed("allure results", self._report_dir, exc)
                with contextlib.suppress(OSError):
                    for leftover in self._report_dir.glob("*.tmp"):
                        leftover.unlink(missing_ok=True)

        def _report_item(self, item: Any) -> None:
            """One file per result, written once: annotated in memory (measurement, flaky, remediation by kind);
            fixture containers only when they show something (a failed set-up, steps, attachments), without
            pytest's own finalizers; then written and renamed into place."""
            from attr import asdict  # noqa: PLC0415 - allure-python-commons' own dependency

            data = asdict(item, filter=lambda _, v: v or v is False)
            final = self._report_dir / item.file_pattern.format(prefix=uuid.uuid4())
            if final.name.endswith("-result.json"):
                if WRITTEN.annotate is not None:
                    WRITTEN.annotate(data)
                if data.get("status") in ("failed", "broken"):
                    WRITTEN.failed[str(data.get("name"))] = str(data.get("uuid"))
                if any(label.get("name") == BLOCKED_BY for label in data.get("labels") or ()):
                    WRITTEN.blocked.append(final)
            elif final.name.endswith("-container.json"):
                prune_finalizers(data)
                if not worth_writing(data):
                    return
            _WRITER.put(lambda: self._guarded(_write_whole, final, json.dumps(data, ensure_ascii=False).encode()))

        @hookimpl
        def report_result(self, result: Any) -> None:
            self._guarded(super().report_result, result)

        @hookimpl
        def report_container(self, container: Any) -> None:
            self._guarded(super().report_container, container)

        @hookimpl
        def report_attached_file(self, source: Any, file_name: Any) -> None:
            self._guarded(super().report_attached_file, source, file_name)

        @hookimpl
        def report_attached_data(self, body: Any, file_name: Any) -> None:
            data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            _WRITER.put(lambda: self._guarded(_write_whole, self._report_dir / file_name, data))

        @hookimpl
        def report_globals(self, globals_item: Any) -> None:
            self._guarded(super().report_globals, globals_item)

    return GuardedFileLogger


def _write_whole(final: Path, data: bytes) -> None:
    """A temporary file renamed into place: a reader never sees half a file."""
    tmp = final.with_name(final.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, final)
