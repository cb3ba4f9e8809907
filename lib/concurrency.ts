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
