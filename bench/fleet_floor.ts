/**
 * The fleet against its raw floor: the same number of devices moving the same bytes in the same
 * blocks through aedes, once as plain mqtt.js request/response clients in Workers (no OTA logic:
 * the floor) and once as `deno task fleet`. Both run as a deployment would: the broker in one
 * process (`deno task broker` for the fleet), the devices in another (`--broker`), which is also
 * what lets 10,000 devices fit under a process's 20,000 open files. Writes every figure and the
 * ratios to bench/results.json, so a change to the fleet shows how far it moved from what the
 * broker and sockets allow.
 *
 * ```sh
 * deno task bench:fleet --devices 1000,10000 --image-size 256KiB
 * ```
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { AedesPublishPacket, Client } from "aedes";
import { startEmbeddedBroker, writeTogether } from "../broker/embedded.ts";
import type { FleetReport } from "../fleet/report.ts";
import { parseWireLog } from "../fleet/wire_log.ts";
import { runFloorClients } from "./floor_clients.ts";
import { cpuSeconds, sampleResidentMemory, spawnDeno, tenths } from "./processes.ts";
import { measureProtocolFloor, type ProtocolFloorResult } from "./protocol_floor.ts";
import { standardFlags, usageLine } from "../lib/cli.ts";
import { type FlagSpec, parseFlags, usage } from "../lib/flags.ts";
import { UsageError } from "../lib/usage_error.ts";
import { blockSizeProblem, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from "../protocol/stream_codec.ts";

/** What one floor run measured. */
export interface FloorResult {
  readonly seconds: number;
  readonly bytes: number;
  readonly mbPerSecond: number;
  /** CPU seconds of the broker and the clients (with clients in a process of their own). */
  readonly cpuSeconds?: number;
  /** The same, process by process (`broker`, `clients`). */
  readonly cpuByProcess?: Readonly<Record<string, number>>;
  /** Peak resident memory of this process (the broker) and the clients' process together. */
  readonly peakRssBytes?: number;
}

/** The shape of one run. */
export interface BenchShape {
  readonly devices: number;
  readonly imageSize: number;
  readonly blockSize: number;
  readonly workers: number;
}

/**
 * Runs the floor: an aedes that answers each `floor/<id>/get` with that many blocks, and
 * `devices` clients in `workers` Workers each fetching `imageSize` bytes, in this process or
 * (`clients: "process"`) in a child process.
 */
export async function measureFloor(
  options: BenchShape & { readonly clients?: "workers" | "process" },
): Promise<FloorResult> {
  const embedded = await startEmbeddedBroker();
  const block = Buffer.alloc(options.blockSize, 0xa5);
  const requestTopic = /^floor\/([^/]+)\/get$/;
  const noop = () => {};
  embedded.broker.on("publish", (packet: AedesPublishPacket, client: Client | null) => {
    const match = client ? requestTopic.exec(packet.topic) : null;
    if (!client || !match) return;
    const count = Number(packet.payload.toString());
    // As the stream service does: a request's blocks handed over at once, in one socket write.
    const topic = `floor/${match[1]}/data`;
    writeTogether(client.conn, () => {
      for (let i = 0; i < count; i++) {
        embedded.broker.publish({
          cmd: "publish",
          topic,
          payload: block,
          qos: 0,
          retain: false,
          dup: false,
        }, noop);
      }
    });
  });
  try {
    if (options.clients !== "process") {
      const { seconds, bytes } = await runFloorClients({ brokerUrl: embedded.url, ...options });
      return { seconds, bytes, mbPerSecond: bytes / 1e6 / seconds };
    }
    const before = cpuSeconds();
    const { seconds, bytes, peakRssBytes } = await floorClientsProcess(embedded.url, options);
    const after = cpuSeconds();
    // The broker is this process: its share is this process's CPU over the run.
    const cpuByProcess = {
      broker: tenths(after.self - before.self),
      clients: tenths(after.children - before.children),
    };
    return {
      seconds,
      bytes,
      mbPerSecond: bytes / 1e6 / seconds,
      cpuSeconds: after.self - before.self + after.children - before.children,
      cpuByProcess,
      peakRssBytes,
    };
  } finally {
    await embedded.close();
  }
}

