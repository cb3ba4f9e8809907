/**
 * `deno task fleet`: starts the cloud, provisions a fleet of simulated devices on factory image
 * 1.0.0 in Web Workers, rolls a signed 1.1.0 out to them while breaking them on purpose, shows the
 * progress, and writes a JSON report. Exit code 0 when the run ended as the scenario expects,
 * 1 otherwise, 2 on bad flags.
 *
 * @module
 */

import { toBase64 } from "../lib/base64.ts";
import { parseArgs } from "node:util";
// @ts-types="@types/cli-progress"
import cliProgress from "cli-progress";
import { certificateDer } from "../protocol/certificates.ts";
import {
  createRootCertificate,
  deriveSigningKeys,
  exportPrivateKeyPem,
  generateSigningKeys,
  issueCodeSigningCertificate,
} from "../pki/certificate_issuer.ts";
import { pemEncode } from "../protocol/signatures.ts";
import { type Behavior, buildFirmware } from "../bootloader/firmware.ts";
import { parseVersion } from "../protocol/image_format.ts";
import { signImage } from "../protocol/image_sign.ts";
import { startCloud } from "../broker/cloud.ts";
import { embeddedAccess, remoteAccess } from "./cloud_access.ts";
import { operatorApi } from "../broker/operator_api.ts";
import { ScaledClock } from "../lib/clock.ts";
import { seededRandom } from "../lib/random.ts";
import { parseSize } from "../lib/units.ts";
import { forEachLimited } from "../lib/concurrency.ts";
import type { FleetDeviceSpec, NetworkProfile, UpdateMarks } from "./device_actor.ts";
import { FleetSupervisor } from "./supervisor.ts";
import { UsageError } from "../lib/usage_error.ts";
import { secondStagePayload } from "../bootloader/first_stage.ts";
import { provisionSecureElement } from "../pki/provisioning.ts";
import { SecureElement } from "../bootloader/secure_element.ts";
import { startCpuProfile } from "../lib/cpu_profiler.ts";
import { blockSizeProblem, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from "../protocol/stream_codec.ts";

/** Named experiments. */
export const SCENARIOS = [
  "happy",
  "chaos",
  "rollback",
  "canary-abort",
  "back-to-back",
  "late-joiners",
] as const;
type Scenario = typeof SCENARIOS[number];

export const USAGE = `Usage: deno task fleet [options]

  --devices N              fleet size (default 200)
  --image-size SIZE        firmware payload, e.g. 256KiB (default 64KiB)
  --block-size SIZE        stream block, power of two 256..128KiB (default 4KiB)
  --protocol mqtt|http     data plane (default mqtt)
  --workers N              Web Workers (default: cores)
  --devices-per-worker N   instead of --workers (1 = a Worker per device)
  --scenario NAME          ${SCENARIOS.join(" | ")} (default happy)
  --seed N                 fault plan seed (default 1)
  --time-scale N           cloud and device clocks run N times faster (default 60)
  --max-per-minute N       rollout rate (default 1000)
  --disconnect-rate P      share of devices that lose their connection mid-update (0..1)
  --corrupt-rate P         share of devices that receive corrupted blocks (0..1)
  --power-cut-rate P       share of devices whose power is cut during the update (0..1)
  --worker-crashes N       Workers that die of an uncaught error mid-update; their devices come
                           back with their flash (default 0, chaos 1)
  --retries N              the cloud retries a FAILED or TIMED_OUT execution up to N times
                           (0..10; default 0, chaos 3: a power lost during the self-test
                           reverts the image and fails that attempt, as on AWS IoT)
  --report FILE            where the JSON report goes (default fleet-report.json)
  --timeout SECONDS        give up after this much real time (default 600)
  --cancel P               cancel the update once a share P (0..1) of the fleet has ended it
  --bad-image-share P      share of devices on which the new image misbehaves (0..1)
  --bad-image-behavior B   crash-on-boot | no-network | fail-self-test | hang (default crash-on-boot)
  --abort-percent N        cancel the rollout when N% of the first executions failed (min 10 executed)
  --erase-previous-image   devices erase their old image once the new one is confirmed (no
                           exploitable image stays in flash; no way back but a new update)
  --identity secret|secure-element
                           how devices log in: a per-device secret (default), or tokens signed
                           by a secure element whose key the fleet CA certified (embedded cloud)
  --dashboard              print the rollout dashboard's URL; it stays up after the run until
                           Ctrl-C
  --broker URL --api URL --token T
                           join a running cloud (deno task broker) instead of embedding one
  --shard I/N              run the I-th of N shares of the fleet (with --broker/--api/--token)
  --latency MS             every message to a device arrives MS later (+-25% jitter, order kept)
  --bandwidth SIZE/s       a device's downlink, e.g. 32KiB/s (default unlimited)
  --loss P                 share of stream data blocks (QoS 0) lost on the way (0..0.5)
  --trace THING[,THING...] print those devices' own log lines (boot, agent, connection) as they
                           happen, with the seconds since the run started
  --cpu-profile DIR        write a V8 CPU profile of the main thread and of every Worker into
                           DIR (summarize with tools/cpu_profile.ts, or open in DevTools)`;

export { UsageError };

interface Options {
  devices: number;
  imageSize: number;
  blockSize: number;
  protocol: "mqtt" | "http";
  workers?: number;
  devicesPerWorker?: number;
  scenario: Scenario;
  seed: number;
  timeScale: number;
  maxPerMinute: number;
  disconnectRate: number;
  corruptRate: number;
  powerCutRate: number;
  workerCrashes: number;
  /** Retries of a FAILED or TIMED_OUT execution (AWS jobExecutionsRetryConfig). */
  retries: number;
  /** Print the dashboard's URL and keep it up after the run. */
  dashboard: boolean;
  /** Devices erase their previous image once a new one is confirmed. */
  erasePreviousImage: boolean;
  /** How devices log in. */
  identity: "secret" | "secure-element";
  report: string;
  /** Directory for CPU profiles of the main thread and the Workers. */
  cpuProfile?: string;
  /** Devices whose own log lines are printed as they happen. */
  trace: readonly string[];
  cancelAt?: number;
  badImageShare: number;
  badImageBehavior: Behavior;
  abortPercent?: number;
  network?: NetworkProfile;
  remote?: { broker: string; api: string; token: string };
  shard: { index: number; count: number };
  timeoutSeconds: number;
}

function identityOf(text: string | undefined): "secret" | "secure-element" {
  if (text === undefined || text === "secret" || text === "secure-element") return text ?? "secret";
  throw new UsageError(
    `Invalid --identity: expected secret or secure-element: current value is '${text}'`,
  );
}

function traceList(text: string | undefined): string[] {
  if (text === undefined) return [];
  const things = text.split(",");
  if (!things.every((thing) => /^[a-zA-Z0-9:_-]{1,128}$/.test(thing))) {
    throw new UsageError(
      `Invalid --trace: expected thing names separated by commas: current value is '${text}'`,
    );
  }
  return things;
}

function parseShard(text: string | undefined): { index: number; count: number } {
  if (text === undefined) return { index: 1, count: 1 };
  const match = /^(\d+)\/(\d+)$/.exec(text);
  const index = Number(match?.[1]);
  const count = Number(match?.[2]);
  if (!match || count < 1 || index < 1 || index > count) {
    throw new UsageError(
      `Invalid --shard: expected I/N with 1 <= I <= N: current value is '${text}'`,
    );
  }
  return { index, count };
}

function badBehavior(text: string | undefined): Behavior {
  const value = text ?? "crash-on-boot";
  if (!["crash-on-boot", "no-network", "fail-self-test", "hang"].includes(value)) {
    throw new UsageError(
      `Invalid --bad-image-behavior: expected crash-on-boot, no-network, fail-self-test or hang: current value is '${value}'`,
    );
  }
  return value as Behavior;
}

/**
 * Blocks a fleet device asks for per stream request: up to 32 KiB at a time, so one round trip
 * carries as much as an MCU's receive buffer would hold.
 *
 * @example
 * ```ts
 * blocksPerRequestFor(4096); // 8
 * ```
 */
export function blocksPerRequestFor(blockSize: number): number {
  return Math.max(1, Math.min(32, Math.floor(32 * 1024 / blockSize)));
}

/** Parses and validates flags (a bad value is a UsageError naming it). */
export function parseFleetArgs(args: string[]): Options {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        dashboard: { type: "boolean" },
        "erase-previous-image": { type: "boolean" },
        ...Object.fromEntries(
          [
            "devices",
            "image-size",
            "block-size",
            "protocol",
            "workers",
            "devices-per-worker",
            "scenario",
            "seed",
            "time-scale",
            "max-per-minute",
            "disconnect-rate",
            "corrupt-rate",
            "power-cut-rate",
            "worker-crashes",
            "retries",
            "report",
            "timeout",
            "cancel",
            "bad-image-share",
            "bad-image-behavior",
            "abort-percent",
            "broker",
            "api",
            "token",
            "shard",
            "latency",
            "bandwidth",
            "loss",
            "identity",
            "cpu-profile",
            "trace",
          ]
            .map((name) => [name, { type: "string" as const }]),
        ),
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const v = values as Record<string, string | undefined>;
  // Bandwidth reads naturally as a rate; the unit suffix is optional.
  if (v.bandwidth !== undefined) v.bandwidth = v.bandwidth.replace(/\/s$/, "");
  const int = (name: string, fallback: number, min: number, max: number) => {
    const text = v[name];
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!/^\d+$/.test(text) || n < min || n > max) {
      throw new UsageError(
        `Invalid --${name}: expected an integer ${min}..${max}: current value is '${text}'`,
      );
    }
    return n;
  };
  const rate = (name: string, fallback: number) => {
    const text = v[name];
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!(n >= 0 && n <= 1) || text.trim() === "") {
      throw new UsageError(`Invalid --${name}: expected 0..1: current value is '${text}'`);
    }
    return n;
  };
  const size = (name: string, fallback: string, min: number, max: number) => {
    const text = v[name] ?? fallback;
    const n = parseSize(text);
    if (n === null || n < min || n > max) {
      throw new UsageError(
        `Invalid --${name}: expected ${min}..${max} bytes (e.g. 64KiB): current value is '${text}'`,
      );
    }
    return n;
  };
  const scenario = (v.scenario ?? "happy") as Scenario;
  if (!SCENARIOS.includes(scenario)) {
    throw new UsageError(
      `Invalid --scenario: expected one of ${
        SCENARIOS.join(", ")
      }: current value is '${v.scenario}'`,
    );
  }
  const protocol = v.protocol ?? "mqtt";
  if (protocol !== "mqtt" && protocol !== "http") {
    throw new UsageError(
      `Invalid --protocol: expected mqtt or http: current value is '${protocol}'`,
    );
  }
  const blockSize = size("block-size", "4KiB", MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
  const sizeProblem = blockSizeProblem(blockSize);
  if (sizeProblem !== null) {
    throw new UsageError(
      `Invalid --block-size: it ${sizeProblem}: current value is '${v["block-size"]}'`,
    );
  }
  const timeScale = Number(v["time-scale"] ?? "60");
  if (!(timeScale > 0 && timeScale <= 10_000)) {
    throw new UsageError(
      `Invalid --time-scale: expected 0..10000: current value is '${v["time-scale"]}'`,
    );
  }
  const chaos = scenario === "chaos";
  const options: Options = {
    devices: int("devices", 200, 1, 100_000),
    imageSize: size("image-size", "64KiB", 1024, 448 * 1024),
    blockSize,
    protocol,
    scenario,
    seed: int("seed", 1, 0, 2 ** 31),
    timeScale,
    maxPerMinute: int("max-per-minute", 1000, 1, 1000),
    disconnectRate: rate("disconnect-rate", chaos ? 0.2 : 0),
    corruptRate: rate("corrupt-rate", chaos ? 0.2 : 0),
    powerCutRate: rate("power-cut-rate", chaos ? 0.1 : 0),
    workerCrashes: int("worker-crashes", chaos ? 1 : 0, 0, 1000),
    retries: int("retries", chaos ? 3 : 0, 0, 10),
    dashboard: values.dashboard === true,
    erasePreviousImage: values["erase-previous-image"] === true,
    identity: identityOf(v.identity),
    report: v.report ?? "fleet-report.json",
    timeoutSeconds: int("timeout", 600, 1, 86_400),
    ...(v.cancel !== undefined ? { cancelAt: rate("cancel", 0) } : {}),
    ...(v["cpu-profile"] !== undefined ? { cpuProfile: v["cpu-profile"] } : {}),
    trace: traceList(v.trace),
    badImageShare: rate("bad-image-share", 0),
    shard: parseShard(v.shard),
    badImageBehavior: badBehavior(v["bad-image-behavior"]),
    ...(v["abort-percent"] !== undefined ? { abortPercent: int("abort-percent", 0, 1, 100) } : {}),
  };
  if (v.latency !== undefined || v.bandwidth !== undefined || v.loss !== undefined) {
    options.network = {
      latencyMs: int("latency", 0, 0, 60_000),
      bandwidthBytesPerSecond: v.bandwidth === undefined ? 0 : size("bandwidth", "0", 100, 2 ** 30),
      loss: rate("loss", 0),
    };
    if (options.network.loss > 0.5) {
      throw new UsageError(
        `Invalid --loss: expected 0..0.5: current value is '${v.loss}'`,
      );
    }
  }
  if (v.workers !== undefined) options.workers = int("workers", 1, 1, 256);
  if (v["devices-per-worker"] !== undefined) {
    options.devicesPerWorker = int("devices-per-worker", 1, 1, 100_000);
  }
  if (v.broker !== undefined || v.api !== undefined || v.token !== undefined) {
    if (!v.broker || !v.api || !v.token) {
      throw new UsageError("Joining a cloud needs all of --broker, --api and --token");
    }
    if (!/^mqtts?:\/\/\S+$/.test(v.broker)) {
      throw new UsageError(
        `Invalid --broker: expected mqtt://HOST:PORT: current value is '${v.broker}'`,
      );
    }
    if (!/^https?:\/\/\S+$/.test(v.api)) {
      throw new UsageError(`Invalid --api: expected an http(s) URL: current value is '${v.api}'`);
    }
    options.remote = { broker: v.broker, api: v.api, token: v.token };
  }
  if (options.identity === "secure-element" && options.remote) {
    throw new UsageError(
      "--identity secure-element needs the embedded cloud (its fleet CA certifies the devices)",
    );
  }
  if (options.shard.count > 1 && !options.remote) {
    throw new UsageError("--shard needs --broker, --api and --token (one cloud for all shards)");
  }
  if (options.workers !== undefined && options.devicesPerWorker !== undefined) {
    throw new UsageError("Give --workers or --devices-per-worker, not both");
  }
  const ours = (thing: string) => {
    const index = Number(/^dev-(\d{5})$/.exec(thing)?.[1] ?? NaN);
    return index < options.devices && index % options.shard.count === options.shard.index - 1;
  };
  const unknown = options.trace.filter((thing) => !ours(thing));
  if (unknown.length > 0) {
    throw new UsageError(
      `Invalid --trace: no device ${unknown.join(", ")} in this run (names are dev-00000 to dev-${
        String(options.devices - 1).padStart(5, "0")
      }${options.shard.count > 1 ? ", this shard's share of them" : ""})`,
    );
  }
  return options;
}

