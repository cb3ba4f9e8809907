/**
 * The OTA agent's behaviour in one place: states × events -> handler -> next state, as data (the
 * AWS OTA agent's `otaTransitionTable`, with the rows its users missed: a lost `$next/get` reply
 * is retried from WaitingForJob, and ClosingFile is a real state between a file and the next).
 *
 * First matching row wins (`All` rows come last). The next state is taken only when the handler
 * reports "done"; "stay" keeps the state without an error (e.g. a job document for the download
 * already running); an error keeps the state and is logged.
 *
 * @module
 */

/** Agent states (AWS names). */
export const AGENT_STATES = [
  "Init",
  "Ready",
  "RequestingJob",
  "WaitingForJob",
  "CreatingFile",
  "RequestingFileBlock",
  "WaitingForFileBlock",
  "ClosingFile",
  "Suspended",
  "ShuttingDown",
  "Stopped",
] as const;
/** One of {@linkcode AGENT_STATES}. */
export type AgentState = typeof AGENT_STATES[number];

/** Agent events (AWS names). */
export const AGENT_EVENTS = [
  "Start",
  "StartSelfTest",
  "RequestJobDocument",
  "ReceivedJobDocument",
  "CreateFile",
  "RequestFileBlock",
  "ReceivedFileBlock",
  "RequestTimer",
  "CloseFile",
  "Suspend",
  "Resume",
  "UserAbort",
  "Shutdown",
] as const;
/** One of {@linkcode AGENT_EVENTS}. */
export type AgentEventType = typeof AGENT_EVENTS[number];

/** Handler names (methods of the agent). */
export type HandlerName =
  | "start"
  | "requestJob"
  | "processJob"
  | "inSelfTest"
  | "initFile"
  | "requestData"
  | "processData"
  | "jobNotification"
  | "closeFile"
  | "suspend"
  | "resume"
  | "userAbort"
  | "shutdown";

/** One row. */
export interface TransitionRow {
  readonly state: AgentState | "All";
  readonly event: AgentEventType;
  readonly handler: HandlerName;
  readonly next: AgentState;
}

const row = (
  state: AgentState | "All",
  event: AgentEventType,
  handler: HandlerName,
  next: AgentState,
): TransitionRow => ({
  state,
  event,
  handler,
  next,
});

/** The table. */
export const TRANSITIONS: readonly TransitionRow[] = [
  row("Ready", "Start", "start", "RequestingJob"),
  row("RequestingJob", "RequestJobDocument", "requestJob", "WaitingForJob"),
  row("RequestingJob", "RequestTimer", "requestJob", "WaitingForJob"),
  // Not in the AWS table: a request whose publish failed (no PUBACK from a loaded broker) leaves
  // the agent here until its timer, and the job document that arrives meanwhile (notify-next)
  // is the answer it was asking for. Dropping it cost 9% of a 10,000-device fleet up to 30 s.
  row("RequestingJob", "ReceivedJobDocument", "processJob", "CreatingFile"),
  row("WaitingForJob", "ReceivedJobDocument", "processJob", "CreatingFile"),
  row("WaitingForJob", "RequestTimer", "requestJob", "WaitingForJob"),
  row("WaitingForJob", "RequestJobDocument", "requestJob", "WaitingForJob"),
  row("CreatingFile", "StartSelfTest", "inSelfTest", "WaitingForJob"),
  row("CreatingFile", "CreateFile", "initFile", "RequestingFileBlock"),
  row("CreatingFile", "RequestTimer", "initFile", "RequestingFileBlock"),
  row("CreatingFile", "RequestJobDocument", "requestJob", "WaitingForJob"),
  row("RequestingFileBlock", "RequestFileBlock", "requestData", "WaitingForFileBlock"),
  row("RequestingFileBlock", "RequestTimer", "requestData", "WaitingForFileBlock"),
  row("RequestingFileBlock", "RequestJobDocument", "requestJob", "WaitingForJob"),
  row("WaitingForFileBlock", "ReceivedFileBlock", "processData", "WaitingForFileBlock"),
  row("WaitingForFileBlock", "RequestTimer", "requestData", "WaitingForFileBlock"),
  row("WaitingForFileBlock", "RequestFileBlock", "requestData", "WaitingForFileBlock"),
  row("WaitingForFileBlock", "RequestJobDocument", "requestJob", "WaitingForJob"),
  row("WaitingForFileBlock", "ReceivedJobDocument", "jobNotification", "RequestingJob"),
  row("WaitingForFileBlock", "CloseFile", "closeFile", "ClosingFile"),
  // Not in the AWS table: a delta patch that cannot be applied starts the file over, whole.
  row("WaitingForFileBlock", "CreateFile", "initFile", "RequestingFileBlock"),
  row("ClosingFile", "CreateFile", "initFile", "RequestingFileBlock"),
  row("ClosingFile", "RequestJobDocument", "requestJob", "WaitingForJob"),
  row("Suspended", "Resume", "resume", "RequestingJob"),
  row("All", "Suspend", "suspend", "Suspended"),
  row("All", "UserAbort", "userAbort", "WaitingForJob"),
  row("All", "Shutdown", "shutdown", "Stopped"),
];

/**
 * The row for `event` in `state`, or undefined (the event is then dropped).
 *
 * @example
 * ```ts
 * import { findTransition } from "./transition_table.ts";
 * findTransition("Ready", "Start")?.next; // "RequestingJob"
 * ```
 */
export function findTransition(
  state: AgentState,
  event: AgentEventType,
): TransitionRow | undefined {
  if (state === "Stopped" || state === "ShuttingDown") return undefined;
  return TRANSITIONS.find((r) => (r.state === state || r.state === "All") && r.event === event);
}
