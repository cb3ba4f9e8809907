/**
 * The operator an API request acts for, carried through everything the request runs (its async
 * context), so each audit row it writes names them without every service taking a parameter.
 *
 * @example
 * ```ts ignore
 * await actingAs("alice", () => jobs.pauseJob(jobId)); // the "job-paused" row says operator: alice
 * ```
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";

const acting = new AsyncLocalStorage<string>();

/** Runs `work` on behalf of operator `name`. */
export function actingAs<T>(name: string, work: () => Promise<T>): Promise<T> {
  return acting.run(name, work);
}

/** The operator the current work acts for, or null (the scheduler, a device). */
export function actingOperator(): string | null {
  return acting.getStore() ?? null;
}
