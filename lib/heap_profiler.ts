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
import { openInspector } from "./inspector_session.ts";

/** Starts sampling (one sample every 32 KiB allocated); the returned function writes the profile. */
export async function startHeapProfile(): Promise<(path: string) => Promise<void>> {
  const inspector = openInspector();
  await inspector.post("HeapProfiler.enable");
  await inspector.post("HeapProfiler.startSampling", {
    samplingInterval: 32 * 1024,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  return async (path: string) => {
    const { profile } = await inspector.post("HeapProfiler.stopSampling") as { profile: unknown };
    inspector.close();
    await Deno.writeTextFile(path, JSON.stringify(profile));
  };
}
