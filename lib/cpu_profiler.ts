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
import { Session } from "node:inspector";

/** Starts sampling (every 500 µs); the returned function stops and writes the profile. */
export async function startCpuProfile(): Promise<(path: string) => Promise<void>> {
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
  await post("Profiler.enable");
  await post("Profiler.setSamplingInterval", { interval: 500 });
  await post("Profiler.start");
  return async (path: string) => {
    const { profile } = await post("Profiler.stop") as { profile: unknown };
    session.disconnect();
    await Deno.writeTextFile(path, JSON.stringify(profile));
  };
}
