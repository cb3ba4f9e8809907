/**
 * The job service, with AWS IoT Jobs semantics: jobs with a document and targets (things and
 * thing groups, SNAPSHOT or CONTINUOUS), executions rolled out at a fixed or exponential rate,
 * abort criteria (cancel, or pause: an extension operators ask for), in-progress and step
 * timeouts, retries, scheduled start and end, cancel and force-cancel, health-gated waves.
 * Devices reach it through the device MQTT API (`jobs_device_api.ts`); `notify-next` is sent
 * from here. All state is in the store; all time comes from the clock (scale it to run a
 * 1000-per-minute rollout in seconds).
 *
 * @module
 */

import type { Clock, TimerId } from "../lib/clock.ts";
import {
  applyDeviceUpdate,
  applyServiceChange,
  type ExecutionStatus,
  parseUpdateRequest,
  TERMINAL_STATUSES,
} from "./job_execution.ts";
import {
  firedAbortCriterion,
  notificationsAllowed,
  ratePerMinute,
  shouldRetry,
  timeoutDeadline,
} from "./rollout.ts";
import type { Publisher } from "./stream_service.ts";
import type { CloudStore, ExecutionRecord, JobRecord } from "./store.ts";
import { thingTopics } from "../protocol/topics.ts";
import { JobsDeviceApi, type UpdateOutcome } from "./jobs_device_api.ts";
import { type JobSpec, jobSpecProblems, type ServiceResult } from "./job_spec.ts";
import { compareVersions, parseVersion } from "../protocol/image_format.ts";
import { actingOperator } from "./operator_context.ts";

/** Counts per execution status, plus what is not rolled out yet. */
export type JobCounts = Record<ExecutionStatus, number> & {
  /** Targets the rollout has not notified yet. */
  readonly pending: number;
  /** Targets it never will: the rollout stopped first (cancel, abort, end of schedule). */
  readonly neverNotified: number;
};

/** Options of {@linkcode JobService}. */
export interface JobServiceOptions {
  readonly store: CloudStore;
  readonly publisher: Publisher;
  readonly clock: Clock;
  /** How often (in the clock's time) rollouts, timeouts and schedules are looked at. @default {1000} */
  readonly tickMs?: number;
  readonly log?: (line: string) => void;
  /** Told after every change of a job or execution (for progress streams). */
  readonly onChange?: (jobId: string) => void;
  /** Told the job-level events (created, started, paused, resumed, health gate, completed, canceled). */
  readonly onJobEvent?: (jobId: string, event: string, detail: Record<string, unknown>) => void;
  /**
   * Renders a job document each time a device is served it (e.g. fresh pre-signed URLs, as AWS
   * does for `${aws:iot:s3-presigned-url:...}` placeholders).
   */
  /**
   * Whether this service runs the rollout scheduler (see {@linkcode JobService.scheduling}).
   * @default {true}
   */
  readonly scheduling?: boolean;
  readonly renderDocument?: (
    document: Readonly<Record<string, unknown>>,
    jobId: string,
  ) => Record<string, unknown>;
}

const MINUTE = 60_000;
/** Things a release queues with their queries in flight together. */
const RELEASE_SLICE = 64;

/**
 * The job service.
 *
 * @example
 * ```ts ignore
 * const jobs = new JobService({ store, publisher, clock });
 * await jobs.createJob({ jobId: "ota-1", document, targets: { groups: ["fleet"] } });
 * jobs.start();
 * ```
 */
