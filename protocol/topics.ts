/**
 * Every MQTT topic the devices and the cloud use, built and classified in one place: the AWS IoT
 * Jobs device API, MQTT-based file delivery (streams) and the device shadow. The device side
 * builds its requests with {@linkcode thingTopics} and classifies replies with
 * {@linkcode classifyTopic}; the cloud subscribes to {@linkcode SERVICE_SUBSCRIPTIONS} and
 * classifies requests with {@linkcode classifyRequest}.
 *
 * @module
 */

/** The prefix of every topic of every thing. */
export const THINGS_PREFIX = "$aws/things/";

/**
 * The prefix of `thing`'s own topics: a device may publish and subscribe only under it.
 *
 * @example
 * ```ts
 * import { thingPrefix } from "./topics.ts";
 * thingPrefix("dev-1"); // "$aws/things/dev-1/"
 * ```
 */
export function thingPrefix(thing: string): string {
  return `${THINGS_PREFIX}${thing}/`;
}

/** Topic builders for one thing. */
export interface ThingTopics {
  readonly notifyNext: string;
  readonly nextGet: string;
  readonly nextGetReplies: string;
  readonly updateReplies: string;
  readonly getReplies: string;
  jobUpdate(jobId: string): string;
  jobGet(jobId: string): string;
  readonly shadowUpdate: string;
  streamGet(stream: string): string;
  streamData(stream: string): string;
  streamRejected(stream: string): string;
}

/**
 * Topics of `thingName`.
 *
 * @example
 * ```ts
 * import { thingTopics } from "./topics.ts";
 * thingTopics("dev-1").jobUpdate("job-7"); // "$aws/things/dev-1/jobs/job-7/update"
 * ```
 */
export function thingTopics(thingName: string): ThingTopics {
  const jobs = `${thingPrefix(thingName)}jobs`;
  const streams = `${thingPrefix(thingName)}streams`;
  return {
    notifyNext: `${jobs}/notify-next`,
    nextGet: `${jobs}/$next/get`,
    nextGetReplies: `${jobs}/$next/get/+`,
    updateReplies: `${jobs}/+/update/+`,
    getReplies: `${jobs}/+/get/+`,
    jobUpdate: (jobId) => `${jobs}/${jobId}/update`,
    jobGet: (jobId) => `${jobs}/${jobId}/get`,
    shadowUpdate: `${thingPrefix(thingName)}shadow/update`,
    streamGet: (stream) => `${streams}/${stream}/get/cbor`,
    streamData: (stream) => `${streams}/${stream}/data/cbor`,
    streamRejected: (stream) => `${streams}/${stream}/rejected/cbor`,
  };
}

/** What an incoming message is. */
export type IncomingTopic =
  | { readonly kind: "notify-next" }
  | { readonly kind: "next-get-accepted" }
  | { readonly kind: "next-get-rejected" }
  | { readonly kind: "update-accepted"; readonly jobId: string }
  | { readonly kind: "update-rejected"; readonly jobId: string }
  | { readonly kind: "get-accepted"; readonly jobId: string }
  | { readonly kind: "get-rejected"; readonly jobId: string }
  | { readonly kind: "stream-data"; readonly stream: string }
  | { readonly kind: "other" };

/**
 * Classifies a topic received by `thingName`.
 *
 * @example
 * ```ts
 * import { classifyTopic } from "./topics.ts";
 * classifyTopic("dev-1", "$aws/things/dev-1/jobs/j1/update/accepted"); // { kind: "update-accepted", jobId: "j1" }
 * ```
 */
