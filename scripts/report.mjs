// Generate the Allure 3 report so that it can never go stale, and append history once per run.
//
//   node scripts/report.mjs [--single-file] [--results DIR] [--output DIR] [--history FILE]
//   (npm run report, npm run report:single-file)
//
// * The report is built in a fresh folder beside the output and swapped in whole: the output's
//   root index.html is always the run just generated (Allure writes into a subfolder of a folder
//   that is not empty, which left an old report at the root).
// * History: the results folder's runs are told apart by the names of their result files (each
//   run writes new uuids). The first generation for a run appends to the history file; any later
//   one for the same run (the single-file variant, a regeneration) reads a copy, so the trend
//   shows each run once.
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const index = args.indexOf(name);
  return index >= 0 && index + 1 < args.length ? resolve(args[index + 1]) : fallback;
};
const singleFile = args.includes("--single-file");
const results = option("--results", resolve("reports/allure-results"));
const output = option("--output", resolve("reports/allure-report"));
const history = option("--history", resolve("reports/history.jsonl"));

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

const allure = join(root, "node_modules", ".bin", "allure");
const generated = spawnSync(allure, ["generate", results, "--config", join(root, "allurerc.mjs"), "-o", fresh], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, ACGS_HISTORY_PATH: historyFile, ALLURE_SINGLE_FILE: singleFile ? "1" : "" },
});
if (!firstTime) rmSync(historyFile, { force: true });
if (generated.status !== 0) {
  rmSync(fresh, { recursive: true, force: true });
  console.error(`report: allure generate failed (exit ${generated.status}); ${output} is unchanged`);
  process.exit(generated.status ?? 1);
}
if (firstTime) writeFileSync(ledger, [...seen, run].slice(-1000).join("\n") + "\n");

// Swap the new report in: the old one moves aside first, then goes.
const old = `${output}.old-${suffix}`;
if (existsSync(output)) renameSync(output, old);
renameSync(fresh, output);
rmSync(old, { recursive: true, force: true });
console.log(`report: ${output}${singleFile ? " (single file)" : ""}; history ${firstTime ? "appended" : "unchanged"}`);
