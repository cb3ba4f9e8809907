/**
 * V8's inspector for this thread (`node:inspector`, which also works inside a Worker, where
 * `--inspect` does not reach in Deno 2.9), its callback calls as promises: what the CPU and heap
 * profilers share.
 *
 * @example
 * ```ts ignore
 * const inspector = openInspector();
 * await inspector.post("Profiler.enable");
 * inspector.close();
 * ```
 *
 * @module
 */
import { Session } from "node:inspector";

/** An open inspector session. */
export interface InspectorSession {
  /** Sends a DevTools protocol command; resolves with its result. */
  post(method: string, params?: object): Promise<unknown>;
  /** Ends the session. */
  close(): void;
}

/** Opens a session on this thread's isolate. */
export function openInspector(): InspectorSession {
  const session = new Session();
  session.connect();
  return {
    post: (method, params = {}) =>
      new Promise<unknown>((resolve, reject) =>
        session.post(
          method,
          params,
          (error: Error | null, result: unknown) => error ? reject(error) : resolve(result),
        )
      ),
    close: () => session.disconnect(),
  };
}
