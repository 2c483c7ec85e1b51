"""The jobs that run the suite on the runbook's schedule: GitHub Actions, Jenkins, Docker, Kubernetes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "runbook-checks.yml"
ACTIONLINT = shutil.which("actionlint")


@pytest.mark.skipif(ACTIONLINT is None, reason="actionlint is not installed (pip install -e '.[test]' brings it)")
def test_workflow_passes_actionlint(tmp_path: Path) -> None:
    assert ACTIONLINT is not None
    done = subprocess.run([ACTIONLINT, str(WORKFLOW)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # The linter does catch mistakes: the same file with an undefined context must fail.
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ matrix.environment }}", "${{ matrx.environment }}", 1))
    failed = subprocess.run([ACTIONLINT, str(broken)], capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode != 0


def _workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def test_workflow_schedule_gate_and_artifacts() -> None:
    data = _workflow()
    triggers = data[True]  # YAML 1.1 reads the key "on" as true
    assert triggers["schedule"] == [{"cron": "0 9 * * *"}]
    assert "workflow_dispatch" in triggers
    job = data["jobs"]["checks"]
    assert job["strategy"]["matrix"]["environment"] == ["staging", "production"]
    assert job["env"]["DATABASE_URL"] == "${{ secrets.DATABASE_URL }}"
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    command = steps["Run the runbook checks (gate at P1)"]["run"]
    assert '--review "$REVIEW"' in command
    assert "--fail-on P1" in command
    assert steps["Build the Allure report"]["run"] == "npm run report"
    assert steps["Build the Allure report"]["if"] == "always()"
    uploaded = steps["Upload results and report"]["with"]["path"]
    for path in ("reports/allure-results", "reports/allure-report", "reports/junit.xml"):
        assert path in uploaded


def test_jenkinsfile_has_the_same_schedule_steps_and_gate() -> None:
    text = (ROOT / "Jenkinsfile").read_text()
    assert re.search(r"cron\('TZ=UTC\\n0 9 \* \* \*'\)", text)
    assert "--fail-on P1" in text
    assert '--review "$REVIEW"' in text
    assert re.search(r"junit testResults: \"reports/\$\{ACGS_ENV\}/junit.xml\"", text)
    assert re.search(r"allure results: \[\[path: \"reports/\$\{ACGS_ENV\}/allure-results\"\]\]", text)
    assert "values 'staging', 'production'" in text
    assert text.count("{") == text.count("}")
    assert ".venv-$ACGS_ENV" in text  # cells share a workspace: a virtual environment each
    assert 'test -f "fixtures/environments/$ACGS_ENV.toml"' in text


def test_dockerfile_runs_pytest_as_a_non_root_user() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    instructions = [line.split()[0] for line in lines if line.split()[0].isupper()]
    assert instructions[0] == "FROM"
    assert lines[0].startswith("FROM python:3.11")
    assert 'ENTRYPOINT ["python", "-m", "pytest", "-p", "no:cacheprovider"]' in lines
    assert "USER 10001" in lines
    assert "ENV CI=true" in lines  # in a cluster the environment must be named, never the sandbox
    install = next(line for line in lines if "pip install" in line)
    # A production image: a plain (non-editable) install, without the sandbox's bundled servers.
    assert "pip install . " in install + " "
    assert "-e" not in install.split()
    assert "sandbox" not in install
    for needed in ("pyproject.toml", "src", "checks", "fixtures"):
        assert any(line.startswith("COPY") and needed in line for line in lines), needed


def test_kubernetes_cronjob_is_valid(tmp_path: Path) -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "cronjob.yaml").read_text()))
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"ConfigMap", "CronJob", "PersistentVolumeClaim"}
    cron = kinds["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert spec["schedule"] == "0 9 * * *"
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["args"][:4] == ["--review", "today", "--fail-on", "P1"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ACGS_ENV"]["value"] == "/etc/acgs/production.toml"
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"
    assert container["resources"]["limits"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/acgs", "/suite/reports"} <= mounts
    # reports/ (the history store) outlives the pod: a claim, never an emptyDir.
    reports = next(v for v in pod["volumes"] if v["name"] == "reports")
    assert reports["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    # The environment file the CronJob mounts is one the suite accepts.
    text = kinds["ConfigMap"]["data"]["production.toml"]
    from acgs_checks import environment  # noqa: PLC0415

    env_file = tmp_path / "cronjob-production.toml"
    env_file.write_text(text)
    loaded = environment.load(str(env_file), rootdir=ROOT,
                              environ={"DATABASE_URL": "postgresql://m@db/acgs", "REDIS_URL": "redis://c:6379/0"})
    assert [s.name for s in loaded.services] == ["auth", "constitutional-ai", "governance-synthesis",
                                                 "policy-governance"]
    assert loaded.slo.source == "prometheus"


def test_the_workflow_stops_in_one_line_when_an_environment_file_is_missing(tmp_path: Path) -> None:
    # The step's own shell, from the workflow file, run with the matrix value filled in.
    job = _workflow()["jobs"]["checks"]
    step = next(s for s in job["steps"] if s.get("name") == "Check that the environment file exists")
    script = step["run"].replace("${{ matrix.environment }}", "staging")
    env = {"PATH": os.environ["PATH"], "ACGS_ENV": "fixtures/environments/staging.toml"}
    missing = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                             check=False, timeout=30)
    assert missing.returncode == 4
    assert missing.stdout.count("\n") == 1, missing.stdout
    assert "fixtures/environments/staging.toml does not exist; fix: acgs-checks init --name staging" in missing.stdout
    (tmp_path / "fixtures" / "environments").mkdir(parents=True)
    (tmp_path / "fixtures" / "environments" / "staging.toml").write_text('name = "staging"\n')
    present = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                             check=False, timeout=30)
    assert present.returncode == 0, present.stdout
