// Allure 3 configuration for the acgs-checks results (npm run report).
import { defineConfig } from "allure";

export default defineConfig({
  name: "ACGS-2 runbook checks",
  output: "./reports/allure-report",
  // Trends across runs, kept under reports/; scripts/report.mjs appends each run once.
  historyPath: process.env.ACGS_HISTORY_PATH || "./reports/history.jsonl",
  historyLimit: 100,
  plugins: {
    awesome: {
      options: {
        reportName: "ACGS-2 runbook checks",
        reportLanguage: "en",
        // The runbook's own structure: section, then the check's place in it.
        groupBy: ["epic", "feature", "story"],
        // ALLURE_SINGLE_FILE=1 (npm run report:single-file) makes one self-contained index.html.
        singleFile: process.env.ALLURE_SINGLE_FILE === "1",
      },
    },
  },
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
    ],
  },
});