/** A fleet CA for device identities, valid for ten years of wall time. */
async function createFleetCa() {
  const keys = await generateSigningKeys();
  const validity = {
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 10 * 365 * 86_400_000),
  };
  const certificate = await createRootCertificate(keys, {
    subject: "CN=Fleet device CA",
    ...validity,
  });
  return { certificate, privateKey: keys.privateKey, validity };
}

/** The JSON report. */
export interface FleetReport {
  scenario: string;
  devices: number;
  imageBytes: number;
  blockBytes: number;
  protocol: string;
  workers: number;
  outcome: {
    succeeded: number;
    failed: number;
    rejected: number;
    timedOut: number;
    canceled: number;
    other: number;
  };
  /** Every update of the run with its final counts (back-to-back has three). */
  updates: { jobId: string; status: string; counts: Record<string, number> }[];
  jobStatus: string;
  bricked: number;
  runningVersion: Record<string, number>;
  faults: {
    disconnects: number;
    corruptedBlocks: number;
    powerCuts: number;
    /** Power losses while the new image ran on trial: each reverts it and fails its execution. */
    trialPowerCuts: number;
    crashes: number;
    lostMessages: number;
    /** Workers made to crash (`--worker-crashes`). */
    workerCrashes: number;
    /** Worker deaths the supervisor saw and recovered from. */
    workerRestarts: number;
  };
  bytesDelivered: number;
  wallSeconds: number;
  /**
   * Where the wall time went, in order: `setup` (cloud, PKI, provisioning, Workers), `boot` (every
   * device running), `update <version>` (signing, rollout, download, swap, self-test, settle) per
   * update, `report` (final state and the boot ROM check of every flash).
   */
  phases: Record<string, number>;
  /**
   * Per update, how long devices spent in each stage (seconds: median, 90th percentile, max over
   * the devices that passed it): `accept` from the update's creation to the agent accepting the
   * job (rollout wait included), `download` to the image activated (blocks, close, signature),
   * `reboot` to the self-test on the new image (swap, boot, reconnect, job fetched again),
   * `confirm` to the update complete (self-test, SUCCEEDED acknowledged, image confirmed).
   */
  stages: Record<string, Record<UpdateStage, StageTimes>>;
  peakRssBytes: number;
  series: { t: number; counts: Record<string, number> }[];
  expected: string;
  asExpected: boolean;
}

