/**
 * The AWS IoT Jobs device API over MQTT, as the cloud answers it: `jobs/get`, `start-next`,
 * `<jobId>/get` (and `$next/get`) and `<jobId>/update`, each answered on `/accepted` or, with
 * AWS's error code, on `/rejected`. It reads and changes executions only through its
 * {@linkcode JobsBackend} (the job service), so the scheduling stays in one place.
 *
 * @module
 */

import type { ExecutionRecord } from "./store.ts";
import type { RejectionCode } from "./job_execution.ts";
import { classifyRequest, replyTopic } from "../protocol/topics.ts";
import { clientTokenOf, parseRequestBody, rejectedReply } from "../protocol/jobs_api.ts";

/** What an update of an execution came to. */
export type UpdateOutcome = { ok: true; execution: ExecutionRecord } | {
  ok: false;
  code: RejectionCode;
  message: string;
  execution?: ExecutionRecord;
};

/** What the device API needs of the job service. */
export interface JobsBackend {
  executionsOfThing(thing: string): Promise<readonly ExecutionRecord[]>;
  getExecution(jobId: string, thing: string): Promise<ExecutionRecord | null>;
  /** The execution AWS calls `$next`: the oldest in progress, else the oldest queued. */
  nextFor(thing: string): Promise<ExecutionRecord | null>;
  /** Applies a device's update request (version checks, transitions, timeouts). */
  applyUpdate(thing: string, jobId: string, raw: Record<string, unknown>): Promise<UpdateOutcome>;
  /** The execution as the replies describe it. */
  executionView(
    execution: ExecutionRecord,
    withDocument: boolean,
  ): Promise<Record<string, unknown>>;
  documentOf(jobId: string): Promise<Readonly<Record<string, unknown>>>;
  /** The cloud's time in seconds. */
  seconds(): number;
  /** Sends a reply once what it reports is committed. */
  send(topic: string, body: Record<string, unknown>): void;
  log(line: string): void;
}

/** Answers device requests. Never rejects: bad requests are rejected with a code. */
export class JobsDeviceApi {
  readonly #backend: JobsBackend;

  constructor(backend: JobsBackend) {
    this.#backend = backend;
  }

