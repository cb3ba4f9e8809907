/**
 * Job executions with AWS IoT Jobs semantics: statuses, who may set them, the legal transitions
 * as a table, optimistic concurrency on `versionNumber`, and the rejection codes of the device
 * MQTT API. Pure: no I/O.
 *
 * @module
 */
import { type JobsErrorCode } from "../protocol/jobs_api.ts";

/** Execution statuses. */
export const EXECUTION_STATUSES = [
  "QUEUED",
  "IN_PROGRESS",
  "SUCCEEDED",
  "FAILED",
  "TIMED_OUT",
  "REJECTED",
  "REMOVED",
  "CANCELED",
] as const;
/** One of {@linkcode EXECUTION_STATUSES}. */
export type ExecutionStatus = typeof EXECUTION_STATUSES[number];

/** Who changes an execution. */
export type Actor = "device" | "service";

/** Statuses after which nothing changes. */
export const TERMINAL_STATUSES: ReadonlySet<ExecutionStatus> = new Set([
  "SUCCEEDED",
  "FAILED",
  "TIMED_OUT",
  "REJECTED",
  "REMOVED",
  "CANCELED",
]);

/** Terminal statuses a retry config may retry. */
export const RETRYABLE_STATUSES: ReadonlySet<ExecutionStatus> = new Set(["FAILED", "TIMED_OUT"]);

/** One legal transition. */
export interface ExecutionTransition {
  readonly from: ExecutionStatus;
  readonly to: ExecutionStatus;
  readonly actor: Actor;
  /** Only with `force` (cancel of an execution in progress). */
  readonly force?: boolean;
}

const t = (
  from: ExecutionStatus,
  to: ExecutionStatus,
  actor: Actor,
  force = false,
): ExecutionTransition => ({
  from,
  to,
  actor,
  ...(force ? { force } : {}),
});

/** The transitions AWS IoT Jobs allows (rollout-services.md §1.1). */
export const EXECUTION_TRANSITIONS: readonly ExecutionTransition[] = [
  t("QUEUED", "IN_PROGRESS", "device"),
  t("QUEUED", "REJECTED", "device"),
  t("QUEUED", "CANCELED", "service"),
  t("QUEUED", "REMOVED", "service"),
  t("IN_PROGRESS", "IN_PROGRESS", "device"),
  t("IN_PROGRESS", "SUCCEEDED", "device"),
  t("IN_PROGRESS", "FAILED", "device"),
  t("IN_PROGRESS", "REJECTED", "device"),
  t("IN_PROGRESS", "TIMED_OUT", "service"),
  t("IN_PROGRESS", "REMOVED", "service"),
  t("IN_PROGRESS", "CANCELED", "service", true),
];

/** Rejection codes of the device MQTT API (the protocol's). */
export type RejectionCode = JobsErrorCode;

/** The state of one execution. */
export interface ExecutionState {
  readonly status: ExecutionStatus;
  readonly statusDetails: Readonly<Record<string, string>>;
  readonly versionNumber: number;
}

/** A device's UpdateJobExecution request (validated). */
export interface UpdateRequest {
  readonly status: ExecutionStatus;
  readonly statusDetails?: Readonly<Record<string, string>>;
  readonly expectedVersion?: number;
}

/** Outcome of applying a change. */
export type ChangeResult =
  | { readonly ok: true; readonly state: ExecutionState }
  | { readonly ok: false; readonly code: RejectionCode; readonly message: string };

/**
 * Whether `actor` may move an execution from `from` to `to`.
 *
 * @example
 * ```ts
 * import { canTransition } from "./job_execution.ts";
 * canTransition("IN_PROGRESS", "SUCCEEDED", "device"); // true
 * canTransition("SUCCEEDED", "IN_PROGRESS", "device"); // false
 * ```
 */
export function canTransition(
  from: ExecutionStatus,
  to: ExecutionStatus,
  actor: Actor,
  force = false,
): boolean {
  return EXECUTION_TRANSITIONS.some((r) =>
    r.from === from && r.to === to && r.actor === actor && (!r.force || force)
  );
}

const DETAIL_KEY = /^[a-zA-Z0-9:_-]{1,128}$/;

/**
 * Validates a device's UpdateJobExecution payload (AWS limits: status one of the device-settable
 * ones, statusDetails a string map with keys `[a-zA-Z0-9:_-]{1,128}` and values ≤ 1024 chars).
 *
 * @example
 * ```ts
 * import { parseUpdateRequest } from "./job_execution.ts";
 * parseUpdateRequest({ status: "SUCCEEDED" }).ok; // true
 * parseUpdateRequest({ status: "CANCELED" }).ok; // false
 * ```
 */
