// Allure 3 configuration for the acgs-checks results (npm run report).
import { defineConfig } from "allure";

// scripts/report.mjs names the report after the environment and the worst failing level, and
// lists the environments in the results (each becomes an Allure environment, told apart by label).
const reportName = process.env.ACGS_REPORT_NAME || "ACGS-2 runbook checks";
const environmentNames = JSON.parse(process.env.ACGS_ENVIRONMENTS || "[]");
const environments = Object.fromEntries(environmentNames.map((name) => [name, {
  name,
  matcher: ({ labels }) => labels.some((l) => l.name === "environment" && l.value === name),
}]));

export default defineConfig({
  name: reportName,
  output: "./reports/allure-report",
  // Trends across runs, kept under reports/; scripts/report.mjs appends each run once.
  historyPath: process.env.ACGS_HISTORY_PATH || "./reports/history.jsonl",
  historyLimit: 100,
  plugins: {
    awesome: {
      options: {
        reportName,
        reportLanguage: "en",
        // The first screen answers "what is failing, how bad, since when": the runbook's level
        // (P0 critical ... P3 low), then each case's state ("failing since ...: <message>",
        // "passing", "skipped: blocked by ..."). The runbook's sections are the epic/feature/story labels.
        groupBy: ["level", "state"],
        defaultSortBy: "name,asc",
        // ALLURE_SINGLE_FILE=1 (npm run report:single-file) makes one self-contained index.html.
        singleFile: process.env.ALLURE_SINGLE_FILE === "1",
      },
    },
  },
  ...(environmentNames.length ? { environments } : {}),
  categories: {
    rules: [
      { name: "Access denied", matchers: { statuses: ["failed", "broken"], message: /^(Failed: )?access denied:/ } },
      { name: "Target unreachable", matchers: { statuses: ["failed", "broken"], message: /\(target unreachable\)/ } },
      { name: "No data", matchers: { statuses: ["failed"], message: /^(Failed: )?no data:/ } },
      { name: "Insufficient privilege", matchers: { statuses: ["failed"], message: /^(Failed: )?insufficient privilege:/ } },
      { name: "Probe error", matchers: { statuses: ["failed", "broken"], message: /^(Failed: )?probe error:/ } },
      { name: "Threshold breached", matchers: { statuses: ["failed"], message: /\(expected / } },
      { name: "Configuration error", matchers: { statuses: ["broken"] } },
      // Two kinds of skip, kept apart: blocked by a failed case of this run, or not applicable here.
      { name: "Blocked by a failed check", matchers: { statuses: ["skipped"], message: /^(Skipped: )?blocked:/ } },
      { name: "Not applicable", matchers: { statuses: ["skipped"], message: /^(Skipped: )?not applicable:/ } },
      { name: "Waived", matchers: { statuses: ["skipped"], message: /^(Skipped: )?waived / } },
      { name: "In maintenance", matchers: { statuses: ["skipped"], message: /^(Skipped: )?in maintenance/ } },
      // The history store is younger than a review's window: never a pass, never a page.
      { name: "Warming up", matchers: { statuses: ["skipped"], message: /^(Skipped: )?warming up:/ } },
    ],
  },
});
