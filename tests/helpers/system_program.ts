/**
 * Tests that need a program from a Debian package (mosquitto, Chromium, openssl): on a machine
 * without it they are reported ignored, with the reason and the package to install; where
 * `OTA_REQUIRE_SYSTEM_PROGRAMS=1` (CI sets it) a missing program fails the test instead, so CI
 * can never skip them silently.
 *
 * @example
 * ```ts
 * import { systemProgram } from "./system_program.ts";
 * const mosquitto = systemProgram("mosquitto", "mosquitto");
 * Deno.test({ name: "against mosquitto", ignore: mosquitto.ignore, fn: () => {
 *   mosquitto.require();
 * } });
 * ```
 *
 * @module
 */

/** Every program the suite's tests need, with the Debian package that installs it. */
export const SUITE_PROGRAMS: Readonly<Record<string, string>> = {
  openssl: "openssl",
  mosquitto: "mosquitto",
  chromium: "chromium",
  script: "bsdutils",
  "redis-server": "redis-server",
  pg_ctlcluster: "postgresql",
};

/**
 * The suite's programs this machine lacks, unless CI requires them (then their tests ran and
 * failed instead): where any is missing, their tests were ignored and the coverage floors say
 * less (tests/coverage_report.ts reports them without enforcing them).
 */
export function missingSuitePrograms(
  env: { get(key: string): string | undefined } = Deno.env,
  find: (name: string) => string | null = findProgram,
): string[] {
  if (env.get(REQUIRE_VARIABLE) === "1") return [];
  return Object.keys(SUITE_PROGRAMS).filter((name) => find(name) === null);
}

/** The variable that turns a missing program into a failure. */
export const REQUIRE_VARIABLE = "OTA_REQUIRE_SYSTEM_PROGRAMS";

/** Directories searched besides PATH (mosquitto installs into /usr/sbin). */
const EXTRA_DIRS = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/** What a test knows about one program it needs. */
export interface SystemProgram {
  /** The program's name, as given. */
  readonly name: string;
  /** Its absolute path, or null when it is not installed. */
  readonly path: string | null;
  /** True when the test should be reported ignored (missing and not required). */
  readonly ignore: boolean;
  /** Why it is missing, with the package to install ("" when present). */
  readonly reason: string;
  /** Throws the reason when the program is missing (for required runs). */
  require(): string;
}

/** Finds `name` on PATH (and the usual system directories); null when absent. */
export function findProgram(
  name: string,
  pathVariable = Deno.env.get("PATH") ?? "",
): string | null {
  const dirs = [...pathVariable.split(":").filter((d) => d !== ""), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = `${dir}/${name}`;
    try {
      const info = Deno.statSync(candidate);
      if (info.isFile && info.mode !== null && (info.mode & 0o111) !== 0) return candidate;
    } catch {
      // not in this directory
    }
  }
  return null;
}

const announced = new Set<string>();

/**
 * Looks `name` up once per test file. `aptPackage` is the Debian package that installs it.
 * A missing, unrequired program prints one line saying so (the test runner only says "ignored").
 */
export function systemProgram(
  name: string,
  aptPackage: string,
  env: { get(key: string): string | undefined } = Deno.env,
): SystemProgram {
  const path = findProgram(name);
  const required = env.get(REQUIRE_VARIABLE) === "1";
  const reason = path === null ? `${name} is not installed (apt-get install ${aptPackage})` : "";
  const ignore = path === null && !required;
  // Only for the real environment: a unit test of this helper passes its own and stays quiet.
  if (ignore && env === Deno.env && !announced.has(name)) {
    announced.add(name);
    console.warn(`ignored here: ${reason}`);
  }
  return {
    name,
    path,
    ignore,
    reason,
    require() {
      if (path === null) {
        throw new Error(`${reason}; ${REQUIRE_VARIABLE}=1 makes it required`);
      }
      return path;
    },
  };
}
