"""The documentation site says what the code does: generated pages are current, every check is in the catalog,
every TOML example validates against the published schema, every command shown answers --help, and the built site
has no broken internal link.
"""

from __future__ import annotations

import datetime
import html.parser
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jsonschema
import pages
import pytest

from acgs_checks import kinds
from acgs_checks.cli import schema
from conftest import ROOT

DOCS = ROOT / "docs"
TEXTS = [*sorted(DOCS.glob("**/*.md")), ROOT / "README.md"]


def _blocks(language: str) -> list[tuple[Path, str]]:
    return [(path, m.group(1)) for path in TEXTS
            for m in re.finditer(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), re.S)]


def test_the_generated_pages_are_current() -> None:
    for name, text in pages.generate().items():
        assert (DOCS / name).read_text(encoding="utf-8") == text, f"docs/{name} is stale: python tests/pages.py --write"


def test_every_check_is_in_the_catalog_once_with_what_it_needs() -> None:
    catalog = (DOCS / "checks.md").read_text(encoding="utf-8")
    checks = [m.group(1) for path in sorted((ROOT / "checks").glob("test_*.py"))
              for m in re.finditer(r"^def (test_\w+)\(", path.read_text(encoding="utf-8"), re.M)]
    assert len(checks) > 60
    for check in checks:
        assert len(re.findall(rf"^### `{check}[`\[]", catalog, re.M)) == 1, check
    assert catalog.count("| minimum access | ") == len(checks)
    assert catalog.count("| proven failing by | ") == len(checks)
    # A grant a check declares beyond its kind's, and a fault a self-test runs, both reach the page.
    trust = catalog.split("### `test_postgres_no_remote_trust", 1)[1].split("### ", 1)[0]
    assert "GRANT SELECT ON pg_hba_file_rules TO acgs_monitor" in trust
    assert "IN ROLE pg_monitor" in trust
    health = catalog.split("### `test_service_health[", 1)[1].split("### ", 1)[0]
    assert "`--sandbox-fault auth:down`" in health
    assert "| level, day, area | P0 · daily · health |" in health


def test_the_configuration_reference_has_every_key() -> None:
    reference = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    document = schema()
    for section in document["properties"]:
        assert f"`{section}`" in reference or f"[{section}]" in reference, section
    definitions = document["$defs"]
    for name, definition in definitions.items():
        for key in definition.get("properties", {}):
            assert f"| `{key}` |" in reference, (name, key)


def _plain(value: Any) -> Any:
    """TOML dates as the strings an editor's JSON Schema validation sees."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return value


def test_every_toml_example_validates_against_the_schema() -> None:
    kinds.discover()
    published = schema()
    examples = _blocks("toml")
    assert len(examples) >= 10
    for path, block in examples:
        document = _plain(tomllib.loads(block))
        document.setdefault("name", "example")  # a fragment of a file: the rest of it is elsewhere
        try:
            jsonschema.validate(document, published)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}: {exc.message} at {list(exc.path)}:\n{block}")


_COMMAND = re.compile(r"^\s*(?:\$ )?((?:acgs-checks|acgs-sandbox)(?: [a-z-]+)?|node scripts/\w+\.mjs|"
                      r"python (?:bench|tests)/\w+\.py)\b")


def _commands() -> set[str]:
    found = set()
    for _path, block in _blocks("bash"):
        for line in block.splitlines():
            match = _COMMAND.match(line)
            if match:
                words = match.group(1).split()
                # acgs-checks SUBCOMMAND; acgs-sandbox takes options only
                found.add(" ".join(words[:2] if words[0] == "acgs-checks" else words[:1] if words[0] ==
                                   "acgs-sandbox" else words))
    return found


def test_every_command_shown_answers_help() -> None:
    commands = _commands()
    assert {"acgs-checks init", "acgs-checks doctor", "acgs-sandbox"} <= commands, commands
    bin_dir = Path(sys.executable).parent
    for command in sorted(commands):
        words = shlex.split(command)
        if words[0] in ("acgs-checks", "acgs-sandbox"):
            words[0] = str(bin_dir / words[0])
        elif words[0] == "python":
            words[0] = sys.executable
        elif words[0] == "node" and shutil.which("node") is None:
            continue
        done = subprocess.run([*words, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, (command, done.stderr[-500:])
        assert "usage" in done.stdout.lower(), (command, done.stdout[:300])


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if tag == "a" and values.get("href"):
            self.links.append(str(values["href"]))


def test_the_site_builds_strictly_and_no_internal_link_is_broken(tmp_path: Path) -> None:
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("needs mkdocs (the [test] extra installs it)")
    site = tmp_path / "site"
    done = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    parsed: dict[Path, _Links] = {}
    for page in site.rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        parsed[page.resolve()] = parser
    assert len(parsed) >= 14
    broken = []
    for page, parser in parsed.items():
        if page.name == "404.html":  # served at any depth: its links are site-absolute by design
            continue
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else set()
                if parts.fragment not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert broken == [], broken


def test_the_readme_stays_short_and_points_at_the_site() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    for command in ("acgs-checks init", "acgs-checks doctor --env", "pytest -m daily --env"):
        assert command in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
