/**
 * The fleet on one broker against the fleet on a cluster: `deno task fleet` as users run it,
 * once joined to one `deno task broker` process (SQLite; the broker in its own process, as a
 * deployment has it and as 10,000 devices need: each device's connection is two open files in a
 * process holding both ends, and a process may hold 20,000) and once with `--brokers K
 * --processes M` (Redis, PostgreSQL, K broker nodes, M fleet processes), each run sampled from
 * outside for the CPU of every process and the peak of their memory together. Writes the figures under `cluster` in
 * bench/results.json (the fleet benchmark's figures stay as they are).
 *
 * ```sh
 * deno task bench:cluster                       # single:10000, cluster:10000, cluster:30000
 * deno task bench:cluster --runs cluster:2000 --brokers 2 --processes 2
 * ```
 *
 * @module
 */
import type { ClusterFleetReport } from "../cluster/clustered_fleet.ts";
import { type BrokerProcess, forwardLines, startBrokerProcess } from "../cluster/broker_process.ts";
import { ProcessTreeSampler } from "../cluster/process_sampler.ts";
import type { FleetReport } from "../fleet/report.ts";
import { standardFlags, usageLine } from "../lib/cli.ts";
import { type FlagSpec, parseFlags, usage } from "../lib/flags.ts";
import { UsageError } from "../lib/usage_error.ts";
import { V8_FLAGS } from "../lib/runtime_flags.ts";

const FLAGS: readonly FlagSpec[] = [
  {
    name: "runs",
    value: "LIST",
    help: "runs, in order: single:N (one broker process on SQLite, one fleet process) or " +
      "cluster:N",
    default: "single:10000,cluster:10000,cluster:30000",
  },
  { name: "brokers", value: "K", help: "nodes of a cluster run", range: [1, 16], default: "2" },
  {
    name: "processes",
    value: "M",
    help: "fleet processes of a cluster run",
    range: [1, 64],
    default: "2",
  },
  { name: "image-size", value: "SIZE", help: "image size", default: "256KiB" },
  { name: "block-size", value: "SIZE", help: "stream block", default: "4KiB" },
  {
    name: "timeout",
    value: "SECONDS",
    help: "each run's fleet gives up after this much real time (a 40,000-device run takes ~10 min)",
    range: [1, 86_400],
    default: "1800",
  },
  {
    name: "self-test-timeout",
    value: "SECONDS",
    help: "the fleet's trial window after a reboot (see deno task fleet --help)",
    range: [1, 3_600],
    default: "30",
  },
  { name: "out", value: "FILE", help: "where the results go", default: "bench/results.json" },
];

const USAGE = usage(
  `Usage: deno task bench:cluster [options]

The fleet in one process against the fleet on a local cluster, measured from outside.`,
  FLAGS,
);

/** One run's figures. */
export interface ClusterBenchRun {
  /** When it ran. */
  readonly at: string;
  readonly kind: "single" | "cluster";
  readonly devices: number;
  readonly brokers: number;
  readonly processes: number;
  /** The devices' trial window after their reboot (`--self-test-timeout`). */
  readonly selfTestTimeoutSeconds: number;
  readonly wallSeconds: number;
  readonly mbPerSecond: number;
  readonly succeeded: number;
  readonly bricked: number;
  readonly asExpected: boolean;
  /** CPU seconds by process kind (fleet, broker, redis-server, postgres, ...). */
  readonly cpuSeconds: Record<string, number>;
  readonly peakRssBytes: number;
  /** The peak of their proportional set sizes together (shared pages counted once). */
  readonly peakPssBytes?: number;
  readonly nodes: readonly {
    node: string;
    connections: number;
    messagesIn: number;
    cpuSeconds?: number;
    peakRssBytes?: number;
  }[];
  readonly stages: FleetReport["stages"];
  readonly stageParts?: FleetReport["stageParts"];
}

