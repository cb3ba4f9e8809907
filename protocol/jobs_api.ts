/**
 * The bodies of the AWS IoT Jobs device API over MQTT (JSON), both ways: the requests a device
 * publishes (`$next/get`, `<job>/get`, `<job>/update`) and the replies and notifications the
 * cloud sends back (`accepted`, `rejected`, `notify-next`). Field names are AWS's.
 *
 * @module
 */

/** AWS's error codes of a `/rejected` reply. */
export type JobsErrorCode =
  | "InvalidTopic"
  | "InvalidJson"
  | "InvalidRequest"
  | "InvalidStateTransition"
  | "ResourceNotFound"
  | "VersionMismatch"
  | "InternalError"
  | "RequestThrottled"
  | "TerminalStateReached";

/** An execution's state as the replies carry it (`executionState`). */
export interface ExecutionState {
  readonly status: string;
  readonly statusDetails?: Readonly<Record<string, string>>;
  readonly versionNumber: number;
}

/**
 * `UpdateJobExecution`: a new status, with `expectedVersion` when the device wants a version
 * check (a mismatch is answered `VersionMismatch`).
 *
 * @example
 * ```ts
 * import { updateRequest } from "./jobs_api.ts";
 * updateRequest({ status: "IN_PROGRESS", statusDetails: {}, clientToken: "1:dev-1" });
 * // '{"status":"IN_PROGRESS","statusDetails":{},"clientToken":"1:dev-1"}'
 * ```
 */
export function updateRequest(request: {
  readonly status: string;
  readonly statusDetails: Readonly<Record<string, string>>;
  readonly clientToken: string;
  readonly expectedVersion?: number;
}): string {
  const body: Record<string, unknown> = {
    status: request.status,
    statusDetails: request.statusDetails,
    clientToken: request.clientToken,
  };
  if (request.expectedVersion !== undefined) body.expectedVersion = request.expectedVersion;
  return JSON.stringify(body);
}

/**
 * `DescribeJobExecution` (also `$next/get`): `includeJobDocument` defaults to true for `$next`
 * and false for a named job on the service side, so a device says which it wants.
 *
 * @example
 * ```ts
 * import { describeRequest } from "./jobs_api.ts";
 * describeRequest({ clientToken: "2:dev-1", includeJobDocument: false });
 * // '{"clientToken":"2:dev-1","includeJobDocument":false}'
 * ```
 */
export function describeRequest(request: {
  readonly clientToken: string;
  readonly includeJobDocument?: boolean;
}): string {
  return JSON.stringify(
    request.includeJobDocument === undefined
      ? { clientToken: request.clientToken }
      : { clientToken: request.clientToken, includeJobDocument: request.includeJobDocument },
  );
}

/**
 * A request body as the cloud reads it: a JSON object (an empty payload is `{}`), else null.
 *
 * @example
 * ```ts
 * import { parseRequestBody } from "./jobs_api.ts";
 * parseRequestBody(new TextEncoder().encode('{"clientToken":"a"}')); // { clientToken: "a" }
 * parseRequestBody(new TextEncoder().encode("[1]")); // null
 * ```
 */
export function parseRequestBody(payload: Uint8Array): Record<string, unknown> | null {
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(payload);
    const parsed = text.trim() === "" ? {} : JSON.parse(text);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return null;
    return parsed;
  } catch {
    return null;
  }
}

/** The `clientToken` of a request as the cloud echoes it (at most 64 characters), if any. */
export function clientTokenOf(body: Readonly<Record<string, unknown>>): string | undefined {
  return typeof body.clientToken === "string" ? body.clientToken.slice(0, 64) : undefined;
}

/**
 * A `/rejected` reply: the AWS code, a message, the request's token, the time in seconds, and
 * for `VersionMismatch` and `InvalidStateTransition` the execution's current state.
 *
 * @example
 * ```ts
 * import { rejectedReply } from "./jobs_api.ts";
 * rejectedReply({ code: "InvalidJson", message: "not JSON", timestamp: 1 });
 * // { code: "InvalidJson", message: "not JSON", clientToken: undefined, timestamp: 1 }
 * ```
 */
export function rejectedReply(reply: {
  readonly code: JobsErrorCode;
  readonly message: string;
  readonly clientToken?: string | undefined;
  readonly timestamp: number;
  readonly executionState?: ExecutionState;
}): Record<string, unknown> {
  const body: Record<string, unknown> = {
    code: reply.code,
    message: reply.message,
    clientToken: reply.clientToken,
    timestamp: reply.timestamp,
  };
  if (
    reply.executionState &&
    (reply.code === "VersionMismatch" || reply.code === "InvalidStateTransition")
  ) {
    body.executionState = reply.executionState;
  }
  return body;
}

/** What a device reads of any Jobs reply. */
export interface JobsReply {
  readonly clientToken: string | null;
  /** The rejection's code (null on an accepted reply or when absent). */
  readonly code: string | null;
  /** `executionState` (update replies) or `execution` (get replies), when present. */
  readonly state: Readonly<Record<string, unknown>> | null;
}

/**
 * Reads a reply as a device does: never throws; null for anything that is not a JSON object.
 *
 * @example
 * ```ts
 * import { readJobsReply } from "./jobs_api.ts";
 * readJobsReply(new TextEncoder().encode('{"clientToken":"1","code":"VersionMismatch"}'));
 * // { clientToken: "1", code: "VersionMismatch", state: null }
 * ```
 */
export function readJobsReply(payload: Uint8Array): JobsReply | null {
  let reply: Record<string, unknown>;
  try {
    const parsed = JSON.parse(new TextDecoder().decode(payload));
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return null;
    reply = parsed;
  } catch {
    return null;
  }
  const state = reply.executionState ?? reply.execution;
  return {
    clientToken: typeof reply.clientToken === "string" ? reply.clientToken : null,
    code: reply.code === undefined ? null : String(reply.code),
    state: typeof state === "object" && state !== null && !Array.isArray(state)
      ? state as Record<string, unknown>
      : null,
  };
}
