"""The environment model is the one schema: published as JSON Schema, and every shipped file conforms."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from acgs_checks import cli, environment
from acgs_checks.errors import ConfigError
from conftest import ROOT

SHIPPED = ROOT / "fixtures" / "environments"


def validator() -> jsonschema.Draft202012Validator:
    schema = cli.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def cronjob_environment() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "cronjob.yaml").read_text()))
    config = next(d for d in documents if d and d.get("kind") == "ConfigMap")
    return tomllib.loads(config["data"]["production.toml"])


def test_published_schema_is_current() -> None:
    """fixtures/environments/env.schema.json is what `acgs-checks schema` prints today."""
    printed = subprocess.run([sys.executable, "-m", "acgs_checks.cli", "schema"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    assert json.loads(printed) == json.loads((SHIPPED / "env.schema.json").read_text()), \
        "regenerate it: acgs-checks schema > fixtures/environments/env.schema.json"


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.glob("*.toml")))
def test_shipped_environment_files_conform(name: str) -> None:
    text = (SHIPPED / name).read_text()
    assert text.startswith("#:schema ./env.schema.json\n")  # editors (taplo, Even Better TOML) pick it up
    errors = sorted(validator().iter_errors(tomllib.loads(text)), key=str)
    assert errors == []


def test_cronjob_environment_conforms() -> None:
    assert sorted(validator().iter_errors(cronjob_environment()), key=str) == []


@pytest.mark.parametrize(("document", "where"), [
    ({"name": "x", "colour": "red"}, "colour"),
    ({"name": "x", "services": [{"name": "auth", "url": "http://h", "timout_seconds": 2}]}, "timout_seconds"),
    ({"name": "x", "thresholds": {"latency": 3}}, "latency"),
    ({"name": "x", "slo": {"source": "guess"}}, "guess"),
    ({"services": []}, "name"),
])
def test_schema_rejects_what_the_loader_rejects(document: dict[str, Any], where: str) -> None:
    """The editor's verdict and the run's agree: both refuse these, naming the same key."""
    errors = list(validator().iter_errors(document))
    assert errors
    assert any(where in str(e.message) or where in "/".join(map(str, e.path)) for e in errors)
    with pytest.raises(ConfigError) as caught:
        environment.from_mapping(document, source="doc.toml", environ={})
    assert where in str(caught.value)


def test_every_error_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text('name = "x"\ncolour = 1\n[defaults]\ntimeout_seconds = 0\n'
                    '[[services]]\nname = "auth"\nurl = "ftp://h"\n[[services]]\nname = "ai"\nurl = "${UNSET_X}"\n'
                    "[thresholds]\nlatency = 3\n")
    run = subprocess.run([sys.executable, "-m", "acgs_checks.cli", "validate", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 4
    lines = run.stderr.splitlines()
    keys = sorted(line.split(": ")[1] for line in lines)
    assert keys == sorted(["services[ai].url", "defaults.timeout_seconds", "services[auth].url", "colour",
                           "thresholds.latency"]), lines
    assert all(line.startswith(f"{path}: ") and "; fix: " in line for line in lines)
