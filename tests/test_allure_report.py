"""The Allure HTML report, generated with the Allure 3 CLI and opened in real headless Chromium."""

from __future__ import annotations

import functools
import html
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, RunSuite

ALLURE = ROOT / "node_modules" / ".bin" / "allure"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(not ALLURE.exists(), reason="run `npm ci` for the Allure 3 CLI (.ci/run does)"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)"),
]


@pytest.fixture
def serve() -> Iterator[functools.partial[str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None  # type: ignore[method-assign]
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield functools.partial(start)
    for server in servers:
        server.shutdown()
        server.server_close()


def render_dom(url: str, profile: Path) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    return done.stdout


def test_failed_p0_check_is_readable_in_the_html_report(
        run_suite: RunSuite, tmp_path: Path, serve: functools.partial[str]) -> None:
    run = run_suite("-m", "daily and health", "--env", "sandbox", "--sandbox-fault", "auth:down")
    assert run.returncode == 1
    report = tmp_path / "report"
    generated = subprocess.run([str(ALLURE), "generate", str(run.allure_dir), "--config", "allurerc.mjs",
                                "-o", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=180,
                               check=False)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (ROOT / "reports" / "history.jsonl").read_text().strip()  # trends accumulate across runs

    by_id = json.loads((report / "test-results.json").read_text())["byId"]
    failed_id = next(k for k, v in by_id.items() if v["name"] == "test_service_health[auth]")
    assert by_id[failed_id]["status"] == "failed"
    dom = render_dom(f"{serve(report)}/index.html#/{failed_id}", tmp_path / "chromium")
    page = re.sub(r"<script.*?</script>", "", dom, flags=re.S)  # what is rendered, not the embedded data
    assert "test_service_health[auth]" in page
    assert re.search(r"auth: GET http://127\.0\.0\.1:\d+/health → connection refused", html.unescape(page))
    description = re.search(r'<iframe[^>]*srcdoc="([^"]*)"', page)
    assert description is not None, "the description is not rendered"
    text = html.unescape(description.group(1))
    assert "docker-compose -f docker-compose.production.yml restart" in text
    assert "rolling_restart.sh" in text
    assert "respond within 15 minutes" in text
