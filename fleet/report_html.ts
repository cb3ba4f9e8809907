/**
 * A fleet run's report as a page to look at (`deno task fleet --report-html FILE`): one
 * self-contained HTML file (uPlot and the report inlined, no network) with the outcome, the
 * per-status counts over time as a chart, each update's stage times, and the faults.
 *
 * @module
 */

import { createRequire } from "node:module";
import type { FleetReport } from "./report.ts";

const require = createRequire(import.meta.url);

function vendor(module: string): string {
  return Deno.readTextFileSync(require.resolve(module));
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);

/** The page for `report`. */
export function reportHtml(report: FleetReport): string {
  // Inside a <script>: no "</script>" can end it early.
  const data = JSON.stringify(report).replace(/</g, "\\u003c");
  const o = report.outcome;
  const rows = (cells: readonly (readonly (string | number)[])[]) =>
    cells.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(String(c))}</td>`).join("")}</tr>`)
      .join("");
  const stageRows = Object.entries(report.stages).flatMap(([version, stages]) =>
    Object.entries(stages).map(([stage, t]) => [version, stage, t.devices, t.p50, t.p90, t.max])
  );
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Fleet run: ${escapeHtml(report.scenario)}, ${report.devices} devices</title>
<style>${vendor("uplot/dist/uPlot.min.css")}</style>
<style>
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; } td, th { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
.verdict { font-weight: bold; color: ${report.asExpected ? "#1a7f37" : "#c62828"}; }
.bar { display: inline-block; height: 0.8em; background: #4a7bd0; vertical-align: middle; }
</style>
</head>
<body>
<h1>Fleet run: ${escapeHtml(report.scenario)}, ${report.devices} devices</h1>
<p class="verdict" id="verdict">${report.asExpected ? "as expected" : "NOT as expected"}: ${
    escapeHtml(report.expected)
  }</p>
<table id="outcome">${
    rows([
      ["job", `${report.jobStatus}${report.jobReason ? ` (${report.jobReason})` : ""}`],
      ["succeeded", o.succeeded],
      ["failed", o.failed],
      ["rejected", o.rejected],
      ["timed out", o.timedOut],
      ["canceled", o.canceled],
      ["other (not notified, open)", o.other],
      ["bricked", report.bricked],
      [
        "running versions",
        Object.entries(report.runningVersion).map(([v, n]) => `${v}: ${n}`).join(", "),
      ],
      [
        "application / second stage",
        Object.entries(report.runningPair ?? {}).map(([v, n]) => `${v}: ${n}`).join(", "),
      ],
      ["wall time", `${report.wallSeconds} s`],
    ])
  }</table>
<h2>Executions by status over time</h2>
<div id="chart"></div>
<h2>Stage times (seconds)</h2>
<table id="stages"><tr><th>update</th><th>stage</th><th>devices</th><th>median</th><th>p90</th><th>max</th><th></th></tr>${
    stageRows.map((r) =>
      `<tr>${
        r.map((c) => `<td>${escapeHtml(String(c))}</td>`).join("")
      }<td><span class="bar" style="width:${Math.min(300, Number(r[5]) * 20)}px"></span></td></tr>`
    ).join("")
  }</table>
<h2>Faults</h2>
<table id="faults">${rows(Object.entries(report.faults))}</table>
<script>${vendor("uplot/dist/uPlot.iife.min.js")}</script>
<script>
const report = ${data};
const statuses = ["SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "IN_PROGRESS", "QUEUED"];
const colours = ["#1a7f37", "#c62828", "#e67e22", "#8e44ad", "#7f8c8d", "#4a7bd0", "#b0b0b0"];
const t = report.series.map((s) => s.t / 1000);
const data = [t, ...statuses.map((s) => report.series.map((p) => p.counts[s] ?? 0))];
new uPlot({
  width: Math.min(900, document.body.clientWidth - 40),
  height: 320,
  scales: { x: { time: false } },
  axes: [{ label: "seconds since the start" }, { label: "executions" }],
  series: [{}, ...statuses.map((label, i) => ({ label, stroke: colours[i], width: 2 }))],
}, data, document.getElementById("chart"));
</script>
</body>
</html>
`;
}
