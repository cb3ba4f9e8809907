/**
 * Parsing of human-entered quantities for command-line flags.
 *
 * @module
 */

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
};

/**
 * Parses a byte size such as `4096`, `64KiB`, `1.5MiB` or `10kB`. Returns null when the text
 * is not a non-negative whole number of bytes.
 *
 * @example
 * ```ts
 * import { parseSize } from "./units.ts";
 * parseSize("64KiB"); // 65536
 * parseSize("twelve"); // null
 * ```
 */
export function parseSize(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!match) return null;
  const unit = SIZE_UNITS[match[2]!.toLowerCase()];
  if (unit === undefined) return null;
  const value = Number(match[1]) * unit;
  return Number.isSafeInteger(value) ? value : null;
}
