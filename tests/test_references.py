"""Every shipped file's pointer into the documentation points at a page (and a section) that exists."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT

LINK = re.compile(r"(?<![\w/.])docs/([a-z0-9_/-]+\.md)(?:#([a-z0-9_-]+))?(?:,?\s*\"([^\"]+)\")?")


def _slug(heading: str) -> str:
    """The anchor MkDocs gives a heading (toc's default slugify)."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[\s]+", "-", text)


def _headings(page: str) -> dict[str, str]:
    """A page's sections: its headings, and the bold run-in titles that open a paragraph (**Where the line falls.**)."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    found = {_slug(line.lstrip("#").strip()): line for line in text.splitlines() if line.startswith("#")}
    found.update({_slug(title): title for title in re.findall(r"^\*\*([^*]+?)\.?\*\*", text, re.M)})
    return found


def test_every_pointer_into_the_docs_names_a_page_and_section_that_exist() -> None:
    shipped = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    problems = []
    for name in shipped:
        if name.startswith(("docs/", "tests/", "package-lock")) or not name.endswith(
                (".toml", ".py", ".yml", ".yaml", ".md", ".mjs", "Jenkinsfile", "Dockerfile", ".json")):
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        if "in the README" in text and name != "README.md":
            problems.append(f"{name}: points to 'the README', whose sections moved to docs/")
        for match in LINK.finditer(text):
            page, anchor, section = match.groups()
            if not (ROOT / "docs" / page).is_file():
                problems.append(f"{name}: docs/{page} does not exist")
                continue
            headings = _headings(page)
            if anchor and anchor not in headings:
                problems.append(f"{name}: docs/{page}#{anchor}: no such section")
            if section and _slug(section) not in headings:
                problems.append(f"{name}: docs/{page}, \"{section}\": no such section")
    assert problems == [], "\n".join(problems)