async function floorClientsProcess(brokerUrl: string, shape: BenchShape) {
  const child = spawnDeno(new URL("./floor_clients.ts", import.meta.url).pathname, [
    "--broker",
    brokerUrl,
    "--devices",
    String(shape.devices),
    "--image-size",
    String(shape.imageSize),
    "--block-size",
    String(shape.blockSize),
    "--workers",
    String(shape.workers),
  ]);
  const memory = sampleResidentMemory(() => [Deno.pid, child.pid]);
  const line = await child.line((l) => l.startsWith("{"), "the floor's result");
  await child.status;
  return { ...JSON.parse(line) as { seconds: number; bytes: number }, peakRssBytes: memory.stop() };
}

/** What one fleet run measured (broker and fleet in their own processes). */
export interface FleetResult {
  readonly seconds: number;
  readonly bytes: number;
  readonly mbPerSecond: number;
  readonly asExpected: boolean;
  /** Peak of the broker's and every fleet process's resident memory, summed. */
  readonly peakRssBytes: number;
  /** CPU seconds of the broker and every fleet process together. */
  readonly cpuSeconds: number;
  /** The same by process: `broker`, and `fleet` (every fleet process together). */
  readonly cpuByProcess: Readonly<Record<string, number>>;
  /** What a device's MQTT connections carried on average (the fleet's report). */
  readonly wirePerDevice: FleetReport["wirePerDevice"];
  /**
   * The MQTT packets of a typical device (`--wire-log`): of the first shard's devices that were
   * logged, the one whose count of packets is the median. The protocol floor's script.
   */
  readonly wireLog: string;
  readonly phases: Record<string, number>;
  /** From creating the update to every device settled: the part comparable to the floor. */
  readonly updateSeconds: number;
  /** What the first shard's report says of the outcome (whole-fleet job counts). */
  readonly report: Pick<
    FleetReport,
    "expected" | "outcome" | "runningVersion" | "bricked" | "faults" | "stages" | "stageParts"
  >;
}

/**
 * Starts `deno task broker` and `shards` fleet processes that join it, and waits for the run.
 *
 * @example
 * ```ts ignore
 * const fleet = await measureFleet({ devices: 1000, imageSize: 262144, blockSize: 4096, workers: 2, shards: 1 });
 * ```
 */
export async function measureFleet(
  options: BenchShape & { readonly shards: number },
): Promise<FleetResult> {
  const dir = await Deno.makeTempDir({ prefix: "bench-fleet-" });
  const token = crypto.randomUUID();
  const script = (path: string) => new URL(path, import.meta.url).pathname;
  const broker = spawnDeno(script("../broker/main.ts"), [
    "--port",
    "0",
    "--http-port",
    "0",
    "--data",
    `${dir}/cloud`,
    "--time-scale",
    "60",
    "--token",
    token,
  ]);
  const shards: ReturnType<typeof spawnDeno>[] = [];
  const memory = sampleResidentMemory(() => [broker.pid, ...shards.map((s) => s.pid)]);
  const cpuBefore = cpuSeconds().children;
  try {
    const ready = JSON.parse(await broker.line((l) => l.startsWith("{"), "its address")) as {
      mqtt: string;
      api: string;
    };
    for (let shard = 1; shard <= options.shards; shard++) {
      shards.push(spawnDeno(script("../fleet/fleet.ts"), [
        "--devices",
        String(options.devices),
        "--image-size",
        String(options.imageSize),
        "--block-size",
        String(options.blockSize),
        "--workers",
        String(options.workers),
        "--broker",
        ready.mqtt,
        "--api",
        ready.api,
        "--token",
        token,
        "--shard",
        `${shard}/${options.shards}`,
        "--update-id",
        "bench",
        "--report",
        `${dir}/report-${shard}.json`,
        ...(shard === 1
          ? ["--wire-log", `${dir}/wire.jsonl`, "--trace", loggedDevices(options).join(",")]
          : []),
      ]));
    }
    const reports: FleetReport[] = [];
    for (const [index, shard] of shards.entries()) {
      const status = await shard.status;
      try {
        reports.push(JSON.parse(await Deno.readTextFile(`${dir}/report-${index + 1}.json`)));
      } catch {
        throw new Error(
          `fleet shard ${index + 1} exited ${status.code} without a report: ${
            shard.stderrTail.join("\n")
          }\n${shard.stdout.slice(-10).join("\n")}`,
        );
      }
    }
    const peakRssBytes = memory.stop();
    // A child's CPU joins this process's count of children once the runtime has reaped it, which
    // it does as soon as the child ends: read once every fleet process has ended and again once
    // the broker has, the two differences are theirs, exactly. (Shards end in any order, so they
    // are counted together.)
    const fleetCpu = cpuSeconds().children - cpuBefore;
    broker.kill();
    await broker.status;
    const cpu = cpuSeconds().children - cpuBefore;
    const cpuByProcess = { fleet: tenths(fleetCpu), broker: tenths(cpu - fleetCpu) };
    const seconds = Math.max(...reports.map((r) => r.wallSeconds));
    // Every shard sees the whole update's counts; the first one's figures stand for the run.
    const first = reports[0]!;
    const wireLog = typicalDevice(await Deno.readTextFile(`${dir}/wire.jsonl`));
    const bytes = first.bytesDelivered;
    return {
      seconds,
      bytes,
      mbPerSecond: bytes / 1e6 / seconds,
      asExpected: reports.every((r) => r.asExpected),
      peakRssBytes,
      cpuSeconds: cpu,
      cpuByProcess,
      wirePerDevice: first.wirePerDevice,
      wireLog,
      phases: first.phases,
      updateSeconds: Object.entries(first.phases)
        .filter(([name]) => name.startsWith("update "))
        .reduce((sum, [, s]) => sum + s, 0),
      report: {
        expected: first.expected,
        outcome: first.outcome,
        // Versions and bricked devices are each shard's own devices: add them up.
        runningVersion: reports.reduce<Record<string, number>>((all, r) => {
          for (const [v, n] of Object.entries(r.runningVersion)) all[v] = (all[v] ?? 0) + n;
          return all;
        }, {}),
        bricked: reports.reduce((sum, r) => sum + r.bricked, 0),
        faults: first.faults,
        stages: first.stages,
        ...(first.stageParts ? { stageParts: first.stageParts } : {}),
      },
    };
  } finally {
    memory.stop();
    for (const shard of shards) shard.kill("SIGKILL");
    broker.kill();
    await Promise.all([broker.status, ...shards.map((s) => s.status)]);
    await Deno.remove(dir, { recursive: true });
  }
}

