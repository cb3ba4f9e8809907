/**
 * Broker nodes as real processes (`deno task broker --cluster --db --node-id`) on a real
 * redis-server and PostgreSQL: fleets joined to different nodes update together under one job,
 * each node streams only to its own devices, exactly one node schedules.
 */
import assert from "node:assert/strict";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { runFleet } from "../../fleet/run.ts";
import type { BrokerProcess } from "../../cluster/broker_process.ts";
import { smallFleetArgs } from "../helpers/fleet_args.ts";
import { api, CLUSTER_IGNORE, localCluster, metric, TOKEN } from "../helpers/local_cluster.ts";
import { waitUntil, withDeadline } from "../helpers/wait.ts";
import { type Cloud, startCloud } from "../../broker/cloud.ts";
import { type ClusterAedes, clusterAedesOptions } from "../../broker/cluster_aedes.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import { PostgresStore } from "../../broker/postgres_store.ts";
import { startPostgres, startRedis } from "../../cluster/local_services.ts";

Deno.test({
  name:
    "cluster: two node processes, one fleet sharded across them, one job: every device updated, each node streams only to its own devices, one scheduler",
  ignore: CLUSTER_IGNORE,
  async fn() {
    const cluster = await localCluster();
    try {
      const a = await cluster.node("node-a");
      const b = await cluster.node("node-b");
      assert.equal(a.ready.node, "node-a");
      assert.equal(
        [a.ready.scheduler, b.ready.scheduler].filter((held) => held === true).length,
        1,
        "exactly one node holds the scheduler lease",
      );
      const devices = 8;
      const shard = (i: number, node: BrokerProcess) =>
        runFleet(
          parseFleetArgs([
            ...smallFleetArgs(devices),
            "--workers",
            "1",
            "--broker",
            node.mqtt,
            "--api",
            node.api,
            "--token",
            TOKEN,
            "--shard",
            `${i}/2`,
            "--update-id",
            "clustered",
          ]),
          () => {},
        );
      const [first, second] = await Promise.all([shard(1, a), shard(2, b)]);
      assert.equal(first.devices + second.devices, devices);
      assert.ok(
        first.asExpected && second.asExpected,
        JSON.stringify([first.expected, second.expected]),
      );
      const update = await api(b, "/ota-updates/clustered-1-1-0");
      assert.equal(
        (update.counts as Record<string, number>).SUCCEEDED,
        devices,
        "one job, both nodes",
      );
      assert.equal(update.status, "COMPLETED");
      // Blocks of a 16 KiB image in 1 KiB blocks: had both nodes answered every request, the
      // devices would have been sent twice what they needed.
      const needed = 16;
      const sentA = await metric(a, "ota_stream_blocks_sent_total");
      const sentB = await metric(b, "ota_stream_blocks_sent_total");
      assert.ok(
        sentA >= first.devices * needed && sentB >= second.devices * needed,
        `${sentA} ${sentB}`,
      );
      assert.ok(
        sentA + sentB < devices * needed * 1.5,
        `${sentA} + ${sentB} blocks sent for ${devices * needed} needed`,
      );
      // Each node's connections are its own devices (plus nothing of the other's).
      assert.ok((await metric(a, "ota_mqtt_connections_total")) >= first.devices);
      assert.ok((await metric(b, "ota_mqtt_connections_total")) >= second.devices);
      const things = await fetch(`${a.api}/things`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      }).then((r) => r.json()) as unknown[];
      assert.equal(things.length, devices, "both shards' things are in the one database");
      await waitUntil(
        async () => (await api(a, "/jobs/AFR_OTA-clustered-1-1-0")).status === "COMPLETED",
        "the job to complete on every node",
      );
    } finally {
      await cluster.close();
    }
  },
});

Deno.test({
  name: "cluster: a node's progress stream follows a job that devices on another node move",
  ignore: CLUSTER_IGNORE,
  async fn() {
    const redis = await startRedis();
    const db = await startPostgres();
    const clouds: Cloud[] = [];
    const joins: ClusterAedes[] = [];
    try {
      for (const id of ["node-a", "node-b"]) {
        const join = clusterAedesOptions(redis.url);
        joins.push(join);
        clouds.push(
          await startCloud({
            store: await PostgresStore.open(db.url),
            cluster: { aedes: { ...join.options, id }, changePollMs: 100 },
            scheduling: id === "node-a",
          }),
        );
      }
      const [a, b] = clouds as [Cloud, Cloud];
      await a.provisionThing("dev-1", "dev-1-secret");
      await a.jobs.addThingToGroup("fleet", "dev-1");
      const created = await a.jobs.createJob({
        jobId: "job-x",
        document: { op: "x" },
        targets: { groups: ["fleet"] },
      });
      assert.ok(created.ok);
      const api = operatorApi(b, { token: TOKEN });
      const response = await api(
        new Request("http://b/api/jobs/job-x/events", {
          headers: { authorization: `Bearer ${TOKEN}` },
        }),
      );
      const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      const next = async (match: RegExp) => {
        while (!match.test(text)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`the stream ended before ${match}: ${text}`);
          text += value;
        }
      };
      await withDeadline(next(/"QUEUED":1/), "the first progress event", 30_000);
      // The device's update is handled by node A; node B's stream hears of it.
      await a.jobs.handleDeviceMessage(
        "dev-1",
        "$aws/things/dev-1/jobs/job-x/update",
        new TextEncoder().encode(JSON.stringify({ status: "IN_PROGRESS" })),
      );
      await withDeadline(next(/"IN_PROGRESS":1/), "node B to hear of node A's change", 30_000);
      await reader.cancel();
    } finally {
      for (const cloud of clouds) await cloud.close();
      for (const join of joins) await join.close();
      await db.stop();
      await redis.stop();
    }
  },
});