/** The stages of one device's update, in order. */
export type UpdateStage = "accept" | "download" | "reboot" | "confirm";

/** Seconds a stage took across devices. */
export interface StageTimes {
  readonly devices: number;
  readonly p50: number;
  readonly p90: number;
  readonly max: number;
}

/** Stage times of one update from the devices' marks (see {@linkcode FleetReport.stages}). */
export function stageTimes(
  createdAt: number,
  marks: readonly (UpdateMarks | null)[],
  jobId: string,
): Record<UpdateStage, StageTimes> {
  const spans: Record<UpdateStage, number[]> = {
    accept: [],
    download: [],
    reboot: [],
    confirm: [],
  };
  for (const m of marks) {
    if (!m || m.jobId !== jobId) continue;
    spans.accept.push(m.received - createdAt);
    if (m.activated !== undefined) spans.download.push(m.activated - m.received);
    if (m.activated !== undefined && m.selfTest !== undefined) {
      spans.reboot.push(m.selfTest - m.activated);
    }
    if (m.selfTest !== undefined && m.complete !== undefined) {
      spans.confirm.push(m.complete - m.selfTest);
    }
  }
  const summary = (ms: number[]): StageTimes => {
    const sorted = ms.sort((a, b) => a - b);
    const at = (q: number) =>
      sorted.length === 0
        ? 0
        : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! / 10) /
          100;
    return { devices: sorted.length, p50: at(0.5), p90: at(0.9), max: at(1) };
  };
  return {
    accept: summary(spans.accept),
    download: summary(spans.download),
    reboot: summary(spans.reboot),
    confirm: summary(spans.confirm),
  };
}

