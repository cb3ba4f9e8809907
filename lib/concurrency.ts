/**
 * Running async work over many items with a bound on how much is in flight.
 *
 * @module
 */

/**
 * Calls `work` for every item, at most `limit` at a time, and resolves when all are done; the
 * first failure rejects (work already started still runs to its end, none is started after).
 *
 * @example
 * ```ts
 * import { forEachLimited } from "./concurrency.ts";
 * const seen: number[] = [];
 * await forEachLimited([1, 2, 3], 2, async (n) => { seen.push(n); });
 * seen.length; // 3
 * ```
 */
export async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  work: (item: T, index: number) => Promise<void>,
): Promise<void> {
  if (!(limit >= 1)) throw new RangeError(`limit must be at least 1: current value is ${limit}`);
  let next = 0;
  let failed = false;
  const lane = async () => {
    while (!failed && next < items.length) {
      const index = next++;
      try {
        await work(items[index]!, index);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const lanes = Array.from({ length: Math.min(limit, items.length) }, lane);
  const results = await Promise.allSettled(lanes);
  const rejected = results.find((r) => r.status === "rejected");
  if (rejected) throw (rejected as PromiseRejectedResult).reason;
}

/**
 * At most `limit` holders at a time; the others wait in order. `acquire` resolves with the
 * function that gives the place back (calling it twice gives back once).
 *
 * @example
 * ```ts
 * import { Semaphore } from "./concurrency.ts";
 * const connects = new Semaphore(1);
 * const release = await connects.acquire();
 * connects.waiting; // 0
 * release();
 * ```
 */
export class Semaphore {
  readonly #limit: number;
  #held = 0;
  readonly #queue: (() => void)[] = [];

  /** A semaphore with `limit` places. */
  constructor(limit: number) {
    if (!(limit >= 1)) throw new RangeError(`limit must be at least 1: current value is ${limit}`);
    this.#limit = limit;
  }

  /** Callers waiting for a place. */
  get waiting(): number {
    return this.#queue.length;
  }

  /** Waits for a place. */
  acquire(): Promise<() => void> {
    return new Promise((resolve) => {
      const grant = () => {
        this.#held++;
        let released = false;
        resolve(() => {
          if (released) return;
          released = true;
          this.#held--;
          this.#queue.shift()?.();
        });
      };
      if (this.#held < this.#limit) grant();
      else this.#queue.push(grant);
    });
  }
}
