/**
 * The agent's side of the Jobs API exchanges that need an answer: status updates retried with
 * backoff until acknowledged (a lost acknowledgement is not a lost update; `expectedVersion` on
 * acknowledged updates), DescribeJobExecution asked again until answered, and the replies
 * matched to their requests by client token.
 *
 * @example
 * ```ts ignore
 * const reporter = new JobReporter({ thingName, mqtt, topics, clock, statusAckTimeoutMs: 5000,
 *   maxStatusRetries: 10, ensureSubscribed, generation: () => 0, log });
 * await reporter.report("job-1", "IN_PROGRESS", {}, true);
 * ```
 *
 * @module
 */

import type { Clock } from "../lib/clock.ts";
import { describeRequest, readJobsReply, updateRequest } from "../protocol/jobs_api.ts";
import type { ThingTopics } from "../protocol/topics.ts";
import type { MqttPort } from "./ports.ts";

/** An answer to an update or a describe: accepted or not, the rejection code, the status seen. */
export interface Reply {
  readonly ok: boolean;
  readonly code: string | null;
  readonly status?: string;
  /** The execution as the cloud describes it (with its job document when asked for). */
  readonly execution?: Record<string, unknown>;
}

/** What a {@linkcode JobReporter} works with. */
export interface JobReporterOptions {
  readonly thingName: string;
  readonly mqtt: MqttPort;
  readonly topics: ThingTopics;
  readonly clock: Clock;
  /** First wait for an answer; doubled per retry up to a minute. */
  readonly statusAckTimeoutMs: number;
  /** Retries before giving up. */
  readonly maxStatusRetries: number;
  /** Makes sure the reply topics are subscribed (false: the agent is stopping). */
  readonly ensureSubscribed: () => Promise<boolean>;
  /** The agent's generation: a change means it halted, and waits end unanswered. */
  readonly generation: () => number;
  readonly log: (line: string) => void;
}

/** Status reports and execution descriptions of one agent. */
export class JobReporter {
  readonly #options: JobReporterOptions;
  readonly #jobVersion = new Map<string, number>();
  readonly #pendingAcks = new Map<string, (answer: Reply) => void>();
  #tokenCounter = 0;

  constructor(options: JobReporterOptions) {
    this.#options = options;
  }