/** Runs a fleet experiment and returns its report. */
/** A progress snapshot (about once a second). */
export interface FleetProgress {
  readonly version: string;
  readonly status: string;
  readonly done: number;
  readonly total: number;
  readonly counts: Record<string, number>;
  readonly mbPerSecond: number;
  readonly etaSeconds: number | null;
}

/**
 * Runs a fleet as `options` say (see {@linkcode parseFleetArgs}) and returns its report; with
 * `cpuProfile`, V8 profiles of this thread and of every Worker land in that directory.
 *
 * @example
 * ```ts ignore
 * const report = await runFleet(parseFleetArgs(["--devices", "50"]), console.log);
 * ```
 */
export async function runFleet(
  options: Options,
  out: (line: string) => void,
  onProgress?: (progress: FleetProgress) => void,
  linger?: (report: FleetReport) => Promise<void>,
): Promise<FleetReport> {
  if (!options.cpuProfile) return await runFleetUnprofiled(options, out, onProgress, linger);
  // Here rather than in the CLI, so that a run through this API gets the main thread's profile
  // and a directory its Workers can write to.
  await Deno.mkdir(options.cpuProfile, { recursive: true });
  const stopCpuProfile = await startCpuProfile();
  try {
    return await runFleetUnprofiled(options, out, onProgress, linger);
  } finally {
    await stopCpuProfile(`${options.cpuProfile}/main.cpuprofile`);
  }
}

