/**
 * `deno task fleet --brokers K --processes M`: a whole cluster on this machine for one run —
 * redis-server and PostgreSQL (or the ones given; none for one node, which keeps SQLite), K
 * broker node processes on their own ports, and M fleet processes each running its share of the
 * devices (`--shard i/M`) against the nodes,
 * devices spread over every node. Their reports are merged into one, with what each node carried
 * and what every process used (CPU, the peak of their memory together).
 *
 * @module
 */

import { type FleetReport, formatSummary, type StageTimes } from "../fleet/report.ts";
import type { Options } from "../fleet/fleet_args.ts";
import { type BrokerProcess, forwardLines, startBrokerProcess } from "./broker_process.ts";
import { type LocalService, startPostgres, startRedis } from "./local_services.ts";
import { ProcessTreeSampler, type SampledProcess } from "./process_sampler.ts";
import { V8_FLAGS } from "../lib/runtime_flags.ts";

/** What one broker node carried. */
export interface NodeFigures {
  readonly node: string;
  readonly mqtt: string;
  /** MQTT connections it accepted, and messages it received from its clients. */
  readonly connections: number;
  readonly messagesIn: number;
  readonly blocksSent: number;
  readonly cpuSeconds: number;
  readonly peakRssBytes: number;
}

/** One fleet process of the run. */
export interface ShardFigures {
  readonly shard: string;
  readonly devices: number;
  readonly wallSeconds: number;
  readonly peakRssBytes: number;
  readonly asExpected: boolean;
}

/** A fleet report of a clustered run. */
export interface ClusterFleetReport extends FleetReport {
  readonly brokers: readonly NodeFigures[];
  readonly processes: readonly ShardFigures[];
  /** Every process of the run together: the fleet, the nodes, Redis, PostgreSQL. */
  readonly usage: {
    readonly peakRssBytes: number;
    /** Their proportional set sizes together: pages they share counted once. */
    readonly peakPssBytes: number;
    readonly cpuSeconds: number;
    readonly processes: readonly SampledProcess[];
  };
}

/** The flags this run gives its fleet processes itself (or keeps for itself). */
const OWN_FLAGS = new Set([
  "cpu-profile",
  "brokers",
  "processes",
  "cluster-redis",
  "cluster-db",
  "report",
  "report-html",
  "update-id",
  "broker",
  "api",
  "token",
  "shard",
  // Each process gets its own share of these (see shardTracing).
  "trace",
  "wire-log",
]);

/** `args` without the flags in `names` (as `--flag value` or `--flag=value`). */
export function withoutFlags(args: readonly string[], names: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const match = /^--([a-z-]+)(=.*)?$/.exec(args[i]!);
    if (match && names.has(match[1]!)) {
      if (match[2] === undefined) i++; // its value is the next argument
      continue;
    }
    out.push(args[i]!);
  }
  return out;
}

/**
 * Runs the clustered fleet. `args` are the command's own (forwarded to the fleet processes but
 * for the cluster's flags); `out` gets progress lines, each process's prefixed with its shard.
 */