const BENCH_FLAGS: readonly FlagSpec[] = [
  {
    name: "devices",
    value: "N[,N...]",
    help: "fleet sizes to measure, each 1..100000",
    default: "1000,10000",
  },
  {
    name: "image-size",
    value: "SIZE",
    help: "image payload",
    sizeRange: [1024, 448 * 1024],
    default: "256KiB",
  },
  {
    name: "block-size",
    value: "SIZE",
    help: "stream block, a power of two",
    sizeRange: [MIN_BLOCK_SIZE, MAX_BLOCK_SIZE],
    default: "4KiB",
  },
  {
    name: "workers",
    value: "N",
    help: "Web Workers per fleet process",
    range: [1, 256],
    defaultText: "cores",
  },
  { name: "shards", value: "N", help: "fleet processes", range: [1, 64], default: "1" },
  { name: "out", value: "FILE", help: "where the results go", default: "bench/results.json" },
  { name: "floor-only", help: "measure the floor alone" },
  {
    name: "rounds",
    value: "N",
    help: "fleet and protocol floor measured N times each, interleaved (the machine's speed " +
      "drifts); the ratios reported are the medians",
    range: [1, 9],
    default: "1",
  },
];

/** Help text of `deno task bench:fleet`. */
export const BENCH_USAGE = usage(
  `Usage: deno task bench:fleet [options]

The fleet against its floor: broker and devices in their own processes, N devices each size.`,
  BENCH_FLAGS,
);

