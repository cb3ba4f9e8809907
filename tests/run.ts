/**
 * `deno task test`: with no arguments, the whole suite in parallel with coverage, then the
 * line-coverage report by component; with arguments (files, folders, `--filter`), only those,
 * without coverage.
 *
 * ```sh
 * deno task test                                  # everything, with coverage
 * deno task test tests/protocol/stream_codec_test.ts # one file
 * deno task test tests/broker --filter durability # a folder, filtered
 * ```
 *
 * @module
 */

/** Flags every run gets: the suite's tests close every op and resource they open. */
export const TEST_FLAGS = ["--allow-all", "--sanitize-ops", "--sanitize-resources"];

/** The `deno` commands to run, in order, for these arguments. */
export function testCommands(args: readonly string[], coverageDir = "coverage/raw"): string[][] {
  if (args.length > 0) return [["test", ...TEST_FLAGS, ...args]];
  return [
    ["test", ...TEST_FLAGS, "--parallel", `--coverage=${coverageDir}`],
    [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-env",
      "tests/coverage_report.ts",
      coverageDir,
    ],
  ];
}

if (import.meta.main) {
  const commands = testCommands(Deno.args);
  if (Deno.args.length === 0) {
    await Deno.remove("coverage/raw", { recursive: true }).catch(() => {});
  }
  for (const args of commands) {
    const { code } = await new Deno.Command(Deno.execPath(), {
      args,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn().status;
    if (code !== 0) Deno.exit(code);
  }
}
