// Generate the Allure 3 report so that it can never go stale, and append history once per run.
//
//   node scripts/report.mjs [--single-file] [--results DIR] [--output DIR] [--history FILE] [--url URL]
//   (npm run report, npm run report:single-file)
//
// * The report is built in a fresh folder beside the output and swapped in whole: the output's
//   root index.html is always the run just generated (Allure writes into a subfolder of a folder
//   that is not empty, which left an old report at the root).
// * History: the results folder's runs are told apart by the names of their result files (each
//   run writes new uuids). The first generation for a run appends to the history file; any later
//   one for the same run (the single-file variant, a regeneration) reads a copy, so the trend
//   shows each run once.
// * The first screen: Allure reads a staged copy of the results in which each case carries a
//   "state" label (passing; failing since <the first failing run of the current streak, from the
//   history>: <message>; skipped: blocked by <case> / not applicable / waived / in maintenance /
//   warming up: <when the first verdict is expected>).
//   The tree groups by level (P0..P3) and state, the title names the environment and the worst
//   failing level, and each environment is an Allure environment.
// * Blocked cases link to the failed case at --url (default $ACGS_REPORT_URL, else
//   http://localhost:8080/, where `npm run report:open` serves it): Allure 3 only makes absolute
//   http(s) links clickable.
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
if (args.includes("--help") || args.includes("-h")) {
  console.log(`usage: node scripts/report.mjs [--single-file] [--results DIR] [--output DIR] [--history FILE] [--url URL]
  (npm run report, npm run report:single-file)

Generate the Allure 3 HTML report of one run of acgs-checks.
  --results DIR   the Allure results pytest wrote (default reports/allure-results)
  --output DIR    where the report goes, swapped in whole (default reports/allure-report)
  --history FILE  the report history; each run is appended once (default reports/history.jsonl)
  --url URL       where the report will be served, for clickable blocked links
                  (default $ACGS_REPORT_URL, else http://localhost:8080/, what npm run report:open serves)
  --single-file   one self-contained index.html`);
  process.exit(0);
}
const option = (name, fallback) => {
  const index = args.indexOf(name);
  return index >= 0 && index + 1 < args.length ? resolve(args[index + 1]) : fallback;
};
const singleFile = args.includes("--single-file");
const results = option("--results", resolve("reports/allure-results"));
const output = option("--output", resolve("reports/allure-report"));
const history = option("--history", resolve("reports/history.jsonl"));
const urlIndex = args.indexOf("--url");
const reportUrl = (urlIndex >= 0 && urlIndex + 1 < args.length ? args[urlIndex + 1] : null)
  || process.env.ACGS_REPORT_URL || "http://localhost:8080/";

if (!existsSync(results) || !readdirSync(results).some((name) => name.endsWith("-result.json"))) {
  console.error(`report: ${results}: no Allure results; fix: run pytest first (it writes them there)`);
  process.exit(4);
}

// Which run these results are: a fingerprint of its result files' names.
const names = readdirSync(results).filter((name) => name.endsWith("-result.json")).sort();
const run = createHash("sha256").update(names.join("\n")).digest("hex").slice(0, 16);
const ledger = `${history}.runs`;
const seen = existsSync(ledger) ? readFileSync(ledger, "utf8").split("\n").filter(Boolean) : [];
const firstTime = !seen.includes(run);

const suffix = randomBytes(4).toString("hex");
const fresh = `${output}.new-${suffix}`;
mkdirSync(dirname(output), { recursive: true });
mkdirSync(dirname(history), { recursive: true });
let historyFile = history;
if (!firstTime) {
  historyFile = `${history}.${suffix}.tmp`;  // this run is in the trend already: read, do not append
  if (existsSync(history)) copyFileSync(history, historyFile);
}

// A fresh clone has no node_modules: say the one step that fixes it, not "generate failed (exit null)".
if (!existsSync(join(root, "node_modules", ".bin", "allure"))) {
  console.error("report: the Allure 3 CLI is not installed in this clone; fix: npm ci (once), then npm run report");
  process.exit(4);
}
const stage = mkdtempSync(join(tmpdir(), "acgs-report-"));
let launch;
try {
  launch = stageResults(results, stage, readHistory(history));
} catch (error) {
  rmSync(stage, { recursive: true, force: true });
  console.error(`report: ${results}: ${error.message}`);
  process.exit(4);
}
const allure = join(root, "node_modules", ".bin", "allure");
const generated = spawnSync(allure, ["generate", stage, "--config", join(root, "allurerc.mjs"), "-o", fresh], {
  cwd: root,
  stdio: "inherit",
  env: {
    ...process.env, ACGS_HISTORY_PATH: historyFile, ALLURE_SINGLE_FILE: singleFile ? "1" : "",
    ACGS_REPORT_NAME: launch.title, ACGS_ENVIRONMENTS: JSON.stringify(launch.environments),
  },
});
rmSync(stage, { recursive: true, force: true });
if (!firstTime) rmSync(historyFile, { force: true });
if (generated.status !== 0) {
  rmSync(fresh, { recursive: true, force: true });
  console.error(`report: allure generate failed (exit ${generated.status}); ${output} is unchanged`);
  process.exit(generated.status ?? 1);
}
if (firstTime) writeFileSync(ledger, [...seen, run].slice(-1000).join("\n") + "\n");
const entry = join(fresh, "index.html");
if (existsSync(entry)) {
  const page = readFileSync(entry, "utf8");
  writeFileSync(entry, page.replace(/<body[^>]*>/, (body) => body + firstScreen(launch)));
}

