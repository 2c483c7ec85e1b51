"""Friday's pgBackRest source against a real pgBackRest and PostgreSQL: a stanza, WAL pushed, one full backup.

Needs the ``pgbackrest`` binary (Debian package; .ci/run installs it); skips otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from acgs_checks.sandbox.servers import PostgresServer, free_port
from acgs_checks.scratch import unprivileged_user
from conftest import RunSuite

PGBACKREST = shutil.which("pgbackrest")
pytestmark = pytest.mark.skipif(PGBACKREST is None, reason="pgbackrest is not installed (.ci/run installs it)")


@pytest.fixture
def backed_up() -> Iterator[tuple[PostgresServer, Path]]:
    """A PostgreSQL whose WAL goes to a pgBackRest repository holding one full backup: (server, config)."""
    assert PGBACKREST is not None
    # As root, PostgreSQL and pgBackRest run as another account, which must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="acgs-test-pgbackrest-"))
    folder.chmod(0o755)
    account = unprivileged_user()
    for name in ("repo", "log", "lock"):
        (folder / name).mkdir()
    config = folder / "pgbackrest.conf"
    pg = PostgresServer(port=free_port())
    pg.extra_options = (f'-c archive_mode=on -c "archive_command={PGBACKREST} --config={config} --stanza=acgs '
                        'archive-push %p"')
    config.write_text(f"[global]\nrepo1-path={folder / 'repo'}\nlog-path={folder / 'log'}\n"
                      f"lock-path={folder / 'lock'}\nlog-level-console=warn\nstart-fast=y\n"
                      f"[acgs]\npg1-path=PGDATA\npg1-port={pg.port}\npg1-socket-path=PGSOCKET\npg1-user=postgres\n")
    if account is not None:
        for path in (folder, *folder.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)

    def as_postgres(*args: str) -> None:
        subprocess.run([PGBACKREST, f"--config={config}", "--stanza=acgs", *args], check=True, capture_output=True,
                       timeout=120, user=account.pw_uid if account else None,
                       group=account.pw_gid if account else None)

    try:
        pg.start()
        assert pg.workdir is not None
        config.write_text(config.read_text().replace("PGDATA", str(pg.workdir / "data"))
                          .replace("PGSOCKET", str(pg.workdir)))
        as_postgres("stanza-create")
        as_postgres("backup", "--type=full")
        yield pg, config
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_real_pgbackrest_stanza(run_suite: RunSuite, write_env: Callable[[str], Path],
                                  backed_up: tuple[PostgresServer, Path]) -> None:
    pg, config = backed_up
    env_file = write_env(
        'name = "pgbackrest"\n'
        f'[[databases]]\nname = "primary"\ndsn = "{pg.dsn}"\n'
        f'[[backups]]\nname = "repo1"\ndatabase = "primary"\npgbackrest_stanza = "acgs"\n'
        f'pgbackrest_config = "{config}"\n')
    run = run_suite("-m", "friday", "--env", str(env_file))
    statuses = run.statuses()
    # One full backup just taken, its WAL pushed by archive_command; a repository a minute old keeps
    # one backup, not 30 days of them; a pgBackRest restore drill is not automated, and says so.
    assert statuses == {"test_backup_completion[repo1]": "passed", "test_wal_archiving[repo1]": "passed",
                        "test_backup_retention[repo1]": "failed", "test_restore_drill[repo1]": "skipped"}, run.output
    results = run.results()
    completion = str(results["test_backup_completion[repo1]"]["statusDetails"]["message"])
    assert "newest of 1 backup(s) in pgbackrest stanza acgs: acgs/" in completion, completion
    assert "F, 0.0 h old" in completion  # the label of a full backup ends in F
    assert "pgbackrest reports the newest backup ok" in completion
    retention = str(results["test_backup_retention[repo1]"]["statusDetails"]["message"])
    assert "repo1: 1 backup(s), the oldest 0.0 h old" in retention, retention
    drill = str(results["test_restore_drill[repo1]"]["statusDetails"]["message"])
    assert "not applicable: repo1: restore drills of pgbackrest backups are not automated" in drill
