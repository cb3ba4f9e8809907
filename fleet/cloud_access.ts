/**
 * What the fleet needs from the cloud, whether it embeds one (`startCloud`) or joins an existing
 * one through its operator API (`--broker/--api/--token`, so several fleet processes, one per
 * shard, can drive one fleet against one broker).
 *
 * @module
 */

import type { Cloud } from "../broker/cloud.ts";
import type { JobCounts } from "../broker/job_service.ts";
import type { OtaUpdateRequest, SigningProfile } from "../broker/ota_updates.ts";
import { clockScale } from "../lib/clock.ts";

/** Counts of one job's executions, plus things not notified yet (the job service's own). */
export type Counts = JobCounts;

/** When a job was created and its executions queued, in real epoch milliseconds. */
export interface JobTimes {
  readonly createdAt: number;
  /** By thing. */
  readonly queued: ReadonlyMap<string, number>;
}

/** The cloud as the fleet uses it. */
export interface CloudAccess {
  /** The MQTT brokers devices connect to (several: the nodes of a cluster). */
  readonly brokerUrls: readonly string[];
  /** Registers a thing with a secret the cloud generates, and returns that secret. */
  provisionThing(thing: string, inGroup: boolean): Promise<string>;
  addToGroup(thing: string): Promise<void>;
  createSigningProfile(profile: SigningProfile): Promise<void>;
  /** Creates an OTA update; returns its job id and file size. */
  createOtaUpdate(request: OtaUpdateRequest): Promise<{ jobId: string; fileSize: number }>;
  /** An OTA update created by someone else (another shard): null until it exists. */
  findOtaUpdate(otaUpdateId: string): Promise<{ jobId: string; fileSize: number } | null>;
  /** The job's status, why it is so (a pause, a cancel), and its counts. */
  jobState(jobId: string): Promise<{ status: string; reason: string | null; counts: Counts }>;
  cancelJob(jobId: string, reason: string): Promise<void>;
  /**
   * When the cloud created the job and queued each thing's execution (its latest), on this
   * machine's clock: the cloud's own clock may run faster than real time (`--time-scale`).
   */
  jobTimes(jobId: string): Promise<JobTimes>;
  /** Bytes the stream service sent (null when the cloud is remote and does not say). */
  bytesDelivered(blockSize: number): number | null;
  /** Times the cloud could not be reached and was waited for, and for how long in all. */
  outages(): { readonly count: number; readonly seconds: number };
}

/**
 * Access to an embedded cloud.
 *
 * @example
 * ```ts ignore
 * const access = embeddedAccess(await startCloud());
 * ```
 */
export function embeddedAccess(cloud: Cloud): CloudAccess {
  return {
    brokerUrls: [cloud.url],
    async provisionThing(thing, inGroup) {
      const secret = await cloud.provisionThing(thing, null);
      if (inGroup) await cloud.store.addToGroup("fleet", thing);
      return secret;
    },
    addToGroup(thing) {
      return cloud.jobs.addThingToGroup("fleet", thing);
    },
    async createSigningProfile(profile) {
      const created = await cloud.otaUpdates.createSigningProfile(profile);
      if (!created.ok) throw new Error(created.reason);
    },
    async createOtaUpdate(request) {
      const created = await cloud.otaUpdates.createOtaUpdate(request);
      if (!created.ok) throw new Error(created.reason);
      return { jobId: created.value.jobId, fileSize: created.value.fileSize };
    },
    async findOtaUpdate(otaUpdateId) {
      const found = await cloud.otaUpdates.describe(otaUpdateId);
      return found ? { jobId: found.jobId, fileSize: found.fileSize } : null;
    },
    async jobState(jobId) {
      const job = await cloud.store.getJob(jobId);
      return {
        status: job?.status ?? "UNKNOWN",
        reason: job?.reason ?? null,
        counts: await cloud.jobs.counts(jobId),
      };
    },
    async cancelJob(jobId, reason) {
      await cloud.jobs.cancelJob(jobId, { reason });
    },
    async jobTimes(jobId) {
      const job = await cloud.store.getJob(jobId);
      if (!job) throw new Error(`no job '${jobId}'`);
      const executions = await cloud.store.executionsOfJob(jobId);
      const clock = { now: cloud.clock.now(), scale: clockScale(cloud.clock) };
      return timesOf(job.createdAt, executions, clock, Date.now());
    },
    bytesDelivered: (blockSize) => cloud.streams.stats.blocksSent * blockSize,
    outages: () => ({ count: 0, seconds: 0 }),
  };
}

