/**
 * What every command of the project does alike: `--help` and `-h` print its usage and exit 0,
 * `--version` prints the project's version, and a wrong flag or value is one line saying what is
 * wrong and where to look, with exit code 2.
 *
 * @example
 * ```ts ignore
 * const early = standardFlags(Deno.args, USAGE);
 * if (early) { console.log(early.text); Deno.exit(0); }
 * ```
 *
 * @module
 */

import config from "../deno.json" with { type: "json" };

/** The project's version (deno.json). */
export const VERSION: string = config.version;

/**
 * `--help`/`-h` (the usage) or `--version` (the version), if `args` ask for one before anything
 * else is parsed; null otherwise. A flag's value that happens to be `--help` is not one: only
 * arguments that stand alone count, and `--` ends the flags.
 */
export function standardFlags(
  args: readonly string[],
  usage: string,
): { readonly text: string } | null {
  for (const arg of args) {
    if (arg === "--") break;
    if (arg === "--help" || arg === "-h") return { text: usage };
    if (arg === "--version") return { text: `ota-fleet-lab ${VERSION}` };
  }
  return null;
}

/** The one line a wrong invocation prints (before exiting with 2). */
export function usageLine(message: string): string {
  return `${message.split("\n")[0]} (see --help)`;
}
