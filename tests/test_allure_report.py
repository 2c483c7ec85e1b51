"""The Allure HTML report, generated with the Allure 3 CLI and opened in real headless Chromium."""

from __future__ import annotations

import functools
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, RunSuite

ALLURE = ROOT / "node_modules" / ".bin" / "allure"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(not ALLURE.exists(), reason="run `npm ci` for the Allure 3 CLI (.ci/run does)"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)"),
]


def render_dom(url: str, profile: Path) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    return done.stdout


def assert_html_report_shows(allure_dir: Path, work: Path, base_url_for: functools.partial[str], *,
                             failing: str, message: str) -> None:
    """Generate the HTML report from ``allure_dir`` and read the failed check's page in Chromium."""
    report = work / "report"
    # The suite's own configuration, run from a folder of the test's: its history file is written
    # there, never into the checkout.
    shutil.copy(ROOT / "allurerc.mjs", work / "allurerc.mjs")
    (work / "node_modules").symlink_to(ROOT / "node_modules")
    generated = subprocess.run([str(ALLURE), "generate", str(allure_dir), "--config", "allurerc.mjs",
                                "-o", str(report)], cwd=work, capture_output=True, text=True, timeout=180,
                               check=False)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (work / "reports" / "history.jsonl").read_text().strip()  # trends accumulate across runs

    by_id = json.loads((report / "test-results.json").read_text())["byId"]
    failed_id = next(k for k, v in by_id.items() if v["name"] == failing)
    assert by_id[failed_id]["status"] == "failed"
    assert [v["name"] for v in by_id.values() if v["status"] == "failed"] == [failing]
    dom = render_dom(f"{base_url_for(report)}/index.html#/{failed_id}", work / "chromium")
    page = re.sub(r"<script.*?</script>", "", dom, flags=re.S)  # what is rendered, not the embedded data
    assert failing in page
    assert re.search(message, html.unescape(page))
    description = re.search(r'<iframe[^>]*srcdoc="([^"]*)"', page)
    assert description is not None, "the description is not rendered"
    text = html.unescape(description.group(1))
    assert "docker-compose -f docker-compose.production.yml restart" in text
    assert "rolling_restart.sh" in text
    assert "respond within 15 minutes" in text


def test_failed_p0_check_is_readable_in_the_html_report(
        run_suite: RunSuite, tmp_path: Path, serve: functools.partial[str]) -> None:
    run = run_suite("-m", "daily and health", "--env", "sandbox", "--sandbox-fault", "auth:down")
    assert run.returncode == 1
    assert_html_report_shows(run.allure_dir, tmp_path, serve, failing="test_service_health[auth]",
                             message=r"auth: GET http://127\.0\.0\.1:\d+/health → connection refused")