if (import.meta.main) {
  const early = standardFlags(Deno.args, BENCH_USAGE);
  if (early) {
    console.log(early.text);
    Deno.exit(0);
  }
  let values;
  try {
    const flags = parseFlags(Deno.args, BENCH_FLAGS);
    const devices = flags.string("devices")!;
    const sizes = devices.split(",").map(Number);
    if (!sizes.every((n) => Number.isInteger(n) && n >= 1 && n <= 100_000)) {
      throw new UsageError(
        `Invalid --devices: expected sizes 1..100000 separated by commas: current value is '${devices}'`,
      );
    }
    const blockSize = flags.size("block-size");
    const problem = blockSizeProblem(blockSize);
    if (problem !== null) {
      throw new UsageError(
        `Invalid --block-size: it ${problem}: current value is '${flags.string("block-size")}'`,
      );
    }
    values = {
      sizes,
      imageSize: flags.size("image-size"),
      blockSize,
      workers: flags.int("workers", navigator.hardwareConcurrency),
      shards: flags.int("shards"),
      out: flags.string("out")!,
      floorOnly: flags.boolean("floor-only"),
      rounds: flags.int("rounds"),
    };
  } catch (error) {
    console.error(usageLine((error as Error).message));
    Deno.exit(2);
  }
  const { sizes, imageSize, blockSize, workers, shards } = values;
  const runs: ({ devices: number } & Record<string, unknown>)[] = [];
  for (const devices of sizes) {
    const shape = { devices, imageSize, blockSize, workers };
    const floor = await measureFloor({ ...shape, clients: "process" });
    console.log(
      `${devices} devices: download floor ${describe(floor, devices)}, ${
        (floor.bytes / 1e6).toFixed(0)
      } MB at ${floor.mbPerSecond.toFixed(1)} MB/s`,
    );
    if (values.floorOnly) {
      runs.push({ devices, floor });
      continue;
    }
    // Fleet and protocol floor in turns: a pair measured minutes apart on a machine whose speed
    // drifts says less than the median of pairs measured back to back.
    const rounds: {
      fleet: Omit<FleetResult, "wireLog">;
      protocol: ProtocolFloorResult;
      ratios: ReturnType<typeof fleetOverFloor>;
    }[] = [];
    for (let round = 1; round <= values.rounds; round++) {
      const label = values.rounds > 1 ? ` (round ${round} of ${values.rounds})` : "";
      const measured = await measureFleet({ ...shape, shards });
      const { wireLog, ...fleet } = measured;
      console.log(
        `${devices} devices${label}: fleet ${describe(fleet, devices)}; the update alone ${
          fleet.updateSeconds.toFixed(1)
        } s; ${fleet.asExpected ? "as expected" : "NOT as expected"}; wire per device ${
          JSON.stringify(fleet.wirePerDevice)
        }; phases ${JSON.stringify(fleet.phases)}; outcome ${
          JSON.stringify(fleet.report.outcome)
        }; versions ${JSON.stringify(fleet.report.runningVersion)}; stages ${
          JSON.stringify(fleet.report.stages)
        }; stage parts ${JSON.stringify(fleet.report.stageParts ?? {})}`,
      );
      // The same conversation with nothing behind it, from the device this fleet run logged.
      const protocol = await measureProtocolFloor({ devices, workers, wireLog });
      console.log(
        `${devices} devices${label}: protocol floor ${
          describe(protocol, devices)
        }; wire per device ${JSON.stringify(protocol.wirePerDevice)}${
          protocol.failed > 0 ? `; ${protocol.failed} clients FAILED` : ""
        }${protocol.unmatched > 0 ? `; ${protocol.unmatched} actions unmatched` : ""}`,
      );
      rounds.push({ fleet, protocol, ratios: fleetOverFloor(fleet, protocol) });
    }
    const ratios = medianRatios(rounds.map((r) => r.ratios));
    // The round whose CPU ratio is the median stands for the size (its stages, its figures).
    const { fleet, protocol } = [...rounds].sort((a, b) => a.ratios.cpu - b.ratios.cpu)[
      Math.floor((rounds.length - 1) / 2)
    ]!;
    console.log(
      `${devices} devices: fleet / protocol floor${
        rounds.length > 1 ? ` (medians of ${rounds.length} rounds)` : ""
      }: wall ${ratios.wall.toFixed(2)}x, cpu ${ratios.cpu.toFixed(2)}x, memory ${
        ratios.memory.toFixed(2)
      }x; fleet / download floor: wall ${(fleet.seconds / floor.seconds).toFixed(1)}x`,
    );
    runs.push({
      devices,
      floor,
      protocolFloor: protocol,
      fleet,
      fleetOverProtocolFloor: ratios,
      ...(rounds.length > 1
        ? {
          rounds: rounds.map((r) => ({
            fleet: {
              seconds: r.fleet.seconds,
              cpuSeconds: r.fleet.cpuSeconds,
              cpuByProcess: r.fleet.cpuByProcess,
              peakRssBytes: r.fleet.peakRssBytes,
            },
            protocolFloor: {
              seconds: r.protocol.seconds,
              cpuSeconds: r.protocol.cpuSeconds,
              cpuByProcess: r.protocol.cpuByProcess,
              peakRssBytes: r.protocol.peakRssBytes,
            },
            fleetOverProtocolFloor: r.ratios,
          })),
        }
        : {}),
      fleetOverFloor: fleet.seconds / floor.seconds,
      updateOverFloor: fleet.updateSeconds / floor.seconds,
      memoryPerDeviceBytes: Math.round(fleet.peakRssBytes / devices),
    });
  }
  let existing: Record<string, unknown> = {};
  try {
    existing = JSON.parse(Deno.readTextFileSync(values.out));
  } catch {
    // a first run
  }
  // Other benchmarks' figures (bench:cluster's) stay; a size measured again replaces its row.
  const earlier = ((existing.runs ?? []) as { devices: number }[])
    .filter((old) => !runs.some((run) => run.devices === old.devices));
  const result = {
    ...existing,
    at: new Date().toISOString(),
    cores: navigator.hardwareConcurrency,
    imageBytes: imageSize,
    blockBytes: blockSize,
    workers,
    shards,
    runs: [...earlier, ...runs.map((run) => ({ at: new Date().toISOString(), ...run }))]
      .sort((a, b) => a.devices - b.devices),
  };
  Deno.writeTextFileSync(values.out, JSON.stringify(result, null, 2) + "\n");
  console.log(`results: ${values.out}`);
}

