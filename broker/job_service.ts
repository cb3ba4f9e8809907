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
  type RejectionCode,
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
import { JobsDeviceApi } from "./jobs_device_api.ts";
import { type JobSpec, jobSpecProblems, type ServiceResult } from "./job_spec.ts";
import { compareVersions, parseVersion } from "../protocol/image_format.ts";

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
  readonly renderDocument?: (
    document: Readonly<Record<string, unknown>>,
    jobId: string,
  ) => Record<string, unknown>;
}

const MINUTE = 60_000;

/**
 * The job service.
 *
 * @example
 * ```ts ignore
 * const jobs = new JobService({ store, publisher, clock });
 * jobs.createJob({ jobId: "ota-1", document, targets: { groups: ["fleet"] } });
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
  readonly #outbox = new Set<Promise<unknown>>();
  readonly #deviceApi: JobsDeviceApi;

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

  /** Starts the periodic tick. */
  start(): void {
    if (this.#timer !== null) return;
    const loop = () => {
      this.#timer = this.#clock.setTimer(this.#tickMs, () => {
        this.tick();
        loop();
      });
    };
    this.tick();
    loop();
  }

  /** Stops the tick and waits for messages in flight. */
  async stop(): Promise<void> {
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
    await this.flush();
  }

  /** Waits until every message published so far has been handed to the broker. */
  async flush(): Promise<void> {
    await this.#store.committed().catch(() => {});
    while (this.#outbox.size > 0) await Promise.allSettled([...this.#outbox]);
  }

  // ---- operator side -------------------------------------------------------------------------

  /** Creates a job. Its executions are rolled out by {@linkcode JobService.tick}. */
  createJob(spec: JobSpec): ServiceResult<JobRecord> {
    const problems = jobSpecProblems(spec);
    if (problems.length > 0) return { ok: false, reason: problems.join("; ") };
    if (this.#store.getJob(spec.jobId)) {
      return { ok: false, reason: `job '${spec.jobId}' already exists` };
    }
    // A typo in a target must not make a job that "completes" with 0 of 0.
    const unknown = (spec.targets.things ?? []).filter((thing) => !this.#store.getThing(thing));
    if (unknown.length > 0) {
      return {
        ok: false,
        reason: `no thing named ${unknown.slice(0, 5).map((t) => `'${t}'`).join(", ")}`,
      };
    }
    if (spec.targetSelection !== "CONTINUOUS" && this.#targetsOf(spec).length === 0) {
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
      pending: this.#targetsOf(spec),
      notifiedAt: [],
      reason: null,
    };
    this.#store.transaction(() => {
      this.#store.putJob(job);
      this.#audit(job.jobId, null, "job-created", {
        targets: job.pending.length,
        status: job.status,
      });
    });
    this.#onChange(job.jobId);
    if (job.status === "IN_PROGRESS") this.#rollOut(job.jobId);
    return { ok: true, value: job };
  }

  /**
   * Cancels a job: no more rollout, queued executions CANCELED; with `force`, executions in
   * progress too.
   */
  cancelJob(jobId: string, options: { force?: boolean; reason?: string } = {}): ServiceResult {
    const job = this.#store.getJob(jobId);
    if (!job) return { ok: false, reason: `no job '${jobId}'` };
    if (job.status === "CANCELED" || job.status === "COMPLETED") {
      return { ok: false, reason: `job '${jobId}' is ${job.status}` };
    }
    this.#cancel(job, options.force ?? false, options.reason ?? "canceled by operator");
    return { ok: true, value: true };
  }

  /** Stops rolling out (queued executions stay queued). */
  pauseJob(jobId: string, reason = "paused by operator"): ServiceResult {
    const job = this.#store.getJob(jobId);
    if (!job || job.status !== "IN_PROGRESS") {
      return { ok: false, reason: `job '${jobId}' is not in progress` };
    }
    this.#putJob({ ...job, status: "PAUSED", reason });
    this.#audit(jobId, null, "job-paused", { reason });
    return { ok: true, value: true };
  }

  /** Resumes a paused job. */
  resumeJob(jobId: string): ServiceResult {
    const job = this.#store.getJob(jobId);
    if (!job || job.status !== "PAUSED") {
      return { ok: false, reason: `job '${jobId}' is not paused` };
    }
    // Resuming a job its health gate paused is the operator's word to go on: a new wave opens.
    this.#putJob({ ...job, status: "IN_PROGRESS", reason: null, wave: [] });
    this.#audit(jobId, null, "job-resumed", {});
    this.#rollOut(jobId);
    return { ok: true, value: true };
  }

  /**
   * Adds a thing to a group. Continuous jobs that target the group get an execution for it at
   * once (not rate limited, as in AWS); a thing that rejoins starts its retries from 0.
   */
  addThingToGroup(group: string, thing: string): void {
    this.#store.addToGroup(group, thing);
    for (const job of this.#store.listJobs()) {
      const spec = job.spec as unknown as JobSpec;
      if (spec.targetSelection !== "CONTINUOUS" || !(spec.targets.groups ?? []).includes(group)) {
        continue;
      }
      if (job.status === "CANCELED" || job.status === "COMPLETED") continue;
      const existing = this.#store.getExecution(job.jobId, thing);
      if (existing && !TERMINAL_STATUSES.has(existing.status)) continue;
      if (existing?.status === "SUCCEEDED") continue;
      this.#queueExecution(job, thing, 1);
    }
  }

  /**
   * A thing said which firmware it runs (its shadow; null: none, e.g. in recovery mode). Under a
   * CONTINUOUS job that installs newer firmware, a thing whose execution SUCCEEDED but which
   * runs older firmware again (a factory reset, a replaced board) gets a new execution, so the
   * update reaches devices "as they are reset or re-provisioned".
   */
  thingReported(thing: string, firmware: string | null): void {
    const running = firmware === null ? null : parseVersion(firmware);
    this.#requeueSucceeded(thing, (spec) => {
      const wanted = spec.firmwareVersion ? parseVersion(spec.firmwareVersion) : null;
      return wanted !== null && (running === null || compareVersions(running, wanted) < 0);
    }, `reports firmware ${firmware ?? "none"}`);
  }

  /**
   * A thing was provisioned again (a new secret or certificate under the same name: a replaced
   * or re-provisioned device): CONTINUOUS jobs it SUCCEEDED run on it once more.
   */
  thingReprovisioned(thing: string): void {
    this.#requeueSucceeded(thing, () => true, "was provisioned again");
  }

  #requeueSucceeded(thing: string, applies: (spec: JobSpec) => boolean, why: string): void {
    for (const job of this.#store.listJobs()) {
      const spec = job.spec as unknown as JobSpec;
      if (spec.targetSelection !== "CONTINUOUS" || job.status !== "IN_PROGRESS") continue;
      const existing = this.#store.getExecution(job.jobId, thing);
      if (existing?.status !== "SUCCEEDED" || !applies(spec)) continue;
      if (!this.#targetsOf(spec).includes(thing)) continue;
      this.#audit(job.jobId, thing, "requeued", { reason: `the thing ${why}` });
      this.#queueExecution(job, thing, existing.executionNumber + 1);
    }
  }

  /** Removes a thing from a group: its unfinished executions of jobs it was targeted through become REMOVED. */
  removeThingFromGroup(group: string, thing: string): void {
    this.#store.removeFromGroup(group, thing);
    for (const job of this.#store.listJobs()) {
      const spec = job.spec as unknown as JobSpec;
      if (
        !(spec.targets.groups ?? []).includes(group) || (spec.targets.things ?? []).includes(thing)
      ) continue;
      if (this.#store.groupsOf(thing).some((g) => (spec.targets.groups ?? []).includes(g))) {
        continue;
      }
      this.#serviceChange(job.jobId, thing, "REMOVED", false, { reason: `left group ${group}` });
      if (job.pending.includes(thing)) {
        this.#putJob({
          ...job,
          pending: job.pending.filter((t) => t !== thing),
        });
      }
    }
  }

  /** Counts of a job's executions by status (and things not rolled out yet). */
  counts(jobId: string): JobCounts {
    const job = this.#store.getJob(jobId);
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
    for (const [status, n] of Object.entries(this.#store.executionStatusCounts(jobId))) {
      counts[status as ExecutionStatus] += n;
    }
    return counts;
  }

  // ---- time ----------------------------------------------------------------------------------

  /** Schedules, timeouts, rollouts, aborts and completion, as of now. */
  tick(): void {
    const now = this.#clock.now();
    for (const job of this.#store.listJobs()) {
      if (job.status === "COMPLETED" || job.status === "CANCELED") continue;
      const spec = job.spec as unknown as JobSpec;
      if (job.status === "SCHEDULED" && (spec.scheduling?.startTime ?? 0) <= now) {
        this.#putJob({ ...job, status: "IN_PROGRESS" });
        this.#audit(job.jobId, null, "job-started", {});
      }
      const end = spec.scheduling?.endTime;
      if (end !== undefined && end <= now) {
        this.#endOfSchedule(job.jobId, spec.scheduling?.endBehavior ?? "STOP_ROLLOUT");
      }
      for (const e of this.#store.overdueExecutions(job.jobId, now)) {
        this.#serviceChange(job.jobId, e.thing, "TIMED_OUT", false, { reason: "timed out" });
      }
      this.#rollOut(job.jobId);
      this.#finishIfDone(job.jobId);
    }
  }

  #endOfSchedule(jobId: string, behavior: "STOP_ROLLOUT" | "CANCEL" | "FORCE_CANCEL"): void {
    const job = this.#store.getJob(jobId)!;
    if (behavior === "STOP_ROLLOUT") {
      if (job.pending.length > 0) {
        this.#putJob({ ...job, pending: [], neverNotified: neverNotifiedAfterStop(job) });
        this.#audit(jobId, null, "rollout-stopped", {
          reason: "end of schedule",
          left: job.pending.length,
        });
      }
      return;
    }
    this.#cancel(job, behavior === "FORCE_CANCEL", "end of schedule");
  }

  #rollOut(jobId: string): void {
    const job = this.#store.getJob(jobId);
    if (!job || job.status !== "IN_PROGRESS" || job.pending.length === 0) return;
    const spec = job.spec as unknown as JobSpec;
    const now = this.#clock.now();
    const byStatus = Object.entries(this.#store.executionStatusCounts(jobId));
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
        const verdict = this.#waveVerdict(jobId, wave, gate);
        if (verdict === "open") return;
        if (verdict !== "healthy") {
          this.#audit(jobId, null, "health-gate", { reason: verdict });
          if ((gate.onFailure ?? "PAUSE") === "CANCEL") this.#cancel(job, false, verdict);
          else {
            this.#putJob({ ...job, status: "PAUSED", reason: verdict });
            this.#audit(jobId, null, "job-paused", { reason: verdict });
          }
          return;
        }
        wave = [];
      }
      allowed = Math.min(allowed, gate.waveSize - wave.length);
    }
    if (allowed <= 0) return;
    const batch = job.pending.slice(0, allowed);
    const released: JobRecord = {
      ...job,
      pending: job.pending.slice(batch.length),
      notifiedAt: [...recent, ...batch.map(() => now)],
      ...(spec.healthGate ? { wave: [...wave, ...batch] } : {}),
    };
    this.#putJob(released);
    // One job record for the whole batch: reading it back per thing parsed its pending list (all
    // the fleet at first) once per released thing, quadratic in the fleet.
    for (const thing of batch) this.#queueExecution(released, thing, 1);
  }

  /**
   * A full wave: "open" while any of its things' latest execution has not ended; else "healthy"
   * when at least `minSuccessPercent` of them SUCCEEDED; else the reason the gate closes.
   */
  #waveVerdict(
    jobId: string,
    wave: readonly string[],
    gate: NonNullable<JobSpec["healthGate"]>,
  ): "open" | "healthy" | string {
    let succeeded = 0;
    for (const thing of wave) {
      const status = this.#store.getExecution(jobId, thing)?.status;
      if (status === undefined || !TERMINAL_STATUSES.has(status)) return "open";
      if (status === "SUCCEEDED") succeeded++;
    }
    const min = gate.minSuccessPercent ?? 100;
    // Compared without a division, so that exactly the threshold passes.
    if (succeeded * 100 >= min * wave.length) return "healthy";
    const percent = Math.floor((succeeded * 100) / wave.length);
    return `health gate: ${succeeded} of the ${wave.length} things of the last wave succeeded (${percent}%), below the ${min}% required`;
  }

  #finishIfDone(jobId: string): void {
    const job = this.#store.getJob(jobId);
    if (!job || job.status !== "IN_PROGRESS" || job.pending.length > 0) return;
    if ((job.spec as unknown as JobSpec).targetSelection === "CONTINUOUS") return;
    const byStatus = Object.entries(this.#store.executionStatusCounts(jobId));
    if (byStatus.every(([status]) => TERMINAL_STATUSES.has(status as ExecutionStatus))) {
      this.#putJob({ ...job, status: "COMPLETED", endedAt: this.#clock.now() });
      this.#audit(jobId, null, "job-completed", this.counts(jobId));
    }
  }

  #cancel(job: JobRecord, force: boolean, reason: string): void {
    this.#putJob({
      ...job,
      status: "CANCELED",
      pending: [],
      neverNotified: neverNotifiedAfterStop(job),
      endedAt: this.#clock.now(),
      reason,
    });
    this.#audit(job.jobId, null, "job-canceled", { force, reason });
    for (const e of this.#store.executionsOfJob(job.jobId)) {
      if (e.status === "QUEUED" || (force && e.status === "IN_PROGRESS")) {
        this.#serviceChange(job.jobId, e.thing, "CANCELED", force, { reason });
      }
    }
  }

  // ---- executions ----------------------------------------------------------------------------

  #queueExecution(job: JobRecord, thing: string, executionNumber: number): void {
    const before = this.#nextFor(thing);
    const now = this.#clock.now();
    const previous = this.#store.getExecution(job.jobId, thing);
    const execution: ExecutionRecord = {
      jobId: job.jobId,
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
    this.#store.transaction(() => {
      this.#store.putExecution(execution);
      this.#audit(job.jobId, thing, "queued", { executionNumber });
    });
    this.#onChange(job.jobId);
    this.#notifyIfNextChanged(thing, before);
  }

  /** A change the service makes (cancel, remove, time out), then retries and aborts. */
  #serviceChange(
    jobId: string,
    thing: string,
    to: ExecutionStatus,
    force: boolean,
    details: Record<string, string>,
  ): void {
    const execution = this.#store.getExecution(jobId, thing);
    if (!execution) return;
    const before = this.#nextFor(thing);
    const result = applyServiceChange(execution, to, {
      force,
      statusDetails: { ...execution.statusDetails, ...details },
    });
    if (!result.ok) return;
    const updated: ExecutionRecord = {
      ...execution,
      ...result.state,
      updatedAt: this.#clock.now(),
      deadline: null,
    };
    this.#store.transaction(() => {
      this.#store.putExecution(updated);
      this.#audit(jobId, thing, to.toLowerCase(), details);
    });
    this.#onChange(jobId);
    this.#afterTerminal(updated);
    this.#notifyIfNextChanged(thing, before);
  }

  /** Retries and abort checks after an execution ended. */
  #afterTerminal(execution: ExecutionRecord): void {
    if (!TERMINAL_STATUSES.has(execution.status)) return;
    const job = this.#store.getJob(execution.jobId);
    if (!job) return;
    const spec = job.spec as unknown as JobSpec;
    if (
      job.status !== "CANCELED" &&
      shouldRetry(spec.retry ?? [], execution.status, execution.executionNumber - 1)
    ) {
      this.#audit(job.jobId, execution.thing, "retry", {
        after: execution.status,
        executionNumber: execution.executionNumber + 1,
      });
      this.#queueExecution(job, execution.thing, execution.executionNumber + 1);
      return;
    }
    const fired = firedAbortCriterion(spec.abort ?? [], this.counts(job.jobId));
    if (fired && job.status === "IN_PROGRESS") {
      const reason =
        `abort criterion: ${fired.failureType} reached ${fired.thresholdPercentage}% after ${fired.minNumberOfExecutedThings} things`;
      if (fired.action === "PAUSE") this.pauseJob(job.jobId, reason);
      else this.#cancel(job, false, reason);
    }
    this.#finishIfDone(job.jobId);
    this.#rollOut(job.jobId);
  }

  /** The execution a thing should work on next: the oldest in progress, else the oldest queued. */
  #nextFor(thing: string): ExecutionRecord | null {
    const open = this.#store.executionsOfThing(thing).filter((e) =>
      e.status === "IN_PROGRESS" || e.status === "QUEUED"
    );
    const running = open.filter((e) => e.status === "IN_PROGRESS").sort((a, b) =>
      (a.startedAt ?? 0) - (b.startedAt ?? 0)
    );
    if (running[0]) return running[0];
    return open.sort((a, b) => a.queuedAt - b.queuedAt)[0] ?? null;
  }

  #notifyIfNextChanged(thing: string, before: ExecutionRecord | null): void {
    const after = this.#nextFor(thing);
    if (
      (before?.jobId ?? null) === (after?.jobId ?? null) &&
      before?.executionNumber === after?.executionNumber
    ) return;
    const body: Record<string, unknown> = { timestamp: this.#seconds() };
    if (after) body.execution = this.#executionView(after, true);
    this.#send(thingTopics(thing).notifyNext, body);
  }

  // ---- device MQTT API (jobs_device_api.ts) --------------------------------------------------

  /**
   * Handles a message a device published under `$aws/things/<thing>/jobs/`. Never throws: bad
   * requests get `/rejected` with the AWS code.
   */
  handleDeviceMessage(thing: string, topic: string, payload: Uint8Array): void {
    this.#deviceApi.handle(thing, topic, payload);
  }

  #applyUpdate(
    thing: string,
    jobId: string,
    raw: Record<string, unknown>,
  ): { ok: true; execution: ExecutionRecord } | {
    ok: false;
    code: RejectionCode;
    message: string;
    execution?: ExecutionRecord;
  } {
    const execution = this.#store.getExecution(jobId, thing);
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
    const before = this.#nextFor(thing);
    const now = this.#clock.now();
    const startedAt = execution.startedAt ?? (result.state.status === "IN_PROGRESS" ? now : null);
    const spec = this.#store.getJob(jobId)?.spec as unknown as JobSpec | undefined;
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
    this.#store.transaction(() => {
      this.#store.putExecution(updated);
      this.#audit(jobId, thing, "device-update", {
        status: updated.status,
        statusDetails: updated.statusDetails,
      });
    });
    this.#onChange(jobId);
    this.#afterTerminal(updated);
    this.#notifyIfNextChanged(thing, before);
    return { ok: true, execution: updated };
  }

  #executionView(e: ExecutionRecord, withDocument: boolean): Record<string, unknown> {
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
    if (withDocument) view.jobDocument = this.#documentOf(e.jobId);
    return view;
  }

  #documentOf(jobId: string): Readonly<Record<string, unknown>> {
    const document =
      (this.#store.getJob(jobId)?.spec as unknown as JobSpec | undefined)?.document ?? {};
    return this.#render(document, jobId);
  }

  // ---- plumbing ------------------------------------------------------------------------------

  #targetsOf(spec: JobSpec): string[] {
    const things = new Set<string>(spec.targets.things ?? []);
    for (const group of spec.targets.groups ?? []) {
      for (const thing of this.#store.groupMembers(group)) {
        things.add(thing);
      }
    }
    return [...things];
  }

  #send(topic: string, body: Record<string, unknown>): void {
    const payload = JSON.stringify(body);
    // Replies and notifications leave once what they report is committed: a device must never
    // hear of a change that a crash right after could undo.
    this.#store.afterCommit(() => {
      const sending = this.#publisher.publish(topic, payload, 1).catch((error) => {
        this.#log(`publish to ${topic} failed: ${(error as Error).message}`);
      });
      this.#outbox.add(sending);
      sending.finally(() => this.#outbox.delete(sending));
    });
  }

  #putJob(job: JobRecord): void {
    this.#store.putJob(job);
    this.#onChange(job.jobId);
  }

  #audit(
    jobId: string | null,
    thing: string | null,
    event: string,
    detail: Record<string, unknown>,
  ): void {
    this.#store.audit({ at: this.#clock.now(), jobId, thing, event, detail });
    if (thing === null && jobId !== null) this.#onJobEvent(jobId, event, detail);
  }

  #seconds(): number {
    return Math.floor(this.#clock.now() / 1000);
  }
}

/** The targets a stopped rollout leaves behind: those it had not reached, kept to be counted. */
function neverNotifiedAfterStop(job: JobRecord): readonly string[] {
  return [...(job.neverNotified ?? []), ...job.pending];
}
