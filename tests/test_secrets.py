"""No password or token from an environment file appears in any output of a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from acgs_checks import redaction
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


def test_a_secret_cut_in_two_by_a_cap_leaves_no_start_behind() -> None:
    """Probes cut what a target sends before the environment's redaction sees it (they do not know the secrets):
    a password echoed across the cut leaves its start before the cut's mark, and that start is masked too."""
    secret = 'Ab3dE9"Zq8Wm2'
    redact = redaction.Redactor({secret})
    for offset in range(280, 300):
        text = redact(redaction.clip("x" * offset + secret + "y" * 50, 290))
        kept = 290 - offset  # how much of the secret stood before the cut
        assert not any(secret[:k] in text for k in range(redaction.MIN_SECRET_LENGTH, len(secret) + 1)), (kept, text)
        assert text.endswith("more characters)")