// Swap the new report in: the old one moves aside first, then goes.
const old = `${output}.old-${suffix}`;
if (existsSync(output)) renameSync(output, old);
renameSync(fresh, output);
rmSync(old, { recursive: true, force: true });
console.log(`report: ${output}${singleFile ? " (single file)" : ""}; history ${firstTime ? "appended" : "unchanged"}; `
  + `${launch.title}`);

// --- the first screen ---------------------------------------------------------------------

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Above Allure's own page, in static HTML (no fetch: it shows even where Allure's app cannot load its data, as
// from file://): the title with the worst failing level, the counts, and each failing P0 and P1 case with its whole
// message, since when, and its first remediation step, newest outage first within a level. Case links are relative
// (#/<id>), and a click on a link to the configured report URL stays in this copy of the report.
function firstScreen(launch) {
  const c = launch.counts;
  const total = `${(c.failed ?? 0) + (c.broken ?? 0)} failed, ${c.passed ?? 0} passed, ${c.skipped ?? 0} skipped`;
  const byLevel = ["p0", "p1", "p2", "p3"].filter((l) => launch.levels[l])
    .map((l) => `${l.toUpperCase()}: ${launch.levels[l].failed} failed, ${launch.levels[l].passed} passed, `
      + `${launch.levels[l].skipped} skipped`).join(" · ");
  const items = launch.urgent.map((u) => `<li><b class="acgs-${u.level.toLowerCase()}">${u.level}</b> `
    + `<a href="#/${u.id}">${escapeHtml(u.name)}</a> <span class="acgs-since">`
    + `${sinceWords(u)}</span>`
    + `<div class="acgs-msg">${escapeHtml(u.message)}</div>`
    + (u.step ? `<div class="acgs-step">First step: ${escapeHtml(u.step)}</div>` : "") + "</li>").join("");
  const none = launch.worst === null ? "Nothing is failing." : "No P0 or P1 case is failing.";
  const base = JSON.stringify(new URL("index.html", reportUrl).toString()).replace(/</g, "\\u003c");
  return `<section id="acgs-first-screen" style="font:14px/1.4 system-ui,sans-serif;padding:12px 20px;`
    + `border-bottom:1px solid #ccc;background:#fff;color:#111;max-width:100%;box-sizing:border-box">`
    + `<style>#acgs-first-screen h1{font-size:20px;margin:0 0 4px}#acgs-first-screen ol{margin:8px 0 0;`
    + `padding-left:20px}#acgs-first-screen li{margin:0 0 8px}#acgs-first-screen .acgs-msg{white-space:pre-wrap;`
    + `overflow-wrap:anywhere}#acgs-first-screen .acgs-step{color:#333}#acgs-first-screen .acgs-since{color:#555}`
    + `#acgs-first-screen .acgs-p0{color:#b00020}#acgs-first-screen .acgs-p1{color:#c25400}`
    // Allure cuts a tree group's title to one line; a failure's group title is its message: wrap it whole.
    + `[data-testid="tree-section-title"]{white-space:normal!important;overflow:visible!important;`
    + `text-overflow:clip!important;overflow-wrap:anywhere}</style>`
    + `<h1>${escapeHtml(launch.title)}</h1>`
    + `<div class="acgs-counts">${escapeHtml(total)}${byLevel ? ` — ${escapeHtml(byLevel)}` : ""}</div>`
    + (items ? `<ol>${items}</ol>` : `<p>${none}</p>`)
    + `<p id="acgs-file-note" hidden>Opened from file://: the rest of this report needs a served folder `
    + `(npm run report:open) or the single-file report (npm run report:single-file).</p>`
    + `<script>(function(){var base=${base};`
    + (singleFile ? "" : `if(location.protocol==="file:"){document.getElementById("acgs-file-note").hidden=false;}`)
    + `document.addEventListener("click",function(e){var a=e.target.closest&&e.target.closest("a");`
    + `if(a&&a.href.indexOf(base+"#")===0){e.preventDefault();location.hash=a.href.slice(base.length);}},true);`
    + `})();</script></section>`;
}

// --- the staged results -------------------------------------------------------------------

