/**
 * Rollout arithmetic of AWS IoT Jobs, pure: the notification rate (fixed or exponential), a
 * sliding-window pacer, abort criteria, retries and timeout deadlines. Times are in the job
 * service's clock (milliseconds), so a time-scaled clock speeds a whole rollout up.
 *
 * @module
 */

import type { ExecutionStatus } from "./job_execution.ts";

/** `jobExecutionsRolloutConfig`. */
export interface RolloutConfig {
  /** Cap on notifications per minute, 1..1000. @default {1000} */
  readonly maximumPerMinute?: number;
  readonly exponentialRate?: {
    /** Starting rate, 1..1000. */
    readonly baseRatePerMinute: number;
    /** 1.1..5, one decimal place. */
    readonly incrementFactor: number;
    /** Step up after every N notified (or succeeded) things; set exactly one. */
    readonly rateIncreaseCriteria: {
      readonly numberOfNotifiedThings?: number;
      readonly numberOfSucceededThings?: number;
    };
  };
}

/** Failure types abort and retry criteria count. */
export type FailureType = "FAILED" | "REJECTED" | "TIMED_OUT" | "ALL";

/** One `abortConfig.criteriaList` entry. `PAUSE` is this project's extension (operators ask for it). */
export interface AbortCriterion {
  readonly failureType: FailureType;
  readonly action: "CANCEL" | "PAUSE";
  /** Percentage of executed things, 0..100. */
  readonly thresholdPercentage: number;
  /** No check before this many executions ended. */
  readonly minNumberOfExecutedThings: number;
}

/** One `jobExecutionsRetryConfig.criteriaList` entry. */
export interface RetryCriterion {
  readonly failureType: "FAILED" | "TIMED_OUT" | "ALL";
  /** 0..10. */
  readonly numberOfRetries: number;
}

/** Counts the rollout decisions read. */
export interface RolloutCounts {
  readonly notified: number;
  readonly succeeded: number;
}

/**
 * Validates a rollout config; returns the problems (empty when valid).
 *
 * @example
 * ```ts
 * import { rolloutConfigProblems } from "./rollout.ts";
 * rolloutConfigProblems({ maximumPerMinute: 5000 }); // ["maximumPerMinute must be an integer 1..1000"]
 * ```
 */
export function rolloutConfigProblems(config: RolloutConfig): string[] {
  const problems: string[] = [];
  const int = (v: unknown, min: number, max: number) =>
    typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
  if (config.maximumPerMinute !== undefined && !int(config.maximumPerMinute, 1, 1000)) {
    problems.push("maximumPerMinute must be an integer 1..1000");
  }
  const exp = config.exponentialRate;
  if (exp) {
    if (!int(exp.baseRatePerMinute, 1, 1000)) {
      problems.push("exponentialRate.baseRatePerMinute must be an integer 1..1000");
    }
    const f = exp.incrementFactor;
    if (typeof f !== "number" || f < 1.1 || f > 5 || Math.round(f * 10) !== f * 10) {
      problems.push("exponentialRate.incrementFactor must be 1.1..5 with one decimal place");
    }
    const c = exp.rateIncreaseCriteria ?? {};
    const set = [c.numberOfNotifiedThings, c.numberOfSucceededThings].filter((v) =>
      v !== undefined
    );
    if (set.length !== 1 || !int(set[0], 1, Number.MAX_SAFE_INTEGER)) {
      problems.push(
        "exponentialRate.rateIncreaseCriteria must set exactly one of numberOfNotifiedThings, numberOfSucceededThings (>= 1)",
      );
    }
  }
  return problems;
}

/**
 * Notifications allowed per minute now. Exponential: base × factor^steps, one step per
 * `criteria` notified (or succeeded) things, never above `maximumPerMinute` (default 1000).
 *
 * @example
 * ```ts
 * import { ratePerMinute } from "./rollout.ts";
 * const config = { exponentialRate: { baseRatePerMinute: 50, incrementFactor: 2,
 *   rateIncreaseCriteria: { numberOfNotifiedThings: 1000 } } };
 * ratePerMinute(config, { notified: 2500, succeeded: 0 }); // 200
 * ```
 */
export function ratePerMinute(config: RolloutConfig, counts: RolloutCounts): number {
  const cap = config.maximumPerMinute ?? 1000;
  const exp = config.exponentialRate;
  if (!exp) return cap;
  const criteria = exp.rateIncreaseCriteria;
  const steps = criteria.numberOfNotifiedThings !== undefined
    ? Math.floor(counts.notified / criteria.numberOfNotifiedThings)
    : Math.floor(counts.succeeded / criteria.numberOfSucceededThings!);
  return Math.min(cap, Math.floor(exp.baseRatePerMinute * exp.incrementFactor ** steps));
}

