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

import { parseArgs } from "node:util";
import { type Behavior } from "../bootloader/firmware.ts";
import { parseSize } from "../lib/units.ts";
import type { NetworkProfile } from "./device_actor.ts";
import { UsageError } from "../lib/usage_error.ts";
import { blockSizeProblem, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from "../protocol/stream_codec.ts";
import { type TrustFiles } from "./trust_inputs.ts";
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
] as const;
export type Scenario = typeof SCENARIOS[number];

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
  --report-html FILE       also a page to look at: the outcome, executions over time as a
                           chart, stage times and faults, in one self-contained HTML file
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
  --dashboard-port N       the dashboard's port (default: any free one)
  --broker URL --api URL --token T
                           join a running cloud (deno task broker) instead of embedding one
  --outage-tolerance S     how long that cloud may be unreachable (a restart) before the run
                           gives up (default 120 s; outages are in the report)
  --shard I/N              run the I-th of N shares of the fleet (with --broker/--api/--token
                           and one --update-id shared by all shards)
  --root-ca FILE --signer-key FILE --signer-cert FILE
                           a root of trust made outside: the CA the devices' ROM trusts, and
                           the code signer (SEC1 or PKCS#8 key) the fleet signs its images with
  --image FILE --signature FILE --certificate FILE
                           (with --root-ca ...) the update is this image, signed elsewhere: its
                           detached DER signature (openssl dgst -sha256 -sign) and signer
  --wipe-share P           share of devices whose application slots are erased once the rollout
                           has ended (a flash failure): they must show up as bricked (0..1)
  --update-id ID           the OTA update's id (1..40 of [a-zA-Z0-9_-]; back-to-back runs
                           append the version); default: fleet, or fleet-<random> when joining
                           a cloud, so every run creates its own update
  --latency MS             every message to a device arrives MS later (+-25% jitter, order kept)
  --bandwidth SIZE/s       a device's downlink, e.g. 32KiB/s (default unlimited)
  --loss P                 share of stream data blocks (QoS 0) lost on the way (0..0.5)
  --trace THING[,THING...] print those devices' own log lines (boot, agent, connection) as they
                           happen, with the seconds since the run started
  --cpu-profile DIR        write a V8 CPU profile of the main thread and of every Worker into
                           DIR (summarize with tools/cpu_profile.ts, or open in DevTools)`;

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
  /** How devices log in. */
  identity: "secret" | "secure-element";
  report: string;
  /** Where the HTML report goes, if anywhere. */
  reportHtml?: string;
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
  /** The OTA update's id (with the version appended when a run rolls out several). */
  updateId: string;
  /** Share of devices whose application slots are erased after the rollout. */
  wipeShare: number;
  /** A root of trust and signer made outside (`--root-ca` ...); none: the fleet makes its own. */
  trust?: TrustFiles;
  timeoutSeconds: number;
  /** How long a cloud joined with --broker/--api may be unreachable before the run gives up. */
  outageToleranceSeconds: number;
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
export function parseFleetArgs(args: string[]): Options {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        dashboard: { type: "boolean" },
        "dashboard-port": { type: "string" },
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
            "report-html",
            "timeout",
            "outage-tolerance",
            "cancel",
            "bad-image-share",
            "bad-image-behavior",
            "abort-percent",
            "broker",
            "api",
            "token",
            "shard",
            "update-id",
            "wipe-share",
            "root-ca",
            "signer-key",
            "signer-cert",
            "image",
            "signature",
            "certificate",
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
  const rate = (name: string, fallback: number, max = 1) => {
    const text = v[name];
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!(n >= 0 && n <= max) || text.trim() === "") {
      throw new UsageError(`Invalid --${name}: expected 0..${max}: current value is '${text}'`);
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
    ...(values["dashboard-port"] !== undefined
      ? { dashboardPort: int("dashboard-port", 0, 1, 65535) }
      : {}),
    erasePreviousImage: values["erase-previous-image"] === true,
    identity: identityOf(v.identity),
    report: v.report ?? "fleet-report.json",
    ...(v["report-html"] !== undefined ? { reportHtml: v["report-html"] } : {}),
    timeoutSeconds: int("timeout", 600, 1, 86_400),
    outageToleranceSeconds: int("outage-tolerance", 120, 1, 3600),
    ...(v.cancel !== undefined ? { cancelAt: rate("cancel", 0) } : {}),
    ...(v["cpu-profile"] !== undefined ? { cpuProfile: v["cpu-profile"] } : {}),
    trace: traceList(v.trace),
    badImageShare: rate("bad-image-share", 0),
    shard: parseShard(v.shard),
    updateId: updateIdOf(v["update-id"], v.broker !== undefined),
    wipeShare: rate("wipe-share", 0),
    ...trustFilesOf(v),
    badImageBehavior: badBehavior(v["bad-image-behavior"]),
    ...(v["abort-percent"] !== undefined ? { abortPercent: int("abort-percent", 0, 1, 100) } : {}),
  };
  if (v.latency !== undefined || v.bandwidth !== undefined || v.loss !== undefined) {
    options.network = {
      latencyMs: int("latency", 0, 0, 60_000),
      bandwidthBytesPerSecond: v.bandwidth === undefined ? 0 : size("bandwidth", "0", 100, 2 ** 30),
      loss: rate("loss", 0, 0.5),
    };
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
    options.remote = { broker: v.broker, api: apiBase(v.api), token: v.token };
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