export class JobService {
  readonly #store: CloudStore;
  readonly #publisher: Publisher;
  readonly #clock: Clock;
  readonly #tickMs: number;
  readonly #log: (line: string) => void;
  readonly #onChange: (jobId: string) => void;
  readonly #onJobEvent: (jobId: string, event: string, detail: Record<string, unknown>) => void;
  readonly #render: (
    document: Readonly<Record<string, unknown>>,
    jobId: string,
  ) => Readonly<Record<string, unknown>>;
  #timer: TimerId | null = null;
  #running = false;
  /** The tick in progress (or the last one). */
  #ticking: Promise<void> = Promise.resolve();
  #scheduling: boolean;
  /** Whether the next tick first tells the things nobody told of their queued executions. */
  #renotifyDue: boolean;
  readonly #outbox = new Set<Promise<unknown>>();
  readonly #deviceApi: JobsDeviceApi;
  /** Per thing, the last of its requests being handled. */
  readonly #deviceQueues = new Map<string, Promise<void>>();
  /** Per job, the review running and whether another was asked for meanwhile. */
  readonly #reviews = new Map<string, { again: boolean; running: Promise<void> }>();

  /** Builds the service; call {@linkcode JobService.start} to run its timer. */
  constructor(options: JobServiceOptions) {
    this.#store = options.store;
    this.#publisher = options.publisher;
    this.#clock = options.clock;
    this.#tickMs = options.tickMs ?? 1000;
    this.#log = options.log ?? (() => {});
    this.#onChange = options.onChange ?? (() => {});
    this.#onJobEvent = options.onJobEvent ?? (() => {});
    this.#render = options.renderDocument ?? ((document) => document);
    this.#scheduling = options.scheduling ?? true;
    this.#renotifyDue = this.#scheduling;
    this.#deviceApi = new JobsDeviceApi({
      executionsOfThing: (thing) => this.#store.executionsOfThing(thing),
      getExecution: (jobId, thing) => this.#store.getExecution(jobId, thing),
      nextFor: (thing) => this.#nextFor(thing),
      applyUpdate: (thing, jobId, raw) => this.#applyUpdate(thing, jobId, raw),
      executionView: (execution, withDocument) => this.#executionView(execution, withDocument),
      documentOf: (jobId) => this.#documentOf(jobId),
      seconds: () => this.#seconds(),
      send: (topic, body) => this.#send(topic, body),
      log: this.#log,
    });
  }

  /** Starts the periodic tick (one at a time: the next is timed from the end of the last). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    const loop = () => {
      if (!this.#running) return;
      this.#timer = this.#clock.setTimer(this.#tickMs, () => {
        this.#timer = null;
        this.#ticking = this.#safeTick().finally(loop);
      });
    };
    this.#ticking = this.#safeTick().finally(loop);
  }

  /** Stops the tick and waits for the one running and for messages in flight. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
    await this.#ticking;
    await Promise.allSettled([...this.#deviceQueues.values()]);
    await this.flush();
  }

  /**
   * Whether this service runs the rollout scheduler (rates, waves, schedules, timeouts, abort
   * criteria, completion). In a cluster exactly one node does; the others answer devices only.
   */
  get scheduling(): boolean {
    return this.#scheduling;
  }

  set scheduling(on: boolean) {
    // A scheduler taking over first tells the things its predecessor queued but never told.
    if (on && !this.#scheduling) this.#renotifyDue = true;
    this.#scheduling = on;
  }

  /** Waits until every message published so far has been handed to the broker. */
  async flush(): Promise<void> {
    while (this.#reviews.size > 0) {
      await Promise.allSettled([...this.#reviews.values()].map((r) => r.running));
    }
    await this.#store.committed().catch(() => {});
    while (this.#outbox.size > 0) await Promise.allSettled([...this.#outbox]);
  }

  // ---- operator side -------------------------------------------------------------------------

  /** Creates a job. Its executions are rolled out by {@linkcode JobService.tick}. */
  async createJob(spec: JobSpec): Promise<ServiceResult<JobRecord>> {
    const problems = jobSpecProblems(spec);
    if (problems.length > 0) return { ok: false, reason: problems.join("; ") };
    const exists = { ok: false as const, reason: `job '${spec.jobId}' already exists` };
    if (await this.#store.getJob(spec.jobId)) return exists;
    // A typo in a target must not make a job that "completes" with 0 of 0.
    const unknown: string[] = [];
    for (const thing of spec.targets.things ?? []) {
      if (!(await this.#store.getThing(thing))) unknown.push(thing);
    }
    if (unknown.length > 0) {
      return {
        ok: false,
        reason: `no thing named ${unknown.slice(0, 5).map((t) => `'${t}'`).join(", ")}`,
      };
    }
    const targets = await this.#targetsOf(spec);
    if (spec.targetSelection !== "CONTINUOUS" && targets.length === 0) {
      const groups = (spec.targets.groups ?? []).map((g) => `'${g}'`).join(", ");
      return {
        ok: false,
        reason: `the targets name no thing (group ${
          groups || "none"
        } has no members); a CONTINUOUS job may wait for them`,
      };
    }
    const now = this.#clock.now();
    const job: JobRecord = {
      jobId: spec.jobId,
      status: spec.scheduling?.startTime !== undefined && spec.scheduling.startTime > now
        ? "SCHEDULED"
        : "IN_PROGRESS",
      spec: spec as unknown as Record<string, unknown>,
      createdAt: now,
      pending: targets,
      notifiedAt: [],
      reason: null,
    };
    const created = await this.#store.transaction(async () => {
      await this.#store.lockJob(job.jobId);
      // Another node may have created it since the check above.
      if (await this.#store.getJob(job.jobId)) return false;
      await this.#store.putJob(job);
      await this.#audit(job.jobId, null, "job-created", {
        targets: job.pending.length,
        status: job.status,
      });
      return true;
    });
    if (!created) return exists;
    this.#onChange(job.jobId);
    if (job.status === "IN_PROGRESS" && this.#scheduling) await this.#rollOut(job.jobId);
    return { ok: true, value: job };
  }

  /**
   * Cancels a job: no more rollout, queued executions CANCELED; with `force`, executions in
   * progress too.
   */
  cancelJob(
    jobId: string,
    options: { force?: boolean; reason?: string } = {},
  ): Promise<ServiceResult> {
    return this.#store.transaction(async () => {
      await this.#store.lockJob(jobId);
      const job = await this.#store.getJob(jobId);
      if (!job) return { ok: false, reason: `no job '${jobId}'` };
      if (job.status === "CANCELED" || job.status === "COMPLETED") {
        return { ok: false, reason: `job '${jobId}' is ${job.status}` };
      }
      await this.#cancel(job, options.force ?? false, options.reason ?? "canceled by operator");
      return { ok: true, value: true };
    });
  }

  /** Stops rolling out (queued executions stay queued). */
  pauseJob(jobId: string, reason = "paused by operator"): Promise<ServiceResult> {
    return this.#store.transaction(async () => {
      await this.#store.lockJob(jobId);
      const job = await this.#store.getJob(jobId);
      if (!job || job.status !== "IN_PROGRESS") {
        return { ok: false, reason: `job '${jobId}' is not in progress` };
      }
      await this.#putJob({ ...job, status: "PAUSED", reason });
      await this.#audit(jobId, null, "job-paused", { reason });
      return { ok: true, value: true };
    });
  }

  /** Resumes a paused job. */
  async resumeJob(jobId: string): Promise<ServiceResult> {
    const result = await this.#store.transaction(async (): Promise<ServiceResult> => {
      await this.#store.lockJob(jobId);
      const job = await this.#store.getJob(jobId);
      if (!job || job.status !== "PAUSED") {
        return { ok: false, reason: `job '${jobId}' is not paused` };
      }
      // Resuming a job its health gate paused is the operator's word to go on: a new wave opens.
      await this.#putJob({ ...job, status: "IN_PROGRESS", reason: null, wave: [] });
      await this.#audit(jobId, null, "job-resumed", {});
      return { ok: true, value: true };
    });
    if (result.ok && this.#scheduling) await this.#rollOut(jobId);
    return result;
  }

  /**
   * Adds a thing to a group. Continuous jobs that target the group get an execution for it at
   * once (not rate limited, as in AWS); a thing that rejoins starts its retries from 0.
   */
  async addThingToGroup(group: string, thing: string): Promise<void> {
    await this.#store.addToGroup(group, thing);
    for (const job of await this.#store.listJobs()) {
      const spec = job.spec as unknown as JobSpec;
      if (spec.targetSelection !== "CONTINUOUS" || !(spec.targets.groups ?? []).includes(group)) {
        continue;
      }
      if (job.status === "CANCELED" || job.status === "COMPLETED") continue;
      await this.#store.transaction(async () => {
        await this.#store.lockThing(thing);
        const existing = await this.#store.getExecution(job.jobId, thing);
        if (existing && !TERMINAL_STATUSES.has(existing.status)) return;
        if (existing?.status === "SUCCEEDED") return;
        await this.#queueExecution(job.jobId, thing, 1);
      });
    }
  }

  /**
   * A thing said which firmware it runs (its shadow; null: none, e.g. in recovery mode). Under a
   * CONTINUOUS job that installs newer firmware, a thing whose execution SUCCEEDED but which
   * runs older firmware again (a factory reset, a replaced board) gets a new execution, so the
   * update reaches devices "as they are reset or re-provisioned".
   */
  thingReported(thing: string, firmware: string | null): Promise<void> {
    const running = firmware === null ? null : parseVersion(firmware);
    return this.#requeueSucceeded(thing, (spec) => {
      const wanted = spec.firmwareVersion ? parseVersion(spec.firmwareVersion) : null;
      return wanted !== null && (running === null || compareVersions(running, wanted) < 0);
    }, `reports firmware ${firmware ?? "none"}`);
  }

  /**
   * A thing was provisioned again (a new secret or certificate under the same name: a replaced
   * or re-provisioned device): CONTINUOUS jobs it SUCCEEDED run on it once more.
   */
  thingReprovisioned(thing: string): Promise<void> {
    return this.#requeueSucceeded(thing, () => true, "was provisioned again");
  }

  async #requeueSucceeded(
    thing: string,
    applies: (spec: JobSpec) => boolean,
    why: string,
  ): Promise<void> {
    for (const job of await this.#store.listJobs()) {
      const spec = job.spec as unknown as JobSpec;
      if (spec.targetSelection !== "CONTINUOUS" || job.status !== "IN_PROGRESS") continue;
      if (!applies(spec) || !(await this.#targetsOf(spec)).includes(thing)) continue;
      await this.#store.transaction(async () => {
        await this.#store.lockThing(thing);
        const existing = await this.#store.getExecution(job.jobId, thing);
        if (existing?.status !== "SUCCEEDED") return;
        await this.#audit(job.jobId, thing, "requeued", { reason: `the thing ${why}` });
        await this.#queueExecution(job.jobId, thing, existing.executionNumber + 1);
      });
    }
  }

  /** Removes a thing from a group: its unfinished executions of jobs it was targeted through become REMOVED. */
  async removeThingFromGroup(group: string, thing: string): Promise<void> {
    await this.#store.removeFromGroup(group, thing);
    const groups = await this.#store.groupsOf(thing);
    for (const job of await this.#store.listJobs()) {
      const spec = job.spec as unknown as JobSpec;
      if (
        !(spec.targets.groups ?? []).includes(group) || (spec.targets.things ?? []).includes(thing)
      ) continue;
      if (groups.some((g) => (spec.targets.groups ?? []).includes(g))) continue;
      await this.#serviceChange(job.jobId, thing, "REMOVED", false, {
        reason: `left group ${group}`,
      });
      await this.#store.transaction(async () => {
        await this.#store.lockJob(job.jobId);
        const current = await this.#store.getJob(job.jobId);
        if (!current?.pending.includes(thing)) return;
        await this.#putJob({ ...current, pending: current.pending.filter((t) => t !== thing) });
      });
    }
  }

  /** Counts of a job's executions by status (and things not rolled out yet). */
  async counts(jobId: string): Promise<JobCounts> {
    const job = await this.#store.getJob(jobId);
    return countsOf(job, await this.#store.executionStatusCounts(jobId));
  }

  // ---- time ----------------------------------------------------------------------------------

  async #safeTick(): Promise<void> {
    try {
      await this.tick();
    } catch (error) {
      // The store may be out of reach for a while (a database restarting): the next tick retries.
      this.#log(`job service tick failed: ${(error as Error).message}`);
    }
  }

  /** Schedules, timeouts, rollouts, aborts and completion, as of now (the scheduler's work). */
  async tick(): Promise<void> {
    if (!this.#scheduling) return;
    if (this.#renotifyDue) {
      this.#renotifyDue = false;
      await this.#renotify();
    }
    const now = this.#clock.now();
    for (const listed of await this.#store.listJobs()) {
      if (listed.status === "COMPLETED" || listed.status === "CANCELED") continue;
      const jobId = listed.jobId;
      const spec = listed.spec as unknown as JobSpec;
      if (listed.status === "SCHEDULED" && (spec.scheduling?.startTime ?? 0) <= now) {
        await this.#store.transaction(async () => {
          await this.#store.lockJob(jobId);
          const job = await this.#store.getJob(jobId);
          if (job?.status !== "SCHEDULED") return;
          await this.#putJob({ ...job, status: "IN_PROGRESS" });
          await this.#audit(jobId, null, "job-started", {});
        });
      }
      const end = spec.scheduling?.endTime;
      if (end !== undefined && end <= now) {
        await this.#endOfSchedule(jobId, spec.scheduling?.endBehavior ?? "STOP_ROLLOUT");
      }
      for (const e of await this.#store.overdueExecutions(jobId, now)) {
        // Checked again under the thing's lock: a step timeout set since may have moved it.
        await this.#serviceChange(jobId, e.thing, "TIMED_OUT", false, { reason: "timed out" }, (
          current,
        ) =>
          current.status === "IN_PROGRESS" && current.deadline !== null && current.deadline <= now);
      }
      await this.#rollOut(jobId);
      await this.#finishIfDone(jobId);
    }
  }

  /**
   * Tells every thing of a job in progress about a QUEUED execution it was never told of (the
   * notification of a scheduler or broker that died between committing the execution and
   * publishing), if that execution is still its next.
   */
  async #renotify(): Promise<void> {
    // What this process is still sending is not lost: let it go out (and be recorded) first.
    await this.flush();
    for (const job of await this.#store.listJobs()) {
      if (job.status === "COMPLETED" || job.status === "CANCELED") continue;
      for (const execution of await this.#store.unnotifiedExecutions(job.jobId)) {
        const next = await this.#nextFor(execution.thing);
        if (next?.jobId !== execution.jobId) continue;
        if (next.executionNumber !== execution.executionNumber || next.status !== "QUEUED") {
          continue;
        }
        await this.#audit(job.jobId, execution.thing, "renotified", {
          executionNumber: execution.executionNumber,
        });
        await this.#notify(execution.thing, next);
      }
    }
  }

  #endOfSchedule(
    jobId: string,
    behavior: "STOP_ROLLOUT" | "CANCEL" | "FORCE_CANCEL",
  ): Promise<void> {
    return this.#store.transaction(async () => {
      await this.#store.lockJob(jobId);
      const job = await this.#store.getJob(jobId);
      if (!job || job.status === "COMPLETED" || job.status === "CANCELED") return;
      if (behavior === "STOP_ROLLOUT") {
        if (job.pending.length > 0) {
          await this.#putJob({ ...job, pending: [], neverNotified: neverNotifiedAfterStop(job) });
          await this.#audit(jobId, null, "rollout-stopped", {
            reason: "end of schedule",
            left: job.pending.length,
          });
        }
        return;
      }
      await this.#cancel(job, behavior === "FORCE_CANCEL", "end of schedule");
    });
  }

  /**
   * Releases the things the rate and the health gate allow now: the job's record and their
   * executions are written in one transaction, so a scheduler dying in between neither loses a
   * thing nor notifies one twice.
   */
  #rollOut(jobId: string): Promise<void> {
    return this.#store.transaction(async () => {
      await this.#store.lockJob(jobId);
      const job = await this.#store.getJob(jobId);
      if (!job || job.status !== "IN_PROGRESS" || job.pending.length === 0) return;
      const spec = job.spec as unknown as JobSpec;
      const now = this.#clock.now();
      const byStatus = Object.entries(await this.#store.executionStatusCounts(jobId));
      const notified = byStatus.reduce((sum, [, n]) => sum + n, 0);
      const succeeded = byStatus.find(([status]) => status === "SUCCEEDED")?.[1] ?? 0;
      const recent = job.notifiedAt.filter((at) => at > now - MINUTE);
      let allowed = notificationsAllowed(
        ratePerMinute(spec.rollout ?? {}, { notified, succeeded }),
        recent,
        now,
      );
      let wave = job.wave ?? [];
      if (spec.healthGate) {
        const gate = spec.healthGate;
        if (wave.length >= gate.waveSize) {
          const verdict = await this.#waveVerdict(jobId, wave, gate);
          if (verdict === "open") return;
          if (verdict !== "healthy") {
            await this.#audit(jobId, null, "health-gate", { reason: verdict });
            if ((gate.onFailure ?? "PAUSE") === "CANCEL") await this.#cancel(job, false, verdict);
            else {
              await this.#putJob({ ...job, status: "PAUSED", reason: verdict });
              await this.#audit(jobId, null, "job-paused", { reason: verdict });
            }
            return;
          }
          wave = [];
        }
        allowed = Math.min(allowed, gate.waveSize - wave.length);
      }
      if (allowed <= 0) return;
      const batch = job.pending.slice(0, allowed);
      await this.#putJob({
        ...job,
        pending: job.pending.slice(batch.length),
        notifiedAt: [...recent, ...batch.map(() => now)],
        ...(spec.healthGate ? { wave: [...wave, ...batch] } : {}),
      });
      // Queued a slice at a time with their queries in flight together: one after another, each
      // thing's six round trips to a shared database held the release to about 100 things a
      // second at 40,000 devices, a tenth of the rate asked for. Each thing's lock is taken
      // first, in order, as before.
      for (let from = 0; from < batch.length; from += RELEASE_SLICE) {
        await Promise.all(
          batch.slice(from, from + RELEASE_SLICE).map((thing) =>
            this.#queueExecution(jobId, thing, 1)
          ),
        );
      }
    });
  }

  /**
   * A full wave: "open" while any of its things' latest execution has not ended; else "healthy"
   * when at least `minSuccessPercent` of them SUCCEEDED; else the reason the gate closes.
   */
  async #waveVerdict(
    jobId: string,
    wave: readonly string[],
    gate: NonNullable<JobSpec["healthGate"]>,
  ): Promise<"open" | "healthy" | string> {
    let succeeded = 0;
    for (const thing of wave) {
      const status = (await this.#store.getExecution(jobId, thing))?.status;
      if (status === undefined || !TERMINAL_STATUSES.has(status)) return "open";
      if (status === "SUCCEEDED") succeeded++;
    }
    const min = gate.minSuccessPercent ?? 100;
    // Compared without a division, so that exactly the threshold passes.
    if (succeeded * 100 >= min * wave.length) return "healthy";
    const percent = Math.floor((succeeded * 100) / wave.length);
    return `health gate: ${succeeded} of the ${wave.length} things of the last wave succeeded (${percent}%), below the ${min}% required`;
  }

  #finishIfDone(jobId: string): Promise<void> {
    return this.#store.transaction(async () => {
      await this.#store.lockJob(jobId);
      const job = await this.#store.getJob(jobId);
      if (!job || job.status !== "IN_PROGRESS" || job.pending.length > 0) return;
      if ((job.spec as unknown as JobSpec).targetSelection === "CONTINUOUS") return;
      const byStatus = await this.#store.executionStatusCounts(jobId);
      if (
        Object.keys(byStatus).every((status) => TERMINAL_STATUSES.has(status as ExecutionStatus))
      ) {
        await this.#putJob({ ...job, status: "COMPLETED", endedAt: this.#clock.now() });
        await this.#audit(jobId, null, "job-completed", countsOf(job, byStatus));
      }
    });
  }

  /** Inside a transaction holding the job's lock. */
  async #cancel(job: JobRecord, force: boolean, reason: string): Promise<void> {
    await this.#putJob({
      ...job,
      status: "CANCELED",
      pending: [],
      neverNotified: neverNotifiedAfterStop(job),
      endedAt: this.#clock.now(),
      reason,
    });
    await this.#audit(job.jobId, null, "job-canceled", { force, reason });
    for (const e of await this.#store.executionsOfJob(job.jobId)) {
      if (e.status === "QUEUED" || (force && e.status === "IN_PROGRESS")) {
        await this.#serviceChange(job.jobId, e.thing, "CANCELED", force, { reason });
      }
    }
  }

  /**
   * Reviews the job soon (abort criteria, completion, a health gate's next wave) without holding
   * up the caller, and at most one review of a job at a time on this node: those asked for while
   * one runs make one more after it. Each review takes the job's lock, which the scheduler holds while it writes
   * a wave; one review per ended execution, awaited before the device's reply, filled every
   * connection the node keeps for transactions with waits for that lock, and the node's devices
   * waited minutes for their SUCCEEDED to be acknowledged (40,000 devices on 3 nodes).
   */
  #requestReview(jobId: string): void {
    if (!this.#scheduling) return;
    const running = this.#reviews.get(jobId);
    if (running) {
      running.again = true;
      return;
    }
    const review = { again: false, running: Promise.resolve() };
    this.#reviews.set(jobId, review);
    review.running = (async () => {
      for (;;) {
        review.again = false;
        await this.#reviewJob(jobId).catch((error) =>
          this.#log(`review of job ${jobId} failed: ${(error as Error).message}`)
        );
        // Checked and let go in one step, so that no request falls between the two.
        if (!review.again || !this.#scheduling) {
          this.#reviews.delete(jobId);
          return;
        }
      }
    })();
  }

  /**
   * After an execution of the job ended: abort criteria, completion and a health gate's next
   * wave. The scheduler's work; a node that does not schedule leaves it to the scheduler's next
   * tick.
   */
  async #reviewJob(jobId: string): Promise<void> {
    if (!this.#scheduling) return;
    const job = await this.#store.getJob(jobId);
    if (!job) return;
    const spec = job.spec as unknown as JobSpec;
    if (job.status === "IN_PROGRESS" && (spec.abort ?? []).length > 0) {
      const fired = firedAbortCriterion(spec.abort ?? [], await this.counts(jobId));
      if (fired) {
        const reason =
          `abort criterion: ${fired.failureType} reached ${fired.thresholdPercentage}% after ${fired.minNumberOfExecutedThings} things`;
        if (fired.action === "PAUSE") await this.pauseJob(jobId, reason);
        else {
          await this.#store.transaction(async () => {
            await this.#store.lockJob(jobId);
            const current = await this.#store.getJob(jobId);
            if (current?.status === "IN_PROGRESS") await this.#cancel(current, false, reason);
          });
        }
      }
    }
    // Only a job with nothing left to release can finish; the tick finishes any this misses.
    if (job.pending.length === 0) await this.#finishIfDone(jobId);
    // A health gate's next wave opens as the last one ends; other releases follow the rate, on
    // the tick. (Each release reads and rewrites the job record, its things still to release
    // included: done after every ended execution it took half a core of the scheduler's node at
    // 40,000 devices.)
    if (spec.healthGate) await this.#rollOut(jobId);
  }

  // ---- executions ----------------------------------------------------------------------------

  /** Queues an execution and notifies the thing if it is its next now. Inside a transaction. */
  async #queueExecution(jobId: string, thing: string, executionNumber: number): Promise<void> {
    await this.#store.lockThing(thing);
    const before = await this.#nextFor(thing);
    const now = this.#clock.now();
    const previous = await this.#store.getExecution(jobId, thing);
    const execution: ExecutionRecord = {
      jobId,
      thing,
      status: "QUEUED",
      statusDetails: {},
      versionNumber: (previous?.versionNumber ?? 0) + 1,
      executionNumber,
      queuedAt: now,
      startedAt: null,
      updatedAt: now,
      deadline: null,
    };
    await this.#store.putExecution(execution);
    await this.#audit(jobId, thing, "queued", { executionNumber });
    this.#onChange(jobId);
    await this.#notifyIfNextChanged(thing, before);
  }

  /**
   * A change the service makes (cancel, remove, time out) when `applies` to the execution as it
   * is under the thing's lock; then retries and the job's review.
   */
  async #serviceChange(
    jobId: string,
    thing: string,
    to: ExecutionStatus,
    force: boolean,
    details: Record<string, string>,
    applies: (execution: ExecutionRecord) => boolean = () => true,
  ): Promise<void> {
    const updated = await this.#store.transaction(async () => {
      await this.#store.lockThing(thing);
      const execution = await this.#store.getExecution(jobId, thing);
      if (!execution || !applies(execution)) return null;
      const result = applyServiceChange(execution, to, {
        force,
        statusDetails: { ...execution.statusDetails, ...details },
      });
      if (!result.ok) return null;
      const before = await this.#nextFor(thing);
      const updated: ExecutionRecord = {
        ...execution,
        ...result.state,
        updatedAt: this.#clock.now(),
        deadline: null,
      };
      await this.#store.putExecution(updated);
      await this.#audit(jobId, thing, to.toLowerCase(), details);
      await this.#retryIfDue(updated);
      await this.#notifyIfNextChanged(thing, before);
      return updated;
    });
    if (!updated) return;
    this.#onChange(jobId);
    if (TERMINAL_STATUSES.has(updated.status)) this.#requestReview(jobId);
  }

  /** Queues the next attempt of an execution that just ended, if the job retries it. */
  async #retryIfDue(execution: ExecutionRecord): Promise<boolean> {
    if (!TERMINAL_STATUSES.has(execution.status)) return false;
    const job = await this.#store.getJob(execution.jobId);
    if (!job || job.status === "CANCELED") return false;
    const spec = job.spec as unknown as JobSpec;
    if (!shouldRetry(spec.retry ?? [], execution.status, execution.executionNumber - 1)) {
      return false;
    }
    await this.#audit(job.jobId, execution.thing, "retry", {
      after: execution.status,
      executionNumber: execution.executionNumber + 1,
    });
    await this.#queueExecution(job.jobId, execution.thing, execution.executionNumber + 1);
    return true;
  }

  /** The execution a thing should work on next (see {@linkcode nextOf}). */
  async #nextFor(thing: string): Promise<ExecutionRecord | null> {
    return nextOf(await this.#store.executionsOfThing(thing));
  }

  async #notifyIfNextChanged(thing: string, before: ExecutionRecord | null): Promise<void> {
    const after = await this.#nextFor(thing);
    if (!sameExecution(before, after)) await this.#notify(thing, after);
  }

  /**
   * Sends `notify-next` with `next` (none: nothing left). A QUEUED execution is recorded as told
   * once the broker took the message, so a scheduler taking over knows who still needs telling.
   */
  async #notify(
    thing: string,
    next: ExecutionRecord | null,
    job?: JobRecord | null,
  ): Promise<void> {
    const body: Record<string, unknown> = { timestamp: this.#seconds() };
    if (next) {
      // The job already read, when it is the one the execution belongs to.
      body.execution = await this.#executionView(
        next,
        true,
        job?.jobId === next.jobId ? job : undefined,
      );
    }
    this.#send(
      thingTopics(thing).notifyNext,
      body,
      next?.status === "QUEUED"
        ? () => this.#store.markNotified(next.jobId, thing, next.executionNumber)
        : undefined,
    );
  }

  // ---- device MQTT API (jobs_device_api.ts) --------------------------------------------------

  /**
   * Handles a message a device published under `$aws/things/<thing>/jobs/`. Never rejects: bad
   * requests get `/rejected` with the AWS code. A thing's requests are answered in the order
   * it sent them, as MQTT delivers them.
   */
  handleDeviceMessage(thing: string, topic: string, payload: Uint8Array): Promise<void> {
    const previous = this.#deviceQueues.get(thing);
    const handling = (previous ?? Promise.resolve())
      .then(() => this.#deviceApi.handle(thing, topic, payload))
      .catch((error) => this.#log(`jobs API error on ${topic}: ${(error as Error).message}`));
    this.#deviceQueues.set(thing, handling);
    void handling.finally(() => {
      if (this.#deviceQueues.get(thing) === handling) this.#deviceQueues.delete(thing);
    });
    return handling;
  }

  async #applyUpdate(
    thing: string,
    jobId: string,
    raw: Record<string, unknown>,
  ): Promise<UpdateOutcome> {
    const outcome = await this.#store.transaction(async (): Promise<UpdateOutcome> => {
      await this.#store.lockThing(thing);
      // Read together (one round trip to a database that pipelines): the thing's executions,
      // this one among them, and the job.
      const [executions, job] = await Promise.all([
        this.#store.executionsOfThing(thing),
        this.#store.getJob(jobId),
      ]);
      const execution = executions.find((e) => e.jobId === jobId);
      if (!execution) {
        return {
          ok: false,
          code: "ResourceNotFound",
          message: `no execution of job '${jobId.slice(0, 64)}' for this thing`,
        };
      }
      const parsed = parseUpdateRequest(raw);
      if (!parsed.ok) return { ...parsed, execution };
      const step = raw.stepTimeoutInMinutes;
      if (
        step !== undefined &&
        (typeof step !== "number" || !Number.isInteger(step) || step < 1 || step > 10080)
      ) {
        return {
          ok: false,
          code: "InvalidRequest",
          message: "stepTimeoutInMinutes must be 1..10080",
          execution,
        };
      }
      const result = applyDeviceUpdate(execution, parsed.value);
      if (!result.ok) return { ...result, execution };
      const before = nextOf(executions);
      const now = this.#clock.now();
      const startedAt = execution.startedAt ??
        (result.state.status === "IN_PROGRESS" ? now : null);
      const spec = job?.spec as unknown as JobSpec | undefined;
      const deadline = result.state.status === "IN_PROGRESS" && startedAt !== null
        ? timeoutDeadline({
          startedAt,
          ...(spec?.timeout
            ? { inProgressTimeoutMinutes: spec.timeout.inProgressTimeoutInMinutes }
            : {}),
          ...(typeof step === "number" ? { stepSetAt: now, stepTimeoutMinutes: step } : {}),
        }) ?? (typeof step === "number" ? null : execution.deadline)
        : null;
      const updated: ExecutionRecord = {
        ...execution,
        ...result.state,
        startedAt,
        updatedAt: now,
        deadline,
      };
      await Promise.all([
        this.#store.putExecution(updated),
        this.#audit(jobId, thing, "device-update", {
          status: updated.status,
          statusDetails: updated.statusDetails,
        }),
      ]);
      if (await this.#retryIfDue(updated)) {
        await this.#notifyIfNextChanged(thing, before);
      } else {
        // Nothing else changed under the thing's lock: its next is known without a read.
        const after = nextOf(executions.map((e) => e.jobId === jobId ? updated : e));
        if (!sameExecution(before, after)) await this.#notify(thing, after, job);
      }
      return { ok: true, execution: updated };
    });
    if (outcome.ok) {
      this.#onChange(jobId);
      if (TERMINAL_STATUSES.has(outcome.execution.status)) this.#requestReview(jobId);
    }
    return outcome;
  }

  async #executionView(
    e: ExecutionRecord,
    withDocument: boolean,
    job?: JobRecord,
  ): Promise<Record<string, unknown>> {
    const view: Record<string, unknown> = {
      jobId: e.jobId,
      thingName: e.thing,
      status: e.status,
      statusDetails: e.statusDetails,
      queuedAt: Math.floor(e.queuedAt / 1000),
      lastUpdatedAt: Math.floor(e.updatedAt / 1000),
      versionNumber: e.versionNumber,
      executionNumber: e.executionNumber,
    };
    if (e.startedAt !== null) view.startedAt = Math.floor(e.startedAt / 1000);
    if (withDocument) view.jobDocument = await this.#documentOf(e.jobId, job);
    return view;
  }

  async #documentOf(
    jobId: string,
    known?: JobRecord,
  ): Promise<Readonly<Record<string, unknown>>> {
    const job = known ?? await this.#store.getJob(jobId);
    const document = (job?.spec as unknown as JobSpec | undefined)?.document ?? {};
    return this.#render(document, jobId);
  }

  // ---- plumbing ------------------------------------------------------------------------------

  async #targetsOf(spec: JobSpec): Promise<string[]> {
    const things = new Set<string>(spec.targets.things ?? []);
    for (const group of spec.targets.groups ?? []) {
      for (const thing of await this.#store.groupMembers(group)) things.add(thing);
    }
    return [...things];
  }

  #send(topic: string, body: Record<string, unknown>, published?: () => Promise<void>): void {
    const payload = JSON.stringify(body);
    // Replies and notifications leave once what they report is committed: a device must never
    // hear of a change that a crash right after could undo.
    this.#store.afterCommit(() => {
      const sending = this.#publisher.publish(topic, payload, 1).then(published).catch((error) => {
        this.#log(`publish to ${topic} failed: ${(error as Error).message}`);
      });
      this.#outbox.add(sending);
      sending.finally(() => this.#outbox.delete(sending));
    });
  }

  async #putJob(job: JobRecord): Promise<void> {
    await this.#store.putJob(job);
    this.#onChange(job.jobId);
  }

  async #audit(
    jobId: string | null,
    thing: string | null,
    event: string,
    detail: Record<string, unknown>,
  ): Promise<void> {
    // A row an operator's request caused names them.
    const operator = actingOperator();
    await this.#store.audit({
      at: this.#clock.now(),
      jobId,
      thing,
      event,
      detail: operator !== null ? { ...detail, operator } : detail,
    });
    if (thing === null && jobId !== null) this.#onJobEvent(jobId, event, detail);
  }

  #seconds(): number {
    return Math.floor(this.#clock.now() / 1000);
  }
}