/**
 * Access to a running cloud through its operator API: one node's, or several nodes' of a cluster
 * (a call that cannot reach one goes on to the next, so the run outlives the node it started on).
 *
 * @example
 * ```ts ignore
 * const access = remoteAccess(["mqtt://10.0.0.5:1883"], ["http://10.0.0.5:8080/api"], token);
 * ```
 */
export function remoteAccess(
  brokerUrls: readonly string[],
  apis: readonly string[],
  token: string,
  options: {
    /** How long the cloud may be unreachable before the run gives up. @default {120000} */
    readonly outageToleranceMs?: number;
    /** Told when an outage begins and ends. */
    readonly log?: (line: string) => void;
    /**
     * How long one call may go unanswered before the node is asked whether it lives (its
     * `/livez`, answered from its event loop alone): a node that hangs (stopped, or its event
     * loop stuck) accepts connections and never answers, and the call counts as a failure (the
     * next node is tried); a live node that is slow (a job of 100,000 targets being created, a
     * database busy with it) is waited for, asked again each period.
     * @default {30000}
     */
    readonly callTimeoutMs?: number;
  } = {},
): CloudAccess {
  if (apis.length === 0) throw new Error("remoteAccess needs at least one API URL");
  const bases = apis.map((api) => api.replace(/\/$/, ""));
  /** The API in use: the first that answered last. */
  let current = 0;
  const tolerance = options.outageToleranceMs ?? 120_000;
  const callTimeout = options.callTimeoutMs ?? 30_000;
  const log = options.log ?? (() => {});
  const outages = { count: 0, seconds: 0 };
  let downSince: number | null = null;
  /**
   * One API call, waited out across an outage (connection refused or reset, 502-504: a cloud
   * restarting) with backoff up to `tolerance`, trying every API in turn before each wait.
   * `retried` says whether the request may have reached the cloud before a connection broke (a
   * POST then may have been applied).
   */
  const call = async (method: string, path: string, body?: unknown) => {
    let delay = 250;
    let retried = false;
    let failedInRound = 0;
    for (;;) {
      const base = bases[current]!;
      let failure: string;
      const hung = new AbortController();
      const watch = watchLiveness(base, callTimeout, () => hung.abort());
      try {
        const signal = hung.signal;
        const response = await fetch(`${base}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
          signal,
        });
        if (response.status < 502 || response.status > 504) {
          const json = await response.json().catch((error) => {
            if (signal.aborted) throw error; // the body never came: a failure like any other
            return {};
          });
          watch.stop();
          if (downSince !== null) {
            const seconds = (Date.now() - downSince) / 1000;
            outages.count++;
            outages.seconds += seconds;
            log(`cloud: reachable again at ${base} after ${seconds.toFixed(1)} s`);
            downSince = null;
          }
          return { status: response.status, json: json as Record<string, unknown>, retried };
        }
        await response.body?.cancel();
        failure = `HTTP ${response.status}`;
      } catch (error) {
        failure = hung.signal.aborted
          ? `no answer within ${callTimeout / 1000} s, nor from its /livez`
          : (error as Error).message;
      } finally {
        watch.stop();
      }
      retried = true;
      if (downSince === null) {
        downSince = Date.now();
        log(
          `cloud: cannot reach the API at ${base} (${failure}); waiting up to ${
            tolerance / 1000
          } s${bases.length > 1 ? ", trying the other nodes" : ""}`,
        );
      }
      if (Date.now() - downSince > tolerance) {
        throw new Error(
          `cannot reach the API at ${bases.join(", ")}: ${failure} (waited ${tolerance / 1000} s)`,
        );
      }
      current = (current + 1) % bases.length;
      if (++failedInRound < bases.length) continue; // another node may answer at once
      failedInRound = 0;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5_000);
    }
  };
  const ok = (result: { status: number; json: Record<string, unknown> }, what: string) => {
    if (result.status >= 400) {
      throw new Error(`${what}: HTTP ${result.status}: ${result.json.error ?? ""}`);
    }
    return result.json;
  };
  return {
    brokerUrls,
    async provisionThing(thing, inGroup) {
      const registered = ok(
        await call("PUT", `/things/${encodeURIComponent(thing)}`, {
          generateSecret: true,
          groups: inGroup ? ["fleet"] : [],
        }),
        `provision ${thing}`,
      );
      if (typeof registered.secret !== "string") {
        throw new Error(`provision ${thing}: the cloud returned no secret`);
      }
      return registered.secret;
    },
    async addToGroup(thing) {
      ok(
        await call("PUT", `/groups/fleet/things/${encodeURIComponent(thing)}`),
        `add ${thing} to the group`,
      );
    },
    async createSigningProfile(profile) {
      ok(await call("POST", "/signing-profiles", profile), "create the signing profile");
    },
    async createOtaUpdate(request) {
      const result = await call("POST", "/ota-updates", request);
      // Sent again after a connection broke: the first attempt may have created it already.
      if (
        result.retried && result.status === 400 && /already exists/.test(String(result.json.error))
      ) {
        const found = ok(
          await call("GET", `/ota-updates/${encodeURIComponent(request.otaUpdateId)}`),
          "find the OTA update",
        );
        return { jobId: String(found.jobId), fileSize: Number(found.fileSize) };
      }
      const json = ok(result, "create the OTA update");
      return { jobId: String(json.jobId), fileSize: Number(json.fileSize) };
    },
    async findOtaUpdate(otaUpdateId) {
      const result = await call("GET", `/ota-updates/${encodeURIComponent(otaUpdateId)}`);
      if (result.status === 404) return null;
      const json = ok(result, "find the OTA update");
      return { jobId: String(json.jobId), fileSize: Number(json.fileSize) };
    },
    async jobState(jobId) {
      const json = ok(await call("GET", `/jobs/${encodeURIComponent(jobId)}`), "read the job");
      return {
        status: String(json.status),
        reason: typeof json.reason === "string" ? json.reason : null,
        counts: json.counts as Counts,
      };
    },
    async cancelJob(jobId, reason) {
      ok(
        await call("POST", `/jobs/${encodeURIComponent(jobId)}/cancel`, { reason }),
        "cancel the job",
      );
    },
    async jobTimes(jobId) {
      const path = `/jobs/${encodeURIComponent(jobId)}`;
      const job = ok(await call("GET", path), "read the job");
      const executions = ok(await call("GET", `${path}/executions`), "list the job's executions");
      // The cloud's clock as of the middle of the request that read it.
      const asked = Date.now();
      // The node that answered the reads: its clock is the one the times are in.
      const health = await fetch(`${bases[current]!.replace(/\/api$/, "")}/healthz`, {
        signal: AbortSignal.timeout(callTimeout),
      })
        .then((r) => r.json()).catch(() => ({})) as { clock?: { now?: unknown; scale?: unknown } };
      const answered = Date.now();
      const clock = health.clock;
      if (
        typeof job.createdAt !== "number" || !Array.isArray(executions) ||
        typeof clock?.now !== "number"
      ) {
        throw new Error("read the job's times: no job, executions or cloud clock in the answers");
      }
      return timesOf(
        job.createdAt,
        executions,
        { now: clock.now, scale: typeof clock.scale === "number" ? clock.scale : 1 },
        (asked + answered) / 2,
      );
    },
    bytesDelivered: () => null,
    outages: () => ({ ...outages }),
  };
}

/**
 * Calls `hang` when a call to `base` has gone unanswered for `period` and the node's `/livez`
 * does not answer within another period either; asks again every period while the node lives.
 * (A node whose event loop serves 16,000 devices booting at once took more than 5 s to answer
 * `/livez` and was failed over while alive.) `stop` ends the watch.
 */
function watchLiveness(base: string, period: number, hang: () => void): { stop(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const probeTimeout = period;
  const check = async () => {
    const alive = await fetch(`${base.replace(/\/api$/, "")}/livez`, {
      signal: AbortSignal.timeout(probeTimeout),
    }).then(async (response) => {
      await response.body?.cancel();
      return response.ok;
    }, () => false);
    if (stopped) return;
    if (alive) timer = setTimeout(check, period);
    else hang();
  };
  timer = setTimeout(check, period);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/**
 * A job's creation and each thing's latest execution's queue time, moved from the cloud's clock
 * (which read `clock.now` at `realNow` and runs `clock.scale` times faster) to real time.
 */
function timesOf(
  createdAt: number,
  executions: readonly unknown[],
  clock: { readonly now: number; readonly scale: number },
  realNow: number,
): JobTimes {
  const real = (at: number) => realNow - (clock.now - at) / clock.scale;
  const latest = new Map<string, { executionNumber: number; queuedAt: number }>();
  for (
    const e of executions as { thing?: unknown; executionNumber?: unknown; queuedAt?: unknown }[]
  ) {
    if (typeof e.thing !== "string" || typeof e.queuedAt !== "number") continue;
    const executionNumber = typeof e.executionNumber === "number" ? e.executionNumber : 0;
    const seen = latest.get(e.thing);
    if (!seen || executionNumber > seen.executionNumber) {
      latest.set(e.thing, { executionNumber, queuedAt: e.queuedAt });
    }
  }
  return {
    createdAt: real(createdAt),
    queued: new Map([...latest].map(([thing, e]) => [thing, real(e.queuedAt)])),
  };
}
