/**
 * The OTA agent: a mailbox that handles one event at a time through the transition table, and
 * handlers that reach the world only through ports (MQTT, HTTP, PAL, platform, store, clock).
 *
 * What it does beyond the AWS agent (../shared/reference/aws-ota-agent.md §8):
 * - a lost `$next/get` reply or status acknowledgement is retried with backoff;
 * - a job document arriving mid-download continues the same job or cleanly drops the file;
 * - a stalled download fails the job with a reason and the agent keeps running;
 * - blocks are checked (size, file id, optional SHA-256) before they touch flash;
 * - the job id, file and bitmap are kept in the device's agent area, so a download resumes after
 *   a reset or power cut from the blocks already in flash;
 * - the job is reported SUCCEEDED and acknowledged before the image is confirmed (AWS #506);
 * - several files per job (data files first, firmware last).
 *
 * @module
 */

import { fromBase64 } from "../lib/base64.ts";
import { formatVersion } from "../protocol/image_format.ts";
import {
  OtaImageState,
  OtaPalImageState,
  otaPalMain,
  OtaPalMainStatus,
  otaPalSub,
} from "../protocol/ota_pal_status.ts";
import { FwuState } from "../bootloader/fwu.ts";
import type { Clock, TimerId } from "../lib/clock.ts";
import { BlockBitmap } from "./bitmap.ts";
import {
  CODE_VERIFY_KEY,
  type JobMessage,
  type OtaJob,
  parseJobMessage,
} from "../protocol/job_document.ts";
import {
  acceptedReason,
  failedReason,
  OtaErr,
  stateReason,
  versionWord,
} from "../protocol/job_status.ts";
import { blockSizeProblem, encodeGetStreamRequest } from "../protocol/stream_codec.ts";
import {
  classifyTopic,
  type IncomingTopic,
  type ThingTopics,
  thingTopics,
} from "../protocol/topics.ts";
import {
  type AgentEventType,
  type AgentState,
  findTransition,
  type HandlerName,
  type TransitionRow,
} from "./transition_table.ts";
import { describeRequest } from "../protocol/jobs_api.ts";
import type {
  AgentCallbackEvent,
  AgentConfig,
  AgentStatistics,
  OtaAgentOptions,
} from "./agent_config.ts";
import { DEFAULT_AGENT_CONFIG } from "./agent_config.ts";
import {
  type AgentPlatform,
  type HttpPort,
  type MqttPort,
  type PalFile,
  type UpdatableComponent,
} from "./ports.ts";
import { JobReporter } from "./job_reporter.ts";
import { ResumeStore } from "./resume_record.ts";
import { notOnTrialAction, trialVersionProblem } from "./self_test.ts";
import {
  type ActiveFile,
  type BlockInput,
  checkBlock,
  type DownloadOptions,
  nextFileIndex,
  openFile,
  resumeRecordOf,
  resumes,
  usablePatch,
  versionRefusal,
} from "./download.ts";
import { RateWatch } from "./rate_floor.ts";
import { staleDocument } from "../protocol/job_metadata.ts";

/** An event in the mailbox: the two that carry input say what, the others carry nothing. */
type QueuedEvent =
  | { readonly type: "ReceivedJobDocument"; readonly payload: Uint8Array }
  | { readonly type: "ReceivedFileBlock"; readonly block: BlockInput }
  | { readonly type: Exclude<AgentEventType, "ReceivedJobDocument" | "ReceivedFileBlock"> };
type Outcome = "done" | "stay" | { readonly error: string };

/**
 * The device-side OTA agent.
 *
 * @example
 * ```ts ignore
 * const agent = new OtaAgent({ thingName, mqtt, platform, store, clock, config: { maxFirmwareSize } });
 * client.on("message", (topic, payload) => agent.handleMessage(topic, payload));
 * agent.start();
 * ```
 */
export class OtaAgent {
  readonly #thing: string;
  /** The last topic classified and what it is (topics are immutable strings: safe to keep). */
  #lastTopic = "";
  #lastKind: IncomingTopic = { kind: "other" };
  readonly #topics: ThingTopics;
  readonly #mqtt: MqttPort;
  readonly #http: HttpPort | undefined;
  readonly #platform: AgentPlatform;
  readonly #clock: Clock;
  readonly #config: AgentConfig;
  readonly #onEvent: (event: AgentCallbackEvent) => void;
  readonly #log: (line: string) => void;
  #state: AgentState = "Init";
  #queue: QueuedEvent[] = [];
  #running: Promise<void> | null = null;
  #requestTimer: TimerId | null = null;
  #requestTimerFiresAt = 0;
  #requestDeadline = 0;
  #selfTestTimer: TimerId | null = null;
  #jobBackoff = 0;
  #active: ActiveFile | null = null;
  /** The active download's rate against its job's floor (slow retrieval), if it has one. */
  #rateWatch: RateWatch | null = null;
  /** The job metadata last verified (signer, signature, body), not to check it again. */
  #verifiedMetadata: string | null = null;
  readonly #reporter: JobReporter;
  readonly #resume: ResumeStore;
  #background = new Set<Promise<unknown>>();
  #generation = 0;
  /** Whether the Jobs reply topics are subscribed on the current connection. */
  #controlSubscribed = false;
  /** The job whose trial image awaits its self-test. */
  #pendingSelfTestJob: OtaJob | null = null;
  /** The job whose patch failed on this device: its firmware is fetched whole from then on. */
  #patchFailedFor: string | null = null;
  /** The job whose SUCCEEDED this trial image reported without hearing back. */
  #unacknowledgedSuccess: OtaJob | null = null;
  /**
   * A job the cloud has as SUCCEEDED whose image was reverted before it was confirmed, being
   * installed again: its statuses are not reported (the execution is over), notifications do not
   * interrupt it.
   */
  #rollingForward: string | null = null;
  /** Counters. */
  readonly statistics: AgentStatistics = {
    packetsReceived: 0,
    packetsQueued: 0,
    packetsProcessed: 0,
    packetsDropped: 0,
  };
  /** Events that matched no row (state, event). */
  readonly unexpected: string[] = [];