async function runFleetUnprofiled(
  options: Options,
  out: (line: string) => void,
  onProgress?: (progress: FleetProgress) => void,
  linger?: (report: FleetReport) => Promise<void>,
): Promise<FleetReport> {
  const started = performance.now();
  const phases: Record<string, number> = {};
  const stages: FleetReport["stages"] = {};
  let phaseStart = started;
  const endPhase = (name: string) => {
    const now = performance.now();
    phases[name] = Math.round((now - phaseStart) / 100) / 10;
    phaseStart = now;
  };
  let peakRss = Deno.memoryUsage().rss;
  const sample = () => (peakRss = Math.max(peakRss, Deno.memoryUsage().rss));
  const random = seededRandom(options.seed);
  const clock = new ScaledClock(options.timeScale);
  // Embedded cloud, or a running one joined through its operator API (shards share it).
  // With secure elements, a fleet CA certifies each device's key at provisioning.
  const fleetCa = options.identity === "secure-element" ? await createFleetCa() : null;
  const embedded = options.remote ? null : await startCloud({
    clock,
    tickMs: 1000,
    ...(fleetCa ? { deviceCa: pemEncode("CERTIFICATE", certificateDer(fleetCa.certificate)) } : {}),
  });
  const token = options.remote?.token ?? crypto.randomUUID();
  const server = embedded
    ? Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      operatorApi(embedded, { token }),
    )
    : null;
  if (embedded && server) {
    embedded.files.baseUrl = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  }
  if (options.dashboard) {
    // The token rides in the fragment: the page keeps it, no server ever sees it in a URL.
    const base = embedded ? embedded.files.baseUrl : options.remote!.api.replace(/\/api\/?$/, "");
    out(`dashboard: ${base}/dashboard/#token=${encodeURIComponent(token)}`);
  }
  const access = embedded
    ? embeddedAccess(embedded)
    : remoteAccess(options.remote!.broker, options.remote!.api, token);
  const slotSectors = Math.ceil((options.imageSize + 4096) / 4096) + 1;
  // Shards must agree on one signing PKI without sharing private keys: when joining a cloud the
  // keys derive from the operator token and seed; certificates are then equivalent everywhere.
  const validity = options.remote
    ? {
      notBefore: new Date("2020-01-01T00:00:00Z"),
      notAfter: new Date("2100-01-01T00:00:00Z"),
      serialNumber: "01",
    }
    : {
      notBefore: new Date(Date.now() - 86_400_000),
      notAfter: new Date(Date.now() + 3650 * 86_400_000),
    };
  const material = `${token}:${options.seed}`;
  const rootKeys = options.remote
    ? await deriveSigningKeys(`${material}:root`)
    : await generateSigningKeys();
  const root = await createRootCertificate(rootKeys, {
    subject: "CN=Fleet Device Root",
    ...validity,
  });
  const signerKeys = options.remote
    ? await deriveSigningKeys(`${material}:signer`)
    : await generateSigningKeys();
  const signer = await issueCodeSigningCertificate(
    root,
    rootKeys.privateKey,
    signerKeys.publicKey,
    {
      subject: "CN=Fleet Signer",
      ...validity,
    },
  );
  const certPath = "/certs/ota_signer.pem";
  const signerPem = pemEncode("CERTIFICATE", certificateDer(signer));
  const factoryImage = await signImage(
    {
      payload: buildFirmware({ behavior: "ok", version: "1.0.0" }, options.imageSize),
      version: parseVersion("1.0.0")!,
      securityCounter: 1,
    },
    { privateKey: signerKeys.privateKey, certificate: signer },
  );
  // Every device boots in two stages: the fleet's second-stage bootloader, signed the same way.
  const secondStage = await signImage(
    { payload: secondStagePayload("2.0.0"), version: parseVersion("2.0.0")!, securityCounter: 1 },
    { privateKey: signerKeys.privateKey, certificate: signer },
  );
  // rollback: nobody can confirm; canary-abort: the first wave fails and the abort criterion must stop the rest.
  const behavior: Behavior = options.scenario === "rollback" || options.scenario === "canary-abort"
    ? "fail-self-test"
    : "ok";
  const devices: FleetDeviceSpec[] = [];
  let globalBad = 0;
  for (let i = 0; i < options.devices; i++) {
    const bad = random.next() < options.badImageShare;
    if (bad) globalBad++;
    if (i % options.shard.count !== options.shard.index - 1) continue;
    devices.push({
      thing: `dev-${String(i).padStart(5, "0")}`,
      secret: "", // the cloud generates it at registration
      seed: options.seed * 100_003 + i,
      ...(bad ? { badImage: options.badImageBehavior } : {}),
    });
  }
  /** Devices this process runs (all of them, or its shard's share). */
  const local = devices.length;
  // late-joiners: a tenth of the fleet is provisioned but joins the group only during the job.
  const initialDevices = options.scenario === "late-joiners" ? Math.ceil(local * 0.9) : local;
  // Several registrations in flight: one at a time, a 10,000-device setup waited on 10,000 round
  // trips with the broker idle in between.
  await forEachLimited(devices, 16, async (device, index) => {
    const secret = await access.provisionThing(device.thing, index < initialDevices);
    devices[index] = { ...devices[index]!, secret };
    if (fleetCa && embedded) {
      // The factory step: a key born in the element, certified by the fleet CA, registered.
      const element = await SecureElement.generate();
      const der = await provisionSecureElement(element, device.thing, fleetCa, fleetCa.validity);
      const registered = await embedded.registerDeviceCertificate(device.thing, der);
      if (!registered.ok) throw new Error(`${device.thing}: ${registered.reason}`);
      devices[index] = { ...devices[index]!, element: element.toChip() };
    }
  });
  let imageBytes = 0;
  const logs: string[] = [];
  const fleet = new FleetSupervisor({
    ...(options.workers !== undefined ? { workers: options.workers } : {}),
    ...(options.devicesPerWorker !== undefined
      ? { devicesPerWorker: options.devicesPerWorker }
      : {}),
    init: {
      slotSectors,
      rootCertificateDer: certificateDer(root),
      certificates: [[certPath, signerPem]],
      factoryImage,
      secondStage,
      brokerUrl: access.brokerUrl,
      // Devices keep real time: their request and self-test timers guard real sockets under real
      // load. The cloud's clock is the scaled one (rollout rates, job timeouts, schedules).
      timeScale: 1,
      agentConfig: {
        blockSize: options.blockSize,
        blocksPerRequest: blocksPerRequestFor(options.blockSize),
        requestTimeoutMs: 5_000,
        maxMomentum: 60,
        selfTestTimeoutMs: 30_000,
        statusAckTimeoutMs: 5_000,
        jobRequestBackoffMs: [2_000, 30_000],
        persistEveryBlocks: 16,
        preferredProtocol: options.protocol === "http" ? "HTTP" : "MQTT",
      },
      seed: options.seed,
      telemetryMs: 250,
      ...(options.erasePreviousImage ? { erasePreviousImage: true } : {}),
      ...(options.network ? { network: options.network } : {}),
      ...(options.cpuProfile ? { cpuProfileDir: options.cpuProfile } : {}),
      ...(options.trace.length > 0 ? { traceThings: options.trace } : {}),
    },
    log: (line) => {
      // A traced device's lines come as "[thing] ...": shown live, the rest kept for a failure.
      if (options.trace.length > 0 && line.startsWith("[")) {
        out(`trace ${((performance.now() - started) / 1000).toFixed(1)} s ${line}`);
      } else {
        logs.push(line);
      }
    },
  });
  const series: FleetReport["series"] = [];
  const faultTimers: ReturnType<typeof setTimeout>[] = [];
  // Worker crashes strike when a drawn share (10..90%) of the fleet has ended the first update, so
  // some of the dead Worker's devices already run the new image and must come back with it.
  const crashPlan = Array.from({ length: options.workerCrashes }, () => 0.1 + 0.8 * random.next())
    .sort((a, b) => a - b);
  let crashesDone = 0;
  let report: FleetReport | null = null;
  try {
    await fleet.start(devices.slice(0, initialDevices));
    endPhase("setup");
    out(
      `fleet: ${options.devices} devices in ${fleet.workerCount} workers, scenario ${options.scenario}, image ${options.imageSize} bytes, blocks ${options.blockSize}`,
    );
    const deadline = performance.now() + options.timeoutSeconds * 1000;
    const waitFor = async (condition: () => boolean | Promise<boolean>, what: string) => {
      while (!(await condition())) {
        if (performance.now() > deadline) {
          // Say where the devices that did not get there are, and why, before giving up.
          const stuck = (await fleet.report()).filter((d) => !d.telemetry.marks?.complete);
          out(`${stuck.length} devices did not complete; the first of them:`);
          for (const d of stuck.slice(0, 5)) {
            out(
              `  ${d.telemetry.thing}: ${d.telemetry.state}, ${d.telemetry.version}, update ${d.telemetry.updateState}`,
            );
            for (const line of d.lastLog) out(`    ${line}`);
          }
          throw new Error(`timed out waiting for ${what}`);
        }
        sample();
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    await waitFor(
      () =>
        [...fleet.telemetry.values()].filter((t) => t.state === "running").length ===
          initialDevices,
      "every device to boot",
    );
    endPhase("boot");
    // One shard (the first) creates the signing profile and the updates; the others wait for them.
    const leader = options.shard.index === 1;
    if (leader) {
      await access.createSigningProfile({
        name: "fleet",
        rootPem: pemEncode("CERTIFICATE", certificateDer(root)),
        certificatePem: signerPem,
        privateKeyPem: await exportPrivateKeyPem(signerKeys.privateKey),
      });
    }
    const planFaults = () => {
      // The fault plan: who gets which fault, decided by the seed alone.
      for (const device of devices) {
        if (random.next() < options.disconnectRate) {
          faultTimers.push(setTimeout(
            () => fleet.send(device.thing, { type: "disconnect" }),
            200 + random.below(2000),
          ));
        }
        if (random.next() < options.corruptRate) {
          fleet.send(device.thing, { type: "corrupt-blocks", count: 1 + random.below(3) });
        }
        if (random.next() < options.powerCutRate) {
          fleet.send(device.thing, {
            type: "cut-power",
            atOperation: 1 + random.below(Math.ceil(options.imageSize / options.blockSize) + 40),
            torn: random.next() < 0.5,
          });
        }
      }
    };
    const versions = options.scenario === "back-to-back" ? ["1.1.0", "1.2.0", "1.3.0"] : ["1.1.0"];
    const jobIds: string[] = [];
    const lateJoiners = options.scenario === "late-joiners" ? devices.slice(initialDevices) : [];
    let lastLine = 0;
    let lastBytes = 0;
    let lastAt = performance.now();
    for (const [index, version] of versions.entries()) {
      const otaUpdateId = `fleet-${version.replaceAll(".", "-")}`;
      let created = leader ? null : await access.findOtaUpdate(otaUpdateId);
      if (!leader) {
        await waitFor(
          async () => (created = await access.findOtaUpdate(otaUpdateId)) !== null,
          `shard 1 to create ${otaUpdateId}`,
        );
      } else {created = await access.createOtaUpdate({
          otaUpdateId,
          payload: toBase64(buildFirmware({ behavior, version }, options.imageSize)),
          version,
          securityCounter: 2 + index,
          signingProfile: "fleet",
          certFile: certPath,
          targets: { groups: ["fleet"] },
          protocols: options.protocol === "http" ? ["HTTP"] : ["MQTT"],
          ...(options.scenario === "late-joiners"
            ? { targetSelection: "CONTINUOUS" as const }
            : {}),
          ...(options.retries > 0
            ? { retry: [{ failureType: "ALL" as const, numberOfRetries: options.retries }] }
            : {}),
          rollout: options.maxPerMinute < 1000
            ? { maximumPerMinute: options.maxPerMinute }
            // Exponential by default: a canary of 100 per minute that doubles every 100 notified.
            : {
              exponentialRate: {
                baseRatePerMinute: 100,
                incrementFactor: 2,
                rateIncreaseCriteria: { numberOfNotifiedThings: 100 },
              },
            },
          ...(options.scenario === "canary-abort"
            ? {
              abort: [{
                failureType: "ALL" as const,
                action: "CANCEL" as const,
                thresholdPercentage: 20,
                minNumberOfExecutedThings: Math.min(10, options.devices),
              }],
              rollout: {
                maximumPerMinute: Math.max(
                  1,
                  Math.min(options.maxPerMinute, Math.ceil(options.devices / 10)),
                ),
              },
            }
            : {}),
          ...(options.abortPercent !== undefined
            ? {
              abort: [{
                failureType: "ALL" as const,
                action: "CANCEL" as const,
                thresholdPercentage: options.abortPercent,
                minNumberOfExecutedThings: Math.min(10, options.devices),
              }],
            }
            : {}),
        });}
      const { jobId, fileSize } = created!;
      const createdAt = Date.now();
      jobIds.push(jobId);
      imageBytes = fileSize;
      if (index === 0) planFaults();
      if (lateJoiners.length > 0) {
        // Devices that join the group while the continuous job runs get it without rate limits.
        await fleet.addDevices(lateJoiners);
        for (const device of lateJoiners) await access.addToGroup(device.thing);
      }
      const progress = async () => {
        const state = await access.jobState(jobId);
        const counts = state.counts;
        series.push({ t: Math.round(performance.now() - started), counts: { ...counts } });
        if (performance.now() - lastLine > 1000) {
          const bytes = access.bytesDelivered(options.blockSize) ?? 0;
          const rate = (bytes - lastBytes) / ((performance.now() - lastAt) / 1000);
          const done = counts.SUCCEEDED + counts.FAILED + counts.REJECTED + counts.TIMED_OUT +
            counts.CANCELED;
          const elapsed = (performance.now() - started) / 1000;
          const eta = done > 0 ? Math.round((options.devices - done) * elapsed / done) : null;
          lastLine = lastAt = performance.now();
          lastBytes = bytes;
          const status = state.status;
          if (onProgress) {
            onProgress({
              version,
              status,
              done,
              total: options.devices,
              counts: { ...counts },
              mbPerSecond: rate / 1e6,
              etaSeconds: eta,
            });
          } else {
            out(
              `progress ${version}: ${status} succeeded ${counts.SUCCEEDED} failed ${counts.FAILED} rejected ${counts.REJECTED} in progress ${counts.IN_PROGRESS} queued ${counts.QUEUED} not notified ${counts.pending} | ${
                (rate / 1e6).toFixed(1)
              } MB/s | ETA ${eta === null ? "?" : `${eta} s`}`,
            );
          }
        }
        return state;
      };
      let canceled = false;
      const ended = async () => {
        const state = await progress();
        const done = state.counts;
        if (
          options.cancelAt !== undefined && !canceled &&
          done.SUCCEEDED + done.FAILED + done.REJECTED + done.TIMED_OUT >=
            options.cancelAt * options.devices
        ) {
          canceled = true;
          await access.cancelJob(jobId, "canceled by the operator mid-rollout (--cancel)");
        }
        const doneShare = (done.SUCCEEDED + done.FAILED + done.REJECTED + done.TIMED_OUT) /
          options.devices;
        while (crashesDone < crashPlan.length && doneShare >= crashPlan[crashesDone]!) {
          fleet.crashWorker(random.below(fleet.workerCount));
          crashesDone++;
        }
        const status = state.status;
        const continuousDone = options.scenario === "late-joiners" &&
          done.SUCCEEDED === options.devices;
        if (status !== "COMPLETED" && status !== "CANCELED" && !continuousDone) return false;
        // A crash just ordered has not been seen yet: its devices' telemetry is not news yet.
        if (fleet.workerRestarts < crashesDone) return false;
        // Wait for devices to settle: none mid-update, every confirmation landed.
        return fleet.telemetry.size === local &&
          [...fleet.telemetry.values()].every((t) =>
            t.state === "running" && !t.trial &&
            (t.updateState === "READY" || t.updateState === "UPDATED" || t.updateState === "FAILED")
          );
      };
      await waitFor(ended, `the update to ${version} to end`);
      endPhase(`update ${version}`);
      stages[version] = stageTimes(
        createdAt,
        [...fleet.telemetry.values()].map((t) => t.marks),
        jobId,
      );
    }
    const jobId = jobIds[jobIds.length - 1]!;
    const expectedVersion = `${versions[versions.length - 1]}+0`;
    const finals = await fleet.report();
    const last = await access.jobState(jobId);
    const counts = last.counts;
    // Outcome over every update of the run (back-to-back runs three).
    const total = { SUCCEEDED: 0, FAILED: 0, REJECTED: 0, TIMED_OUT: 0, CANCELED: 0 };
    for (const id of jobIds) {
      const c = (await access.jobState(id)).counts;
      for (const key of Object.keys(total) as (keyof typeof total)[]) total[key] += c[key];
    }
    const runningVersion: Record<string, number> = {};
    for (const d of finals) {
      const version = d.telemetry.version ?? "none";
      runningVersion[version] = (runningVersion[version] ?? 0) + 1;
    }
    const faults = {
      disconnects: 0,
      corruptedBlocks: 0,
      powerCuts: 0,
      trialPowerCuts: 0,
      crashes: 0,
      lostMessages: 0,
      workerCrashes: crashesDone,
      workerRestarts: fleet.workerRestarts,
    };
    for (const d of finals) {
      faults.disconnects += d.faults.disconnects;
      faults.corruptedBlocks += d.faults.corruptedBlocks;
      faults.powerCuts += d.faults.powerCuts;
      faults.trialPowerCuts += d.faults.trialPowerCuts;
      faults.crashes += d.faults.crashes;
      faults.lostMessages += d.faults.lostMessages;
    }
    const jobStatus = last.status;
    const bricked = finals.filter((d) => !d.bootable).length;
    // Job counts cover the whole fleet (every shard); versions and boots cover this process's devices.
    const badDevices = devices.filter((d) => d.badImage).length;
    const mixed = globalBad > 0 && options.scenario === "happy";
    const aborted = mixed && options.abortPercent !== undefined;
    // A power loss while the new image runs on trial reverts it, as a crash would: that execution
    // FAILS (unless --retries gives it another go). Only such devices may miss the new version.
    const revertedByPowerCut = finals.filter((d) =>
      d.faults.trialPowerCuts > 0 && d.telemetry.version !== expectedVersion
    ).length;
    const either =
      (runningVersion["1.0.0+0"] ?? 0) + (runningVersion[expectedVersion] ?? 0) === local;
    const expected = aborted
      ? `the abort criterion (${options.abortPercent}%) stops the rollout; devices on either image, none bricked`
      : mixed
      ? `${
        options.devices - globalBad
      } devices on ${expectedVersion}; the ${globalBad} with a misbehaving image back on 1.0.0`
      : options.cancelAt !== undefined
      ? "job CANCELED mid-rollout, every device on 1.0.0 or the new image, none bricked"
      : options.scenario === "rollback"
      ? "every device back on 1.0.0, every execution FAILED"
      : options.scenario === "canary-abort"
      ? "job CANCELED by its abort criterion, no device on 1.1.0"
      : `every device on ${expectedVersion}, every execution SUCCEEDED${
        options.powerCutRate > 0
          ? " (but those whose power went while the new image was on trial: FAILED, on the previous image)"
          : ""
      }`;
    const asExpected = bricked === 0 && finals.length === local && (
      aborted
        ? jobStatus === "CANCELED" && either
        : mixed
        ? (runningVersion[expectedVersion] ?? 0) === local - badDevices &&
          (runningVersion["1.0.0+0"] ?? 0) === badDevices &&
          counts.SUCCEEDED === options.devices - globalBad
        : options.cancelAt !== undefined
        ? jobStatus === "CANCELED" && either
        : options.scenario === "rollback"
        ? runningVersion["1.0.0+0"] === local && counts.FAILED === options.devices
        : options.scenario === "canary-abort"
        ? jobStatus === "CANCELED" && (runningVersion["1.1.0+0"] ?? 0) === 0
        : (runningVersion[expectedVersion] ?? 0) + revertedByPowerCut === local &&
          total.SUCCEEDED + total.FAILED === options.devices * versions.length &&
          // Other shards' devices are theirs to account for.
          (options.shard.count > 1 || total.FAILED <= faults.trialPowerCuts)
    );
    const updates = [];
    for (const id of jobIds) {
      const state = await access.jobState(id);
      updates.push({
        jobId: id,
        status: state.status,
        counts: state.counts as unknown as Record<string, number>,
      });
    }
    sample();
    endPhase("report");
    report = {
      scenario: options.scenario,
      devices: local,
      imageBytes,
      blockBytes: options.blockSize,
      protocol: options.protocol,
      workers: fleet.workerCount,
      outcome: {
        succeeded: counts.SUCCEEDED,
        failed: counts.FAILED,
        rejected: counts.REJECTED,
        timedOut: counts.TIMED_OUT,
        canceled: counts.CANCELED,
        // Everything else: still open, removed, or never notified (a canceled rollout stops there).
        other: local - counts.SUCCEEDED - counts.FAILED - counts.REJECTED -
          counts.TIMED_OUT - counts.CANCELED,
      },
      updates,
      jobStatus,
      bricked,
      runningVersion,
      faults,
      // A remote cloud does not say what its stream service sent: estimate from the image size.
      bytesDelivered: access.bytesDelivered(options.blockSize) ?? imageBytes * total.SUCCEEDED,
      wallSeconds: Math.round((performance.now() - started) / 100) / 10,
      phases,
      stages,
      peakRssBytes: peakRss,
      series,
      expected,
      asExpected,
    };
    if (linger) await linger(report);
    return report;
  } finally {
    for (const timer of faultTimers) clearTimeout(timer);
    if (!report) { for (const line of logs.slice(-20)) out(`log: ${line}`); }
    await fleet.stop();
    await server?.shutdown();
    await embedded?.close();
  }
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseFleetArgs(Deno.args);
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  try {
    // A live bar on a terminal; plain periodic lines otherwise (logs, CI).
    const bar = Deno.stdout.isTerminal()
      ? new cliProgress.SingleBar(
        { format: "{version} {bar} {value}/{total} | {line}" },
        cliProgress.Presets.shades_classic,
      )
      : null;
    let barStarted = false;
    const report = await runFleet(
      options,
      (line) => console.log(line),
      bar
        ? (p) => {
          const line =
            `ok ${p.counts.SUCCEEDED} failed ${p.counts.FAILED} in progress ${p.counts.IN_PROGRESS} queued ${p.counts.QUEUED} | ${
              p.mbPerSecond.toFixed(1)
            } MB/s | ETA ${p.etaSeconds ?? "?"} s`;
          if (!barStarted) bar.start(p.total, p.done, { version: p.version, line });
          else bar.update(p.done, { version: p.version, line });
          barStarted = true;
        }
        : undefined,
      options.dashboard
        ? async (report) => {
          bar?.stop();
          await Deno.writeTextFile(options.report, JSON.stringify(report, null, 2));
          console.log(
            `run over (${
              report.asExpected ? "as expected" : "NOT as expected"
            }, report in ${options.report}); the dashboard stays up until Ctrl-C`,
          );
          await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", resolve));
        }
        : undefined,
    );
    bar?.stop();
    await Deno.writeTextFile(options.report, JSON.stringify(report, null, 2));
    const o = report.outcome;
    console.log(`
summary (${report.scenario}: ${report.expected})
  devices            ${report.devices} in ${report.workers} workers
  job                ${report.jobStatus}
  outcome            succeeded ${o.succeeded}, failed ${o.failed}, rejected ${o.rejected}, timed out ${o.timedOut}, canceled ${o.canceled}, other ${o.other}
  running versions   ${
      Object.entries(report.runningVersion).map(([v, n]) => `${v}: ${n}`).join(", ")
    }
  bricked            ${report.bricked}
  faults             disconnects ${report.faults.disconnects}, corrupted blocks ${report.faults.corruptedBlocks}, power cuts ${report.faults.powerCuts} (${report.faults.trialPowerCuts} during a trial), crashes ${report.faults.crashes}, lost messages ${report.faults.lostMessages}, worker crashes ${report.faults.workerCrashes} (restarts ${report.faults.workerRestarts})
  delivered          ${
      (report.bytesDelivered / 1e6).toFixed(1)
    } MB in ${report.wallSeconds} s, peak RSS ${
      (report.peakRssBytes / 2 ** 20).toFixed(0)
    } MiB (main process)
  phases             ${
      Object.entries(report.phases).map(([name, s]) => `${name} ${s} s`).join(", ")
    }${
      Object.entries(report.stages).map(([version, stages]) =>
        `\n  stages ${version.padEnd(10)} ${
          Object.entries(stages).map(([stage, t]) => `${stage} ${t.p50}/${t.p90}/${t.max} s`)
            .join(", ")
        } (median/p90/max)`
      ).join("")
    }
  as expected        ${report.asExpected ? "yes" : "NO"}
  report             ${options.report}`);
    Deno.exit(report.asExpected ? 0 : 1);
  } catch (error) {
    console.error(`fleet run failed: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
