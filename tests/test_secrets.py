"""No password or token from an environment file appears in any output of a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import RunSuite
from servers import RealServers

PASSWORD = "s3cr3t-Pa55word-xyz"
TOKEN = "tok-9f8e7d6c5b4a"


def test_no_secret_in_any_output(run_suite: RunSuite, servers: RealServers,
                                 write_env: Callable[[str], Path]) -> None:
    # The server echoes nothing secret by itself; make it fail so messages and evidence are written.
    port = servers.http(status=503, body=b'{"status": "fail", "detail": "dependency down"}').server_address[1]
    env_file = write_env(
        'name = "secretive"\n[[services]]\nname = "auth"\n'
        f'url = "http://monitor:${{ACGS_TEST_PW}}@127.0.0.1:{port}"\n'
        'headers = { Authorization = "Bearer ${ACGS_TEST_TOKEN}" }\n'
    )
    run = run_suite("-m", "daily", "-v", "--env", str(env_file),
                    environ={"ACGS_TEST_PW": PASSWORD, "ACGS_TEST_TOKEN": TOKEN})
    assert run.returncode == 1, run.output
    assert "monitor:***@127.0.0.1" in run.stdout
    everything = run.output + run.all_files_text()
    assert PASSWORD not in everything
    assert TOKEN not in everything
