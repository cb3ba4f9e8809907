/**
 * `deno task fleet`: starts the cloud, provisions a fleet of simulated devices on factory image
 * 1.0.0 in Web Workers, rolls a signed 1.1.0 out to them while breaking them on purpose, shows the
 * progress, and writes a JSON report. Exit code 0 when the run ended as the scenario expects,
 * 1 otherwise, 2 on bad flags.
 *
 * @module
 */

// @ts-types="@types/cli-progress"
import cliProgress from "cli-progress";
import { type Options, parseFleetArgs, USAGE } from "./fleet_args.ts";
import { formatSummary } from "./report.ts";
import { runFleet } from "./run.ts";
import { formatProgress } from "./progress.ts";
import { UsageError } from "../lib/usage_error.ts";
import { standardFlags, usageLine } from "../lib/cli.ts";
import { reportHtml } from "./report_html.ts";
import { formatClusterSummary, runClusteredFleet } from "../cluster/clustered_fleet.ts";

if (import.meta.main) {
  const early = standardFlags(Deno.args, USAGE);
  if (early) {
    console.log(early.text);
    Deno.exit(0);
  }
  let options: Options;
  try {
    options = parseFleetArgs(Deno.args);
  } catch (error) {
    console.error(usageLine((error as Error).message));
    Deno.exit(2);
  }
  // The report's place is checked before the run, not found unwritable after it.
  for (const [flag, path] of [["report", options.report], ["report-html", options.reportHtml]]) {
    if (path === undefined) continue;
    try {
      const existed = await Deno.stat(path).then(() => true, () => false);
      (await Deno.open(path, { write: true, create: true })).close();
      if (!existed) await Deno.remove(path);
    } catch (error) {
      console.error(usageLine(`Invalid --${flag} '${path}': ${(error as Error).message}`));
      Deno.exit(2);
    }
  }
  if (options.cluster) {
    try {
      const report = await runClusteredFleet(options, Deno.args, (line) => console.log(line));
      await Deno.writeTextFile(options.report, JSON.stringify(report, null, 2));
      if (options.reportHtml) await Deno.writeTextFile(options.reportHtml, reportHtml(report));
      console.log(`\n${formatClusterSummary(report, options.report)}`);
      Deno.exit(report.asExpected ? 0 : 1);
    } catch (error) {
      console.error(`fleet run failed: ${(error as Error).message}`);
      Deno.exit(1);
    }
  }
  try {
    // A live bar on a terminal, moving with the devices' work (blocks received, stages reached);
    // plain periodic lines otherwise (logs, CI). Each rollout's bar ends on its final frame.
    const bar = Deno.stdout.isTerminal()
      ? new cliProgress.SingleBar(
        { format: "{version} {bar} {percentage}% | {line}", hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
      : null;
    let barVersion: string | null = null;
    const report = await runFleet(
      options,
      (line) => console.log(line),
      bar
        ? (p) => {
          const payload = { version: p.version, line: formatProgress(p) };
          const work = Math.round(p.stages.work * 10) / 10;
          if (barVersion !== p.version) bar.start(p.stages.total, work, payload);
          else bar.update(work, payload);
          barVersion = p.version;
          if (p.final) {
            bar.stop();
            barVersion = null;
          }
        }
        : undefined,
      options.dashboard
        ? async (report) => {
          bar?.stop();
          await Deno.writeTextFile(options.report, JSON.stringify(report, null, 2));
          if (options.reportHtml) {
            await Deno.writeTextFile(options.reportHtml, reportHtml(report));
          }
          console.log(
            `run over (${
              report.asExpected ? "as expected" : "NOT as expected"
            }, report in ${options.report}); the dashboard stays up until Ctrl-C`,
          );
          await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", resolve));
        }
        : undefined,
    );
    bar?.stop();
    await Deno.writeTextFile(options.report, JSON.stringify(report, null, 2));
    if (options.reportHtml) await Deno.writeTextFile(options.reportHtml, reportHtml(report));
    console.log(`\n${formatSummary(report, options.report)}`);
    Deno.exit(report.asExpected ? 0 : 1);
  } catch (error) {
    // Inputs found wrong only once read (a key that does not match its certificate): exit 2.
    if (error instanceof UsageError) {
      console.error(usageLine(error.message));
      Deno.exit(2);
    }
    console.error(`fleet run failed: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
