/**
 * Failed, rejected and timed-out executions grouped by reason, most common first, each with a
 * readable meaning: what the operator reads instead of the same raw code twenty times. Pure; the
 * operator API serves it, the `ota failures` command and the dashboard show it.
 *
 * @example
 * ```ts
 * groupFailures([
 *   { thing: "a", status: "FAILED", statusDetails: { reason: "0x000000e3: 0x00000095" } },
 *   { thing: "b", status: "FAILED", statusDetails: { reason: "0x000000e3: 0x00000095" } },
 * ]); // [{ status: "FAILED", count: 2, meaning: "signature check failed (0x95)", ... }]
 * ```
 */

import { explainReason } from "../protocol/job_status.ts";

/** The statuses that count as a failure of the update on a device. */
export const FAILURE_STATUSES = ["FAILED", "REJECTED", "TIMED_OUT"] as const;

/** What a failure group is built from: one execution. */
export interface FailedExecution {
  readonly thing: string;
  readonly status: string;
  readonly statusDetails?: Readonly<Record<string, string>>;
}

/** The executions that ended the same way, for the same reason. */
export interface FailureGroup {
  readonly status: string;
  /** The device's reason, as it sent it (null when it sent none, e.g. a timeout). */
  readonly reason: string | null;
  /** The reason in words. */
  readonly meaning: string;
  readonly count: number;
  /** The first device of the group and its detail text, if any. */
  readonly example: { readonly thing: string; readonly detail: string | null };
  /** Up to {@link THINGS_PER_GROUP} devices of the group. */
  readonly things: readonly string[];
}

/** How many device names a group lists (the count says how many there are). */
export const THINGS_PER_GROUP = 20;

/** Groups failures by status and reason, largest group first (ties: first seen first). */
export function groupFailures(executions: Iterable<FailedExecution>): FailureGroup[] {
  const groups = new Map<string, { first: FailedExecution; count: number; things: string[] }>();
  for (const execution of executions) {
    if (!(FAILURE_STATUSES as readonly string[]).includes(execution.status)) continue;
    const key = `${execution.status}\n${execution.statusDetails?.reason ?? ""}`;
    const group = groups.get(key) ?? { first: execution, count: 0, things: [] };
    group.count++;
    if (group.things.length < THINGS_PER_GROUP) group.things.push(execution.thing);
    groups.set(key, group);
  }
  return [...groups.values()]
    .sort((a, b) => b.count - a.count)
    .map(({ first, count, things }) => {
      const reason = first.statusDetails?.reason ?? null;
      return {
        status: first.status,
        reason,
        meaning: explainReason(reason ?? first.status.toLowerCase().replace("_", " ")),
        count,
        example: { thing: first.thing, detail: first.statusDetails?.detail ?? null },
        things,
      };
    });
}
