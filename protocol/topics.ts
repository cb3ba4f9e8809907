/**
 * MQTT topics of the AWS IoT Jobs device API and of MQTT-based file delivery, and the reverse:
 * what an incoming topic is.
 *
 * @module
 */

/** Topic builders for one thing. */
export interface ThingTopics {
  readonly notifyNext: string;
  readonly nextGet: string;
  readonly nextGetReplies: string;
  readonly updateReplies: string;
  readonly getReplies: string;
  jobUpdate(jobId: string): string;
  jobGet(jobId: string): string;
  streamGet(stream: string): string;
  streamData(stream: string): string;
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
  const jobs = `$aws/things/${thingName}/jobs`;
  const streams = `$aws/things/${thingName}/streams`;
  return {
    notifyNext: `${jobs}/notify-next`,
    nextGet: `${jobs}/$next/get`,
    nextGetReplies: `${jobs}/$next/get/+`,
    updateReplies: `${jobs}/+/update/+`,
    getReplies: `${jobs}/+/get/+`,
    jobUpdate: (jobId) => `${jobs}/${jobId}/update`,
    jobGet: (jobId) => `${jobs}/${jobId}/get`,
    streamGet: (stream) => `${streams}/${stream}/get/cbor`,
    streamData: (stream) => `${streams}/${stream}/data/cbor`,
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
  const prefix = `$aws/things/${thingName}/`;
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
