"""What happens inside the sandbox's PostgreSQL and Redis: application traffic and the faults.

The sandbox acts as the application would, with its own superuser/admin access; the
checks only ever read, as the monitoring account.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from typing import Any

import psycopg
import redis

from acgs_checks.sandbox.faults import Fault
from acgs_checks.sandbox.servers import PostgresServer, RedisServer

# The value a faulted long query carries (self-tests look for it in every output).
SECRET_LITERAL = "acgs-sandbox-secret-literal-4242"  # noqa: S105 - a stand-in value, no credential

POLICY_KEYS = 2000
BLOB_KEYS = 500


class PostgresFaults:
    """Sessions that produce one database fault; they live until :meth:`stop`."""

    def __init__(self, server: PostgresServer, fault: Fault | None, *, settle_seconds: float) -> None:
        self.server = server
        self.fault = fault
        self.settle_seconds = settle_seconds
        self._stop = threading.Event()
        self._connections: list[psycopg.Connection[Any]] = []
        self._threads: list[threading.Thread] = []

    def _connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.server.superuser_conninfo, autocommit=autocommit,
                               application_name="acgs-sandbox-app")
        self._connections.append(conn)
        return conn

    def _background(self, target: Any) -> None:
        thread = threading.Thread(target=target, daemon=True, name="acgs-sandbox-db-fault")
        thread.start()
        self._threads.append(thread)

    def start(self) -> None:
        if self.fault is None or self.fault.name == "down":
            return
        started = time.monotonic()
        name = self.fault.name
        if name == "long-query":
            conn = self._connect()
            # With a literal that stands for an application's secret: reports must never show it.
            self._background(lambda: self._quietly(conn, f"SELECT pg_sleep(3600), '{SECRET_LITERAL}'"))
        elif name == "idle-in-transaction":
            self._connect(autocommit=False).execute("SELECT count(*) FROM acgs.users")
        elif name == "connections":
            self._fill_connections(self.fault.arg or 90.0)
        elif name == "blocked-lock":
            self._hold_lock()
        elif name == "slow-query":
            # Twelve calls of one statement at 600 ms each, side by side: its mean is 600 ms over 12 calls.
            sessions = [self._connect() for _ in range(12)]
            callers = [threading.Thread(target=self._quietly, args=(c, "SELECT pg_sleep(0.6)")) for c in sessions]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(timeout=30)
        if name != "connections":
            # Let the fault age past the sandbox's (lowered) threshold before checks look.
            time.sleep(max(0.0, self.settle_seconds - (time.monotonic() - started)))

    def _quietly(self, conn: psycopg.Connection[Any], sql: str) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.execute(sql)

    def _fill_connections(self, percent: float) -> None:
        probe = self._connect()
        row = probe.execute(
            "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true), '0')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int").fetchone()
        assert row is not None
        usable, current = row
        # The most sessions whose share does not exceed PERCENT (47 usable slots: 79 % gives 37 = 78.7 %,
        # 81 % gives 38 = 80.9 %). The checker's own session will count too: leave room for exactly one.
        wanted = math.floor(usable * percent / 100 + 1e-9) - current - 1
        for _ in range(max(0, wanted)):
            self._connect()

    def _hold_lock(self) -> None:
        holder = self._connect(autocommit=False)
        holder.execute("LOCK TABLE acgs.policies IN ACCESS EXCLUSIVE MODE")

        def keep_busy() -> None:
            # Short statements inside the open transaction: the lock stays held, yet the
            # holder is neither a long-running query nor idle in transaction for long.
            while not self._stop.is_set():
                try:
                    holder.execute("SELECT pg_sleep(0.05)")
                except psycopg.Error:
                    return

        self._background(keep_busy)
        waiter = self._connect()
        self._background(lambda: self._quietly(waiter, "SELECT count(*) FROM acgs.policies"))

    def stop(self) -> None:
        self._stop.set()
        for conn in self._connections:
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=1)
            with contextlib.suppress(Exception):
                conn.close()
        for thread in self._threads:
            thread.join(timeout=2)


class PoolSaturation:
    """``pgbouncer:saturated``: more clients than the pool has server connections, each in a transaction."""

    def __init__(self, dsn: str, pool_size: int) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        started = threading.Semaphore(0)

        def hold() -> None:
            try:
                conn = psycopg.connect(self.dsn, autocommit=False, connect_timeout=5)
            except psycopg.Error:
                started.release()
                return
            first = True
            while not self._stop.is_set():
                try:
                    if first:
                        started.release()
                        first = False
                    # Short statements in one open transaction keep the server connection assigned.
                    conn.execute("SELECT pg_sleep(0.1)")
                except psycopg.Error:
                    return

        for _ in range(self.pool_size + 2):
            thread = threading.Thread(target=hold, daemon=True, name="acgs-sandbox-pool-client")
            thread.start()
            self._threads.append(thread)
        for _ in self._threads:
            started.acquire(timeout=5)
        time.sleep(0.3)  # let the waiting clients queue up behind the busy pool

    def stop(self) -> None:
        # Clients stuck waiting in PgBouncer leave when PgBouncer stops; the others finish their statement.
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=0.3)


class RedisWorkload:
    """Application-like lookups against Redis, and the cache faults.

    Healthy traffic reads known policy keys with about 2 % misses. ``misses`` turns every
    lookup into a miss after a long healthy history, so only a windowed hit rate sees it.
    ``evictions`` waits for the checker's PING, then, in the middle of the checker's
    measuring window, briefly lowers maxmemory so that keys with a TTL are evicted
    (volatile-lru: the policy keys the traffic reads have none, so hits stay hits).
    """

    def __init__(self, server: RedisServer, fault: Fault | None, *, window_seconds: float) -> None:
        self.server = server
        self.fault = fault
        self.window_seconds = window_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client: redis.Redis | None = None

    def start(self) -> None:
        if self.fault is not None and self.fault.name == "down":
            return
        # Setup loads thousands of keys: generous on a machine that is busy with other work.
        client = redis.Redis.from_url(self.server.admin_url, socket_timeout=30)
        self.client = client
        pipe = client.pipeline(transaction=False)
        for i in range(POLICY_KEYS):
            pipe.set(f"acgs:policy:{i}", json.dumps({"id": i, "allow": i % 7 != 0, "version": 1 + i % 4}))
        for i in range(BLOB_KEYS):
            # Rendered pages with a TTL: the only keys a volatile-* policy may evict.
            pipe.set(f"acgs:blob:{i}", b"x" * 4096, ex=3600)
        pipe.execute()
        # A long healthy history: the cumulative hit rate stays high whatever happens next.
        for _ in range(10):
            pipe = client.pipeline(transaction=False)
            for i in range(2000):
                pipe.get(f"acgs:policy:{i % POLICY_KEYS}")
            pipe.execute()
        if self.fault is not None and self.fault.name == "memory":
            self._hold_memory_share(client, self.fault.arg or 90.0)
        if self.fault is not None and self.fault.name == "evictions":
            client.config_set("maxmemory-policy", "volatile-lru")
        self._thread = threading.Thread(target=self._run, daemon=True, name="acgs-sandbox-cache-traffic")
        self._thread.start()

    def _run(self) -> None:
        assert self.client is not None
        client = self.client
        misses = self.fault is not None and self.fault.name == "misses"
        evictions = self.fault is not None and self.fault.name == "evictions"
        memory = self.fault.arg if self.fault is not None and self.fault.name == "memory" else None
        pings = self._pings(client)
        tick = 0
        while not self._stop.wait(0.02):
            tick += 1
            try:
                if memory and tick % 5 == 0:
                    self._hold_memory_share(client, memory)
                pipe = client.pipeline(transaction=False)
                for i in range(10):
                    n = (tick * 10 + i) % POLICY_KEYS
                    missing = misses or (tick * 10 + i) % 50 == 0
                    pipe.get(f"acgs:missing:{n}" if missing else f"acgs:policy:{n}")
                pipe.execute()
                if evictions:
                    now_pings = self._pings(client)
                    if now_pings > pings:
                        pings = now_pings
                        self._stop.wait(self.window_seconds * 0.3)
                        self._evict(client)
            except redis.RedisError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)

    @staticmethod
    def _hold_memory_share(client: redis.Redis, percent: float) -> None:
        """maxmemory follows used_memory (every 100 ms), so used / maxmemory stays at PERCENT as traffic runs."""
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", int(used * 100 / percent))

    @staticmethod
    def _pings(client: redis.Redis) -> int:
        stats = client.info("commandstats")
        return int(stats.get("cmdstat_ping", {}).get("calls", 0))

    def _evict(self, client: redis.Redis) -> None:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", max(1_000_000, used - 200_000))
        try:
            for i in range(20):
                client.set(f"acgs:burst:{time.monotonic_ns()}:{i}", b"y" * 4096, ex=3600)
        finally:
            client.config_set("maxmemory", "256mb")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