  #ensureSubscribed(): Promise<boolean> {
    return this.#options.ensureSubscribed();
  }

  #generation(): number {
    return this.#options.generation();
  }

  /** Remembers the execution's version from a job document (sent as `expectedVersion`). */
  rememberVersion(jobId: string, versionNumber: number): void {
    this.#jobVersion.set(jobId, versionNumber);
  }

  /** Ends every wait at once, unanswered ("Shutdown"), as a halt or shutdown must. */
  cancelWaits(): void {
    for (const resolve of this.#pendingAcks.values()) resolve({ ok: false, code: "Shutdown" });
    this.#pendingAcks.clear();
  }

  /** A fresh client token (`<counter>:<thing>`, at most 64 characters). */
  token(): string {
    return `${this.#tokenCounter++}:${this.#options.thingName}`.slice(0, 64);
  }

  /**
   * Publishes a job status. With `awaitAck`, waits for `update/accepted` and retries with backoff
   * (a lost acknowledgement is not a lost update); returns whether it was acknowledged.
   */
  async report(
    jobId: string,
    status: string,
    details: Record<string, string>,
    awaitAck: boolean,
  ): Promise<boolean> {
    const generation = this.#generation();
    let delay = this.#options.statusAckTimeoutMs;
    for (let attempt = 0; attempt <= (awaitAck ? this.#options.maxStatusRetries : 0); attempt++) {
      if (generation !== this.#generation()) return false;
      const clientToken = this.token();
      // Progress is fire-and-forget and may overtake other updates: only acknowledged updates
      // carry expectedVersion (a mismatch is then answered, and retried without it).
      const expected = awaitAck ? this.#jobVersion.get(jobId) : undefined;
      const body = updateRequest({
        status,
        statusDetails: details,
        clientToken,
        ...(expected !== undefined ? { expectedVersion: expected } : {}),
      });
      // Offline, the publish below fails as well, and the reply time is waited out as for a loss.
      if (awaitAck) await this.#ensureSubscribed();
      const reply = awaitAck ? this.#awaitReply(clientToken, delay) : null;
      try {
        await this.#options.mqtt.publish(
          this.#options.topics.jobUpdate(jobId),
          body,
          awaitAck ? 1 : 0,
        );
      } catch (error) {
        this.#options.log(`status ${status} for ${jobId} not sent: ${(error as Error).message}`);
      }
      if (!reply) return true;
      const answer = await reply;
      if (answer.ok) return true;
      // Halted (power lost, agent stopped) while waiting: nobody is left to ask or to tell.
      if (generation !== this.#generation()) return false;
      if (answer.code === "VersionMismatch") this.#jobVersion.delete(jobId);
      else if (answer.code !== null && answer.code !== "timeout") {
        // Our earlier attempt may have landed with only its acknowledgement lost: ask.
        const seen = await this.describeAnswered(jobId);
        if (seen === status) {
          this.#options.log(
            `status ${status} for ${jobId} was already recorded (acknowledgement lost)`,
          );
          return true;
        }
        this.#options.log(
          `status ${status} for ${jobId} rejected: ${answer.code} (execution is ${
            seen ?? "unknown"
          })`,
        );
        return false;
      }
      delay = Math.min(delay * 2, 60_000);
    }
    return false;
  }

  /**
   * DescribeJobExecution asked again with backoff while the cloud does not answer (a loaded
   * broker answers late, and the answer decides whether an image is kept): null only when no
   * attempt was answered.
   */
  async describeAnswered(jobId: string): Promise<string | null> {
    return (await this.describeExecution(jobId, false))?.status ?? null;
  }

  async #describeOnce(
    jobId: string,
    includeJobDocument: boolean,
    timeoutMs: number,
  ): Promise<{ status: string; execution: Record<string, unknown> } | null> {
    await this.#ensureSubscribed();
    const clientToken = this.token();
    const reply = this.#awaitReply(clientToken, timeoutMs);
    try {
      const body = describeRequest({ clientToken, includeJobDocument });
      await this.#options.mqtt.publish(this.#options.topics.jobGet(jobId), body, 1);
    } catch {
      // Not sent (offline): wait out the reply time like a lost message, so the caller's backoff
      // holds instead of spinning through its attempts, and halt() can still end the wait.
    }
    const answer = await reply;
    return answer.ok && answer.status
      ? { status: answer.status, execution: answer.execution ?? {} }
      : null;
  }

  /** DescribeJobExecution (`<jobId>/get`) asked again with backoff: the status and execution. */
  async describeExecution(
    jobId: string,
    includeJobDocument: boolean,
  ): Promise<{ status: string; execution: Record<string, unknown> } | null> {
    const generation = this.#generation();
    let delay = this.#options.statusAckTimeoutMs;
    for (let attempt = 0; attempt <= this.#options.maxStatusRetries; attempt++) {
      if (generation !== this.#generation()) return null;
      const seen = await this.#describeOnce(jobId, includeJobDocument, delay);
      if (seen !== null) return seen;
      delay = Math.min(delay * 2, 60_000);
    }
    return null;
  }

  #awaitReply(clientToken: string, timeoutMs: number): Promise<Reply> {
    return new Promise((resolve) => {
      const timer = this.#options.clock.setTimer(timeoutMs, () => {
        this.#pendingAcks.delete(clientToken);
        resolve({ ok: false, code: "timeout" });
      });
      this.#pendingAcks.set(clientToken, (answer) => {
        this.#options.clock.clearTimer(timer);
        this.#pendingAcks.delete(clientToken);
        resolve(answer);
      });
    });
  }

  /** Takes an `update` or `get` reply (accepted or rejected) for `jobId`. */
  onReply(jobId: string, accepted: boolean, payload: Uint8Array): void {
    const reply = readJobsReply(payload);
    if (reply === null) return;
    const state = reply.state;
    if (accepted && typeof state?.versionNumber === "number") {
      this.#jobVersion.set(jobId, state.versionNumber);
    }
    const token = reply.clientToken;
    const resolve = token ? this.#pendingAcks.get(token) : undefined;
    if (!resolve) return;
    const status = typeof state?.status === "string" ? state.status : undefined;
    const code = accepted ? null : (reply.code ?? "Rejected");
    resolve({
      ok: accepted,
      code,
      ...(status ? { status } : {}),
      ...(state && typeof state === "object" ? { execution: state } : {}),
    });
  }
}
