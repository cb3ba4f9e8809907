/**
 * Samples what this thread allocates through V8's inspector (`node:inspector`, which works inside
 * a Worker too), objects already collected included: where the garbage collector's work comes
 * from. Writes the profile as a `.heapprofile` file that Chrome DevTools opens and
 * `tools/heap_profile.ts` summarizes.
 *
 * @example
 * ```ts ignore
 * const stop = await startHeapProfile();
 * await work();
 * await stop("/tmp/profiles/worker-1.heapprofile");
 * ```
 *
 * @module
 */
import { Session } from "node:inspector";

/** Starts sampling (one sample every 32 KiB allocated); the returned function writes the profile. */
export async function startHeapProfile(): Promise<(path: string) => Promise<void>> {
  const session = new Session();
  session.connect();
  const post = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(
        method,
        params,
        (error: Error | null, result: unknown) => error ? reject(error) : resolve(result),
      )
    );
  await post("HeapProfiler.enable");
  await post("HeapProfiler.startSampling", {
    samplingInterval: 32 * 1024,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  return async (path: string) => {
    const { profile } = await post("HeapProfiler.stopSampling") as { profile: unknown };
    session.disconnect();
    await Deno.writeTextFile(path, JSON.stringify(profile));
  };
}