/** A job's counts from its record and its executions' counts by status. */
function countsOf(job: JobRecord | null, byStatus: Record<string, number>): JobCounts {
  const counts = {
    QUEUED: 0,
    IN_PROGRESS: 0,
    SUCCEEDED: 0,
    FAILED: 0,
    TIMED_OUT: 0,
    REJECTED: 0,
    REMOVED: 0,
    CANCELED: 0,
    pending: job?.pending.length ?? 0,
    neverNotified: job?.neverNotified?.length ?? 0,
  };
  for (const [status, n] of Object.entries(byStatus)) counts[status as ExecutionStatus] += n;
  return counts;
}

/** The execution a thing should work on next: the oldest in progress, else the oldest queued. */
function nextOf(executions: readonly ExecutionRecord[]): ExecutionRecord | null {
  const open = executions.filter((e) => e.status === "IN_PROGRESS" || e.status === "QUEUED");
  const running = open.filter((e) => e.status === "IN_PROGRESS").sort((a, b) =>
    (a.startedAt ?? 0) - (b.startedAt ?? 0)
  );
  if (running[0]) return running[0];
  return open.sort((a, b) => a.queuedAt - b.queuedAt)[0] ?? null;
}

/** Whether two "next" executions are the same one (same job, same attempt). */
function sameExecution(a: ExecutionRecord | null, b: ExecutionRecord | null): boolean {
  return (a?.jobId ?? null) === (b?.jobId ?? null) && a?.executionNumber === b?.executionNumber;
}

/** The targets a stopped rollout leaves behind: those it had not reached, kept to be counted. */
function neverNotifiedAfterStop(job: JobRecord): readonly string[] {
  return [...(job.neverNotified ?? []), ...job.pending];
}