export async function runClusteredFleet(
  options: Options,
  args: readonly string[],
  out: (line: string) => void,
): Promise<ClusterFleetReport> {
  const cluster = options.cluster!;
  const started = performance.now();
  const sampler = new ProcessTreeSampler();
  sampler.start(500);
  const services: LocalService[] = [];
  const nodes: BrokerProcess[] = [];
  const token = crypto.randomUUID();
  const directory = await Deno.makeTempDir({ prefix: "ota-cluster-run-" });
  let stopping = false;
  try {
    // One node has no peer to share with: it keeps its state in SQLite, as `deno task broker`.
    const alone = cluster.brokers === 1 && cluster.redis === undefined &&
      cluster.db === undefined;
    let storeArgs: (node: number) => string[];
    if (alone) {
      storeArgs = (node) => ["--data", `${directory}/node-${node}`];
      out(
        cluster.ownBroker
          ? `fleet: ${options.devices} devices hold more connections than one process may with both ends (see --brokers): the broker runs in a process of its own, on SQLite`
          : "cluster: one node, on SQLite",
      );
    } else {
      const redis = cluster.redis ?? (await track(services, startRedis())).url;
      const db = cluster.db ?? (await track(services, startPostgres())).url;
      out(`cluster: redis ${redis}, PostgreSQL ${db.replace(/:[^:@/]*@/, ":***@")}`);
      storeArgs = () => ["--cluster", redis, "--db", db];
    }
    // One origin for every node's scaled clock: each started its own at its start, so a node
    // started seconds after another ran minutes ahead of it (a job created on one node, its
    // executions queued by another, looked queued before it was created).
    const timeOrigin = Date.now();
    for (let i = 1; i <= cluster.brokers; i++) {
      nodes.push(
        await startBrokerProcess({
          // Port 0: the node takes free ports itself and says which in its ready line.
          mqttPort: 0,
          httpPort: 0,
          token,
          serviceSecret: crypto.randomUUID(),
          timeScale: options.timeScale,
          timeOrigin,
          extraArgs: [
            ...storeArgs(i),
            "--node-id",
            `node-${i}`,
            ...(options.cpuProfile
              ? ["--cpu-profile", `${options.cpuProfile}/node-${i}.cpuprofile`]
              : []),
          ],
          // The node's operator log but its clients coming and going (thousands of lines).
          onLog: (line) => {
            if (!/ client-(connected|disconnected) |^dashboard: /.test(line)) {
              out(`[node-${i}] ${line}`);
            }
          },
        }),
      );
      out(`cluster: node-${i} on ${nodes.at(-1)!.mqtt}`);
      // A node that dies mid-run (its heap full, a bug) says so: its devices fail over and the
      // run may still succeed, which would otherwise hide it.
      void nodes.at(-1)!.child.status.then((status) => {
        if (!stopping) {
          out(
            `cluster: node-${i} exited during the run (code ${status.code}${
              status.signal ? `, signal ${status.signal}` : ""
            })`,
          );
        }
      });
    }
    const brokers = nodes.map((node) => node.mqtt).join(",");
    // The shards must agree on one update: the one asked for, else one of this run's own.
    const named = args.some((arg) => arg === "--update-id" || arg.startsWith("--update-id="));
    const updateId = named ? options.updateId : `fleet-${crypto.randomUUID().slice(0, 8)}`;
    const forwarded = withoutFlags(args, OWN_FLAGS);
    const shards = Array.from({ length: cluster.processes }, (_, i) => {
      const shard = `${i + 1}/${cluster.processes}`;
      const report = `${directory}/shard-${i + 1}.json`;
      return runShard(shard, report, [
        ...forwarded,
        "--broker",
        brokers,
        "--api",
        // Its own node first, the others when that one is gone.
        nodes.map((_, n) => nodes[(i + n) % nodes.length]!.api).join(","),
        "--token",
        token,
        "--shard",
        shard,
        "--update-id",
        updateId,
        ...shardTracing(options, i, cluster.processes),
        "--report",
        report,
        ...(options.cpuProfile ? ["--cpu-profile", `${options.cpuProfile}/fleet-${i + 1}`] : []),
      ], out);
    });
    const reports = await Promise.all(shards);
    const usage = sampler.usage();
    const figures: NodeFigures[] = [];
    for (const [i, node] of nodes.entries()) {
      const metrics = await nodeMetrics(node);
      const own = usage.processes.find((p) => p.pid === node.child.pid);
      figures.push({
        node: `node-${i + 1}`,
        mqtt: node.mqtt,
        connections: metrics("ota_mqtt_connections_total"),
        messagesIn: metrics("ota_mqtt_messages_received_total"),
        blocksSent: metrics("ota_stream_blocks_sent_total"),
        cpuSeconds: own?.cpuSeconds ?? 0,
        peakRssBytes: own?.peakRssBytes ?? 0,
      });
    }
    return mergeReports(reports, figures, sampler, (performance.now() - started) / 1000);
  } finally {
    stopping = true;
    for (const node of nodes) await node.stop().catch(() => {});
    for (const service of services.reverse()) await service.stop().catch(() => {});
    await Deno.remove(directory, { recursive: true }).catch(() => {});
    sampler.stop();
  }
}