function readHistory(file) {
  if (!existsSync(file)) return [];
  const points = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    try {
      points.push(JSON.parse(line));
    } catch {
      // a torn last line (an interrupted append) is not a reason to fail the report
    }
  }
  return points.sort((a, b) => (b.timestamp ?? 0) - (a.timestamp ?? 0)); // newest first
}

function label(result, name) {
  return (result.labels ?? []).find((l) => l.name === name)?.value;
}

function failing(status) {
  return status === "failed" || status === "broken";
}

function utc(ms) {
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

// The current failing streak of ``result``, from the history (newest first): when it started, how many runs long.
function streak(result, points) {
  const id = createHash("md5").update(result.uuid).digest("hex");
  const env = label(result, "environment");
  let since = result.start ?? Date.now();
  let runs = 1;
  for (const point of points) {
    const entry = Object.values(point.testResults ?? {}).find((tr) => tr.fullName === result.fullName
      && tr.name === result.name && (tr.labels ?? []).find((l) => l.name === "environment")?.value === env);
    if (entry === undefined) continue; // not run that time (another selection): look further back
    if (entry.id === id) continue; // this very run, already in the history (a regeneration)
    if (!failing(entry.status)) break;
    since = entry.start ?? point.timestamp ?? since;
    runs += 1;
  }
  return { since, runs };
}

// A failing streak in words: the tree's group title and the first screen say it the same way.
function sinceWords({ since, runs }) {
  return runs === 1 ? "failing since this run" : `failing since ${utc(since)} (${runs} runs in a row)`;
}

function failingSince(result, points) {
  return sinceWords(streak(result, points));
}

function state(result, points) {
  const message = (result.statusDetails?.message ?? "").trim().split("\n")[0].replace(/^(Failed|Skipped): /, "");
  if (failing(result.status)) return `${failingSince(result, points)}: ${message}`;
  if (result.status === "passed") return "passing";
  const blockedBy = label(result, "blocked_by");
  if (blockedBy) return `skipped: blocked by ${blockedBy}`;
  for (const kind of ["not applicable", "waived", "in maintenance"]) {
    if (message.startsWith(kind)) return `skipped: ${kind}`;
  }
  // The history store is younger than the review's window: the first verdict's date is the news.
  if (message.startsWith("warming up:")) return `skipped: ${message}`;
  return `${result.status ?? "unknown"}${message ? `: ${message}` : ""}`;
}

// Copy the results into ``stage``, each case with its state label and absolute blocked links.
function stageResults(from, stage, points) {
  const environments = new Set();
  let worst = null;
  const counts = {};
  const levels = {};
  const urgent = [];
  const base = new URL("index.html", reportUrl);
  for (const name of readdirSync(from)) {
    const source = join(from, name);
    if (!name.endsWith("-result.json")) {
      copyFileSync(source, join(stage, name));
      continue;
    }
    const result = JSON.parse(readFileSync(source, "utf8"));
    const env = label(result, "environment");
    if (env) environments.add(env);
    const level = ["p0", "p1", "p2", "p3"].find((p) => (result.labels ?? []).some((l) => l.name === "tag" && l.value === p));
    if (failing(result.status) && level && (worst === null || level < worst)) worst = level;
    counts[result.status] = (counts[result.status] ?? 0) + 1;
    if (level) {
      const row = (levels[level] ??= { failed: 0, passed: 0, skipped: 0 });
      row[failing(result.status) ? "failed" : result.status === "passed" ? "passed" : "skipped"] += 1;
    }
    if (failing(result.status) && (level === "p0" || level === "p1")) {
      const { since, runs } = streak(result, points);
      urgent.push({
        level: level.toUpperCase(), name: result.name, id: createHash("md5").update(result.uuid).digest("hex"),
        message: (result.statusDetails?.message ?? "").trim().replace(/^(Failed|Skipped): /, ""), since, runs,
        step: firstStep(result.description ?? ""),
      });
    }
    result.labels = [...(result.labels ?? []), { name: "state", value: state(result, points) }];
    for (const link of result.links ?? []) {
      if (typeof link.url === "string" && link.url.startsWith("#/")) link.url = new URL(link.url, base).toString();
    }
    writeFileSync(join(stage, name), JSON.stringify(result));
  }
  const names = [...environments].sort();
  const verdict = worst === null ? "nothing failing" : `${worst.toUpperCase()} failing`;
  // Newest outage first within a level: what broke this morning above what has been broken for a week.
  urgent.sort((a, b) => a.level.localeCompare(b.level) || b.since - a.since);
  return {
    environments: names, title: `ACGS-2 runbook checks · ${names.join(", ") || "no environment"} · ${verdict}`,
    counts, levels, urgent, worst,
  };
}

// The first remediation step of a case: the first sentence after "Remediation:" in its description.
function firstStep(description) {
  const text = description.split("**Remediation:**")[1]?.trim() ?? "";
  const end = text.search(/\.(\s|$)/);
  return end < 0 ? text : text.slice(0, end + 1);
}
