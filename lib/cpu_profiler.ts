/**
 * Samples this thread's CPU through V8's inspector (`node:inspector`, which also works inside
 * a Worker, where `--inspect` does not reach in Deno 2.9) and writes the profile as a
 * `.cpuprofile` file that Chrome DevTools opens and `tools/cpu_profile.ts --file` summarizes.
 *
 * @example
 * ```ts ignore
 * const stop = await startCpuProfile();
 * await work();
 * await stop("/tmp/profiles/worker-1.cpuprofile");
 * ```
 *
 * @module
 */
import { openInspector } from "./inspector_session.ts";

/** Starts sampling (every 500 µs); the returned function stops and writes the profile. */
export async function startCpuProfile(): Promise<(path: string) => Promise<void>> {
  const inspector = openInspector();
  await inspector.post("Profiler.enable");
  await inspector.post("Profiler.setSamplingInterval", { interval: 500 });
  await inspector.post("Profiler.start");
  return async (path: string) => {
    const { profile } = await inspector.post("Profiler.stop") as { profile: unknown };
    inspector.close();
    await Deno.writeTextFile(path, JSON.stringify(profile));
  };
}
