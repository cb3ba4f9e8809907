/**
 * The error every command-line tool throws for a bad flag: its message names the flag and what
 * was expected, and the tool exits with code 2.
 *
 * @example
 * ```ts
 * import { UsageError } from "./usage_error.ts";
 * const error = new UsageError("Invalid --port: expected a port 0..65535: current value is 'x'");
 * error.name; // "UsageError"
 * ```
 *
 * @module
 */

/** A bad command-line flag. */
export class UsageError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
