/**
 * The defence against slow retrieval (the TUF/Uptane catalogue): an attacker who controls the
 * path trickles the file in just fast enough that no request times out, keeping the device on an
 * old, vulnerable image indefinitely. A job may set a floor (`afr_ota.minimumRate`); a download
 * whose rate stays below it for a whole window is abandoned with a reason.
 *
 * Windows follow one another (tumbling): the rate is the bytes a window received over its length,
 * checked when a block arrives or a request times out. The clock is the agent's.
 *
 * @example
 * ```ts
 * import { RateWatch } from "./rate_floor.ts";
 * const watch = new RateWatch({ bytesPerSecond: 1000, windowSeconds: 10 }, 0);
 * watch.received(4096, 1_000); // null: the window is not over
 * watch.received(100, 10_000); // "download too slow: 419 B/s over the last 10 s, below the job's floor of 1000 B/s"
 * ```
 *
 * @module
 */

import type { RateFloor } from "../protocol/job_document.ts";

/** Tells when a download stayed below its floor for a whole window. */
export class RateWatch {
  readonly #floor: RateFloor;
  #windowStart: number;
  #bytes = 0;

  /** Starts the first window at `now` (ms). */
  constructor(floor: RateFloor, now: number) {
    this.#floor = floor;
    this.#windowStart = now;
  }

  /**
   * Starts a new window at `now`: after a pause that is not the path's doing (the device's own
   * reconnect, reboot or power cut), the rate is measured afresh.
   */
  restart(now: number): void {
    this.#windowStart = now;
    this.#bytes = 0;
  }

  /** Counts `bytes` received at `now`; returns why the download is too slow, or null. */
  received(bytes: number, now: number): string | null {
    this.#bytes += bytes;
    return this.check(now);
  }

  /** Whether the window that ends by `now` stayed below the floor (null: not, or not over). */
  check(now: number): string | null {
    const elapsed = now - this.#windowStart;
    if (elapsed < this.#floor.windowSeconds * 1000) return null;
    const rate = this.#bytes * 1000 / elapsed;
    if (rate < this.#floor.bytesPerSecond) {
      return `download too slow: ${Math.round(rate)} B/s over the last ${
        Math.round(elapsed / 1000)
      } s, below the job's floor of ${this.#floor.bytesPerSecond} B/s`;
    }
    this.restart(now);
    return null;
  }
}
