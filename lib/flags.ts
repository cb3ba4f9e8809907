/**
 * Command-line flags declared once: the same list gives the parser its options, the help text its
 * lines, and the checks of numbers and words their ranges, so the usage cannot drift from what is
 * enforced. A wrong flag or value is a {@linkcode UsageError} naming the flag.
 *
 * @example
 * ```ts
 * import { parseFlags, usage, type FlagSpec } from "./flags.ts";
 * const FLAGS: FlagSpec[] = [
 *   { name: "devices", value: "N", help: "fleet size", range: [1, 100_000], default: "200" },
 *   { name: "dry-run", help: "print what would happen" },
 * ];
 * usage("Usage: deno task fleet [options]", FLAGS); // "...--devices N   fleet size (1..100000, default 200)"
 * parseFlags(["--devices", "20"], FLAGS).int("devices"); // 20
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseSize } from "./units.ts";
import { UsageError } from "./usage_error.ts";

/** One flag. */
export interface FlagSpec {
  readonly name: string;
  /** Placeholder of its value in the help (N, FILE, URL...); none: a flag without a value. */
  readonly value?: string;
  /** What it does; the range, choices and default are appended. */
  readonly help: string;
  /** The numbers accepted ({@linkcode ParsedFlags.int}, {@linkcode ParsedFlags.number}). */
  readonly range?: readonly [number, number];
  /** The sizes accepted, in bytes ({@linkcode ParsedFlags.size}: 64KiB, 4096...). */
  readonly sizeRange?: readonly [number, number];
  /** The words accepted ({@linkcode ParsedFlags.choice}). */
  readonly choices?: readonly string[];
  /** The value when the flag is absent, as typed on the command line ("" in help: none shown). */
  readonly default?: string;
  /** Shown in the help when the default depends on other flags (e.g. "0, chaos 3"). */
  readonly defaultText?: string;
  /** A one-letter alias (`-p`). */
  readonly short?: string;
  /** Shown as required in the help (the command checks it, with its own message). */
  readonly required?: boolean;
  /** May be given several times (its values come as a list). */
  readonly multiple?: boolean;
}

/** Where the help's descriptions start, and its width. */
const HELP_COLUMN = 27;
const HELP_WIDTH = 100;

/**
 * The help text: a head line, one entry per flag (wrapped, aligned; its range, choices and
 * default appended), `--help` and `--version`, and an optional tail.
 */
export function usage(head: string, flags: readonly FlagSpec[], tail = ""): string {
  // Every command answers these two before parsing (lib/cli.ts standardFlags).
  const standard = [
    "  -h, --help".padEnd(HELP_COLUMN) + "this text",
    "  --version".padEnd(HELP_COLUMN) + "the project's version",
  ];
  return [head, "", ...flagLines(flags), ...standard, ...(tail ? ["", tail] : [])].join("\n");
}

/**
 * One help entry per flag: its name and value placeholder, then its description with range,
 * choices and default, wrapped under column 27 (`indent` spaces before each name).
 */
export function flagLines(flags: readonly FlagSpec[], indent = 2): string[] {
  return flags.map((flag) => {
    const name = `${" ".repeat(indent)}${flag.short ? `-${flag.short}, ` : ""}--${flag.name}${
      flag.value ? ` ${flag.value}` : ""
    }${flag.multiple ? "..." : ""}`;
    return wrapped(name, `${flag.help}${facts(flag)}`);
  });
}

/** `text` wrapped to the help's width under its column, after `lead` (alone if too long). */
export function wrapped(lead: string, text: string): string {
  const lines: string[] = [];
  let line = lead.length < HELP_COLUMN - 1
    ? lead.padEnd(HELP_COLUMN)
    : (lines.push(lead), " ".repeat(HELP_COLUMN));
  let fresh = true;
  for (const word of text.split(/\s+/)) {
    if (!fresh && line.length + 1 + word.length > HELP_WIDTH) {
      lines.push(line);
      line = " ".repeat(HELP_COLUMN);
      fresh = true;
    }
    line += fresh ? word : ` ${word}`;
    fresh = false;
  }
  lines.push(line);
  return lines.join("\n");
}

/** " (1..100, default 5)", " (a | b; default a)", or "". */
function facts(flag: FlagSpec): string {
  const parts: string[] = [];
  if (flag.required) parts.push("required");
  if (flag.range) parts.push(`${flag.range[0]}..${flag.range[1]}`);
  if (flag.sizeRange) parts.push(`${sizeText(flag.sizeRange[0])}..${sizeText(flag.sizeRange[1])}`);
  if (flag.choices) parts.push(flag.choices.join(" | "));
  const shown = flag.defaultText ?? flag.default;
  if (shown) parts.push(`default ${shown}`);
  return parts.length > 0 ? ` (${parts.join(flag.choices ? "; " : ", ")})` : "";
}

