/**
 * `deno task fleet --brokers K --processes M` as the command runs: it starts redis-server,
 * PostgreSQL, K node processes and M fleet processes, merges their reports, and leaves nothing
 * running.
 */
import assert from "node:assert/strict";
import {
  type ClusterFleetReport,
  shardTracing,
  withoutFlags,
} from "../../cluster/clustered_fleet.ts";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { connectionCapacity } from "../../lib/open_files.ts";
import postgres from "postgres";
import { startPostgres, startRedis } from "../../cluster/local_services.ts";
import { CLUSTER_IGNORE } from "../helpers/local_cluster.ts";

/** Whether something accepts connections on the loopback port. */
async function listening(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

/** The ports of the Redis and PostgreSQL a clustered run says it uses. */
function servicePorts(output: string): number[] {
  const line = /cluster: redis redis:\/\/127\.0\.0\.1:(\d+), PostgreSQL \S+@127\.0\.0\.1:(\d+)\//
    .exec(output);
  if (!line) throw new Error(`no services line in: ${output.slice(0, 300)}`);
  return [Number(line[1]), Number(line[2])];
}

Deno.test({
  name:
    "clustered fleet: --brokers 2 --processes 2 updates every device through both nodes and reports each node, each process and all of them together",
  ignore: CLUSTER_IGNORE,
  async fn() {
    const directory = await Deno.makeTempDir();
    try {
      const report = `${directory}/report.json`;
      const run = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../../fleet/fleet.ts", import.meta.url).pathname,
          "--devices",
          "12",
          "--brokers",
          "2",
          "--processes",
          "2",
          "--workers",
          "1",
          "--image-size",
          "16KiB",
          "--block-size",
          "1KiB",
          "--report",
          report,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(run.stdout);
      assert.equal(run.code, 0, text + new TextDecoder().decode(run.stderr));
      assert.match(text, /\[1\/2\] .*\n[\s\S]*\[2\/2\] /, "each process's lines, prefixed");
      assert.match(text, /node-1 +\d+ connections/);
      const merged = JSON.parse(await Deno.readTextFile(report)) as ClusterFleetReport;
      assert.equal(merged.devices, 12);
      assert.equal(merged.outcome.succeeded, 12);
      assert.equal(merged.outcome.other, 0);
      assert.deepEqual(merged.runningVersion, { "1.1.0+0": 12 });
      assert.equal(merged.bricked, 0);
      assert.ok(merged.asExpected);
      assert.deepEqual(merged.processes.map((p) => [p.shard, p.devices]), [["1/2", 6], ["2/2", 6]]);
      // Stage times over both processes' devices, the rollout's wait read from the cluster's API.
      for (const [stage, t] of Object.entries(merged.stages["1.1.0"]!)) {
        assert.equal(t.devices, 12, stage);
      }
      for (const [part, t] of Object.entries(merged.stageParts!["1.1.0"]!)) {
        assert.equal(t.devices, 12, part);
      }
      // The job is created on one node and queued by the scheduler's: their clocks agree, so no
      // device got its job before the cloud queued it.
      assert.ok(merged.stageParts!["1.1.0"]!["accept.delivery"].p50 >= 0);
      assert.deepEqual(merged.brokers.map((b) => b.node), ["node-1", "node-2"]);
      for (const node of merged.brokers) {
        assert.ok(node.connections >= 6, `${node.node}: devices of both processes`);
        assert.ok(node.messagesIn > 0 && node.blocksSent > 0 && node.cpuSeconds > 0, node.node);
      }
      const names = new Set(merged.usage.processes.map((p) => p.name));
      for (const name of ["redis-server", "postgres", "broker", "fleet"]) {
        assert.ok(names.has(name), name);
      }
      const largest = Math.max(...merged.usage.processes.map((p) => p.peakRssBytes));
      assert.ok(merged.usage.peakRssBytes > largest, "the peak is of the processes together");
      assert.equal(merged.peakRssBytes, merged.usage.peakRssBytes);
      // Shared pages (PostgreSQL's buffers in each backend, the runtime's code) counted once.
      assert.ok(
        merged.usage.peakPssBytes > 0 && merged.usage.peakPssBytes < merged.usage.peakRssBytes,
        `proportional ${merged.usage.peakPssBytes} < resident ${merged.usage.peakRssBytes}`,
      );
      for (const port of servicePorts(text)) {
        assert.equal(await listening(port), false, `the run's service on ${port} was stopped`);
      }
    } finally {
      await Deno.remove(directory, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "clustered fleet: --cluster-redis and --cluster-db use the Redis and PostgreSQL given, and leave them running",
  ignore: CLUSTER_IGNORE,
  async fn() {
    const redis = await startRedis();
    const db = await startPostgres();
    const directory = await Deno.makeTempDir();
    try {
      const run = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../../fleet/fleet.ts", import.meta.url).pathname,
          ...["--devices", "4", "--brokers", "2", "--workers", "1"],
          ...["--image-size", "8KiB", "--block-size", "1KiB"],
          ...["--cluster-redis", redis.url, "--cluster-db", db.url],
          ...["--report", `${directory}/report.json`],
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(run.stdout);
      assert.equal(run.code, 0, text + new TextDecoder().decode(run.stderr));
      assert.deepEqual(
        servicePorts(text),
        [redis.port, db.port],
        "the services given, none of its own",
      );
      assert.ok(await listening(redis.port) && await listening(db.port), "and left running");
      // The run's state is in the database given: its things are there after it.
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      const [row] = await sql`SELECT COUNT(*) AS n FROM things`;
      await sql.end();
      assert.equal(Number(row!.n), 4);
    } finally {
      await db.stop();
      await redis.stop();
      await Deno.remove(directory, { recursive: true });
    }
  },
});

Deno.test("clustered fleet: the cluster's own flags are not passed on to the fleet processes", () => {
  assert.deepEqual(
    withoutFlags(
      ["--devices", "10", "--brokers=2", "--processes", "3", "--report", "r.json", "--seed", "4"],
      new Set(["brokers", "processes", "report"]),
    ),
    ["--devices", "10", "--seed", "4"],
  );
});

Deno.test("clustered fleet: each process traces its own devices; the first traced one's process keeps the wire log", () => {
  const options = parseFleetArgs([
    "--devices",
    "30",
    "--brokers",
    "2",
    "--processes",
    "3",
    "--trace",
    "dev-00004,dev-00002,dev-00007",
    "--wire-log",
    "w.jsonl",
  ]);
  // dev-00004 and dev-00007 are the second process's (index 1), dev-00002 the third's.
  assert.deepEqual(shardTracing(options, 0, 3), []);
  assert.deepEqual(shardTracing(options, 1, 3), [
    "--trace",
    "dev-00004,dev-00007",
    "--wire-log",
    "w.jsonl",
  ]);
  assert.deepEqual(shardTracing(options, 2, 3), ["--trace", "dev-00002"]);
  // Nothing traced: the wire log is of the run's first device, the first process's.
  const untraced = parseFleetArgs(["--devices", "30", "--processes", "3", "--wire-log", "w"]);
  assert.deepEqual(shardTracing(untraced, 0, 3), ["--wire-log", "w"]);
  assert.deepEqual(shardTracing(untraced, 1, 3), []);
});

Deno.test("clustered fleet flags: a local cluster is not joined to another cloud, and what needs one process is refused", () => {
  const refused: [string[], RegExp][] = [
    [
      ["--brokers", "2", "--broker", "mqtt://h:1", "--api", "http://h/api", "--token", "t"],
      /not with --broker/,
    ],
    [
      ["--processes", "2", "--identity", "secure-element"],
      /--identity secure-element runs in one process/,
    ],
    [["--brokers", "2", "--scenario", "factory-reset"], /factory-reset runs in one process/],
    [["--processes", "2", "--scenario", "bad-wave"], /bad-wave runs in one process/],
    [["--brokers", "2", "--dashboard"], /--dashboard runs in one process/],
    [["--cluster-redis", "http://h:1"], /Invalid --cluster-redis/],
    [["--cluster-db", "redis://h:1"], /Invalid --cluster-db/],
    [["--brokers", "17"], /--brokers/],
  ];
  for (const [args, message] of refused) {
    assert.throws(() => parseFleetArgs(args), message, args.join(" "));
  }
  const options = parseFleetArgs(["--brokers", "3", "--processes", "2"]);
  assert.deepEqual(options.cluster, { brokers: 3, processes: 2 });
  assert.equal(parseFleetArgs([]).cluster, undefined, "the default stays one process, embedded");
});

Deno.test("fleet flags: a fleet sized past the open files a process may hold gets a layout that holds it, or a clear refusal", () => {
  // 20,000 files (the project machines): 9,436 devices with both ends in one process, 18,872 one.
  const limit = 20_000;
  assert.deepEqual(connectionCapacity(limit), { bothEnds: 9_436, oneEnd: 18_872 });
  assert.equal(parseFleetArgs(["--devices", "9436"], limit).cluster, undefined);
  assert.deepEqual(parseFleetArgs(["--devices", "9437"], limit).cluster, {
    brokers: 1,
    processes: 1,
    ownBroker: true,
  });
  assert.deepEqual(parseFleetArgs(["--devices", "18872"], limit).cluster?.brokers, 1);
  // Nothing known about the limit: nothing to fit.
  assert.equal(parseFleetArgs(["--devices", "50000"], null).cluster, undefined);
  // An explicit layout is kept when it fits.
  assert.deepEqual(
    parseFleetArgs(["--devices", "30000", "--brokers", "2", "--processes", "2"], limit).cluster,
    { brokers: 2, processes: 2 },
  );
  const refused: [string[], RegExp][] = [
    [["--devices", "18873"], /--devices 18873 needs a cluster: .* add --brokers 2 --processes 2$/],
    [["--devices", "30000", "--brokers", "1", "--processes", "2"], /needs --brokers 2 or more/],
    [["--devices", "30000", "--brokers", "2", "--processes", "1"], /needs --processes 2 or more/],
    [
      ["--devices", "20000", "--broker", "mqtt://h:1", "--api", "http://h/api", "--token", "t"],
      /a fleet process holds at most 18872 devices .*run it in 2 or more shards/,
    ],
    [
      ["--devices", "10000", "--identity", "secure-element"],
      /--identity secure-element runs in one process with the embedded cloud, which holds at most 9436 devices/,
    ],
    [["--devices", "10000", "--dashboard"], /--dashboard runs in one process .* use fewer devices/],
  ];
  for (const [args, message] of refused) {
    assert.throws(() => parseFleetArgs(args, limit), message, args.join(" "));
  }
  // Shards share the devices: 2 shards of 20,000 hold 10,000 each.
  const shard = parseFleetArgs(
    [
      ...["--devices", "20000", "--broker", "mqtt://h:1", "--api", "http://h/api"],
      ...["--token", "t", "--shard", "1/2", "--update-id", "u"],
    ],
    limit,
  );
  assert.equal(shard.cluster, undefined);
});

Deno.test({
  name:
    "fleet as a process: more devices than its open files hold with both ends runs its broker apart (SQLite) and updates them all",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ota-open-files-" });
    try {
      // 600 files: 221 devices with both ends in one process; 300 would have hung at the end,
      // the last devices' connections never accepted.
      const fleet = new URL("../../fleet/fleet.ts", import.meta.url).pathname;
      const args = [
        ...["--devices", "300", "--workers", "2", "--image-size", "8KiB", "--block-size", "1KiB"],
        ...["--report", `${dir}/report.json`, "--timeout", "300"],
      ];
      const output = await new Deno.Command("sh", {
        args: [
          "-c",
          'ulimit -n 600 && exec "$0" run --allow-all "$@"',
          Deno.execPath(),
          fleet,
          ...args,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(output.stdout);
      const err = new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 0, out.slice(-3000) + err);
      assert.match(
        out,
        /^fleet: 300 devices hold more connections than one process may .* on SQLite$/m,
      );
      assert.doesNotMatch(out, /redis|PostgreSQL/);
      const report = JSON.parse(await Deno.readTextFile(`${dir}/report.json`));
      assert.equal(report.outcome.succeeded, 300);
      assert.deepEqual(report.runningVersion, { "1.1.0+0": 300 });
      assert.equal(report.bricked, 0);
      assert.equal(report.brokers.length, 1);
      assert.equal(report.brokers[0].connections >= 600, true, "each device connected twice");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
