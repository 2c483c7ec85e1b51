"""Rejected connections: a real Redis at maxclients refuses a client inside the measuring window."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from conftest import RunSuite
from servers import free_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[int]:
    if not Path(REDIS).exists():
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--maxclients", "3", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
            break
        except redis.RedisError:
            time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.early
def test_rejected_connections_in_the_window_fail(run_suite: RunSuite, small_redis: int,
                                                 write_env: Callable[[str], Path]) -> None:
    port = small_redis
    watcher = redis.Redis(port=port, socket_timeout=2)  # client 1 of 3

    def crowd() -> None:
        # Once the suite's connection (client 2) is in, take the last slot, then knock on the door.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(c.get("name") == "acgs-checks" for c in watcher.client_list()):
                break
            time.sleep(0.02)
        filler = redis.Redis(port=port, socket_timeout=2)
        filler.ping()  # client 3 of 3
        for _ in range(5):
            # "max number of clients reached": counted in rejected_connections.
            with contextlib.suppress(redis.RedisError):
                redis.Redis(port=port, socket_timeout=2).ping()
            time.sleep(0.05)
        time.sleep(2)
        filler.close()

    helper = threading.Thread(target=crowd, daemon=True)
    helper.start()
    env = write_env(f'name = "crowded"\n[defaults]\ncache_window_seconds = 1.5\n'
                    f'[[caches]]\nname = "main"\nurl = "redis://127.0.0.1:{port}/0"\n')
    run = run_suite("-m", "daily and cache", "-k", "rejected", "--env", str(env))
    helper.join(timeout=30)
    watcher.close()
    assert run.failed() == {"test_cache_rejected_connections[main]"}, run.output
    message = run.results()["test_cache_rejected_connections[main]"]["statusDetails"]["message"]
    assert re.search(r"main: [1-9]\d* connection\(s\) rejected in 1\.5\d* s \(\d+ since restart\) "
                     r"\(expected 0 rejected\)", message), message