/** A byte count as people write it: 448KiB, 1GiB, 100 (bytes). */
function sizeText(bytes: number): string {
  for (const [unit, scale] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 1024]] as const) {
    if (bytes >= scale && bytes % scale === 0) return `${bytes / scale}${unit}`;
  }
  return String(bytes);
}

/** Parsed flags, with typed getters that enforce each flag's declared range or choices. */
export interface ParsedFlags {
  /** Every flag given: strings (lists for `multiple` ones), or true for flags without a value. */
  readonly values: Readonly<Record<string, string | string[] | boolean | undefined>>;
  /** The text of every flag given that takes one (lists of repeatable flags left out). */
  readonly texts: Readonly<Record<string, string | undefined>>;
  readonly positionals: readonly string[];
  /** Whether the flag was given. */
  has(name: string): boolean;
  /** Its text, else its declared default, else undefined. */
  string(name: string): string | undefined;
  /** Whether a flag without a value was given. */
  boolean(name: string): boolean;
  /** A whole number within the declared range (the default, or `fallback`, when absent). */
  int(name: string, fallback?: number): number;
  /** A number within the declared range (the default, or `fallback`, when absent). */
  number(name: string, fallback?: number): number;
  /** A size in bytes (64KiB, 4096...) within the declared range (the default when absent). */
  size(name: string): number;
  /** One of the declared choices (the default when absent). */
  choice<T extends string>(name: string): T;
}

/**
 * Parses `args` against `flags` (strict: an unknown flag is an error). Positionals are allowed
 * only when asked for (subcommands).
 */
export function parseFlags(
  args: readonly string[],
  flags: readonly FlagSpec[],
  options: { allowPositionals?: boolean } = {},
): ParsedFlags {
  const byName = new Map(flags.map((flag) => [flag.name, flag]));
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: options.allowPositionals ?? false,
      options: Object.fromEntries(
        flags.map((flag) => [flag.name, {
          type: flag.value ? "string" as const : "boolean" as const,
          ...(flag.short ? { short: flag.short } : {}),
          ...(flag.multiple ? { multiple: true } : {}),
        }]),
      ),
    });
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0]!);
  }
  const values = parsed.values as Record<string, string | string[] | boolean | undefined>;
  const spec = (name: string) => {
    const flag = byName.get(name);
    if (!flag) throw new Error(`no flag --${name} is declared`);
    return flag;
  };
  const text = (name: string) => {
    const given = values[name];
    return typeof given === "string" ? given : spec(name).default;
  };
  const numeric = (name: string, fallback: number | undefined, whole: boolean) => {
    const flag = spec(name);
    if (typeof values[name] !== "string") {
      if (fallback !== undefined) return fallback;
      if (flag.default === undefined) throw new Error(`--${name} has no default`);
      return Number(flag.default);
    }
    const given = values[name] as string;
    const n = Number(given);
    const [min, max] = flag.range ?? [-Infinity, Infinity];
    const ok = given.trim() !== "" && Number.isFinite(n) && n >= min && n <= max &&
      (!whole || /^-?\d+$/.test(given.trim()));
    if (!ok) {
      throw new UsageError(
        `Invalid --${name}: expected ${whole ? "an integer" : "a number"}${
          flag.range ? ` ${min}..${max}` : ""
        }: current value is '${given}'`,
      );
    }
    return n;
  };
  const texts = Object.fromEntries(
    Object.entries(values).filter(([, value]) => typeof value === "string"),
  ) as Record<string, string>;
  return {
    values,
    texts,
    positionals: parsed.positionals,
    has: (name) => (spec(name), values[name] !== undefined),
    string: (name) => text(name),
    boolean: (name) => (spec(name), values[name] === true),
    int: (name, fallback) => numeric(name, fallback, true),
    number: (name, fallback) => numeric(name, fallback, false),
    size(name) {
      const flag = spec(name);
      const given = text(name);
      if (given === undefined) throw new Error(`--${name} has no default`);
      const n = parseSize(given);
      const [min, max] = flag.sizeRange ?? [0, Infinity];
      if (n === null || n < min || n > max) {
        throw new UsageError(
          `Invalid --${name}: expected a size ${sizeText(min)}..${
            sizeText(max)
          } (e.g. 64KiB): current value is '${given}'`,
        );
      }
      return n;
    },
    choice<T extends string>(name: string): T {
      const flag = spec(name);
      const given = text(name);
      if (given === undefined || !flag.choices?.includes(given)) {
        throw new UsageError(
          `Invalid --${name}: expected ${
            (flag.choices ?? []).join(", ")
          }: current value is '${given}'`,
        );
      }
      return given as T;
    },
  };
}
