"""The embedded stack: four ACGS-shaped services, PostgreSQL and Redis, on free loopback ports."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from acgs_checks import environment
from acgs_checks.environment import Environment
from acgs_checks.sandbox.faults import SERVICE_NAMES, Fault
from acgs_checks.sandbox.servers import PostgresServer, RedisServer, free_port
from acgs_checks.sandbox.services import SandboxService

TITLES = {
    "auth": "Auth Service",
    "constitutional-ai": "Constitutional AI Service",
    "policy-governance": "Policy Governance Service",
    "governance-synthesis": "Governance Synthesis Service",
}
TIMEOUT_SECONDS = 2.0


class Sandbox:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager).

    The HTTP services start at once (milliseconds); PostgreSQL and Redis start on
    :meth:`start_backends`, since only database and cache checks need them.
    """

    def __init__(self, faults: Sequence[Fault] = ()) -> None:
        by_target = {f.target: f for f in faults}
        self.faults = tuple(faults)
        self.services = [SandboxService(n, TITLES[n], by_target.get(n)) for n in SERVICE_NAMES]
        self.postgres = PostgresServer(port=free_port())
        self.redis = RedisServer(port=free_port())
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="acgs-sandbox", daemon=True)
        self._backends_lock = threading.Lock()
        self._backends_started = False

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start_services(), self._loop).result(timeout=30)

    async def _start_services(self) -> None:
        await asyncio.gather(*(s.start() for s in self.services))

    def start_backends(self) -> None:
        """Start PostgreSQL and Redis side by side; idempotent and thread-safe."""
        with self._backends_lock:
            if self._backends_started:
                return
            self._backends_started = True
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = [pool.submit(self.postgres.start), pool.submit(self.redis.start)]
                for future in futures:
                    future.result()

    def stop(self) -> None:
        if self._thread.is_alive():
            stopping = asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(self._stop_services(), 10), self._loop)
            try:
                stopping.result(timeout=15)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=5)
        self.redis.stop()
        self.postgres.stop()

    async def _stop_services(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.services))

    def as_mapping(self) -> dict[str, Any]:
        return {
            "name": environment.SANDBOX,
            "description": "embedded sandbox" + (
                " with faults " + ", ".join(map(str, self.faults)) if self.faults else ""),
            "defaults": {"timeout_seconds": TIMEOUT_SECONDS},
            "services": [
                {"name": s.name, "title": s.title, "url": f"http://127.0.0.1:{s.port}",
                 "health_path": "/health"}
                for s in self.services
            ],
        }

    def environment(self) -> Environment:
        return environment.from_mapping(self.as_mapping(), source="sandbox", environ={})

    def to_toml(self) -> str:
        """The environment file this sandbox serves, for people who want to use it directly."""
        data = self.as_mapping()
        lines = [
            f'name = "{data["name"]}"',
            f'description = "{data["description"]}"',
            "",
            "[defaults]",
            f"timeout_seconds = {TIMEOUT_SECONDS}",
        ]
        for service in data["services"]:
            lines += ["", "[[services]]"] + [f'{k} = "{v}"' for k, v in service.items()]
        lines += [
            "",
            "# Backends (started with the sandbox; not yet checked by this version of the suite):",
            f"# PostgreSQL: {self.postgres.dsn}",
            f"# Redis:      {self.redis.url}",
        ]
        return "\n".join(lines) + "\n"