async function track(services: LocalService[], starting: Promise<LocalService>) {
  const service = await starting;
  services.push(service);
  return service;
}

/** Runs one fleet process and reads its report (its lines go to `out`, prefixed). */
async function runShard(
  shard: string,
  reportPath: string,
  args: readonly string[],
  out: (line: string) => void,
): Promise<FleetReport> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      V8_FLAGS,
      "--allow-all",
      new URL("../fleet/fleet.ts", import.meta.url).pathname,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const prefix = (line: string) => out(`[${shard}] ${line}`);
  const [status] = await Promise.all([
    child.status,
    forwardLines(child.stdout, prefix),
    forwardLines(child.stderr, prefix),
  ]);
  try {
    return JSON.parse(await Deno.readTextFile(reportPath));
  } catch {
    throw new Error(`fleet process ${shard} exited with ${status.code} without a report`);
  }
}

/** A node's Prometheus samples, summed over labels, by name. */
async function nodeMetrics(node: BrokerProcess): Promise<(name: string) => number> {
  const text = await fetch(`${node.api.replace(/\/api$/, "")}/metrics`)
    .then((r) => r.text(), () => "");
  return (name) =>
    text.split("\n").filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`))
      .reduce((sum, line) => sum + Number(line.split(" ").at(-1)), 0);
}

/** One report of the shards' reports: counts added, the job's state as the last shard saw it. */
function mergeReports(
  reports: readonly FleetReport[],
  brokers: readonly NodeFigures[],
  sampler: ProcessTreeSampler,
  wallSeconds: number,
): ClusterFleetReport {
  const first = reports[0]!;
  const sum = <T extends object>(pick: (r: FleetReport) => T): T => {
    const total = {} as Record<string, number>;
    for (const report of reports) {
      for (const [key, value] of Object.entries(pick(report)) as [string, number][]) {
        total[key] = (total[key] ?? 0) + value;
      }
    }
    return total as T;
  };
  const usage = sampler.usage();
  const devices = reports.reduce((n, r) => n + r.devices, 0);
  return {
    ...first,
    devices,
    // The outcome counts the job's executions, over every shard: each shard reports them all.
    outcome: first.outcome,
    bricked: reports.reduce((n, r) => n + r.bricked, 0),
    runningVersion: sum((r) => r.runningVersion),
    faults: sum((r) => r.faults),
    bytesDelivered: reports.reduce((n, r) => n + r.bytesDelivered, 0),
    // Each process's average, weighted by its devices.
    wirePerDevice: weightedMean(reports.map((r) => [r.devices, r.wirePerDevice] as const)),
    cloudOutages: sum((r) => r.cloudOutages),
    wallSeconds: Math.round(wallSeconds * 10) / 10,
    // Phases and stage times are each process's own: the slowest process's are shown (stage
    // percentiles each the highest of any process: the processes' devices are not merged).
    phases: maxOf(reports.map((r) => r.phases)),
    stages: slowestStages(reports.map((r) => r.stages)),
    stageParts: slowestStages(reports.map((r) => r.stageParts ?? {})),
    ...(first.deltaSavings ? { deltaSavings: addedSavings(reports) } : {}),
    ...(first.runningEncrypted !== undefined
      ? { runningEncrypted: reports.reduce((sum, r) => sum + (r.runningEncrypted ?? 0), 0) }
      : {}),
    peakRssBytes: usage.peakRssBytes,
    peakRssOf: "every process of the run together",
    asExpected: reports.every((r) => r.asExpected),
    brokers,
    processes: reports.map((r, i) => ({
      shard: `${i + 1}/${reports.length}`,
      devices: r.devices,
      wallSeconds: r.wallSeconds,
      peakRssBytes: r.peakRssBytes,
      asExpected: r.asExpected,
    })),
    usage,
  };
}

function maxOf(all: readonly Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const one of all) {
    for (const [key, value] of Object.entries(one)) out[key] = Math.max(out[key] ?? 0, value);
  }
  return out;
}

/** Per update and stage: devices summed, each percentile the highest of any process. */
/** Each update's delta savings, added over the shards (each counted its own devices). */
function addedSavings(reports: readonly FleetReport[]): NonNullable<FleetReport["deltaSavings"]> {
  const total: NonNullable<FleetReport["deltaSavings"]> = {};
  for (const report of reports) {
    for (const [version, d] of Object.entries(report.deltaSavings ?? {})) {
      const sum = total[version] ?? { devices: 0, patched: 0, bytesSaved: 0 };
      total[version] = {
        devices: sum.devices + d.devices,
        patched: sum.patched + d.patched,
        bytesSaved: sum.bytesSaved + d.bytesSaved,
      };
    }
  }
  return total;
}

function slowestStages<K extends string>(
  all: readonly Record<string, Record<K, StageTimes>>[],
): Record<string, Record<K, StageTimes>> {
  const out: Record<string, Record<string, StageTimes>> = {};
  for (const one of all) {
    for (const [version, stages] of Object.entries(one)) {
      const merged = out[version] ??= {};
      for (const [stage, t] of Object.entries(stages) as [string, StageTimes][]) {
        const seen = merged[stage];
        merged[stage] = seen
          ? {
            devices: seen.devices + t.devices,
            p50: Math.max(seen.p50, t.p50),
            p90: Math.max(seen.p90, t.p90),
            max: Math.max(seen.max, t.max),
          }
          : t;
      }
    }
  }
  return out as Record<string, Record<K, StageTimes>>;
}

/** The summary of a clustered run: the fleet's, then what each node and process carried. */
export function formatClusterSummary(report: ClusterFleetReport, reportPath: string): string {
  const mib = (bytes: number) => `${Math.round(bytes / 2 ** 20)} MiB`;
  const lines = [formatSummary(report, reportPath), "", "cluster"];
  for (const node of report.brokers) {
    lines.push(
      `  ${node.node.padEnd(8)} ${String(node.connections).padStart(7)} connections ${
        String(node.messagesIn).padStart(9)
      } messages in ${String(node.blocksSent).padStart(9)} blocks out  cpu ${
        node.cpuSeconds.toFixed(1)
      } s  peak ${mib(node.peakRssBytes)}`,
    );
  }
  for (const shard of report.processes) {
    lines.push(
      `  fleet ${shard.shard.padEnd(6)} ${String(shard.devices).padStart(7)} devices  ${
        shard.wallSeconds.toFixed(1)
      } s  peak ${mib(shard.peakRssBytes)}${shard.asExpected ? "" : "  NOT as expected"}`,
    );
  }
  lines.push(
    `  all processes together: cpu ${report.usage.cpuSeconds.toFixed(1)} s, peak ${
      mib(report.usage.peakRssBytes)
    } resident (${mib(report.usage.peakPssBytes)} proportional: shared pages once)`,
  );
  return lines.join("\n");
}

/** The mean of per-process averages, each weighted by its count of devices. */
function weightedMean<T extends Record<string, number>>(
  parts: readonly (readonly [weight: number, values: T])[],
): T {
  const total = parts.reduce((n, [weight]) => n + weight, 0);
  const mean = {} as Record<string, number>;
  for (const [weight, values] of parts) {
    for (const [key, value] of Object.entries(values)) {
      mean[key] = (mean[key] ?? 0) + (total > 0 ? value * weight / total : 0);
    }
  }
  for (const key of Object.keys(mean)) mean[key] = Math.round(mean[key]! * 10) / 10;
  return mean as T;
}

/**
 * The `--trace` and `--wire-log` flags of the `index`-th (from 0) of `count` fleet processes: the
 * traced devices it runs (a process refuses to trace a device that is not its own), and the wire
 * log if it runs the first traced device (without any, dev-00000).
 */
export function shardTracing(
  options: Pick<Options, "trace" | "wireLog">,
  index: number,
  count: number,
): string[] {
  const ownedBy = (thing: string) => Number(thing.slice(4)) % count;
  const own = options.trace.filter((thing) => ownedBy(thing) === index);
  const logged = options.wireLog !== undefined &&
    ownedBy(options.trace[0] ?? "dev-00000") === index;
  return [
    ...(own.length > 0 ? ["--trace", own.join(",")] : []),
    ...(logged ? ["--wire-log", options.wireLog!] : []),
  ];
}