  /** Handles a message a device published under `$aws/things/<thing>/jobs/`. */
  async handle(thing: string, topic: string, payload: Uint8Array): Promise<void> {
    const request = classifyRequest(topic);
    if (!("thing" in request) || request.thing !== thing) return;
    if (request.kind === "stream-get" || request.kind === "shadow-update") return;
    const body = parseRequestBody(payload);
    if (body === null) {
      return this.#reject(topic, "InvalidJson", "request is not a JSON object", undefined);
    }
    const clientToken = clientTokenOf(body);
    try {
      switch (request.kind) {
        case "jobs-get-pending":
          return await this.#getPending(thing, topic, clientToken);
        case "jobs-start-next":
          return await this.#startNext(thing, topic, body, clientToken);
        case "jobs-describe":
          return await this.#describe(thing, request.jobId, topic, body, clientToken);
        case "jobs-update":
          return await this.#update(thing, request.jobId, topic, body, clientToken);
        case "jobs-reply":
          return;
      }
      this.#reject(
        topic,
        "InvalidTopic",
        `unknown jobs topic '${topic.slice(0, 120)}'`,
        clientToken,
      );
    } catch (error) {
      this.#backend.log(`jobs API error on ${topic}: ${(error as Error).message}`);
      this.#reject(topic, "InternalError", "internal error", clientToken);
    }
  }

  async #getPending(thing: string, topic: string, clientToken: string | undefined): Promise<void> {
    const open = (await this.#backend.executionsOfThing(thing)).filter((e) =>
      e.status === "IN_PROGRESS" || e.status === "QUEUED"
    );
    const summary = (e: ExecutionRecord) => ({
      jobId: e.jobId,
      queuedAt: Math.floor(e.queuedAt / 1000),
      lastUpdatedAt: Math.floor(e.updatedAt / 1000),
      versionNumber: e.versionNumber,
      executionNumber: e.executionNumber,
    });
    this.#backend.send(replyTopic(topic, "accepted"), {
      clientToken,
      timestamp: this.#backend.seconds(),
      inProgressJobs: open.filter((e) => e.status === "IN_PROGRESS").slice(0, 10).map(summary),
      queuedJobs: open.filter((e) => e.status === "QUEUED").slice(0, 10).map(summary),
    });
  }

  async #describe(
    thing: string,
    jobId: string,
    topic: string,
    request: Record<string, unknown>,
    clientToken: string | undefined,
  ): Promise<void> {
    const execution = jobId === "$next"
      ? await this.#backend.nextFor(thing)
      : await this.#backend.getExecution(jobId, thing);
    if (!execution) {
      if (jobId === "$next") {
        return this.#backend.send(replyTopic(topic, "accepted"), {
          clientToken,
          timestamp: this.#backend.seconds(),
        });
      }
      return this.#reject(
        topic,
        "ResourceNotFound",
        `no execution of job '${jobId.slice(0, 64)}' for this thing`,
        clientToken,
      );
    }
    const withDocument = jobId === "$next"
      ? request.includeJobDocument !== false
      : request.includeJobDocument === true;
    this.#backend.send(replyTopic(topic, "accepted"), {
      clientToken,
      timestamp: this.#backend.seconds(),
      execution: await this.#backend.executionView(execution, withDocument),
    });
  }

  async #startNext(
    thing: string,
    topic: string,
    request: Record<string, unknown>,
    clientToken: string | undefined,
  ): Promise<void> {
    const next = await this.#backend.nextFor(thing);
    if (!next) {
      return this.#backend.send(replyTopic(topic, "accepted"), {
        clientToken,
        timestamp: this.#backend.seconds(),
      });
    }
    if (next.status === "IN_PROGRESS") {
      return this.#backend.send(replyTopic(topic, "accepted"), {
        clientToken,
        timestamp: this.#backend.seconds(),
        execution: await this.#backend.executionView(next, true),
      });
    }
    const details = request.statusDetails;
    const update: Record<string, unknown> = {
      status: "IN_PROGRESS",
      ...(details !== undefined ? { statusDetails: details } : {}),
    };
    if (request.stepTimeoutInMinutes !== undefined) {
      update.stepTimeoutInMinutes = request.stepTimeoutInMinutes;
    }
    const result = await this.#backend.applyUpdate(thing, next.jobId, update);
    if (!result.ok) {
      return this.#reject(topic, result.code, result.message, clientToken, result.execution);
    }
    this.#backend.send(replyTopic(topic, "accepted"), {
      clientToken,
      timestamp: this.#backend.seconds(),
      execution: await this.#backend.executionView(result.execution, true),
    });
  }

  async #update(
    thing: string,
    jobId: string,
    topic: string,
    request: Record<string, unknown>,
    clientToken: string | undefined,
  ): Promise<void> {
    const result = await this.#backend.applyUpdate(thing, jobId, request);
    if (!result.ok) {
      return this.#reject(topic, result.code, result.message, clientToken, result.execution);
    }
    const e = result.execution;
    const body: Record<string, unknown> = { clientToken, timestamp: this.#backend.seconds() };
    if (request.includeJobExecutionState !== false) {
      body.executionState = {
        status: e.status,
        statusDetails: e.statusDetails,
        versionNumber: e.versionNumber,
      };
    }
    if (request.includeJobDocument === true) {
      body.jobDocument = await this.#backend.documentOf(jobId);
    }
    this.#backend.send(replyTopic(topic, "accepted"), body);
  }

  #reject(
    topic: string,
    code: RejectionCode,
    message: string,
    clientToken: string | undefined,
    execution?: ExecutionRecord,
  ): void {
    const body = rejectedReply({
      code,
      message,
      clientToken,
      timestamp: this.#backend.seconds(),
      ...(execution
        ? {
          executionState: {
            status: execution.status,
            statusDetails: execution.statusDetails,
            versionNumber: execution.versionNumber,
          },
        }
        : {}),
    });
    this.#backend.send(replyTopic(topic, "rejected"), body);
  }
}