/** Runs `deno task fleet` with `args` and measures it from outside. */
async function measure(
  kind: "single" | "cluster",
  devices: number,
  args: readonly string[],
  shape: { brokers: number; processes: number; selfTestTimeoutSeconds: number },
): Promise<ClusterBenchRun> {
  const directory = await Deno.makeTempDir({ prefix: "ota-bench-cluster-" });
  const report = `${directory}/report.json`;
  const sampler = new ProcessTreeSampler();
  sampler.start(500);
  const started = performance.now();
  let broker: BrokerProcess | null = null;
  if (kind === "single") {
    const token = crypto.randomUUID();
    broker = await startBrokerProcess({
      dataDir: `${directory}/data`,
      mqttPort: 0,
      httpPort: 0,
      token,
      serviceSecret: crypto.randomUUID(),
      timeScale: 60,
    });
    args = [...args, "--broker", broker.mqtt, "--api", broker.api, "--token", token];
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      V8_FLAGS,
      "--allow-all",
      new URL("../fleet/fleet.ts", import.meta.url).pathname,
      "--devices",
      String(devices),
      ...args,
      "--report",
      report,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // The fleet's own lines (its processes' and nodes' included) go to a log kept when the run
  // went wrong or a node died on the way (a process that died says why there); the last 200
  // are shown when it failed.
  const logPath = await Deno.makeTempFile({ prefix: "ota-bench-cluster-", suffix: ".log" });
  const log = await Deno.open(logPath, { write: true, append: true });
  const encoder = new TextEncoder();
  const tail: string[] = [];
  let nodeDied = false;
  const [status] = await Promise.all([
    child.status,
    forwardLines(child.stdout, (line) => {
      log.writeSync(encoder.encode(line + "\n"));
      if (/^cluster: node-\d+ exited during the run/.test(line)) nodeDied = true;
      tail.push(line);
      if (tail.length > 200) tail.shift();
    }),
  ]);
  log.close();
  if (!status.success) console.error(tail.join("\n"));
  const keepLog = (why: string) => console.error(`the run's whole log (${why}): ${logPath}`);
  await broker?.stop();
  const wallSeconds = (performance.now() - started) / 1000;
  const usage = sampler.stop();
  try {
    const result = JSON.parse(await Deno.readTextFile(report)) as
      & FleetReport
      & Partial<ClusterFleetReport>;
    const cpuSeconds: Record<string, number> = {};
    for (const p of usage.processes) {
      const name = p.pid === Deno.pid ? "bench" : p.name;
      cpuSeconds[name] = Math.round(((cpuSeconds[name] ?? 0) + p.cpuSeconds) * 10) / 10;
    }
    const asExpected = status.success && result.asExpected;
    if (!asExpected) keepLog("not as expected");
    else if (nodeDied) keepLog("a node died");
    else await Deno.remove(logPath);
    return {
      at: new Date().toISOString(),
      kind,
      devices,
      brokers: kind === "cluster" ? shape.brokers : 1,
      processes: kind === "cluster" ? shape.processes : 1,
      selfTestTimeoutSeconds: shape.selfTestTimeoutSeconds,
      wallSeconds: Math.round(wallSeconds * 10) / 10,
      mbPerSecond: Math.round(result.bytesDelivered / 1e6 / wallSeconds * 10) / 10,
      succeeded: result.outcome.succeeded,
      bricked: result.bricked,
      asExpected,
      cpuSeconds,
      peakRssBytes: usage.peakRssBytes,
      peakPssBytes: usage.peakPssBytes,
      nodes: (result.brokers ?? []).map((n) => ({
        node: n.node,
        connections: n.connections,
        messagesIn: n.messagesIn,
        cpuSeconds: Math.round(n.cpuSeconds * 10) / 10,
        peakRssBytes: n.peakRssBytes,
      })),
      stages: result.stages,
      ...(result.stageParts ? { stageParts: result.stageParts } : {}),
    };
  } catch {
    keepLog("no report");
    throw new Error(`the ${kind} run of ${devices} devices ended with ${status.code}, no report`);
  } finally {
    await Deno.remove(directory, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const early = standardFlags(Deno.args, USAGE);
  if (early) {
    console.log(early.text);
    Deno.exit(0);
  }
  let values: {
    runs: { kind: "single" | "cluster"; devices: number }[];
    brokers: number;
    processes: number;
    sizes: string[];
    selfTestTimeoutSeconds: number;
    out: string;
  };
  try {
    const flags = parseFlags(Deno.args, FLAGS);
    const runs = flags.string("runs")!.split(",").map((run) => {
      const match = /^(single|cluster):(\d+)$/.exec(run);
      const devices = Number(match?.[2]);
      if (!match || devices < 1 || devices > 100_000) {
        throw new UsageError(
          `Invalid --runs: expected single:N or cluster:N separated by commas: current value is '${run}'`,
        );
      }
      return { kind: match[1] as "single" | "cluster", devices };
    });
    values = {
      runs,
      brokers: flags.int("brokers"),
      processes: flags.int("processes"),
      sizes: [
        "--image-size",
        flags.string("image-size")!,
        "--block-size",
        flags.string("block-size")!,
        "--timeout",
        String(flags.int("timeout")),
        "--self-test-timeout",
        String(flags.int("self-test-timeout")),
      ],
      selfTestTimeoutSeconds: flags.int("self-test-timeout"),
      out: flags.string("out")!,
    };
  } catch (error) {
    console.error(usageLine((error as Error).message));
    Deno.exit(2);
  }
  const results: ClusterBenchRun[] = [];
  for (const { kind, devices } of values.runs) {
    const args = kind === "cluster"
      ? [
        ...values.sizes,
        "--brokers",
        String(values.brokers),
        "--processes",
        String(values.processes),
      ]
      : values.sizes;
    const run = await measure(kind, devices, args, values);
    results.push(run);
    console.log(
      `${kind} ${devices} devices: ${run.wallSeconds} s, ${run.mbPerSecond} MB/s, ${run.succeeded} succeeded, ${run.bricked} bricked, peak ${
        (run.peakRssBytes / 2 ** 30).toFixed(2)
      } GiB resident together (${
        ((run.peakPssBytes ?? 0) / 2 ** 30).toFixed(2)
      } GiB proportional), cpu ${JSON.stringify(run.cpuSeconds)}${
        run.nodes.length > 0 ? `, nodes ${JSON.stringify(run.nodes)}` : ""
      }${run.asExpected ? "" : ", NOT as expected"}`,
    );
  }
  let existing: Record<string, unknown> = {};
  try {
    existing = JSON.parse(await Deno.readTextFile(values.out));
  } catch {
    // a first run
  }
  // A run replaces the earlier one of its kind and size; runs of other sizes stay.
  const earlier = ((existing.cluster as { runs?: ClusterBenchRun[] } | undefined)?.runs ?? [])
    .filter((old) => !results.some((r) => r.kind === old.kind && r.devices === old.devices));
  existing.cluster = {
    at: new Date().toISOString(),
    cores: navigator.hardwareConcurrency,
    runs: [...earlier, ...results].sort((a, b) =>
      a.kind === b.kind ? a.devices - b.devices : a.kind === "single" ? -1 : 1
    ),
  };
  await Deno.writeTextFile(values.out, JSON.stringify(existing, null, 2) + "\n");
  Deno.exit(results.every((r) => r.asExpected) ? 0 : 1);
}