/** One measurement in a line: wall, CPU, peak memory in all and per device. */
function describe(
  m: {
    seconds: number;
    cpuSeconds?: number;
    cpuByProcess?: Readonly<Record<string, number>>;
    peakRssBytes?: number;
  },
  devices: number,
): string {
  const memory = m.peakRssBytes === undefined
    ? ""
    : `, peak RSS ${(m.peakRssBytes / 2 ** 20).toFixed(0)} MiB (${
      (m.peakRssBytes / devices / 1024).toFixed(0)
    } KiB per device)`;
  const byProcess = m.cpuByProcess
    ? ` (${
      Object.entries(m.cpuByProcess).map(([name, s]) => `${name} ${s.toFixed(1)}`).join(", ")
    })`
    : "";
  const cpu = m.cpuSeconds === undefined ? "" : `, cpu ${m.cpuSeconds.toFixed(1)} s${byProcess}`;
  return `${m.seconds.toFixed(1)} s${cpu}${memory}`;
}

/** The fleet's wall time, CPU and peak memory over the protocol floor's. */
export function fleetOverFloor(
  fleet: Pick<FleetResult, "seconds" | "cpuSeconds" | "peakRssBytes">,
  floor: Pick<ProtocolFloorResult, "seconds" | "cpuSeconds" | "peakRssBytes">,
): { wall: number; cpu: number; memory: number } {
  const round = (n: number) => Math.round(n * 100) / 100;
  return {
    wall: round(fleet.seconds / floor.seconds),
    cpu: round(fleet.cpuSeconds / floor.cpuSeconds),
    memory: round(fleet.peakRssBytes / floor.peakRssBytes),
  };
}

/** Each ratio's median over rounds (the mean of the middle two for an even count). */
export function medianRatios(
  all: readonly ReturnType<typeof fleetOverFloor>[],
): ReturnType<typeof fleetOverFloor> {
  const median = (values: number[]) => {
    const sorted = values.toSorted((a, b) => a - b);
    const middle = Math.floor(sorted.length / 2);
    const value = sorted.length % 2 === 1
      ? sorted[middle]!
      : (sorted[middle - 1]! + sorted[middle]!) / 2;
    return Math.round(value * 100) / 100;
  };
  return {
    wall: median(all.map((r) => r.wall)),
    cpu: median(all.map((r) => r.cpu)),
    memory: median(all.map((r) => r.memory)),
  };
}

/** Devices of the first shard whose packets are logged: up to 9, spread over the shard. */
function loggedDevices(shape: { devices: number; shards: number }): string[] {
  const own = Math.ceil(shape.devices / shape.shards);
  const step = Math.max(1, Math.floor(own / 9));
  const names: string[] = [];
  for (let i = 0; i < own && names.length < 9; i += step) {
    names.push(`dev-${String(i * shape.shards).padStart(5, "0")}`);
  }
  return names;
}

/** The lines of the logged device with the median count of packets. */
export function typicalDevice(wireLog: string): string {
  const lines = new Map<string, string[]>();
  for (const record of parseWireLog(wireLog)) {
    const own = lines.get(record.thing) ?? [];
    own.push(JSON.stringify(record));
    lines.set(record.thing, own);
  }
  const byCount = [...lines.values()].sort((a, b) => a.length - b.length);
  const median = byCount[Math.floor((byCount.length - 1) / 2)];
  if (!median) throw new Error("the fleet's wire log is empty");
  return median.join("\n") + "\n";
}
