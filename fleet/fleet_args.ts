/**
 * The flags of `deno task fleet`, parsed and validated apart from running anything: the help
 * text, the scenarios, and {@linkcode parseFleetArgs}, which turns arguments into options or a
 * {@linkcode UsageError} naming the flag.
 *
 * @example
 * ```ts
 * import { parseFleetArgs } from "./fleet_args.ts";
 * parseFleetArgs(["--devices", "20"]).devices; // 20
 * ```
 *
 * @module
 */

import { type Behavior } from "../bootloader/firmware.ts";
import { type FlagSpec, parseFlags, usage } from "../lib/flags.ts";
import type { NetworkProfile } from "./device_actor.ts";
import { UsageError } from "../lib/usage_error.ts";
import { connectionCapacity, openFileLimit } from "../lib/open_files.ts";
import { blockSizeProblem, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from "../protocol/stream_codec.ts";
import { TRUST_FLAGS, type TrustFiles } from "./trust_inputs.ts";
import { apiBase } from "../broker/ota_cli.ts";

/** Named experiments. */
export const SCENARIOS = [
  "happy",
  "chaos",
  "rollback",
  "canary-abort",
  "back-to-back",
  "late-joiners",
  "bad-wave",
  "factory-reset",
  "two-components",
  "bad-component",
] as const;
export type Scenario = typeof SCENARIOS[number];

/** The flags of `deno task fleet`: the parser's options, the help text and the checked ranges. */
export const FLEET_FLAGS: readonly FlagSpec[] = [
  { name: "devices", value: "N", help: "fleet size", range: [1, 100_000], default: "200" },
  {
    name: "image-size",
    value: "SIZE",
    help: "firmware payload, e.g. 256KiB",
    sizeRange: [1024, 448 * 1024],
    default: "64KiB",
  },
  {
    name: "block-size",
    value: "SIZE",
    help: "stream block, a power of two",
    sizeRange: [MIN_BLOCK_SIZE, MAX_BLOCK_SIZE],
    default: "4KiB",
  },
  { name: "protocol", value: "P", help: "data plane", choices: ["mqtt", "http"], default: "mqtt" },
  { name: "workers", value: "N", help: "Web Workers", range: [1, 256], defaultText: "cores" },
  {
    name: "devices-per-worker",
    value: "N",
    help: "instead of --workers (1 = a Worker per device)",
    range: [1, 100_000],
  },
  { name: "scenario", value: "NAME", help: "the experiment", choices: SCENARIOS, default: "happy" },
  { name: "seed", value: "N", help: "fault plan seed", range: [0, 2 ** 31], default: "1" },
  {
    name: "time-scale",
    value: "N",
    help: "cloud and device clocks run N times faster",
    range: [0.001, 10_000],
    default: "60",
  },
  {
    name: "max-per-minute",
    value: "N",
    help: "rollout rate (notifications a minute)",
    range: [1, 1000],
    default: "1000",
  },
  {
    name: "disconnect-rate",
    value: "P",
    help: "share of devices that lose their connection mid-update",
    range: [0, 1],
    defaultText: "0, chaos 0.2",
  },
  {
    name: "corrupt-rate",
    value: "P",
    help: "share of devices that receive corrupted blocks",
    range: [0, 1],
    defaultText: "0, chaos 0.2",
  },
  {
    name: "power-cut-rate",
    value: "P",
    help: "share of devices whose power is cut during the update",
    range: [0, 1],
    defaultText: "0, chaos 0.1",
  },
  {
    name: "worker-crashes",
    value: "N",
    help: "Workers that die of an uncaught error mid-update; their devices come back with their " +
      "flash",
    range: [0, 1000],
    defaultText: "0, chaos 1",
  },
  {
    name: "retries",
    value: "N",
    help: "the cloud retries a FAILED or TIMED_OUT execution up to N times (a power lost during " +
      "the self-test reverts the image and fails that attempt, as on AWS IoT)",
    range: [0, 10],
    defaultText: "0, chaos 3",
  },
  {
    name: "report",
    value: "FILE",
    help: "where the JSON report goes",
    default: "fleet-report.json",
  },
  {
    name: "report-html",
    value: "FILE",
    help: "also a page to look at: the outcome, executions over time as a chart, stage times " +
      "and faults, in one self-contained HTML file",
  },
  {
    name: "timeout",
    value: "SECONDS",
    help: "give up after this much real time",
    range: [1, 86_400],
    default: "600",
  },
  {
    name: "self-test-timeout",
    value: "SECONDS",
    help: "how long a device's new image has, after its reboot, to reconnect, fetch its job and " +
      "pass its self-test before the device resets and reverts it (real time; a machine " +
      "overloaded by tens of thousands of devices needs longer)",
    range: [1, 3_600],
    default: "30",
  },
  {
    name: "cancel",
    value: "P",
    help: "cancel the update once a share P of the fleet has ended it",
    range: [0, 1],
  },
  {
    name: "bad-image-share",
    value: "P",
    help: "share of devices on which the new image misbehaves",
    range: [0, 1],
    default: "0",
  },
  {
    name: "bad-image-behavior",
    value: "B",
    help: "how it misbehaves",
    choices: ["crash-on-boot", "no-network", "fail-self-test", "hang"],
    default: "crash-on-boot",
  },
  {
    name: "abort-percent",
    value: "N",
    help: "cancel the rollout when N% of the first executions failed (at least 10 executed)",
    range: [1, 100],
  },
  {
    name: "delta",
    help: "each update offers patches from the images devices run (the factory image and every " +
      "update before): a device on one of them fetches a patch; the report says the bytes saved",
  },
  {
    name: "encrypted",
    help: "updates are encrypted for the devices (MCUboot's ENC_EC256): each device's secure " +
      "element holds the product's image key, the bootloader decrypts while it installs",
  },
  {
    name: "erase-previous-image",
    help: "devices erase their old image once the new one is confirmed (no exploitable image " +
      "stays in flash; no way back but a new update)",
  },
  {
    name: "identity",
    value: "I",
    help: "how devices log in: a per-device secret, or tokens signed by a secure element whose " +
      "key the fleet CA certified (embedded cloud)",
    choices: ["secret", "secure-element"],
    default: "secret",
  },
  {
    name: "dashboard",
    help: "print the rollout dashboard's URL; it stays up after the run until Ctrl-C",
  },
  {
    name: "dashboard-port",
    value: "N",
    help: "the dashboard's port",
    range: [1, 65535],
    defaultText: "any free one",
  },
  {
    name: "broker",
    value: "URL",
    help: "with --api and --token: join a running cloud (deno task broker) instead of " +
      "embedding one; its MQTT URL, mqtt://HOST:PORT, or the comma-separated URLs of a " +
      "cluster's nodes (devices are spread over them and fail over to the others)",
  },
  {
    name: "api",
    value: "URL",
    help: "the running cloud's operator API, http://HOST:PORT/api, or the comma-separated APIs " +
      "of a cluster's nodes (the first is used, the others when it cannot be reached)",
  },
  { name: "token", value: "T", help: "the running cloud's operator token" },
  {
    name: "outage-tolerance",
    value: "S",
    help: "how long that cloud may be unreachable (a restart) before the run gives up; outages " +
      "are in the report",
    range: [1, 3600],
    default: "120",
  },
  {
    name: "brokers",
    value: "K",
    help: "run the cloud as a cluster of K broker node processes on Redis and PostgreSQL " +
      "(started here from the Debian packages, or --cluster-redis/--cluster-db); devices are " +
      "spread over the nodes. One node (with --processes M) runs on SQLite alone. A fleet " +
      "too big for one process (each connection is an open file at both ends) gets its " +
      "broker in a process of its own by itself",
    range: [1, 16],
    default: "1",
  },
  {
    name: "processes",
    value: "M",
    help: "run the fleet in M processes, each its share of the devices (with a local cluster: " +
      "--brokers)",
    range: [1, 64],
    default: "1",
  },
  {
    name: "cluster-redis",
    value: "URL",
    help: "the local cluster's Redis (redis://HOST:PORT) instead of starting redis-server",
  },
  {
    name: "cluster-db",
    value: "URL",
    help: "the local cluster's PostgreSQL (postgres://USER@HOST:PORT/DB) instead of starting one",
  },
  {
    name: "shard",
    value: "I/N",
    help: "run the I-th of N shares of the fleet (with --broker/--api/--token and one " +
      "--update-id shared by all shards)",
  },
  ...TRUST_FLAGS,
  {
    name: "wipe-share",
    value: "P",
    help: "share of devices whose application slots are erased once the rollout has ended (a " +
      "flash failure): they must show up as bricked",
    range: [0, 1],
    default: "0",
  },
  {
    name: "update-id",
    value: "ID",
    help: "the OTA update's id (1..40 of [a-zA-Z0-9_-]; back-to-back runs append the version); " +
      "default: fleet, or fleet-<random> when joining a cloud, so every run creates its own " +
      "update",
  },
  {
    name: "latency",
    value: "MS",
    help: "every message to a device arrives MS later (+-25% jitter, order kept)",
    range: [0, 60_000],
    default: "0",
  },
  {
    name: "bandwidth",
    value: "SIZE/s",
    help: "a device's downlink, e.g. 32KiB/s",
    sizeRange: [100, 2 ** 30],
    defaultText: "unlimited",
  },
  {
    name: "loss",
    value: "P",
    help: "share of stream data blocks (QoS 0) lost on the way",
    range: [0, 0.5],
    default: "0",
  },
  {
    name: "trace",
    value: "THINGS",
    help: "print those devices' own log lines (boot, agent, connection) as they happen, with the " +
      "seconds since the run started (names separated by commas)",
  },
  {
    name: "wire-log",
    value: "FILE",
    help: "write every MQTT packet the traced devices (--trace; none named: the run's first " +
      "device) send and receive until the run's report to FILE, one JSON object per line, " +
      "with its size on the wire (a password as its length only)",
  },
  {
    name: "cpu-profile",
    value: "DIR",
    help: "write a V8 CPU profile of the main thread and of every Worker into DIR (summarize " +
      "with tools/cpu_profile.ts, or open in DevTools)",
  },
  {
    name: "heap-profile",
    value: "DIR",
    help: "write what every Worker allocated, sampled (collected objects included), into DIR " +
      "(summarize with tools/heap_profile.ts, or open in DevTools)",
  },
];

export const USAGE = usage("Usage: deno task fleet [options]", FLEET_FLAGS);

export { UsageError };

/** What a fleet run is asked to do (parsed flags). */
export interface Options {
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
  /** The dashboard's fixed port (with --dashboard). */
  dashboardPort?: number;
  /** Devices erase their previous image once a new one is confirmed. */
  erasePreviousImage: boolean;
  /** Updates offer delta patches (`--delta`). */
  delta: boolean;
  /** Updates are encrypted for the devices' image key (`--encrypted`). */
  encrypted: boolean;
  /** How devices log in. */
  identity: "secret" | "secure-element";
  report: string;
  /** Where the HTML report goes, if anywhere. */
  reportHtml?: string;
  /** Directory for CPU profiles of the main thread and the Workers. */
  cpuProfile?: string;
  /** Directory for the Workers' allocation profiles. */
  heapProfile?: string;
  /** Devices whose own log lines are printed as they happen. */
  trace: readonly string[];
  /** Where the traced devices' MQTT packets go (fleet/wire_log.ts), if anywhere. */
  wireLog?: string;
  cancelAt?: number;
  badImageShare: number;
  badImageBehavior: Behavior;
  abortPercent?: number;
  network?: NetworkProfile;
  remote?: { brokers: readonly string[]; apis: readonly string[]; token: string };
  shard: { index: number; count: number };
  /** The OTA update's id (with the version appended when a run rolls out several). */
  updateId: string;
  /** Share of devices whose application slots are erased after the rollout. */
  wipeShare: number;
  /** A root of trust and signer made outside (`--root-ca` ...); none: the fleet makes its own. */
  trust?: TrustFiles;
  timeoutSeconds: number;
  /** The agent's self-test window after a reboot into a new image (real seconds). */
  selfTestTimeoutSeconds: number;
  /** How long a cloud joined with --broker/--api may be unreachable before the run gives up. */
  outageToleranceSeconds: number;
  /**
   * A local cluster this run starts (`--brokers`, `--processes`): its node and fleet process
   * counts, and the Redis and PostgreSQL to use instead of starting them.
   */
  cluster?: {
    brokers: number;
    processes: number;
    redis?: string;
    db?: string;
    /**
     * Set when the run chose this layout itself: more devices than one process can hold with
     * both ends of their connections (see lib/open_files.ts), so the broker runs apart.
     */
    ownBroker?: boolean;
  };
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

/** `--root-ca`, `--signer-key`, `--signer-cert` and `--image`, `--signature`, `--certificate`. */
function trustFilesOf(v: Record<string, string | boolean | undefined>): { trust?: TrustFiles } {
  const given = (name: string) => typeof v[name] === "string" ? v[name] as string : undefined;
  const signing = ["root-ca", "signer-key", "signer-cert"].map(given);
  const external = ["image", "signature", "certificate"].map(given);
  if (signing.every((f) => f === undefined)) {
    if (external.some((f) => f !== undefined)) {
      throw new UsageError(
        "--image, --signature and --certificate need --root-ca, --signer-key and --signer-cert",
      );
    }
    return {};
  }
  if (signing.some((f) => f === undefined)) {
    throw new UsageError("--root-ca, --signer-key and --signer-cert go together");
  }
  if (external.some((f) => f !== undefined) && external.some((f) => f === undefined)) {
    throw new UsageError("--image, --signature and --certificate go together");
  }
  const [rootCa, signerKey, signerCert] = signing as [string, string, string];
  const [image, signature, certificate] = external;
  return {
    trust: {
      rootCa,
      signerKey,
      signerCert,
      ...(image ? { image: { image, signature: signature!, certificate: certificate! } } : {}),
    },
  };
}

const UPDATE_ID = /^[a-zA-Z0-9_-]{1,40}$/;

/**
 * The update id a run uses: the one given, else `fleet` for an embedded cloud (new every run)
 * and `fleet-<random>` for a cloud that outlives the run, which may hold earlier runs' updates.
 */
function updateIdOf(given: string | undefined, remote: boolean): string {
  if (given !== undefined) {
    if (!UPDATE_ID.test(given)) {
      throw new UsageError(
        `Invalid --update-id: expected 1..40 characters of [a-zA-Z0-9_-]: current value is '${given}'`,
      );
    }
    return given;
  }
  return remote ? `fleet-${crypto.randomUUID().slice(0, 8)}` : "fleet";
}

/** Parses and validates flags (a bad value is a UsageError naming it). */
export function parseFleetArgs(
  args: string[],
  openFiles: number | null = openFileLimit(),
): Options {
  // Bandwidth reads naturally as a rate; the unit suffix is optional.
  const flags = parseFlags(
    args.map((arg, i) => args[i - 1] === "--bandwidth" ? arg.replace(/\/s$/, "") : arg),
    FLEET_FLAGS,
  );
  const v = flags.texts;
  const scenario = flags.choice<Scenario>("scenario");
  const blockSize = flags.size("block-size");
  const sizeProblem = blockSizeProblem(blockSize);
  if (sizeProblem !== null) {
    throw new UsageError(
      `Invalid --block-size: it ${sizeProblem}: current value is '${v["block-size"]}'`,
    );
  }
  const chaos = scenario === "chaos";
  const options: Options = {
    devices: flags.int("devices"),
    imageSize: flags.size("image-size"),
    blockSize,
    protocol: flags.choice("protocol"),
    scenario,
    seed: flags.int("seed"),
    timeScale: flags.number("time-scale"),
    maxPerMinute: flags.int("max-per-minute"),
    disconnectRate: flags.number("disconnect-rate", chaos ? 0.2 : 0),
    corruptRate: flags.number("corrupt-rate", chaos ? 0.2 : 0),
    powerCutRate: flags.number("power-cut-rate", chaos ? 0.1 : 0),
    workerCrashes: flags.int("worker-crashes", chaos ? 1 : 0),
    retries: flags.int("retries", chaos ? 3 : 0),
    dashboard: flags.boolean("dashboard"),
    ...(flags.has("dashboard-port") ? { dashboardPort: flags.int("dashboard-port") } : {}),
    erasePreviousImage: flags.boolean("erase-previous-image"),
    delta: flags.boolean("delta"),
    encrypted: flags.boolean("encrypted"),
    identity: flags.choice("identity"),
    report: flags.string("report")!,
    ...(v["report-html"] !== undefined ? { reportHtml: v["report-html"] } : {}),
    timeoutSeconds: flags.int("timeout"),
    selfTestTimeoutSeconds: flags.int("self-test-timeout"),
    outageToleranceSeconds: flags.int("outage-tolerance"),
    ...(flags.has("cancel") ? { cancelAt: flags.number("cancel") } : {}),
    ...(v["cpu-profile"] !== undefined ? { cpuProfile: v["cpu-profile"] } : {}),
    ...(v["heap-profile"] !== undefined ? { heapProfile: v["heap-profile"] } : {}),
    trace: traceList(v.trace),
    ...(v["wire-log"] !== undefined ? { wireLog: v["wire-log"] } : {}),
    badImageShare: flags.number("bad-image-share"),
    shard: parseShard(v.shard),
    updateId: updateIdOf(v["update-id"], v.broker !== undefined),
    wipeShare: flags.number("wipe-share"),
    ...trustFilesOf(v),
    badImageBehavior: flags.choice("bad-image-behavior"),
    ...(flags.has("abort-percent") ? { abortPercent: flags.int("abort-percent") } : {}),
  };
  if (flags.has("latency") || flags.has("bandwidth") || flags.has("loss")) {
    options.network = {
      latencyMs: flags.int("latency"),
      bandwidthBytesPerSecond: flags.has("bandwidth") ? flags.size("bandwidth") : 0,
      loss: flags.number("loss"),
    };
  }
  if (flags.has("workers")) options.workers = flags.int("workers", undefined);
  if (flags.has("devices-per-worker")) {
    options.devicesPerWorker = flags.int("devices-per-worker");
  }
  if (v.broker !== undefined || v.api !== undefined || v.token !== undefined) {
    if (!v.broker || !v.api || !v.token) {
      throw new UsageError("Joining a cloud needs all of --broker, --api and --token");
    }
    const brokers = v.broker.split(",");
    if (!brokers.every((url) => /^mqtts?:\/\/[^\s,/]+\/?$/.test(url))) {
      throw new UsageError(
        `Invalid --broker: expected mqtt://HOST:PORT[,mqtt://HOST:PORT...]: current value is '${v.broker}'`,
      );
    }
    const apis = v.api.split(",");
    if (!apis.every((url) => /^https?:\/\/[^\s,]+$/.test(url))) {
      throw new UsageError(
        `Invalid --api: expected http(s) URLs separated by commas: current value is '${v.api}'`,
      );
    }
    options.remote = { brokers, apis: apis.map(apiBase), token: v.token };
  }
  if (options.identity === "secure-element" && options.remote) {
    throw new UsageError(
      "--identity secure-element needs the embedded cloud (its fleet CA certifies the devices)",
    );
  }
  if (options.shard.count > 1 && !options.remote) {
    throw new UsageError("--shard needs --broker, --api and --token (one cloud for all shards)");
  }
  if (options.trust?.image && !["happy", "chaos"].includes(options.scenario)) {
    throw new UsageError(
      `--image is one update: --scenario ${options.scenario} needs images the fleet builds itself`,
    );
  }
  if (options.encrypted && options.trust?.image) {
    throw new UsageError("--encrypted encrypts the images the fleet builds: not with --image");
  }
  if (options.encrypted && options.delta) {
    throw new UsageError("--encrypted and --delta exclude each other: a ciphertext is not patched");
  }
  if (options.delta && options.trust?.image) {
    throw new UsageError("--delta patches the images the fleet builds: not with --image");
  }
  if (options.scenario === "factory-reset" && options.remote) {
    throw new UsageError("--scenario factory-reset needs the embedded cloud");
  }
  if (options.scenario === "bad-wave" && options.shard.count > 1) {
    throw new UsageError("--scenario bad-wave runs in one process (its first wave must be local)");
  }
  if (options.shard.count > 1 && v["update-id"] === undefined) {
    throw new UsageError(
      "--shard needs --update-id: the shards of one run must agree on the update they follow",
    );
  }
  const brokers = flags.int("brokers");
  const processes = flags.int("processes");
  const redis = v["cluster-redis"];
  const db = v["cluster-db"];
  if (brokers > 1 || processes > 1 || redis !== undefined || db !== undefined) {
    if (options.remote || options.shard.count > 1) {
      throw new UsageError(
        "--brokers/--processes start a local cluster: not with --broker/--api/--token or --shard",
      );
    }
    if (redis !== undefined && !/^redis:\/\/[^\s:/]+(:\d{1,5})?\/?$/.test(redis)) {
      throw new UsageError(
        `Invalid --cluster-redis: expected redis://HOST:PORT: current value is '${redis}'`,
      );
    }
    if (db !== undefined && !/^postgres(ql)?:\/\/\S+$/.test(db)) {
      throw new UsageError("Invalid --cluster-db: expected postgres://USER@HOST:PORT/DB");
    }
    refuseEmbeddedOnly(options, processes, "");
    options.cluster = {
      brokers,
      processes,
      ...(redis ? { redis } : {}),
      ...(db ? { db } : {}),
    };
  }
  fitOpenFiles(options, openFiles);
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

/** Refuses what only one process with the embedded cloud can run, saying `why` it cannot here. */
function refuseEmbeddedOnly(options: Options, processes: number, why: string): void {
  for (
    const [flag, refused] of [
      ["--identity secure-element", options.identity === "secure-element"],
      ["--scenario factory-reset", options.scenario === "factory-reset"],
      ["--scenario bad-wave", options.scenario === "bad-wave" && processes > 1],
      ["--dashboard", options.dashboard],
    ] as const
  ) {
    if (refused) throw new UsageError(`${flag} runs in one process with the embedded cloud${why}`);
  }
}

/**
 * Fits the run to the files a process may keep open (`limit`; null: unknown, nothing to fit).
 * Each device connection is an open file at each end, so a fleet too big for one process with its
 * cloud embedded gets its broker in a process of its own (SQLite, as `--brokers 1 --processes 1`),
 * and a run that no process of its layout could hold is refused here: past the limit the last
 * devices' connections are never accepted and the run would hang at its end.
 */
function fitOpenFiles(options: Options, limit: number | null): void {
  if (limit === null) return;
  const { bothEnds, oneEnd } = connectionCapacity(limit);
  const devices = options.devices;
  const needed = Math.ceil(devices / oneEnd);
  const because = `(${limit} open files a process may hold, one per connection end)`;
  if (options.cluster) {
    const { brokers, processes } = options.cluster;
    if (Math.ceil(devices / brokers) > oneEnd) {
      throw new UsageError(
        `--devices ${devices} needs --brokers ${needed} or more: a broker node holds at most ${oneEnd} devices ${because}`,
      );
    }
    if (Math.ceil(devices / processes) > oneEnd) {
      throw new UsageError(
        `--devices ${devices} needs --processes ${needed} or more: a fleet process holds at most ${oneEnd} devices ${because}`,
      );
    }
    return;
  }
  if (options.remote) {
    if (Math.ceil(devices / options.shard.count) > oneEnd) {
      throw new UsageError(
        `--devices ${devices}: a fleet process holds at most ${oneEnd} devices ${because}; run it in ${needed} or more shards (--shard I/N)`,
      );
    }
    return;
  }
  if (devices <= bothEnds) return;
  if (devices > oneEnd) {
    throw new UsageError(
      `--devices ${devices} needs a cluster: one broker process holds at most ${oneEnd} devices ${because}; add --brokers ${needed} --processes ${needed}`,
    );
  }
  refuseEmbeddedOnly(
    options,
    1,
    `, which holds at most ${bothEnds} devices ${because}: use fewer devices`,
  );
  options.cluster = { brokers: 1, processes: 1, ownBroker: true };
}

/**
 * bad-wave's shape: waves of a fifth of the fleet (at least 2), half of the first wave on a
 * failing image, and a health gate that wants 90% of a wave to succeed.
 */
export function badWaveShape(options: Pick<Options, "devices">): {
  waveSize: number;
  bad: number;
  minSuccessPercent: number;
} {
  const waveSize = Math.max(2, Math.ceil(options.devices / 5));
  return { waveSize, bad: Math.ceil(waveSize / 2), minSuccessPercent: 90 };
}
