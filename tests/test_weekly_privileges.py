"""The weekly reviews with the narrowest accounts: what each needs, and the grant a narrower one is told to add.

Real PostgreSQL and Redis servers (the sandbox's own classes, started alone): a role with
pg_monitor only cannot read pg_hba_file_rules; a Redis user with +ping +info only cannot read
ACL LOG; a database without pg_stat_statements has no slow-query data. Each fails at its
own severity with ``insufficient privilege:`` or ``no data:`` and the fix, never passes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from acgs_checks.sandbox.servers import PostgresServer, RedisServer
from conftest import Run, RunSuite


def _message(run: Run, name: str) -> str:
    return str(run.results()[name]["statusDetails"]["message"]).removeprefix("Failed: ")


def test_narrow_accounts_are_told_the_grant(run_suite: RunSuite, write_env: Callable[[str], Path],
                                           narrow: tuple[PostgresServer, RedisServer, str]) -> None:
    pg, cache, password = narrow
    env_file = write_env(
        'name = "narrow"\n'
        f'[[databases]]\nname = "primary"\ndsn = "postgresql://narrow:${{PW}}@127.0.0.1:{pg.port}/plain"\n'
        f'[[caches]]\nname = "main"\nurl = "redis://narrow:${{PW}}@127.0.0.1:{cache.port}/0"\n'
        '[[security.failed_logins]]\nname = "redis-acl"\ncache = "main"\n')
    run = run_suite("-m", "monday or wednesday", "-k", "trust or failed_logins or slow_queries",
                    "--env", str(env_file), environ={"PW": password})
    assert run.returncode == 1, run.output
    assert run.statuses() == {"test_postgres_no_remote_trust[primary]": "failed",
                              "test_failed_logins[redis-acl]": "failed", "test_slow_queries[primary]": "failed"}
    hba = _message(run, "test_postgres_no_remote_trust[primary]")
    assert hba.startswith("insufficient privilege: primary: pg_hba_file_rules: permission denied"), hba
    assert "GRANT SELECT ON pg_hba_file_rules TO <role>; GRANT EXECUTE ON FUNCTION pg_hba_file_rules()" in hba
    acl = _message(run, "test_failed_logins[redis-acl]")
    assert acl.startswith("insufficient privilege: redis-acl: ACL LOG of redis://narrow:***@"), acl
    assert "fix: ACL SETUSER <user> +acl|log (on main)" in acl
    assert password not in run.output + run.all_files_text()
    slow = _message(run, "test_slow_queries[primary]")
    assert slow.startswith("no data: primary: pg_stat_statements is not installed in this database; fix: "), slow
    assert "P2" in run.stdout
    # Grants are learned in one pass, not one failed check at a time: the terminal says how.
    assert "next: acgs-checks doctor --env " in run.stdout


def test_the_sandbox_grants_are_enough(run_suite: RunSuite, write_env: Callable[[str], Path],
                                       narrow: tuple[PostgresServer, RedisServer, str]) -> None:
    pg, cache, _password = narrow
    # The sandbox's monitoring accounts hold exactly the README's grants: pg_monitor plus the two
    # pg_hba_file_rules grants; +ping +info +acl|log.
    env_file = write_env(
        'name = "granted"\n'
        f'[[databases]]\nname = "primary"\ndsn = "{pg.dsn}"\n'
        f'[[caches]]\nname = "main"\nurl = "{cache.url}"\n'
        '[[security.failed_logins]]\nname = "redis-acl"\ncache = "main"\n')
    run = run_suite("-m", "monday", "-k", "trust or failed_logins or anonymous", "--env", str(env_file))
    assert run.returncode == 0, run.output
    assert run.statuses() == {"test_postgres_no_remote_trust[primary]": "passed",
                              "test_failed_logins[redis-acl]": "passed",
                              "test_redis_refuses_anonymous[main]": "passed"}