const MINUTE = 60_000;

/**
 * How many more things may be notified at `now`, given when the previous notifications went out:
 * at most `rate` in any 60-second window.
 *
 * @example
 * ```ts
 * import { notificationsAllowed } from "./rollout.ts";
 * notificationsAllowed(10, [0, 1000, 59_000], 60_000); // 9 (the one at 0 has left the window)
 * ```
 */
export function notificationsAllowed(rate: number, recent: readonly number[], now: number): number {
  const inWindow = recent.filter((at) => at > now - MINUTE && at <= now).length;
  return Math.max(0, rate - inWindow);
}

/**
 * The first abort criterion that fires, in order, or null. Executed = executions that ended
 * (SUCCEEDED, FAILED, REJECTED, TIMED_OUT); a criterion fires once at least
 * `minNumberOfExecutedThings` ended and its failures reach `thresholdPercentage` of them.
 *
 * @example
 * ```ts
 * import { firedAbortCriterion } from "./rollout.ts";
 * const criterion = { failureType: "FAILED", action: "CANCEL", thresholdPercentage: 20, minNumberOfExecutedThings: 10 } as const;
 * firedAbortCriterion([criterion], { SUCCEEDED: 8, FAILED: 2 }); // criterion
 * ```
 */
export function firedAbortCriterion(
  criteria: readonly AbortCriterion[],
  counts: Partial<Record<ExecutionStatus, number>>,
): AbortCriterion | null {
  const n = (s: ExecutionStatus) => counts[s] ?? 0;
  const executed = n("SUCCEEDED") + n("FAILED") + n("REJECTED") + n("TIMED_OUT");
  for (const criterion of criteria) {
    if (executed < criterion.minNumberOfExecutedThings || executed === 0) continue;
    const failures = criterion.failureType === "ALL"
      ? n("FAILED") + n("REJECTED") + n("TIMED_OUT")
      : n(criterion.failureType);
    // Compared without a division: (29 / 100) * 100 is 28.999999999999996 in floating point,
    // and exactly the threshold must fire.
    if (failures * 100 >= criterion.thresholdPercentage * executed) return criterion;
  }
  return null;
}

/**
 * Whether an execution that ended `status` after `retriesSoFar` retries is retried (at most 10
 * retries per thing across failure types).
 *
 * @example
 * ```ts
 * import { shouldRetry } from "./rollout.ts";
 * shouldRetry([{ failureType: "FAILED", numberOfRetries: 2 }], "FAILED", 1); // true
 * ```
 */
export function shouldRetry(
  criteria: readonly RetryCriterion[],
  status: ExecutionStatus,
  retriesSoFar: number,
): boolean {
  if ((status !== "FAILED" && status !== "TIMED_OUT") || retriesSoFar >= 10) return false;
  const allowed = criteria
    .filter((c) => c.failureType === "ALL" || c.failureType === status)
    .reduce((max, c) => Math.max(max, c.numberOfRetries), 0);
  return retriesSoFar < Math.min(10, allowed);
}

/**
 * When an execution in progress times out: the in-progress timer from its start, shortened by
 * the latest step timer, which can never extend past the in-progress deadline.
 *
 * @example
 * ```ts
 * import { timeoutDeadline } from "./rollout.ts";
 * // started 12:00, 10-minute in-progress timeout, step timer of 5 min set at 12:08 -> 12:10
 * timeoutDeadline({ startedAt: 0, inProgressTimeoutMinutes: 10, stepSetAt: 8 * 60_000, stepTimeoutMinutes: 5 }); // 600000
 * ```
 */
export function timeoutDeadline(timing: {
  readonly startedAt: number;
  readonly inProgressTimeoutMinutes?: number;
  readonly stepSetAt?: number;
  readonly stepTimeoutMinutes?: number;
}): number | null {
  const inProgress = timing.inProgressTimeoutMinutes !== undefined
    ? timing.startedAt + timing.inProgressTimeoutMinutes * MINUTE
    : null;
  const step = timing.stepTimeoutMinutes !== undefined && timing.stepSetAt !== undefined
    ? timing.stepSetAt + timing.stepTimeoutMinutes * MINUTE
    : null;
  if (inProgress === null) return step;
  if (step === null) return inProgress;
  return Math.min(inProgress, step);
}
