/**
 * What an operator asks for when creating a job, and the checks a request must pass: id,
 * document, targets, target selection, rollout, abort criteria, timeouts, retries, schedule and
 * health gate, each refused with a reason.
 *
 * @module
 */

import {
  type AbortCriterion,
  type RetryCriterion,
  type RolloutConfig,
  rolloutConfigProblems,
} from "./rollout.ts";
import { parseVersion } from "../protocol/image_format.ts";

/** A job creation request. */
export interface JobSpec {
  readonly jobId: string;
  readonly document: Readonly<Record<string, unknown>>;
  readonly targets: { readonly things?: readonly string[]; readonly groups?: readonly string[] };
  readonly targetSelection?: "SNAPSHOT" | "CONTINUOUS";
  readonly rollout?: RolloutConfig;
  readonly abort?: readonly AbortCriterion[];
  readonly timeout?: { readonly inProgressTimeoutInMinutes: number };
  readonly retry?: readonly RetryCriterion[];
  readonly scheduling?: {
    readonly startTime?: number;
    readonly endTime?: number;
    readonly endBehavior?: "STOP_ROLLOUT" | "CANCEL" | "FORCE_CANCEL";
  };
  /**
   * The firmware version the job installs (`1.1.0+0`; OTA updates set it from the image). A
   * CONTINUOUS job with one re-runs on a thing that succeeded but reports older firmware again.
   */
  readonly firmwareVersion?: string;
  /** Rollout in waves, each gated on the health of the one before (see {@linkcode HealthGate}). */
  readonly healthGate?: HealthGate;
  readonly description?: string;
}

/**
 * Waves of `waveSize` things. The next wave opens only once every execution of the previous one
 * has ended and at least `minSuccessPercent` of its things SUCCEEDED (a confirmed boot after the
 * self-test); otherwise the job is paused (`onFailure: "PAUSE"`, the default: an operator looks,
 * then resumes or cancels) or canceled, with the reason on the job.
 */
export interface HealthGate {
  readonly waveSize: number;
  /** 0..100. @default {100} */
  readonly minSuccessPercent?: number;
  /** @default {"PAUSE"} */
  readonly onFailure?: "PAUSE" | "CANCEL";
}

/** Outcome of an operator action. */
export type ServiceResult<T = true> = { readonly ok: true; readonly value: T } | {
  readonly ok: false;
  readonly reason: string;
};

const JOB_ID = /^[a-zA-Z0-9_-]{1,64}$/;
const MAX_DOCUMENT = 32 * 1024;

/**
 * Problems with a job spec (empty when it is valid).
 *
 * @example
 * ```ts
 * import { jobSpecProblems } from "./job_spec.ts";
 * jobSpecProblems({ jobId: "a b", document: {}, targets: {} }).length; // 2
 * ```
 */
export function jobSpecProblems(spec: JobSpec): string[] {
  const problems: string[] = [];
  if (typeof spec.jobId !== "string" || !JOB_ID.test(spec.jobId)) {
    problems.push("jobId must be 1..64 characters of [a-zA-Z0-9_-]");
  }
  if (typeof spec.document !== "object" || spec.document === null || Array.isArray(spec.document)) {
    problems.push("document must be a JSON object");
  } else if (new TextEncoder().encode(JSON.stringify(spec.document)).length > MAX_DOCUMENT) {
    problems.push(`document must be at most ${MAX_DOCUMENT} bytes`);
  }
  const things = spec.targets?.things ?? [];
  const groups = spec.targets?.groups ?? [];
  if (things.length + groups.length === 0) {
    problems.push("targets must name at least one thing or group");
  }
  if (
    spec.targetSelection && spec.targetSelection !== "SNAPSHOT" &&
    spec.targetSelection !== "CONTINUOUS"
  ) {
    problems.push("targetSelection must be SNAPSHOT or CONTINUOUS");
  }
  if (spec.rollout) problems.push(...rolloutConfigProblems(spec.rollout));
  for (const [i, c] of (spec.abort ?? []).entries()) {
    if (!["FAILED", "REJECTED", "TIMED_OUT", "ALL"].includes(c.failureType)) {
      problems.push(`abort[${i}].failureType is invalid`);
    }
    if (c.action !== "CANCEL" && c.action !== "PAUSE") {
      problems.push(`abort[${i}].action must be CANCEL or PAUSE`);
    }
    if (!(c.thresholdPercentage >= 0 && c.thresholdPercentage <= 100)) {
      problems.push(`abort[${i}].thresholdPercentage must be 0..100`);
    }
    if (!Number.isInteger(c.minNumberOfExecutedThings) || c.minNumberOfExecutedThings < 1) {
      problems.push(`abort[${i}].minNumberOfExecutedThings must be >= 1`);
    }
  }
  const timeout = spec.timeout?.inProgressTimeoutInMinutes;
  if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 1 || timeout > 10080)) {
    problems.push("timeout.inProgressTimeoutInMinutes must be 1..10080");
  }
  for (const [i, r] of (spec.retry ?? []).entries()) {
    if (!["FAILED", "TIMED_OUT", "ALL"].includes(r.failureType)) {
      problems.push(`retry[${i}].failureType is invalid`);
    }
    if (!Number.isInteger(r.numberOfRetries) || r.numberOfRetries < 0 || r.numberOfRetries > 10) {
      problems.push(`retry[${i}].numberOfRetries must be 0..10`);
    }
  }
  if ((spec.retry ?? []).length > 2) problems.push("retry holds at most 2 criteria");
  if (spec.firmwareVersion !== undefined && parseVersion(String(spec.firmwareVersion)) === null) {
    problems.push("firmwareVersion must be X.Y.Z[+B]");
  }
  const gate = spec.healthGate;
  if (gate !== undefined) {
    if (typeof gate !== "object" || gate === null) {
      problems.push("healthGate must be an object");
    } else {
      if (!Number.isInteger(gate.waveSize) || gate.waveSize < 1) {
        problems.push("healthGate.waveSize must be a positive integer");
      }
      const min = gate.minSuccessPercent;
      if (min !== undefined && !(typeof min === "number" && min >= 0 && min <= 100)) {
        problems.push("healthGate.minSuccessPercent must be a number 0..100");
      }
      if (
        gate.onFailure !== undefined && gate.onFailure !== "PAUSE" && gate.onFailure !== "CANCEL"
      ) {
        problems.push("healthGate.onFailure must be PAUSE or CANCEL");
      }
    }
  }
  return problems;
}
