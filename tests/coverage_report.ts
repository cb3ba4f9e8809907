/**
 * Line coverage of the last `deno task test` run, by component, from the profiles `deno test
 * --coverage` wrote (Workers included). Exits 1 when a component the resilience suite guarantees
 * (see COMPONENTS) is at or below its floor.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-run tests/coverage_report.ts coverage/raw
 * ```
 *
 * @module
 */
import { missingSuitePrograms, SUITE_PROGRAMS } from "./helpers/system_program.ts";

/** Lines found and hit in one source file. */
export interface FileCoverage {
  readonly file: string;
  readonly found: number;
  readonly hit: number;
}

/**
 * Reads an lcov report's per-file line counts (`SF`, `LF`, `LH`).
 *
 * @example
 * ```ts
 * import { parseLcov } from "./coverage_report.ts";
 * parseLcov("SF:/r/agent/a.ts\nLF:10\nLH:9\nend_of_record\n"); // [{ file: "/r/agent/a.ts", found: 10, hit: 9 }]
 * ```
 */
export function parseLcov(text: string): FileCoverage[] {
  const files: FileCoverage[] = [];
  let file: string | null = null;
  let found = 0;
  let hit = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("SF:")) [file, found, hit] = [line.slice(3), 0, 0];
    else if (line.startsWith("LF:")) found = Number(line.slice(3));
    else if (line.startsWith("LH:")) hit = Number(line.slice(3));
    else if (line === "end_of_record" && file !== null) {
      files.push({ file, found, hit });
      file = null;
    }
  }
  return files;
}

/** The components reported, and the floor each must stay above (null: reported only). */
export const COMPONENTS: readonly { name: string; match: RegExp; floor: number | null }[] = [
  { name: "protocol", match: /\/protocol\/[^/]+\.ts$/, floor: 90 },
  { name: "bootloader", match: /\/bootloader\/[^/]+\.ts$/, floor: 90 },
  { name: "agent", match: /\/agent\/[^/]+\.ts$/, floor: 90 },
  {
    name: "job service",
    match: /\/broker\/(job_service|jobs_device_api|job_spec)\.ts$/,
    floor: 90,
  },
  { name: "broker (all)", match: /\/broker\/[^/]+\.ts$/, floor: 90 },
  { name: "fleet", match: /\/fleet\/[^/]+\.ts$/, floor: 90 },
  { name: "pki", match: /\/pki\/[^/]+\.ts$/, floor: null },
];

/** Line coverage per component: percent, and whether it clears its floor. */
export function byComponent(
  files: readonly FileCoverage[],
): { name: string; percent: number; floor: number | null; ok: boolean }[] {
  return COMPONENTS.map(({ name, match, floor }) => {
    const mine = files.filter((f) => match.test(f.file));
    const found = mine.reduce((sum, f) => sum + f.found, 0);
    const hit = mine.reduce((sum, f) => sum + f.hit, 0);
    const percent = found === 0 ? 0 : Math.floor((1000 * hit) / found) / 10;
    return { name, percent, floor, ok: floor === null || percent > floor };
  });
}

/**
 * Removes the raw coverage files in `dir` that are not whole JSON, and says how many: a child
 * process the suite kills on purpose (a broker node, kill -9 mid-rollout) may die while Deno
 * writes its coverage, and one truncated file made `deno coverage` refuse them all.
 */
export async function dropUnreadable(dir: string): Promise<number> {
  let dropped = 0;
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !entry.name.endsWith(".json")) continue;
    const path = `${dir}/${entry.name}`;
    try {
      JSON.parse(await Deno.readTextFile(path));
    } catch {
      await Deno.remove(path);
      dropped++;
    }
  }
  return dropped;
}

if (import.meta.main) {
  const raw = Deno.args[0] ?? "coverage/raw";
  const dropped = await dropUnreadable(raw);
  if (dropped > 0) {
    console.log(`coverage: ${dropped} unfinished raw file(s) of killed child processes left out`);
  }
  const lcovPath = `${raw}/../lcov.info`;
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["coverage", raw, "--lcov", `--output=${lcovPath}`, "--exclude=tests/|bench/"],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!result.success) {
    console.error(`deno coverage failed: ${new TextDecoder().decode(result.stderr)}`);
    Deno.exit(1);
  }
  const rows = byComponent(parseLcov(await Deno.readTextFile(lcovPath)));
  console.log("line coverage");
  for (const row of rows) {
    const floor = row.floor === null ? "" : ` (floor ${row.floor}%${row.ok ? "" : ": BELOW"})`;
    console.log(`  ${row.name.padEnd(14)} ${row.percent.toFixed(1).padStart(5)}%${floor}`);
  }
  // Tests ignored for a missing program leave their code uncovered: the floors are CI's promise,
  // made where every program is installed; elsewhere they are shown, not enforced.
  const missing = missingSuitePrograms();
  if (missing.length > 0) {
    console.log(
      `  floors not enforced here: ${missing.join(", ")} missing, their tests were ignored (${
        missing.map((name) => SUITE_PROGRAMS[name]).join(", ")
      } from apt installs them)`,
    );
    Deno.exit(0);
  }
  Deno.exit(rows.every((row) => row.ok) ? 0 : 1);
}
