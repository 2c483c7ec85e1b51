"""The embedded stack: four ACGS-shaped services, PostgreSQL (+ PgBouncer) and Redis, on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from acgs_checks import environment, kinds
from acgs_checks.environment import Environment
from acgs_checks.sandbox.dialects import dialect_table
from acgs_checks.sandbox.faults import CACHE, DATABASE, POOLER, SERVICE_NAMES, Fault
from acgs_checks.sandbox.host import NAME as HOST_NAME
from acgs_checks.sandbox.host import SandboxHost
from acgs_checks.sandbox.servers import (
    PgBouncerServer,
    PostgresServer,
    RedisServer,
    SandboxError,
    free_port,
    pgbouncer_binary,
    reap_leftovers,
)
from acgs_checks.sandbox.services import (
    COMPLIANCE_PATH,
    POLICY_STATS_PATH,
    Business,
    SandboxService,
    background_traffic,
)
from acgs_checks.sandbox.weekly import SandboxWeekly, postgres_has_tls
from acgs_checks.scratch import postgres_bindir

if TYPE_CHECKING:
    from acgs_checks.sandbox.workload import PoolSaturation, PostgresFaults, RedisWorkload

TITLES = {
    "auth": "Auth Service",
    "constitutional-ai": "Constitutional AI Service",
    "policy-governance": "Policy Governance Service",
    "governance-synthesis": "Governance Synthesis Service",
}
TIMEOUT_SECONDS = 2.0
# The sandbox's traffic is steady, so a short window suffices and keeps runs quick.
CACHE_WINDOW_SECONDS = 0.5
# Faults that need time to age would otherwise take the runbook's 5 minutes to show;
# the sandbox lowers these thresholds to one second (and says so in its environment).
AGE_THRESHOLD_SECONDS = 1.0


class Sandbox:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager).

    The HTTP services start at once (milliseconds); PostgreSQL, PgBouncer and Redis start
    on :meth:`start_backends`, since only database, pooler and cache checks need them.
    Their ports are chosen up front, so the environment is complete before they run.
    """

    def __init__(self, faults: Sequence[Fault] = (), *, traffic_per_second: float = 10.0,
                 dialects: Mapping[str, str] | None = None) -> None:
        by_target = {f.target or f.name: f for f in faults}
        self.faults = tuple(faults)
        self.business = Business()
        if "compliance" in by_target and by_target["compliance"].arg is not None:
            self.business.compliance_score = by_target["compliance"].arg
        if "policy-success" in by_target and by_target["policy-success"].arg is not None:
            self.business.policy_success_rate = by_target["policy-success"].arg
        self.services = [SandboxService(n, TITLES[n], by_target.get(n), self.business, (dialects or {}).get(n, ""))
                         for n in SERVICE_NAMES]
        self.traffic_per_second = traffic_per_second
        self._traffic_stop: asyncio.Event | None = None
        self._traffic: asyncio.Future[None] | None = None
        self.postgres = PostgresServer(port=free_port())
        self.pgbouncer = PgBouncerServer(port=free_port(), postgres=self.postgres) if pgbouncer_binary() else None
        self.redis = RedisServer(port=free_port())
        self.host = SandboxHost(by_target)
        self.weekly = SandboxWeekly(by_target)
        self._db_fault = by_target.get(DATABASE)
        self._pool_fault = by_target.get(POOLER)
        self._cache_fault = by_target.get(CACHE)
        # Created with the backends: their client libraries are only imported when needed.
        self._db_faults: PostgresFaults | None = None
        self._pool_saturation: PoolSaturation | None = None
        self._cache_workload: RedisWorkload | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="acgs-sandbox", daemon=True)
        self._backends_lock = threading.Lock()
        self._backends_started = False
        self._stopped = False
        self._held: list[socket.socket] = []

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # Runs killed outright (SIGKILL, a lost machine) left servers and folders behind: stop them now.
        reap_leftovers()
        self.host.start()
        self.weekly.start(log_dir=self.host.workdir / "logs" if self.host.workdir is not None else None)
        with contextlib.suppress(SandboxError):  # no PostgreSQL at all: the backends say so when they start
            self.weekly.postgres_tls = postgres_has_tls(postgres_bindir())
        self.postgres.log_path = self.weekly.postgres_log
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start_services(), self._loop).result(timeout=30)

    async def _start_services(self) -> None:
        await asyncio.gather(*(s.start() for s in self.services), self.weekly.start_servers())
        if self.traffic_per_second > 0:
            self._traffic_stop = asyncio.Event()
            self._traffic = asyncio.ensure_future(
                background_traffic(self.services, per_second=self.traffic_per_second, stop=self._traffic_stop))

    def start_backends(self) -> None:
        """Start PostgreSQL (+ PgBouncer) and Redis side by side, with their faults; idempotent."""
        with self._backends_lock:
            if self._backends_started:
                return
            self._backends_started = True
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = [pool.submit(self._start_database), pool.submit(self._start_cache)]
                for future in futures:
                    try:
                        future.result()
                    except SandboxError:
                        raise
                    except Exception as exc:  # a setup step that failed is the machine's problem: exit 4
                        raise SandboxError(f"setting up the sandbox failed: {type(exc).__name__}: {exc}") from exc

    def _start_database(self) -> None:
        from acgs_checks.sandbox.workload import PoolSaturation, PostgresFaults  # noqa: PLC0415 - see __init__

        # db:down leaves the reserved port closed (connection refused); PgBouncer still runs.
        if self._db_fault is None or self._db_fault.name != "down":
            self.postgres.extra_options = self.weekly.postgres_options()
            self.postgres.start()
            self._weekly_database()
        else:
            self._hold(self.postgres.port)
        if self.pgbouncer is not None:
            self.pgbouncer.start()
            if self._pool_fault is not None:
                self._pool_saturation = PoolSaturation(self.pgbouncer.client_dsn, self.pgbouncer.pool_size)
                self._pool_saturation.start()
        self._db_faults = PostgresFaults(self.postgres, self._db_fault, settle_seconds=AGE_THRESHOLD_SECONDS + 0.3)
        self._db_faults.start()

    def _weekly_database(self) -> None:
        """Fresh data, a WAL segment archived, the night's backups, and (auth:failed-logins) failed logins."""
        import psycopg  # noqa: PLC0415 - see __init__

        with psycopg.connect(self.postgres.superuser_conninfo, autocommit=True) as conn:
            conn.execute("INSERT INTO acgs.policy_evaluations (policy_id, user_id, allowed, compliance_score, "
                         "latency_ms) VALUES (1, 1, true, 0.97, 5)")
            conn.execute("SELECT pg_switch_wal()")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = conn.execute("SELECT archived_count FROM pg_stat_archiver").fetchone()
                if row and row[0]:
                    break
                time.sleep(0.05)
        self.weekly.take_backups(self.postgres.dump)
        for _ in range(self.weekly.failed_logins):
            with contextlib.suppress(psycopg.Error):
                psycopg.connect(f"postgresql://acgs_app:wrong-password@127.0.0.1:{self.postgres.port}/"
                                f"{self.postgres.database}", connect_timeout=5, sslmode="disable").close()

    def _start_cache(self) -> None:
        from acgs_checks.sandbox.workload import RedisWorkload  # noqa: PLC0415 - see __init__

        if self._cache_fault is not None and self._cache_fault.name == "down":
            self._hold(self.redis.port)
            return
        self.redis.start()
        if self.weekly.failed_logins:
            # Plain RESP on one socket: N wrong passwords, N refusals (a client library would retry or say HELLO).
            with socket.create_connection(("127.0.0.1", self.redis.port), timeout=5) as raw:
                for _ in range(self.weekly.failed_logins):
                    raw.sendall(b"*3\r\n$4\r\nAUTH\r\n$8\r\nacgs_app\r\n$14\r\nwrong-password\r\n")
                    reply = b""
                    while not reply.endswith(b"\r\n"):
                        reply += raw.recv(256)
        self._cache_workload = RedisWorkload(self.redis, self._cache_fault, window_seconds=CACHE_WINDOW_SECONDS)
        self._cache_workload.start()

    def _hold(self, port: int) -> None:
        """Bind a down target's port without listening: connects are refused, and no other server can take it."""
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with contextlib.suppress(OSError):  # taken already: the check still sees no PostgreSQL or Redis there
            held.bind(("127.0.0.1", port))
        self._held.append(held)

    def stop(self) -> None:
        """Stop everything and remove every folder; safe to call twice (pytest_unconfigure, then atexit)."""
        with self._backends_lock:  # a backend start still under way finishes first, then stops
            if self._stopped:
                return
            self._stopped = True
        try:
            if self._thread.is_alive():
                stopping = asyncio.run_coroutine_threadsafe(
                    asyncio.wait_for(self._stop_services(), 10), self._loop)
                try:
                    stopping.result(timeout=15)
                finally:
                    self._loop.call_soon_threadsafe(self._loop.stop)
                    self._thread.join(timeout=5)
        finally:
            for part in (self._cache_workload, self._pool_saturation, self._db_faults):
                if part is not None:
                    part.stop()
            self.redis.stop()
            if self.pgbouncer is not None:
                self.pgbouncer.stop()
            self.postgres.stop()
            self.host.stop()
            self.weekly.stop()
            for held in self._held:
                held.close()

    async def _stop_services(self) -> None:
        if self._traffic_stop is not None and self._traffic is not None:
            self._traffic_stop.set()
            await asyncio.wait_for(self._traffic, 5)
        await asyncio.gather(*(s.stop() for s in self.services), self.weekly.stop_servers())

    def as_mapping(self) -> dict[str, Any]:
        return {
            "name": environment.SANDBOX,
            "description": "embedded sandbox" + (
                " with faults " + ", ".join(map(str, self.faults)) if self.faults else ""),
            "defaults": {"timeout_seconds": TIMEOUT_SECONDS, "cache_window_seconds": CACHE_WINDOW_SECONDS},
            # One round of concurrent samples: a run costs about the slowest request, not fifty of them.
            "slo": {"source": "synthetic", "samples": 50, "concurrency": 50, "max_seconds": 5.0,
                    "request_timeout_seconds": 15.0},
            "services": [
                {"name": s.name, "title": s.title, "url": f"http://127.0.0.1:{s.port}", "health_path": "/health",
                 "slo_path": s.slo_path, "prometheus_selector": f'instance="127.0.0.1:{s.port}"',
                 **({"metrics": dialect_table(s.name, s.dialect)} if dialect_table(s.name, s.dialect) else {})}
                for s in self.services
            ],
            "databases": [{"name": "primary", "title": "ACGS production database", "dsn": self.postgres.dsn,
                           # Binaries without OpenSSL (the pgserver wheel's) cannot run ssl = on: say so.
                           "tls_required": self.weekly.postgres_tls,
                           **({"log_host": HOST_NAME, "log_path": str(self.weekly.postgres_log)}
                              if self.host.workdir is not None else {})}],
            "poolers": ([{"name": "pgbouncer", "title": "PgBouncer", "dsn": self.pgbouncer.dsn}]
                        if self.pgbouncer is not None else []),
            "caches": [{"name": "main", "title": "Redis cache", "url": self.redis.url}],
            "business": {
                "compliance": {"url": f"{self._service_url('constitutional-ai')}{COMPLIANCE_PATH}",
                               "field": "compliance.score"},
                "policy_success": {"url": f"{self._service_url('policy-governance')}{POLICY_STATS_PATH}",
                                   "field": "evaluations.success_rate"},
            },
            "hosts": [self.host.entry()] if self.host.workdir is not None else [],
            **self.weekly.mapping(host=HOST_NAME if self.host.workdir is not None else None, database="primary",
                                  cache="main"),
            # The embedded sandbox runs no Prometheus (the self-tests start a real one beside it).
            "absent": {"prometheus": "the embedded sandbox runs no Prometheus; its SLO numbers are sampled"},
            "thresholds": {
                "long_query_seconds": AGE_THRESHOLD_SECONDS,
                "idle_in_transaction_seconds": AGE_THRESHOLD_SECONDS,
                "lock_wait_seconds": AGE_THRESHOLD_SECONDS,
                **self.host.thresholds(),
            },
        }

    def _service_url(self, name: str) -> str:
        return next(f"http://127.0.0.1:{s.port}" for s in self.services if s.name == name)

    def environment(self) -> Environment:
        kinds.discover()  # the probe kinds bring their sections ([[hosts]], [[backups]], ...)
        return environment.from_mapping(self.as_mapping(), source="sandbox", environ={})

    def to_toml(self) -> str:
        """The environment file this sandbox serves, for people who want to use it directly."""
        return render_toml(self.as_mapping())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for the environment shape (scalars, tables, arrays of tables)."""
    return "\n".join(_toml_lines(data, prefix="")) + "\n"


def _tables(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value))


def _toml_lines(data: dict[str, Any], *, prefix: str) -> list[str]:
    lines = [f"{k} = " + ("[" + ", ".join(map(_toml_value, v)) + "]" if isinstance(v, list) else _toml_value(v))
             for k, v in data.items() if not _tables(v)]
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines += ["", f"[{name}]", *_toml_lines(value, prefix=f"{name}.")]
        elif _tables(value):
            for table in value:
                lines += ["", f"[[{name}]]", *_toml_lines(table, prefix=f"{name}.")]
    return lines