  /** Builds a stopped agent; call {@linkcode OtaAgent.start}. */
  constructor(options: OtaAgentOptions) {
    this.#thing = options.thingName;
    this.#topics = thingTopics(options.thingName);
    this.#mqtt = options.mqtt;
    this.#http = options.http;
    this.#platform = options.platform;
    this.#resume = new ResumeStore(options.store);
    this.#clock = options.clock;
    this.#config = { ...DEFAULT_AGENT_CONFIG, ...options.config };
    const { blockSize } = this.#config;
    const sizeProblem = blockSizeProblem(blockSize);
    if (sizeProblem !== null) {
      throw new RangeError(
        `Cannot create the agent: 'blockSize' ${sizeProblem}: current value is ${blockSize}`,
      );
    }
    this.#onEvent = options.onEvent ?? (() => {});
    this.#log = options.log ?? (() => {});
    this.#reporter = new JobReporter({
      thingName: this.#thing,
      mqtt: this.#mqtt,
      topics: this.#topics,
      clock: this.#clock,
      statusAckTimeoutMs: this.#config.statusAckTimeoutMs,
      maxStatusRetries: this.#config.maxStatusRetries,
      ensureSubscribed: () => this.#ensureControlSubscribed(),
      generation: () => this.#generation,
      log: this.#log,
    });
  }

  /** Current state. */
  get state(): AgentState {
    return this.#state;
  }

  /** The job being downloaded, if any. */
  get activeJobId(): string | null {
    return this.#active?.job.jobId ?? null;
  }

  /** Blocks still needed by the current download. */
  get blocksRemaining(): number | null {
    return this.#active ? this.#active.bitmap.remaining : null;
  }

  /** Starts the agent (Init -> Ready -> Start). */
  start(): void {
    if (this.#state !== "Init" && this.#state !== "Stopped") return;
    this.#state = "Ready";
    this.#signal({ type: "Start" });
  }

  /** Asks for the next job now (`OTA_CheckForUpdate`). */
  checkForUpdate(): void {
    this.#signal({ type: "RequestJobDocument" });
  }

  /** Suspends (on disconnect): timers stop, incoming blocks are dropped. */
  suspend(): void {
    this.#stopRequestTimer();
    // A new connection has a new (clean) session: its subscriptions are to be made again.
    this.#controlSubscribed = false;
    this.#signal({ type: "Suspend" });
  }

  /** Resumes (on reconnect): asks for the job again and continues from the bitmap. */
  resume(): void {
    this.#signal({ type: "Resume" });
  }

  /** Aborts the current job (`OTA_SetImageState(Aborted)`). */
  abort(): void {
    this.#signal({ type: "UserAbort" });
  }

  /** Stops the agent; a download in progress stays resumable. */
  async shutdown(): Promise<void> {
    this.#signal({ type: "Shutdown" });
    await this.idle();
  }

  /**
   * Stops at once, as a power loss does: timers cleared, queue and pending waits dropped, nothing
   * sent. Flash keeps whatever was last persisted.
   */
  halt(): void {
    this.#generation++;
    this.#stopRequestTimer();
    this.#stopSelfTestTimer();
    this.#reporter.cancelWaits();
    this.#queue = [];
    this.#active = null;
    this.#state = "Stopped";
  }

  /** Resolves when the mailbox is empty and no background work (fetch, ack wait) is left. */
  async idle(): Promise<void> {
    for (;;) {
      if (this.#running) {
        await this.#running;
        continue;
      }
      if (this.#background.size > 0) {
        await Promise.all([...this.#background]);
        continue;
      }
      if (this.#queue.length === 0) return;
    }
  }

  /** Routes an incoming MQTT message. Never throws. */
  handleMessage(topic: string, payload: Uint8Array): void {
    // A download brings the same data topic again and again: classified once, not split each time.
    if (topic !== this.#lastTopic) {
      this.#lastTopic = topic;
      this.#lastKind = classifyTopic(this.#thing, topic);
    }
    const kind = this.#lastKind;
    switch (kind.kind) {
      case "notify-next":
      case "next-get-accepted":
        this.#signal({ type: "ReceivedJobDocument", payload });
        return;
      case "next-get-rejected":
        this.#log(`$next/get rejected: ${new TextDecoder().decode(payload).slice(0, 200)}`);
        return;
      case "update-accepted":
      case "update-rejected":
      case "get-accepted":
      case "get-rejected":
        this.#reporter.onReply(
          kind.jobId,
          kind.kind === "update-accepted" || kind.kind === "get-accepted",
          payload,
        );
        return;
      case "stream-data":
        this.statistics.packetsReceived++;
        if (!this.#active || kind.stream !== this.#active.job.streamName) {
          this.statistics.packetsDropped++;
          return;
        }
        this.#signal({ type: "ReceivedFileBlock", block: { cbor: payload } });
        return;
      default:
        return;
    }
  }

  // ---- mailbox -------------------------------------------------------------------------------

  #signal(event: QueuedEvent): void {
    if (this.#state === "Stopped" && event.type !== "Start") return;
    this.#queue.push(event);
    if (event.type === "ReceivedFileBlock") this.statistics.packetsQueued++;
    // Deferred by a microtask so that #running is set before any handler can signal again.
    if (!this.#running) this.#running = Promise.resolve().then(() => this.#drain());
  }

  async #drain(): Promise<void> {
    try {
      for (let event = this.#queue.shift(); event; event = this.#queue.shift()) {
        // A handler that finished at once (a block written, the common case) is not awaited:
        // three promises and three microtask turns a block, for nothing to wait for.
        const pending = this.#dispatch(event);
        if (pending) await pending;
      }
    } finally {
      this.#running = null;
    }
  }

  #dispatch(event: QueuedEvent): Promise<void> | undefined {
    const row = findTransition(this.#state, event.type);
    if (!row) {
      this.unexpected.push(`${this.#state}/${event.type}`);
      this.#log(`unexpected event ${event.type} in state ${this.#state}: dropped`);
      if (event.type === "ReceivedFileBlock") this.statistics.packetsDropped++;
      if (event.type === "ReceivedJobDocument" || event.type === "ReceivedFileBlock") {
        this.#onEvent({ type: "Processed" });
      }
      return;
    }
    let outcome: Promise<Outcome> | Outcome;
    try {
      outcome = this.#run(row.handler, event);
    } catch (error) {
      outcome = { error: (error as Error).message };
    }
    if (!(outcome instanceof Promise)) {
      this.#settle(row, event, outcome);
      return undefined;
    }
    return outcome.then(
      (settled) => this.#settle(row, event, settled),
      (error) => this.#settle(row, event, { error: (error as Error).message }),
    );
  }

  #settle(row: TransitionRow, event: QueuedEvent, outcome: Outcome): void {
    if (outcome === "done") {
      this.#state = row.next;
    } else if (outcome !== "stay") {
      this.#log(`${row.handler} failed in ${this.#state} on ${event.type}: ${outcome.error}`);
    }
  }

  #run(handler: HandlerName, event: QueuedEvent): Promise<Outcome> | Outcome {
    switch (handler) {
      case "start":
        return this.#startHandler();
      case "requestJob":
        return this.#requestJobHandler();
      case "processJob":
        if (event.type !== "ReceivedJobDocument") return { error: `no job in ${event.type}` };
        return this.#processJobHandler(event.payload);
      case "inSelfTest":
        return this.#inSelfTestHandler();
      case "initFile":
        return this.#initFileHandler();
      case "requestData":
        return this.#requestDataHandler();
      case "processData":
        if (event.type !== "ReceivedFileBlock") return { error: `no block in ${event.type}` };
        return this.#processDataHandler(event.block);
      case "jobNotification":
        if (event.type !== "ReceivedJobDocument") return { error: `no job in ${event.type}` };
        return this.#jobNotificationHandler(event.payload);
      case "closeFile":
        return this.#closeFileHandler();
      case "suspend":
        this.#stopRequestTimer();
        this.#log(`suspended in ${this.#state}`);
        return "done";
      case "resume":
        return this.#resumeHandler();
      case "userAbort":
        return this.#userAbortHandler();
      case "shutdown":
        return this.#shutdownHandler();
    }
  }

  // ---- handlers ------------------------------------------------------------------------------

  async #startHandler(): Promise<Outcome> {
    if (
      this.#platform.pal.getPlatformImageState(null) === OtaPalImageState.PendingCommit ||
      this.#platform.components?.some((c) => c.onTrial())
    ) {
      // A trial image (or component) has this long to prove itself; then the device resets and
      // reverts.
      this.#selfTestTimer = this.#clock.setTimer(this.#config.selfTestTimeoutMs, () => {
        this.#selfTestTimer = null;
        this.#log("self-test timer expired: resetting");
        this.#platform.pal.resetDevice(null);
      });
    }
    // Not fatal: the job request below retries with backoff, and a reconnect subscribes again.
    await this.#subscribeControl().catch((error) =>
      this.#log(`subscribe failed: ${(error as Error).message}`)
    );
    this.#signal({ type: "RequestJobDocument" });
    return "done";
  }

  async #subscribeControl(): Promise<void> {
    this.#controlSubscribed = false;
    // One SUBSCRIBE and one round trip for the four, not four in a row: after a reboot under
    // load each SUBACK waited its turn behind the broker's other work.
    await this.#mqtt.subscribe([
      this.#topics.notifyNext,
      this.#topics.nextGetReplies,
      this.#topics.updateReplies,
      this.#topics.getReplies,
    ], 1);
    this.#controlSubscribed = true;
  }

  /**
   * Subscribes the Jobs reply topics again unless this connection has them, before anything that
   * waits for a reply. A subscription a loaded broker did not acknowledge (a 10,000-device run
   * left 700 devices waiting so), or one a dropped connection took with it while a handler was
   * retrying a report: the resume that subscribes again waits in the mailbox behind that handler,
   * and a device kept its trial image 495 s asking for acknowledgements it could not hear.
   * False when the subscription failed (the caller's own retry comes back here).
   */
  async #ensureControlSubscribed(): Promise<boolean> {
    if (this.#controlSubscribed) return true;
    try {
      await this.#subscribeControl();
      return true;
    } catch (error) {
      this.#log(`subscribe failed again: ${(error as Error).message}`);
      return false;
    }
  }

  async #requestJobHandler(): Promise<Outcome> {
    const [first, max] = this.#config.jobRequestBackoffMs;
    this.#jobBackoff = this.#jobBackoff === 0 ? first : Math.min(max, this.#jobBackoff * 2);
    // Armed before publishing: a lost request or reply is asked again (the AWS agent waits forever).
    this.#startRequestTimer(this.#jobBackoff);
    if (!await this.#ensureControlSubscribed()) return "done";
    try {
      await this.#mqtt.publish(
        this.#topics.nextGet,
        describeRequest({ clientToken: this.#reporter.token() }),
        1,
      );
    } catch (error) {
      return { error: `cannot request the job: ${(error as Error).message}` };
    }
    return "done";
  }

  async #processJobHandler(payload: Uint8Array): Promise<Outcome> {
    this.#stopRequestTimer();
    this.#jobBackoff = 0;
    const message = this.#parse(payload);
    this.#onEvent({ type: "Processed" });
    if (message.kind === "no-job") return await this.#noJob();
    if (message.kind === "invalid") return await this.#refuseJob(message);
    const job = message.job;
    if (job.selfTest === null) {
      // A success reported before a power cut is settled first (the job here may be the next one).
      const settled = await this.#settleReportedSuccess();
      if (settled !== null) return settled;
    }
    if (job.versionNumber !== null) this.#reporter.rememberVersion(job.jobId, job.versionNumber);
    if (job.selfTest !== null) {
      this.#pendingSelfTestJob = job;
      this.#signal({ type: "StartSelfTest" });
      return "done";
    }
    if (this.#platform.pal.getPlatformImageState(null) === OtaPalImageState.PendingCommit) {
      // A trial image, and a job that is not testing it: the job that staged the image is gone
      // (cancelled while the device rebooted). Back to the confirmed image; the job then comes
      // again from $next and starts from a clean slate.
      this.#log(`trial image does not belong to job ${job.jobId}: rejecting it first`);
      this.#platform.pal.setPlatformImageState(null, OtaImageState.Rejected);
      this.#platform.pal.resetDevice(null);
      return "stay";
    }
    const stale = await this.#staleDocument(job);
    if (stale !== null) {
      return await this.#refuseJob({
        kind: "invalid",
        jobId: job.jobId,
        status: "REJECTED",
        reason: stateReason("rejected", OtaErr.JobParserError),
        detail: stale,
      });
    }
    if (this.#active && this.#active.job.jobId === job.jobId) {
      // The download we were doing before a suspend: continue from the bitmap.
      this.#refreshUrls(job);
      this.#signal({ type: "CreateFile" });
      return "done";
    }
    const unfit = this.#unfitFiles(job);
    // A component staged for a job that is gone must not go in with this job's application.
    for (const component of this.#platform.components ?? []) {
      if (!job.files.some((f) => f.fileType === component.fileType)) component.cancel();
    }
    if (unfit !== null) {
      return await this.#refuseJob({
        kind: "invalid",
        jobId: job.jobId,
        status: "REJECTED",
        reason: stateReason("rejected", OtaErr.JobParserError),
        detail: unfit,
      });
    }
    this.#onEvent({ type: "ReceivedJob", jobId: job.jobId });
    this.#active = this.#open(job, this.#firstFileIndex(job));
    this.#signal({ type: "CreateFile" });
    return "done";
  }

  /**
   * Why a job document must not be acted on (freeze and replay: protocol/job_metadata.ts), or
   * null: its signed metadata verifies with the signer its first file names and has not expired
   * at trusted time (the device's clock, never below the newest issue time it accepted, which it
   * then raises). Without metadata, null unless `requireFreshDocuments`.
   */
  async #staleDocument(job: OtaJob): Promise<string | null> {
    const metadata = job.metadata;
    if (!metadata) {
      return this.#config.requireFreshDocuments
        ? "job document without signed metadata (issue time and expiry): refused"
        : null;
    }
    const certFile = job.files[0]?.certFile ?? CODE_VERIFY_KEY;
    // A job's document comes several times (notification, $next, after a reboot): its metadata
    // is verified once per boot; the expiry is checked every time.
    const seen = `${certFile}|${metadata.signature.toHex()}|${metadata.bodyBytes.toHex()}`;
    if (this.#verifiedMetadata !== seen) {
      const verified = await this.#platform.pal.checkDataSignature(
        metadata.bodyBytes,
        metadata.signature,
        certFile,
      );
      if (otaPalMain(verified) !== OtaPalMainStatus.Success) {
        return `job document metadata: ${this.#platform.pal.lastError ?? "signature check failed"}`;
      }
      this.#verifiedMetadata = seen;
    }
    const trustedNow = Math.max(this.#clock.now(), this.#resume.loadTimeFloor());
    const stale = staleDocument(metadata.body, job.jobId, trustedNow);
    if (stale !== null) return stale;
    this.#resume.raiseTimeFloor(metadata.body.issued);
    return null;
  }

  /** Why this device cannot take a job's set of files (a valid document), or null. */
  #unfitFiles(job: OtaJob): string | null {
    if (this.#platform.firmwareOnly && job.files.some((f) => f.fileType !== 0)) {
      return "the device is in recovery mode: it takes firmware (file type 0) only";
    }
    const component = this.#componentOf(job);
    if (component && job.files.length > 1) {
      const components = job.files.filter((f) =>
        this.#platform.components?.some((c) => c.fileType === f.fileType)
      );
      if (!job.files.some((f) => f.fileType === 0) || !component.stage) {
        return `a ${component.name} update goes alone or with the application it is installed with`;
      }
      if (components.length > 1) return `a job updates one ${component.name} at most`;
    }
    return null;
  }

  /** The component installed together with the application of `job`, if it carries one. */
  #bundledComponent(job: OtaJob): UpdatableComponent | null {
    const component = this.#componentOf(job);
    return component && job.files.some((f) => f.fileType === 0) ? component : null;
  }

  /** The component a job updates, if one of its files is of a component's type. */
  #componentOf(job: OtaJob): UpdatableComponent | null {
    for (const file of job.files) {
      const component = this.#platform.components?.find((c) => c.fileType === file.fileType);
      if (component) return component;
    }
    return null;
  }

  /** A verified component file: hand it over, say it is ready for its test, reboot into it. */
  async #installComponent(active: ActiveFile, component: UpdatableComponent): Promise<Outcome> {
    const jobId = active.job.jobId;
    const installed = await component.install(active.data!);
    if (!installed.ok) {
      return await this.#failActive(
        stateReason(
          "rejected",
          installed.downgrade ? OtaErr.DowngradeNotAllowed : OtaErr.ImageStateMismatch,
        ),
        `${component.name}: ${installed.reason}`,
        installed.downgrade ? "REJECTED" : "FAILED",
      );
    }
    this.#active = null;
    const ready = await this.#report(jobId, "IN_PROGRESS", {
      self_test: "ready",
      updatedBy: versionWord(component.version()),
    }, true);
    if (!ready) {
      this.#log(`job ${jobId}: self-test not acknowledged: the new ${component.name} is dropped`);
      component.cancel();
      this.#signal({ type: "RequestJobDocument" });
      return "done";
    }
    this.#onEvent({ type: "Activate", jobId });
    this.#platform.pal.resetDevice(null);
    return "done";
  }

  /** A verified component that goes in with the job's application: staged, then the next file. */
  async #stageComponent(active: ActiveFile, component: UpdatableComponent): Promise<Outcome> {
    const staged = await component.stage!(active.data!);
    if (!staged.ok) {
      return await this.#failActive(
        stateReason(
          "rejected",
          staged.downgrade ? OtaErr.DowngradeNotAllowed : OtaErr.ImageStateMismatch,
        ),
        `${component.name}: ${staged.reason}`,
        staged.downgrade ? "REJECTED" : "FAILED",
      );
    }
    this.#log(`job ${active.job.jobId}: ${component.name} staged to go in with the application`);
    return await this.#nextFile(active);
  }

  /**
   * The reboot into a new component is over. Unlike the application image, a component is
   * confirmed before SUCCEEDED is reported: if the power goes in between, the next self-test
   * still finds the new version running (confirmed) and reports what the first could not, so no
   * intent record or roll-forward is needed.
   */
  async #selfTestComponent(job: OtaJob, component: UpdatableComponent): Promise<Outcome> {
    const now = versionWord(component.version());
    const succeeded = async () => {
      await this.#report(job.jobId, "SUCCEEDED", {
        reason: acceptedReason(component.version()),
        updatedBy: now,
      }, true);
      this.#signal({ type: "RequestJobDocument" });
      return "done" as const;
    };
    if (!component.onTrial()) {
      if (now !== job.statusDetails.updatedBy) {
        this.#log(`job ${job.jobId}: the new ${component.name} was confirmed before a reset`);
        return await succeeded();
      }
      const detail = `the new ${component.name} did not come up: the device went back to ${
        formatVersion(component.version())
      }`;
      const reason = stateReason("rejected", OtaErr.ImageStateMismatch);
      this.#onEvent({ type: "Fail", jobId: job.jobId, reason, detail });
      await this.#report(job.jobId, "FAILED", { reason, detail }, true);
      this.#signal({ type: "RequestJobDocument" });
      return "done";
    }
    this.#onEvent({ type: "StartTest", jobId: job.jobId });
    const test = this.#platform.selfTest();
    if (!test.passed) {
      const reason = stateReason("rejected", OtaErr.ImageStateMismatch);
      this.#onEvent({ type: "SelfTestFailed", jobId: job.jobId, reason });
      await this.#report(job.jobId, "FAILED", { reason, detail: test.reason }, true);
      this.#platform.pal.resetDevice(null); // unconfirmed: the reset reverts it
      return "done";
    }
    this.#stopSelfTestTimer();
    if (!component.confirm()) return { error: `the ${component.name} could not be confirmed` };
    this.#log(
      `job ${job.jobId}: ${component.name} ${formatVersion(component.version())} confirmed`,
    );
    // The device's own facts changed (its shadow says which bootloader runs).
    this.#onEvent({ type: "UpdateComplete", jobId: job.jobId, file: job.files[0]!, data: null });
    return await succeeded();
  }

  /**
   * Brings a device whose reported success was lost to a power cut back in line with the cloud,
   * before any other job: a trial whose SUCCEEDED the cloud holds is confirmed, an image reverted
   * after the cloud recorded SUCCEEDED is installed again. "stay": wait (the cloud did not answer,
   * or the device is busy settling); "done": a roll-forward download started; null: nothing to do.
   */
  async #settleReportedSuccess(): Promise<Outcome | null> {
    const pal = this.#platform.pal;
    const intent = this.#resume.loadIntent();
    const onTrial = pal.getPlatformImageState(null) === OtaPalImageState.PendingCommit;
    const jobId = this.#unacknowledgedSuccess?.jobId ?? intent?.jobId ?? null;
    if (jobId === null || this.#rollingForward !== null) return null;
    if (!onTrial && intent && intent.image === versionWord(this.#platform.runningVersion)) {
      this.#resume.clearIntent(); // confirmed; the power went before the intent was cleared
      return null;
    }
    const seen = await this.#reporter.describeExecution(jobId, true);
    if (seen === null) {
      // No answer at all: keep the trial (a reset reverts it), ask again later.
      this.#log(`job ${jobId}: the cloud does not answer about the success reported`);
      this.#startRequestTimer(this.#config.jobRequestBackoffMs[1]);
      return "stay";
    }
    if (seen.status !== "SUCCEEDED") {
      this.#unacknowledgedSuccess = null;
      this.#resume.clearIntent();
      return null; // the SUCCEEDED never landed: the cloud's view is the device's
    }
    const job = this.#unacknowledgedSuccess ?? this.#jobOf(seen.execution);
    if (onTrial) {
      // The image passed its self-test before SUCCEEDED went out; one more costs nothing.
      const test = this.#platform.selfTest();
      if (!test.passed) {
        this.#log(
          `job ${jobId}: SUCCEEDED in the cloud, but the self-test fails now: ${test.reason}`,
        );
        return null;
      }
      this.#log(`job ${jobId}: SUCCEEDED had landed: confirming the image`);
      const confirmed = job ? this.#confirmTrial(job) : this.#confirmTrialOf(jobId);
      return confirmed === "done" ? "stay" : confirmed;
    }
    if (!job) {
      this.#log(`job ${jobId}: SUCCEEDED in the cloud, reverted here, and no document to install`);
      this.#resume.clearIntent();
      return null;
    }
    this.#log(
      `job ${jobId}: the cloud has it SUCCEEDED but its image was reverted before it was ` +
        "confirmed (power lost): installing it again",
    );
    if (this.#platform.updateState() !== FwuState.READY) {
      pal.setPlatformImageState(null, OtaImageState.Aborted);
    }
    this.#rollingForward = jobId;
    this.#active = this.#open(job, this.#firstFileIndex(job));
    this.#signal({ type: "CreateFile" });
    return "done";
  }

  /** The job in a described execution (its document asked for), as a fresh download. */
  #jobOf(execution: Record<string, unknown>): OtaJob | null {
    const message = this.#parse(new TextEncoder().encode(JSON.stringify({ execution })));
    return message.kind === "job" ? { ...message.job, selfTest: null } : null;
  }

  async #noJob(): Promise<Outcome> {
    this.#onEvent({ type: "NoActiveJob" });
    const pal = this.#platform.pal;
    if (this.#resume.loadRecord() !== null || this.#platform.updateState() === FwuState.WRITING) {
      this.#log("no active job: dropping the interrupted download");
      pal.setPlatformImageState(null, OtaImageState.Aborted);
      this.#resume.clearRecord();
    }
    const settled = await this.#settleReportedSuccess();
    if (settled !== null) return settled;
    if (pal.getPlatformImageState(null) === OtaPalImageState.PendingCommit) {
      // The job this trial image belongs to is gone (cancelled or timed out): follow the cloud.
      this.#log("trial image without a job: rejecting it");
      pal.setPlatformImageState(null, OtaImageState.Rejected);
      pal.resetDevice(null);
    }
    return "stay";
  }

  async #refuseJob(message: Extract<JobMessage, { kind: "invalid" }>): Promise<Outcome> {
    this.#log(`job ${message.jobId ?? "(unnamed)"} refused: ${message.detail}`);
    if (message.jobId !== null) {
      this.#onEvent({
        type: "Fail",
        jobId: message.jobId,
        reason: message.reason,
        detail: message.detail,
      });
      await this.#report(message.jobId, message.status, {
        reason: message.reason,
        detail: message.detail,
      }, true);
      this.#signal({ type: "RequestJobDocument" });
    }
    return "stay";
  }

  async #inSelfTestHandler(): Promise<Outcome> {
    const job = this.#pendingSelfTestJob;
    this.#pendingSelfTestJob = null;
    if (!job) return { error: "no job to self-test" };
    const bundled = this.#bundledComponent(job);
    const component = this.#componentOf(job);
    if (component && !bundled) return await this.#selfTestComponent(job, component);
    const pal = this.#platform.pal;
    const running = this.#platform.runningVersion;
    if (pal.getPlatformImageState(null) !== OtaPalImageState.PendingCommit) {
      const verdict = notOnTrialAction({
        updateState: this.#platform.updateState(),
        failure: this.#platform.updateFailure(),
        updatedBy: job.statusDetails.updatedBy,
        running: versionWord(running),
      });
      if (verdict.action === "activate") {
        this.#log(
          `job ${job.jobId}: verified image was never activated (reset before activation): activating`,
        );
        this.#activate(job.jobId);
        return "done";
      }
      if (verdict.action === "download-again") {
        this.#log(`job ${job.jobId}: ${verdict.detail} before the image ran: downloading it again`);
        pal.setPlatformImageState(null, OtaImageState.Aborted);
        this.#onEvent({ type: "ReceivedJob", jobId: job.jobId });
        this.#active = openFile(
          { ...job, selfTest: null },
          this.#firstFileIndex(job),
          this.#downloadOptions(),
        );
        this.#signal({ type: "CreateFile" });
        return "stay";
      }
      const { reason, detail } = verdict;
      this.#onEvent({ type: "Fail", jobId: job.jobId, reason, detail });
      await this.#report(job.jobId, "FAILED", { reason, detail }, true);
      pal.setPlatformImageState(null, OtaImageState.Aborted);
      this.#signal({ type: "RequestJobDocument" });
      return "done";
    }
    this.#onEvent({ type: "StartTest", jobId: job.jobId });
    const versionProblem = trialVersionProblem({
      updatedBy: job.statusDetails.updatedBy,
      running: versionWord(running),
      allowDowngrade: this.#config.allowDowngrade,
    });
    if (versionProblem) {
      return await this.#failSelfTest(job, versionProblem.reason, versionProblem.detail);
    }
    if (bundled && !bundled.onTrial()) {
      // The bootloader keeps the two together; this is the agent's own check of the pair.
      return await this.#failSelfTest(
        job,
        stateReason("rejected", OtaErr.ImageStateMismatch),
        `the new ${bundled.name} did not come up with the application`,
      );
    }
    const test = this.#platform.selfTest();
    if (!test.passed) {
      return await this.#failSelfTest(
        job,
        stateReason("rejected", OtaErr.ImageStateMismatch),
        test.reason,
      );
    }
    // The image is good; only the cloud's acknowledgement is pending now.
    this.#stopSelfTestTimer();
    this.#resume.saveIntent({ jobId: job.jobId, image: versionWord(running) });
    const acked = await this.#report(job.jobId, "SUCCEEDED", {
      reason: acceptedReason(running),
      updatedBy: versionWord(running),
    }, true);
    if (!acked) {
      // Never confirm an image the cloud has not heard about (AWS #506): stay on trial, ask again.
      // The report may still have landed (a loaded broker answers late): if the job is gone from
      // $next, #noJob asks the cloud about this one before giving the image up.
      this.#log(`job ${job.jobId}: SUCCEEDED not acknowledged: the image stays on trial`);
      // The intent stays in flash: if the report did land, a power cut now must not hide it.
      this.#pendingSelfTestJob = null;
      this.#unacknowledgedSuccess = job;
      this.#signal({ type: "RequestJobDocument" });
      return "stay";
    }
    this.#log(`job ${job.jobId}: SUCCEEDED acknowledged: confirming the image`);
    return this.#confirmTrial(job);
  }

  /** The cloud has the update as SUCCEEDED: make the trial image permanent. */
  #confirmTrial(job: OtaJob): Outcome {
    const confirmed = this.#confirmTrialOf(job.jobId, false);
    if (confirmed !== "done") return confirmed;
    this.#onEvent({
      type: "UpdateComplete",
      jobId: job.jobId,
      file: job.files.find((f) => f.fileType === 0) ?? job.files[0]!,
      data: null,
    });
    this.#signal({ type: "RequestJobDocument" });
    return "done";
  }

  /** Confirms the trial image of `jobId` (no callback event when `signal` is false). */
  #confirmTrialOf(jobId: string, signal = true): Outcome {
    const pal = this.#platform.pal;
    this.#unacknowledgedSuccess = null;
    const accepted = pal.setPlatformImageState(null, OtaImageState.Accepted);
    if (otaPalMain(accepted) !== OtaPalMainStatus.Success) {
      return { error: `commit failed: ${pal.lastError}` };
    }
    this.#resume.clearIntent();
    if (signal) {
      this.#log(`job ${jobId}: confirmed`);
      this.#signal({ type: "RequestJobDocument" });
    }
    return "done";
  }

  async #failSelfTest(job: OtaJob, reason: string, detail: string): Promise<Outcome> {
    this.#onEvent({ type: "SelfTestFailed", jobId: job.jobId, reason });
    await this.#report(job.jobId, "FAILED", { reason, detail }, true);
    this.#platform.pal.setPlatformImageState(null, OtaImageState.Rejected);
    this.#platform.pal.resetDevice(null);
    return "done";
  }

  async #initFileHandler(): Promise<Outcome> {
    const active = this.#active;
    if (!active) return { error: "no file to create" };
    if (active.protocol === null) {
      return await this.#failActive(
        failedReason(OtaErr.InvalidDataProtocol, 0),
        `no usable data protocol: the job offers ${active.job.protocols.join(", ")}${
          this.#http ? "" : " and this device has no HTTP client"
        }`,
      );
    }
    if (!active.opened) {
      const opened = this.#openStorage(active);
      if (!opened.ok) return await this.#failActive(opened.reason, opened.detail);
      active.opened = true;
    }
    if (active.protocol === "MQTT") {
      try {
        await this.#mqtt.subscribe(this.#topics.streamData(active.job.streamName!), 0);
      } catch (error) {
        this.#startRequestTimer(this.#config.requestTimeoutMs);
        return { error: `cannot subscribe to the stream: ${(error as Error).message}` };
      }
    }
    this.statistics.packetsReceived = 0;
    this.statistics.packetsQueued = 0;
    this.statistics.packetsProcessed = 0;
    this.statistics.packetsDropped = 0;
    active.momentum = 0;
    // Measured afresh from each start or resume: a pause of the device's own is not the path's.
    this.#rateWatch = active.job.minimumRate
      ? new RateWatch(active.job.minimumRate, this.#clock.now())
      : null;
    if (active.bitmap.remaining === 0) this.#signal({ type: "CloseFile" });
    else this.#signal({ type: "RequestFileBlock" });
    return "done";
  }

  async #requestDataHandler(): Promise<Outcome> {
    const active = this.#active;
    if (!active || active.bitmap.remaining === 0) return "stay";
    if (active.momentum >= this.#config.maxMomentum) {
      return await this.#failActive(
        failedReason(OtaErr.MomentumAbort, active.momentum),
        `no block arrived for ${active.momentum} requests`,
      );
    }
    const slow = this.#rateWatch?.check(this.#clock.now());
    if (slow) return await this.#failActive(failedReason(OtaErr.MomentumAbort, 0), slow);
    active.momentum++;
    this.#startRequestTimer(this.#config.requestTimeoutMs);
    const count = Math.min(this.#config.blocksPerRequest, active.bitmap.remaining);
    active.toReceive = count;
    if (active.protocol === "MQTT") {
      const request = encodeGetStreamRequest({
        clientToken: "rdy",
        fileId: active.fileId,
        blockSize: this.#config.blockSize,
        offset: 0,
        numberOfBlocks: count,
        bitmap: active.bitmap.toBytes(),
      });
      try {
        await this.#mqtt.publish(this.#topics.streamGet(active.job.streamName!), request, 0);
      } catch (error) {
        return { error: `cannot request blocks: ${(error as Error).message}` };
      }
      return "done";
    }
    if (active.urlRefreshPending) return "done";
    this.#fetchBlocks(active, active.bitmap.neededBlocks(count));
    return "done";
  }

  #fetchBlocks(active: ActiveFile, blocks: number[]): void {
    const http = this.#http;
    const url = active.url;
    if (!http || !url) return;
    const generation = this.#generation;
    const work = (async () => {
      for (const blockId of blocks) {
        const start = blockId * this.#config.blockSize;
        const end = Math.min(active.fileSize, start + this.#config.blockSize) - 1;
        let response;
        try {
          response = await http.getRange(url, start, end);
        } catch (error) {
          this.#log(`GET block ${blockId} failed: ${(error as Error).message}`);
          return;
        }
        if (generation !== this.#generation || this.#active !== active) return;
        if (response.status === 403) {
          // Pre-signed URL expired: the job document carries a fresh one.
          this.#log("pre-signed URL expired: asking for the job document again");
          active.urlRefreshPending = true;
          await this.#mqtt.publish(
            this.#topics.nextGet,
            describeRequest({ clientToken: this.#reporter.token() }),
            1,
          ).catch(() => {});
          return;
        }
        if (response.status !== 206 && response.status !== 200) {
          this.#log(`GET block ${blockId}: HTTP ${response.status}`);
          continue;
        }
        this.statistics.packetsReceived++;
        this.#signal({ type: "ReceivedFileBlock", block: { blockId, payload: response.body } });
      }
    })();
    this.#track(work);
  }

  /** Not async: a block written is done at once; only a failure has a promise to wait for. */
  #processDataHandler(input: BlockInput): Promise<Outcome> | Outcome {
    const active = this.#active;
    if (!active) {
      this.statistics.packetsDropped++;
      return "stay";
    }
    const block = checkBlock(active, input, this.#config.blockSize);
    this.#onEvent({ type: "Processed" });
    if (!block.ok) {
      this.statistics.packetsDropped++;
      this.#log(`block dropped: ${block.reason}`);
      return "stay";
    }
    const { blockId, payload } = block;
    this.#startRequestTimer(this.#config.requestTimeoutMs);
    if (!active.bitmap.needs(blockId)) return "stay"; // duplicate: accepted once already
    if (active.patch && blockId !== active.bitmap.neededBlocks(1)[0]) {
      // A patch applies in order and is not buffered: a block ahead of its turn is asked again.
      this.statistics.packetsDropped++;
      return "stay";
    }
    if (
      active.spec.fileType === 0 && blockId === 0 && !active.patch && !this.#config.allowDowngrade
    ) {
      const refusal = versionRefusal(payload, this.#platform.runningVersion);
      if (refusal) return this.#failActive(refusal.reason, refusal.detail, "REJECTED");
    }
    const offset = blockId * this.#config.blockSize;
    if (active.spec.fileType === 0) {
      let written = this.#platform.pal.writeBlock(active.palFile, offset, payload);
      if (written !== payload.length && active.patch) {
        return this.#withoutPatch(active, this.#platform.pal.lastError ?? "write failed")
          .then(() => "stay" as const);
      }
      if (written !== payload.length && !active.restarted) {
        // A block torn by a power cut cannot be rewritten in place: start the file over, once.
        this.#log(
          `write of block ${blockId} failed (${this.#platform.pal.lastError}): restarting the file`,
        );
        active.restarted = true;
        active.bitmap = new BlockBitmap(active.blockCount);
        this.#resume.clearRecord();
        const reopened = this.#openStorage(active);
        if (!reopened.ok) return this.#failActive(reopened.reason, reopened.detail);
        written = this.#platform.pal.writeBlock(active.palFile, offset, payload);
      }
      if (written !== payload.length) {
        return this.#failActive(
          failedReason(OtaPalMainStatus.FileClose, 0),
          `cannot write block ${blockId}: ${this.#platform.pal.lastError}`,
        );
      }
    } else {
      active.data!.set(payload, offset);
    }
    active.bitmap.markReceived(blockId);
    active.momentum = 0;
    const slow = this.#rateWatch?.received(payload.length, this.#clock.now());
    if (slow && active.bitmap.remaining > 0) {
      return this.#failActive(failedReason(OtaErr.MomentumAbort, 0), slow);
    }
    this.statistics.packetsProcessed++;
    const received = active.blockCount - active.bitmap.remaining;
    if (
      active.spec.fileType === 0 && !active.patch &&
      ++active.sincePersist >= this.#config.persistEveryBlocks
    ) {
      this.#persist(active);
    }
    if (received === 1 || received % this.#config.statusFrequency === 0) {
      this.#track(
        this.#report(active.job.jobId, "IN_PROGRESS", {
          receive: `${received}/${active.blockCount}`,
        }, false),
      );
    }
    if (active.bitmap.remaining === 0) {
      this.#stopRequestTimer();
      this.#signal({ type: "CloseFile" });
    } else if (--active.toReceive <= 0) {
      this.#signal({ type: "RequestFileBlock" });
    }
    return "stay";
  }

  async #jobNotificationHandler(payload: Uint8Array): Promise<Outcome> {
    const active = this.#active;
    const message = this.#parse(payload);
    this.#onEvent({ type: "Processed" });
    // Whatever is next waits until the image the cloud believes installed is.
    if (this.#rollingForward !== null && active?.job.jobId === this.#rollingForward) return "stay";
    if (
      active && message.kind === "job" && message.job.jobId === active.job.jobId &&
      message.job.selfTest === null
    ) {
      // Same job (a repeated notification, or the fresh URL we asked for): keep going.
      if (message.job.versionNumber !== null) {
        this.#reporter.rememberVersion(message.job.jobId, message.job.versionNumber);
      }
      this.#refreshUrls(message.job);
      if (active.urlRefreshPending) {
        active.urlRefreshPending = false;
        this.#signal({ type: "RequestFileBlock" });
      }
      return "stay";
    }
    // Cancelled, or replaced by another job: drop the file cleanly, then take whatever is next.
    this.#log(`job ${active?.job.jobId ?? "?"} is no longer current: abandoning its download`);
    await this.#dropActive();
    this.#signal({ type: "RequestJobDocument" });
    return "done";
  }

  async #closeFileHandler(): Promise<Outcome> {
    const active = this.#active;
    if (!active) return { error: "no file to close" };
    this.#stopRequestTimer();
    if (active.protocol === "MQTT") {
      await this.#mqtt.unsubscribe(this.#topics.streamData(active.job.streamName!)).catch(() => {});
    }
    const pal = this.#platform.pal;
    if (active.spec.fileType !== 0) {
      const status = await pal.checkDataSignature(
        active.data!,
        active.spec.signature,
        active.spec.certFile ?? CODE_VERIFY_KEY,
      );
      if (otaPalMain(status) !== OtaPalMainStatus.Success) {
        return await this.#failActive(
          failedReason(otaPalMain(status), otaPalSub(status)),
          pal.lastError ?? "signature check failed",
        );
      }
      const component = this.#componentOf(active.job);
      if (component && this.#bundledComponent(active.job)) {
        return await this.#stageComponent(active, component);
      }
      if (component) return await this.#installComponent(active, component);
      const installed = await this.#platform.installFile?.(active.spec.fileType, active.data!);
      if (installed && !installed.ok) {
        return await this.#failActive(
          stateReason("rejected", OtaErr.ImageStateMismatch),
          installed.reason,
          "REJECTED",
        );
      }
      this.#onEvent({
        type: "UpdateComplete",
        jobId: active.job.jobId,
        file: active.spec,
        data: active.data,
      });
      return await this.#nextFile(active);
    }
    const status = await pal.closeFile(active.palFile);
    this.#resume.clearRecord();
    if (otaPalMain(status) !== OtaPalMainStatus.Success && active.patch) {
      return this.#withoutPatch(active, pal.lastError ?? "close failed");
    }
    if (otaPalMain(status) !== OtaPalMainStatus.Success) {
      return await this.#failActive(
        failedReason(otaPalMain(status), otaPalSub(status)),
        pal.lastError ?? "close failed",
      );
    }
    const ready = await this.#report(active.job.jobId, "IN_PROGRESS", {
      self_test: "ready",
      updatedBy: versionWord(this.#platform.runningVersion),
    }, true);
    if (!ready) {
      // Only a job the cloud still has in progress may reboot the device into its image (the
      // job comes back with self_test after the reboot); a cancelled one leaves it staged.
      this.#log(`job ${active.job.jobId}: self-test not acknowledged: not activating`);
      this.#active = null;
      pal.setPlatformImageState(null, OtaImageState.Aborted);
      this.#signal({ type: "RequestJobDocument" });
      return "done";
    }
    this.#activate(active.job.jobId);
    return "done";
  }

  async #nextFile(active: ActiveFile): Promise<Outcome> {
    const next = nextFileIndex(active.job, active.index);
    if (next === null) {
      this.#active = null;
      await this.#report(active.job.jobId, "SUCCEEDED", {
        reason: `accepted  v0.0.${active.spec.fileType}`,
      }, true);
      this.#signal({ type: "RequestJobDocument" });
      return "done";
    }
    this.#active = this.#open(active.job, next);
    this.#signal({ type: "CreateFile" });
    return "done";
  }

  #activate(jobId: string): void {
    this.#active = null;
    this.#onEvent({ type: "Activate", jobId });
    const pal = this.#platform.pal;
    pal.setPlatformImageState(null, OtaImageState.Testing);
    const status = pal.activateNewImage(null);
    if (otaPalMain(status) !== OtaPalMainStatus.Success) {
      this.#log(`activation failed: ${pal.lastError}`);
    }
  }

  async #resumeHandler(): Promise<Outcome> {
    this.#log(
      `resumed${this.#active ? ` with ${this.#active.bitmap.remaining} blocks to go` : ""}`,
    );
    await this.#subscribeControl().catch((error) =>
      this.#log(`resubscribe failed: ${(error as Error).message}`)
    );
    this.#signal({ type: "RequestJobDocument" });
    return "done";
  }

  async #userAbortHandler(): Promise<Outcome> {
    const active = this.#active;
    if (!active) return { error: "no active job" };
    await this.#dropActive();
    await this.#report(active.job.jobId, "FAILED", {
      reason: stateReason("aborted", OtaErr.UserAbort),
    }, true);
    return "done";
  }

  async #shutdownHandler(): Promise<Outcome> {
    this.#generation++;
    for (
      const topic of [
        this.#topics.notifyNext,
        this.#topics.nextGetReplies,
        this.#topics.updateReplies,
        this.#topics.getReplies,
      ]
    ) {
      await this.#mqtt.unsubscribe(topic).catch(() => {});
    }
    this.#stopRequestTimer();
    this.#stopSelfTestTimer();
    this.#reporter.cancelWaits();
    this.#queue = [];
    if (this.#active?.spec.fileType === 0 && this.#active.palFile) this.#persist(this.#active);
    this.#active = null;
    return "done";
  }

  // ---- helpers -------------------------------------------------------------------------------

  #parse(payload: Uint8Array): JobMessage {
    return parseJobMessage(payload, {
      maxFirmwareSize: this.#config.maxFirmwareSize,
      maxDataFileSize: this.#config.maxDataFileSize,
    });
  }

  #firstFileIndex(job: OtaJob): number {
    const record = this.#resume.loadRecord();
    if (record && record.jobId === job.jobId) {
      const spec = job.files[record.fileIndex];
      if (spec && spec.fileId === record.fileId && spec.fileSize === record.fileSize) {
        return record.fileIndex;
      }
    }
    return nextFileIndex(job, -1)!;
  }

  #openStorage(active: ActiveFile): { ok: true } | { ok: false; reason: string; detail: string } {
    if (active.spec.fileType !== 0) {
      active.data = new Uint8Array(active.spec.fileSize);
      return { ok: true };
    }
    const pal = this.#platform.pal;
    const file: PalFile = {
      filePath: active.spec.filePath,
      fileSize: active.spec.fileSize,
      signature: active.spec.signature,
      certFilePath: active.spec.certFile ?? CODE_VERIFY_KEY,
      fileHandle: null,
      patch: active.patch ? { size: active.fileSize } : null,
    };
    const record = this.#resume.loadRecord();
    // A patch is applied from its start every time: its writer's state lives in RAM.
    if (!active.patch && record && resumes(record, active, this.#config.blockSize)) {
      const bitmap = BlockBitmap.fromBytes(
        fromBase64(record.bitmap) ?? new Uint8Array(0),
        active.blockCount,
      );
      if (bitmap && otaPalMain(pal.resumeFileForRx(file)) === OtaPalMainStatus.Success) {
        this.#log(
          `resuming ${active.spec.filePath} of job ${active.job.jobId}: ${bitmap.remaining}/${active.blockCount} blocks to go`,
        );
        active.bitmap = bitmap;
        active.palFile = file;
        return { ok: true };
      }
    }
    const status = pal.createFileForRx(file);
    if (otaPalMain(status) !== OtaPalMainStatus.Success) {
      return {
        ok: false,
        reason: failedReason(otaPalMain(status), otaPalSub(status)),
        detail: pal.lastError ?? "cannot create the file",
      };
    }
    active.palFile = file;
    if (active.patch) this.#resume.clearRecord();
    else this.#persist(active);
    return { ok: true };
  }

  /**
   * File `index` of `job`, as a patch when the file offers one from the image this device runs
   * (and no patch of this job has failed here).
   */
  #open(job: OtaJob, index: number): ActiveFile {
    const options = this.#downloadOptions();
    const spec = job.files[index]!;
    const patch =
      // Only a file with offers costs the hash of the running image.
      this.#patchFailedFor === job.jobId || spec.deltas.length === 0
        ? null
        : usablePatch(job, spec, this.#platform.pal.runningImageSha256(), options);
    if (patch) {
      this.#log(
        `job ${job.jobId}: fetching a ${patch.fileSize}-byte patch from the running image ` +
          `instead of the ${spec.fileSize}-byte image`,
      );
    }
    return openFile(job, index, options, patch);
  }

  /** A patch that cannot be applied: the same file again, whole (the job goes on). */
  async #withoutPatch(active: ActiveFile, why: string): Promise<Outcome> {
    this.#log(`job ${active.job.jobId}: the patch cannot be used (${why}): fetching the image`);
    this.#patchFailedFor = active.job.jobId;
    await this.#dropActive();
    this.#active = openFile(active.job, active.index, this.#downloadOptions());
    this.#signal({ type: "CreateFile" });
    return "done";
  }

  #refreshUrls(job: OtaJob): void {
    const active = this.#active;
    if (!active) return;
    const spec = job.files[active.index];
    const url = active.patch
      ? spec?.deltas.find((d) => d.fileId === active.fileId)?.updateDataUrl
      : spec?.updateDataUrl;
    if (url) active.url = url;
  }

  /** Fails the current job with a reason and goes back to waiting for the next one. */
  async #failActive(
    reason: string,
    detail: string,
    status: "FAILED" | "REJECTED" = "FAILED",
  ): Promise<Outcome> {
    const active = this.#active;
    if (!active) return { error: detail };
    this.#log(`job ${active.job.jobId} ${status}: ${detail}`);
    if (this.#rollingForward === active.job.jobId) {
      // Nothing more the device can do: it stays on the image it runs, and says so.
      this.#log(
        `job ${active.job.jobId}: cannot install again the image the cloud has as SUCCEEDED; ` +
          "the device keeps the version it runs",
      );
      this.#rollingForward = null;
      this.#resume.clearIntent();
    }
    await this.#dropActive();
    this.#onEvent({ type: "Fail", jobId: active.job.jobId, reason, detail });
    await this.#report(active.job.jobId, status, { reason, detail }, true);
    this.#signal({ type: "RequestJobDocument" });
    return "stay";
  }

  /** Abandons the current file: the PAL cancels and cleans it, the record goes. */
  async #dropActive(): Promise<void> {
    const active = this.#active;
    this.#active = null;
    this.#rateWatch = null;
    this.#stopRequestTimer();
    if (!active) return;
    if (active.protocol === "MQTT" && active.job.streamName) {
      await this.#mqtt.unsubscribe(this.#topics.streamData(active.job.streamName)).catch(() => {});
    }
    if (active.spec.fileType === 0 && active.opened) {
      this.#platform.pal.setPlatformImageState(active.palFile, OtaImageState.Aborted);
    }
    this.#bundledComponent(active.job)?.cancel();
    this.#resume.clearRecord();
  }

  /** The persisted state: a resume record and/or a success intent (one flash record). */
  #persist(active: ActiveFile): void {
    active.sincePersist = 0;
    this.#resume.saveRecord(resumeRecordOf(active, this.#config.blockSize));
  }

  #downloadOptions(): DownloadOptions {
    return {
      blockSize: this.#config.blockSize,
      preferredProtocol: this.#config.preferredProtocol,
      httpAvailable: this.#http !== undefined,
    };
  }

  /**
   * Publishes a job status through the reporter, unless the cloud closed this execution as
   * SUCCEEDED already (a roll-forward): then there is nothing to tell it.
   */
  #report(
    jobId: string,
    status: string,
    details: Record<string, string>,
    awaitAck: boolean,
  ): Promise<boolean> {
    if (this.#rollingForward === jobId) return Promise.resolve(true);
    return this.#reporter.report(jobId, status, details, awaitAck);
  }

  /**
   * (Re)starts the request timer. Every block received pushes the deadline back; moving an armed
   * timer that often was a tenth of the fleet's timer work, so a later deadline only moves
   * `#requestDeadline` and the timer, when it fires early, sleeps the rest.
   */
  #startRequestTimer(ms: number): void {
    const deadline = this.#clock.now() + ms;
    this.#requestDeadline = deadline;
    if (this.#requestTimer !== null && this.#requestTimerFiresAt <= deadline) return;
    this.#armRequestTimer(ms);
  }

  #armRequestTimer(ms: number): void {
    this.#stopRequestTimer();
    this.#requestTimerFiresAt = this.#clock.now() + ms;
    this.#requestTimer = this.#clock.setTimer(ms, () => {
      this.#requestTimer = null;
      const left = this.#requestDeadline - this.#clock.now();
      if (left > 0) return this.#armRequestTimer(left);
      this.#signal({ type: "RequestTimer" });
    });
  }

  #stopRequestTimer(): void {
    if (this.#requestTimer !== null) this.#clock.clearTimer(this.#requestTimer);
    this.#requestTimer = null;
  }

  #stopSelfTestTimer(): void {
    if (this.#selfTestTimer !== null) this.#clock.clearTimer(this.#selfTestTimer);
    this.#selfTestTimer = null;
  }

  #track(work: Promise<unknown>): void {
    this.#background.add(work);
    work.finally(() => this.#background.delete(work));
  }
}
