/**
 * A log that cannot be flooded: at most `limit` lines per `windowMs`, the rest counted and said
 * in one line when the next window opens. What a server logs about its clients' misbehaviour
 * goes through one, so a client cannot fill a disk by misbehaving.
 *
 * @example
 * ```ts
 * import { RateLimitedLog } from "./rate_limited_log.ts";
 * import { ManualClock } from "./clock.ts";
 * const lines: string[] = [];
 * const log = new RateLimitedLog((l) => lines.push(l), new ManualClock(0), { limit: 2, windowMs: 1000 });
 * for (let i = 0; i < 5; i++) log.write(`refused ${i}`);
 * lines.length; // 2: the other 3 are reported when the next window opens
 * ```
 *
 * @module
 */

import type { Clock } from "./clock.ts";

/** A rate-limited line sink. */
export class RateLimitedLog {
  readonly #sink: (line: string) => void;
  readonly #clock: Clock;
  readonly #limit: number;
  readonly #windowMs: number;
  #windowStart = -Infinity;
  #written = 0;
  #suppressed = 0;

  constructor(
    sink: (line: string) => void,
    clock: Clock,
    options: { readonly limit?: number; readonly windowMs?: number } = {},
  ) {
    this.#sink = sink;
    this.#clock = clock;
    this.#limit = options.limit ?? 20;
    this.#windowMs = options.windowMs ?? 10_000;
  }

  /** Writes `line`, or counts it when this window's lines are spent. */
  write(line: string): void {
    const now = this.#clock.now();
    if (now - this.#windowStart >= this.#windowMs) {
      this.#flushSuppressed();
      this.#windowStart = now;
      this.#written = 0;
    }
    if (this.#written < this.#limit) {
      this.#written++;
      this.#sink(line);
    } else {
      this.#suppressed++;
    }
  }

  /** Lines not written so far (and not yet reported). */
  get suppressed(): number {
    return this.#suppressed;
  }

  #flushSuppressed(): void {
    if (this.#suppressed === 0) return;
    this.#sink(
      `... ${this.#suppressed} more like these in ${this.#windowMs / 1000} s were not logged`,
    );
    this.#suppressed = 0;
  }
}
