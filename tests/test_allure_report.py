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


def generate(results: Path, report: Path, history: Path, *, single_file: bool = False, url: str = "") -> str:
    """``npm run report`` with the test's own folders (history and report never land in the checkout)."""
    done = subprocess.run(["node", str(ROOT / "scripts" / "report.mjs"), "--results", str(results), "--output",
                           str(report), "--history", str(history), *(["--single-file"] if single_file else []),
                           *(["--url", url] if url else [])],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def assert_html_report_shows(allure_dir: Path, work: Path, base_url_for: functools.partial[str], *,
                             failing: str, message: str) -> None:
    """Generate the HTML report from ``allure_dir`` and read the failed check's page in Chromium."""
    report = work / "report"
    generate(allure_dir, report, work / "history.jsonl")
    assert (work / "history.jsonl").read_text().strip()  # trends accumulate across runs

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


def _categories(report: Path) -> dict[str, set[str]]:
    """Each category of the generated report with the cases in it."""
    data = json.loads((report / "widgets" / "categories.json").read_text())
    nodes = data["nodes"]

    def cases(node_id: str) -> set[str]:
        node = nodes[node_id]
        if node["type"] in ("tr", "history"):  # with environments, a case's node is "history", its runs below
            return {node["name"]}
        return set().union(*(cases(child) for child in node.get("childrenIds", [])))

    return {nodes[root]["name"]: cases(root) for root in data["roots"]}


def test_blocked_and_not_applicable_skips_are_told_apart(run_suite: RunSuite, tmp_path: Path) -> None:
    down = run_suite("-m", "daily and database", "--env", "sandbox", "--sandbox-fault", "db:down")
    generate(down.allure_dir, tmp_path / "down", tmp_path / "history.jsonl")
    blocked = _categories(tmp_path / "down")["Blocked by a failed check"]
    assert "test_no_long_running_queries[primary]" in blocked
    healthy = run_suite("-m", "daily and database", "--env", "sandbox")
    generate(healthy.allure_dir, tmp_path / "healthy", tmp_path / "history.jsonl")
    categories = _categories(tmp_path / "healthy")
    assert categories["Not applicable"] == {"test_replication_lag[primary]"}  # a primary without replicas
    assert "Blocked by a failed check" not in categories


def visible_text(dom: str) -> str:
    """What a reader sees: the rendered DOM without scripts, styles and tags."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\\1>", "", dom,
                                                                flags=re.S))).split())


@pytest.mark.early
def test_daily_reports_never_go_stale_and_the_first_screen_shows_what_fails_since_when(
        run_suite: RunSuite, tmp_path: Path, serve: functools.partial[str]) -> None:
    """Three mornings into the same results and report folders, as a team runs it every day: healthy,
    then the auth service and the database down twice. Then the report as on-call opens it."""
    results, report, history = tmp_path / "results", tmp_path / "report", tmp_path / "history.jsonl"
    base = serve(report)
    for faults in ((), ("auth:down", "db:down"), ("auth:down", "db:down")):
        shutil.rmtree(results, ignore_errors=True)
        run = run_suite("-m", "daily and (health or database)", "--env", "sandbox",
                        *[a for f in faults for a in ("--sandbox-fault", f)], f"--alluredir={results}",
                        alluredir=False)
        assert run.returncode == (1 if faults else 0), run.output
        said = generate(results, report, history, url=f"{base}/")
        assert "history appended" in said
    assert "ACGS-2 runbook checks · sandbox · P0 failing" in said
    # The single-file variant of the same run, and generating again: rebuilt, the trend counts the run once.
    assert "history unchanged" in generate(results, report, history, single_file=True, url=f"{base}/")
    assert "history unchanged" in generate(results, report, history, url=f"{base}/")
    assert len(history.read_text().splitlines()) == 3
    assert not [p.name for p in tmp_path.iterdir() if ".new-" in p.name or ".old-" in p.name]
    assert not (report / "awesome").exists()  # no report nested under an older one

    shot = tmp_path / "first-screen.png"
    assert CHROMIUM is not None
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'shot-profile'}", "--window-size=1400,1400",
                    "--virtual-time-budget=10000", f"--screenshot={shot}", f"{base}/index.html"],
                   capture_output=True, timeout=120, check=False)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the first screen, kept with the test's files

    page = visible_text(render_dom(f"{base}/index.html", tmp_path / "chromium"))
    # The root page is the last run: its faults in the metadata, its two failures counted.
    assert "sandbox.faults auth:down, db:down" in page, page[:3000]
    assert re.search(r"Failed 2 Passed \d+ Skipped \d+", page), page[:3000]
    # The title names the environment and the worst failing level; the tree opens on the levels, P0 first.
    assert "ACGS-2 runbook checks · sandbox · P0 failing" in page, page[:3000]
    levels = [page.find(level) for level in ("P0 critical · respond within 15 minutes",
                                             "P1 high · respond within 1 hour", "P2 medium · respond within 4 hours")]
    assert -1 not in levels, page[:3000]
    assert levels == sorted(levels), page[:3000]
    # Each failure with its message and since when (the first run of this failing streak, from the history).
    assert re.search(r"failing since \d{4}-\d\d-\d\d \d\d:\d\d UTC \(2 runs in a row\): auth: GET "
                     r"http://127\.0\.0\.1:\d+/health → connection refused", page), page[:3000]
    assert re.search(r"failing since \d{4}-\d\d-\d\d \d\d:\d\d UTC \(2 runs in a row\): primary: connect", page), \
        re.findall(r"failing since .{200}", page)
    assert 'Environment: "sandbox"' in page  # the environment is an Allure environment, not "default"
    assert "critical alert" not in page.replace("P0 critical", "")  # "critical" is P0's word only

    # A blocked case links, clickably (an absolute http link), to the failed case that blocks it.
    by_id = json.loads((report / "test-results.json").read_text())["byId"]
    blocked_id = next(k for k, v in by_id.items() if v["name"] == "test_no_long_running_queries[primary]")
    dom = render_dom(f"{base}/index.html#/{blocked_id}", tmp_path / "chromium")
    link = re.search(r'<a href="(http[^"]+)"[^>]*>blocked by test_database_connectivity\[primary\]', dom)
    assert link is not None, visible_text(dom)[:3000]
    failed = visible_text(render_dom(html.unescape(link.group(1)), tmp_path / "chromium"))
    assert "test_database_connectivity[primary]" in failed
    assert "connection failed" in failed

    # A passing case shows what it measured against its threshold.
    passed_id = next(k for k, v in by_id.items() if v["name"] == "test_service_health[policy-governance]")
    passed = visible_text(render_dom(f"{base}/index.html#/{passed_id}", tmp_path / "chromium"))
    assert re.search(r"measured .*policy-governance: GET http://127\.0\.0\.1:\d+/health → 200 in \d\.\d+ s "
                     r"\(expected status < 400\)", passed), passed[:3000]


# A same-origin page that holds the report in a frame of a screen's size and says what lies inside that first screen
# (headless Chromium's --dump-dom returns it); then it opens a blocked case and clicks its "blocked by" link.
FIRST_SCREEN = """<!doctype html><body style="margin:0"><iframe id="r" src="report/index.html"
style="width:%(w)dpx;height:%(h)dpx;border:0"></iframe><script>
var r = document.getElementById("r"), out = {};
function done() { document.body.setAttribute("data-result", JSON.stringify(out)); }
r.onload = function () { setTimeout(function () {
  var d = r.contentDocument, p = d.getElementById("acgs-first-screen");
  out.items = p ? Array.prototype.map.call(p.querySelectorAll("h1, .acgs-counts, li"), function (e) {
    var b = e.getBoundingClientRect(); return {text: e.innerText, top: b.top, bottom: b.bottom}; }) : [];
  out.height = r.contentWindow.innerHeight;
  var titles = d.querySelectorAll('[data-testid="tree-section-title"]');
  out.titles = titles.length;
  out.cut = Array.prototype.filter.call(titles, function (t) { return t.scrollWidth > t.clientWidth + 1; }).length;
  r.contentWindow.location.hash = "#/%(blocked)s";
  setTimeout(function () {
    var a = Array.prototype.find.call(r.contentDocument.querySelectorAll("a"), function (x) {
      return x.textContent.indexOf("blocked by") === 0; });
    out.link = a ? a.href : null;
    if (a) a.click();
    setTimeout(function () { out.after = r.contentWindow.location.href; done(); }, 1500);
  }, 3000); }, 1500); };
</script></body>"""


def _first_screen(base: str, folder: Path, blocked: str, width: int, height: int, profile: Path) -> dict[str, object]:
    page = folder / f"screen-{width}.html"
    page.write_text(FIRST_SCREEN % {"w": width, "h": height, "blocked": blocked})
    dom = render_dom(f"{base}/{page.name}", profile)
    found = re.search(r'data-result="([^"]*)"', dom)
    assert found is not None, dom[-2000:]
    return dict(json.loads(html.unescape(found.group(1))))


def test_the_first_screen_shows_the_verdict_whole_newest_outage_first_on_a_laptop_too(
        run_suite: RunSuite, tmp_path: Path, serve: functools.partial[str]) -> None:
    """The database has been down since yesterday's run; this morning the auth service went down too and the cache
    stopped hitting. The report's first screen, at 1400x1000 and at a laptop's 1280x800, says so without a click."""
    served = tmp_path / "served"
    served.mkdir()
    results, report, history = tmp_path / "results", served / "report", tmp_path / "history.jsonl"
    base = serve(served)
    summary = tmp_path / "summary.json"
    for faults in (("db:down",), ("db:down", "auth:down", "cache:misses")):
        shutil.rmtree(results, ignore_errors=True)
        run = run_suite("-m", "daily and (health or database or cache)", "--env", "sandbox",
                        *[a for f in faults for a in ("--sandbox-fault", f)], f"--alluredir={results}",
                        f"--summary-json={summary}", alluredir=False)
        assert run.returncode == 1, run.output
        generate(results, report, history)  # no --url: blocked links name the default, http://localhost:8080/
    checks = {c["name"]: c for c in json.loads(summary.read_text())["checks"]}
    urgent = ["test_service_health[auth]", "test_database_connectivity[primary]", "test_cache_hit_rate[main]"]
    assert [checks[n]["severity"] for n in urgent] == ["P0", "P0", "P1"]
    by_id = json.loads((report / "test-results.json").read_text())["byId"]
    ids = {v["name"]: k for k, v in by_id.items()}
    blocked = ids["test_no_long_running_queries[primary]"]
    for width, height in ((1400, 1000), (1280, 800)):
        seen = _first_screen(base, served, blocked, width, height, tmp_path / f"chromium-{width}")
        items = seen["items"]
        assert isinstance(items, list)
        texts = [str(i["text"]) for i in items]
        inside = [t for t, i in zip(texts, items, strict=True) if float(i["bottom"]) <= float(str(seen["height"]))]
        assert inside == texts, (width, texts, items)  # the whole verdict lies within the first screen
        assert texts[0] == "ACGS-2 runbook checks · sandbox · P0 failing"
        assert texts[1].startswith("3 failed, ")
        assert "P0: 2 failed" in texts[1]
        assert "P1: 1 failed" in texts[1]
        # P0 before P1; within P0 the newest outage (auth, this run) above the older one (the database, 2 runs).
        assert [t.split(" failing since")[0] for t in texts[2:]] == [f"{level} {name}" for level, name in
                                                                     zip(("P0", "P0", "P1"), urgent, strict=True)]
        assert "failing since this run" in texts[2]
        assert "(2 runs in a row)" in texts[3]
        for text, name in zip(texts[2:], urgent, strict=True):
            assert checks[name]["message"] in text, (checks[name]["message"], text)  # the whole message
            assert "First step: " in text
        assert "First step: Restart the failing service gracefully" in texts[2]
        # Allure's tree shows each failure's group title whole (its message), wrapped rather than cut.
        assert int(str(seen["titles"])) >= 3
        assert seen["cut"] == 0, seen
        # The blocked case's link, written for http://localhost:8080/, stays in the report where it is served.
        assert str(seen["link"]).startswith("http://localhost:8080/index.html#/")
        assert seen["after"] == f"{base}/report/index.html#/{ids['test_database_connectivity[primary]']}", seen

    # From file://, the multi-file report cannot load Allure's data: the first screen says what to do instead.
    from_file = render_dom((report / "index.html").as_uri(), tmp_path / "chromium-file")
    assert re.search(r'<p id="acgs-file-note">Opened from file://', from_file), from_file[:2000]
    assert "test_service_health[auth]" in visible_text(from_file)
    generate(results, report, history, single_file=True)
    single = render_dom((report / "index.html").as_uri(), tmp_path / "chromium-single")
    assert re.search(r'<p id="acgs-file-note" hidden', single)
    assert "ACGS-2 runbook checks · sandbox · P0 failing" in visible_text(single)
