"""libpq's whole connection-string grammar, against a real primary and a real streaming standby.

Keyword DSNs and multi-host URIs go to libpq unchanged; each host gets its own connect
timeout; ``target_session_attrs`` picks the primary; a read-write request that the
monitoring role's read-only default refuses is explained, not reported as a dead server.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from acgs_checks import environment
from acgs_checks.probes import aio, postgres
from acgs_checks.sandbox.servers import PostgresServer
from conftest import RunSuite
from servers import RealServers

Pair = tuple[PostgresServer, str, Path, int]


def _database(dsn: str, tmp_path: Path, timeout: float = 1.0) -> environment.Database:
    env = environment.from_mapping(
        {"name": "ha", "databases": [{"name": "primary", "dsn": dsn, "timeout_seconds": timeout}]},
        source="test", environ={}, base_dir=tmp_path)
    return env.databases[0]


def _probe(target: environment.Database) -> postgres.PgSnapshot:
    return aio.run(lambda: postgres.probe_database(target))


def test_keyword_dsn_passes_the_daily_database_checks(
        run_suite: RunSuite, write_env: Callable[[str], Path], primary_and_standby: Pair) -> None:
    primary, _, _, _ = primary_and_standby
    keywords = (f"host=127.0.0.1 port={primary.port} dbname={primary.database} user=acgs_monitor "
                f"password='{primary.monitor_password}' connect_timeout=10")
    env_file = write_env('name = "keywords"\n[[databases]]\nname = "primary"\ndsn = "${DATABASE_DSN}"\n')
    run = run_suite("-m", "daily and database", "-k", "connectivity or long_running", "--env", str(env_file),
                    environ={"DATABASE_DSN": keywords})
    assert run.returncode == 0, run.output
    assert run.statuses() == {"test_database_connectivity[primary]": "passed",
                              "test_no_long_running_queries[primary]": "passed"}
    assert "password=***" in run.stdout or "password=***" in run.all_files_text()
    assert primary.monitor_password not in run.output + run.all_files_text()


def test_multi_host_uri_finds_the_primary_behind_a_standby(primary_and_standby: Pair, tmp_path: Path) -> None:
    primary, standby_dsn, _, standby_port = primary_and_standby
    user = urlsplit(primary.dsn)
    dsn = (f"postgresql://{user.username}:{user.password}@127.0.0.1:{standby_port},127.0.0.1:{primary.port}/"
           f"{primary.database}?target_session_attrs=primary")
    target = _database(dsn, tmp_path)
    assert target.hosts == 2
    seen = _probe(target)
    assert seen.answered, seen.error
    assert seen.server["in_recovery"] is False  # the standby came first and was passed over
    standby_only = _probe(_database(standby_dsn, tmp_path))
    assert standby_only.server["in_recovery"] is True


def test_each_host_gets_its_own_connect_timeout(primary_and_standby: Pair, servers: RealServers,
                                                tmp_path: Path) -> None:
    """A first host that never answers uses up its own bound, not the whole budget."""
    primary, _, _, _ = primary_and_standby
    user = urlsplit(primary.dsn)
    hung = servers.hang()
    target = _database(f"postgresql://{user.username}:{user.password}@127.0.0.1:{hung},127.0.0.1:{primary.port}/"
                       f"{primary.database}", tmp_path, timeout=1.0)
    assert postgres.connect_budget(target) == 4.0  # 2 hosts, libpq's 2 s floor each
    seen = _probe(target)
    assert seen.answered, seen.error
    assert seen.server["in_recovery"] is False


def test_read_write_with_a_read_only_monitoring_role_says_what_to_use(primary_and_standby: Pair,
                                                                        tmp_path: Path) -> None:
    primary, _, _, _ = primary_and_standby
    seen = _probe(_database(primary.dsn + "?target_session_attrs=read-write", tmp_path))
    assert not seen.answered
    assert not seen.denied
    assert "use target_session_attrs=primary" in seen.error
    assert _probe(_database(primary.dsn + "?target_session_attrs=primary", tmp_path)).answered