export function parseUpdateRequest(
  body: unknown,
): { ok: true; value: UpdateRequest } | { ok: false; code: RejectionCode; message: string } {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return { ok: false, code: "InvalidRequest", message: "request is not a JSON object" };
  }
  const request = body as Record<string, unknown>;
  const status = request.status;
  if (
    status !== "IN_PROGRESS" && status !== "SUCCEEDED" && status !== "FAILED" &&
    status !== "REJECTED"
  ) {
    return {
      ok: false,
      code: "InvalidRequest",
      message: `status must be IN_PROGRESS, SUCCEEDED, FAILED or REJECTED`,
    };
  }
  let statusDetails: Record<string, string> | undefined;
  if (request.statusDetails !== undefined) {
    const details = request.statusDetails;
    if (typeof details !== "object" || details === null || Array.isArray(details)) {
      return { ok: false, code: "InvalidRequest", message: "statusDetails must be an object" };
    }
    statusDetails = {};
    for (const [key, value] of Object.entries(details)) {
      if (!DETAIL_KEY.test(key) || typeof value !== "string" || value.length > 1024) {
        return {
          ok: false,
          code: "InvalidRequest",
          message: `statusDetails.${key.slice(0, 40)} is not a valid string entry`,
        };
      }
      statusDetails[key] = value;
    }
  }
  const expected = request.expectedVersion;
  if (
    expected !== undefined &&
    (typeof expected !== "number" || !Number.isInteger(expected) || expected < 0)
  ) {
    return {
      ok: false,
      code: "InvalidRequest",
      message: "expectedVersion must be a non-negative integer",
    };
  }
  return {
    ok: true,
    value: {
      status,
      ...(statusDetails ? { statusDetails } : {}),
      ...(expected !== undefined ? { expectedVersion: expected as number } : {}),
    },
  };
}

/**
 * Applies a device update: version check, then the transition table. Every accepted update
 * raises `versionNumber`; statusDetails are kept when the update omits them.
 *
 * @example
 * ```ts
 * import { applyDeviceUpdate } from "./job_execution.ts";
 * const state = { status: "QUEUED", statusDetails: {}, versionNumber: 1 } as const;
 * applyDeviceUpdate(state, { status: "IN_PROGRESS", expectedVersion: 1 }).ok; // true
 * ```
 */
export function applyDeviceUpdate(state: ExecutionState, request: UpdateRequest): ChangeResult {
  if (request.expectedVersion !== undefined && request.expectedVersion !== state.versionNumber) {
    return {
      ok: false,
      code: "VersionMismatch",
      message:
        `expected version ${request.expectedVersion}, current version is ${state.versionNumber}`,
    };
  }
  if (TERMINAL_STATUSES.has(state.status)) {
    return {
      ok: false,
      code: "InvalidStateTransition",
      message: `execution is already ${state.status}`,
    };
  }
  if (!canTransition(state.status, request.status, "device")) {
    return {
      ok: false,
      code: "InvalidStateTransition",
      message: `cannot go from ${state.status} to ${request.status}`,
    };
  }
  return {
    ok: true,
    state: {
      status: request.status,
      statusDetails: request.statusDetails ?? state.statusDetails,
      versionNumber: state.versionNumber + 1,
    },
  };
}

/**
 * Applies a service action (cancel, remove, time out). Without `force`, an execution in
 * progress is not canceled.
 *
 * @example
 * ```ts
 * import { applyServiceChange } from "./job_execution.ts";
 * const state = { status: "IN_PROGRESS", statusDetails: {}, versionNumber: 2 } as const;
 * applyServiceChange(state, "CANCELED").ok; // false: needs force
 * ```
 */
export function applyServiceChange(
  state: ExecutionState,
  to: ExecutionStatus,
  options: { force?: boolean; statusDetails?: Record<string, string> } = {},
): ChangeResult {
  if (TERMINAL_STATUSES.has(state.status)) {
    return {
      ok: false,
      code: "TerminalStateReached",
      message: `execution is already ${state.status}`,
    };
  }
  if (!canTransition(state.status, to, "service", options.force ?? false)) {
    return {
      ok: false,
      code: "InvalidStateTransition",
      message: `cannot go from ${state.status} to ${to}${options.force ? "" : " without force"}`,
    };
  }
  return {
    ok: true,
    state: {
      status: to,
      statusDetails: options.statusDetails ?? state.statusDetails,
      versionNumber: state.versionNumber + 1,
    },
  };
}