export function classifyTopic(thingName: string, topic: string): IncomingTopic {
  const prefix = thingPrefix(thingName);
  if (!topic.startsWith(prefix)) return { kind: "other" };
  const rest = topic.slice(prefix.length).split("/");
  if (rest[0] === "jobs") {
    if (rest.length === 2 && rest[1] === "notify-next") return { kind: "notify-next" };
    if (rest.length === 4 && rest[1] === "$next" && rest[2] === "get") {
      if (rest[3] === "accepted") return { kind: "next-get-accepted" };
      if (rest[3] === "rejected") return { kind: "next-get-rejected" };
    }
    if (rest.length === 4 && rest[2] === "update" && rest[1] !== "$next") {
      if (rest[3] === "accepted") return { kind: "update-accepted", jobId: rest[1]! };
      if (rest[3] === "rejected") return { kind: "update-rejected", jobId: rest[1]! };
    }
    if (rest.length === 4 && rest[2] === "get" && rest[1] !== "$next") {
      if (rest[3] === "accepted") return { kind: "get-accepted", jobId: rest[1]! };
      if (rest[3] === "rejected") return { kind: "get-rejected", jobId: rest[1]! };
    }
  }
  if (rest[0] === "streams" && rest.length === 4 && rest[2] === "data" && rest[3] === "cbor") {
    return { kind: "stream-data", stream: rest[1]! };
  }
  return { kind: "other" };
}

/** Device request topics the cloud's services answer (never their own replies). */
export const SERVICE_SUBSCRIPTIONS = [
  "$aws/things/+/jobs/get",
  "$aws/things/+/jobs/start-next",
  "$aws/things/+/jobs/+/get",
  "$aws/things/+/jobs/+/update",
  "$aws/things/+/streams/+/get/cbor",
  "$aws/things/+/shadow/update",
] as const;

/** What a message a device published is, as the cloud sees it. */
export type ServiceRequest =
  | { readonly kind: "jobs-get-pending"; readonly thing: string }
  | { readonly kind: "jobs-start-next"; readonly thing: string }
  | { readonly kind: "jobs-describe"; readonly thing: string; readonly jobId: string }
  | { readonly kind: "jobs-update"; readonly thing: string; readonly jobId: string }
  | { readonly kind: "jobs-reply"; readonly thing: string }
  | { readonly kind: "jobs-unknown"; readonly thing: string }
  | { readonly kind: "stream-get"; readonly thing: string; readonly stream: string }
  | { readonly kind: "shadow-update"; readonly thing: string }
  | { readonly kind: "other" };

/**
 * Classifies a topic a device published on. `jobs-describe` takes `$next` as its job id;
 * `jobs-update` never does (AWS has no `$next/update`).
 *
 * @example
 * ```ts
 * import { classifyRequest } from "./topics.ts";
 * classifyRequest("$aws/things/dev-1/jobs/j1/update"); // { kind: "jobs-update", thing: "dev-1", jobId: "j1" }
 * ```
 */
export function classifyRequest(topic: string): ServiceRequest {
  if (!topic.startsWith(THINGS_PREFIX)) return { kind: "other" };
  const parts = topic.slice(THINGS_PREFIX.length).split("/");
  const thing = parts[0]!;
  if (thing === "") return { kind: "other" };
  const rest = parts.slice(1);
  if (rest[0] === "shadow" && rest.length === 2 && rest[1] === "update") {
    return { kind: "shadow-update", thing };
  }
  if (rest[0] === "streams" && rest.length === 4 && rest[2] === "get" && rest[3] === "cbor") {
    return { kind: "stream-get", thing, stream: rest[1]! };
  }
  if (rest[0] !== "jobs") return { kind: "other" };
  const path = rest.slice(1);
  if (path.length === 1 && path[0] === "get") return { kind: "jobs-get-pending", thing };
  if (path.length === 1 && path[0] === "start-next") return { kind: "jobs-start-next", thing };
  if (path.length === 2 && path[1] === "get") {
    return { kind: "jobs-describe", thing, jobId: path[0]! };
  }
  if (path.length === 2 && path[1] === "update" && path[0] !== "$next") {
    return { kind: "jobs-update", thing, jobId: path[0]! };
  }
  if (path.length === 2 && (path[1] === "accepted" || path[1] === "rejected")) {
    return { kind: "jobs-reply", thing };
  }
  return { kind: "jobs-unknown", thing };
}

/**
 * The reply topic of a request: `<request>/accepted` or `<request>/rejected`.
 *
 * @example
 * ```ts
 * import { replyTopic } from "./topics.ts";
 * replyTopic("$aws/things/dev-1/jobs/j1/update", "accepted"); // "$aws/things/dev-1/jobs/j1/update/accepted"
 * ```
 */
export function replyTopic(request: string, outcome: "accepted" | "rejected"): string {
  return `${request}/${outcome}`;
}
