/**
 * A cluster losing a node mid-rollout (kill -9 of a real broker process): devices spread over
 * both nodes fail over to the survivor and finish their downloads; when the node killed was the
 * scheduler, the other takes the lease and the rollout goes on. Either way every execution is
 * queued once and ends once, SUCCEEDED.
 */
import assert from "node:assert/strict";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { runFleet } from "../../fleet/run.ts";
import type { BrokerProcess } from "../../cluster/broker_process.ts";
import {
  api,
  CLUSTER_IGNORE,
  type LocalCluster,
  localCluster,
  metric,
  schedules,
  TOKEN,
} from "../helpers/local_cluster.ts";
import { waitUntil } from "../helpers/wait.ts";

const DEVICES = 12;

/** The history of a thing's executions, as the audit log has it. */
interface AuditEntry {
  readonly jobId: string | null;
  readonly event: string;
  readonly detail: Record<string, unknown>;
}

/**
 * Runs a fleet over both nodes (devices alternate between them), kills `victim(...)` once
 * half the executions are under way, and checks the run and the audit log.
 */
async function killMidRollout(
  cluster: LocalCluster,
  pick: (nodes: { scheduler: BrokerProcess; other: BrokerProcess }) => {
    victim: BrokerProcess;
    survivor: BrokerProcess;
  },
  extraFleetArgs: readonly string[],
  timeScale = 1,
): Promise<{ victim: BrokerProcess; survivor: BrokerProcess; before: Record<string, unknown> }> {
  const a = await cluster.node("node-a", timeScale);
  const b = await cluster.node("node-b", timeScale);
  await waitUntil(
    async () => (await schedules(a)) !== (await schedules(b)),
    "exactly one node to schedule",
  );
  const scheduler = (await schedules(a)) ? a : b;
  const { victim, survivor } = pick({ scheduler, other: scheduler === a ? b : a });
  const updateId = "failover";
  const lines: string[] = [];
  const jobId = `AFR_OTA-${updateId}-1-1-0`;
  const run = runFleet(
    parseFleetArgs([
      "--devices",
      String(DEVICES),
      "--workers",
      "1",
      "--image-size",
      "64KiB",
      "--block-size",
      "1KiB",
      // About 4 s per download: the kill lands while devices on both nodes are downloading.
      "--bandwidth",
      "16KiB/s",
      "--broker",
      `${a.mqtt},${b.mqtt}`,
      // The victim's API first: the run must go on through the survivor's once it is gone.
      "--api",
      `${victim.api},${survivor.api}`,
      "--token",
      TOKEN,
      "--update-id",
      updateId,
      ...extraFleetArgs,
    ]),
    (line) => lines.push(line),
  );
  const counts = async () =>
    ((await api(survivor, `/jobs/${jobId}`)).counts ?? {}) as Record<string, number>;
  await waitUntil(
    async () => ((await counts()).IN_PROGRESS ?? 0) >= 3,
    "downloads under way",
    120_000,
    50,
  );
  assert.ok((await metric(victim, "ota_mqtt_connected")) > 0, "the victim serves devices");
  const before = await api(survivor, `/jobs/${jobId}`);
  const countsBefore = before.counts as Record<string, number>;
  assert.ok((countsBefore.SUCCEEDED ?? 0) < DEVICES, "killed mid-rollout, not after it");
  await victim.kill();
  const report = await run;
  assert.ok(report.asExpected, JSON.stringify([report.expected, report.outcome]));
  assert.equal(report.outcome.succeeded, DEVICES);
  assert.equal(report.bricked, 0);
  assert.ok(
    lines.some((line) => line.startsWith(`cloud: reachable again at ${survivor.api} `)),
    "the run's API calls went over to the survivor",
  );
  const job = await api(survivor, `/jobs/${jobId}`);
  assert.equal(job.status, "COMPLETED");
  assert.equal((job.counts as Record<string, number>).SUCCEEDED, DEVICES);
  // Every execution was queued once and ended once (no retry, no time-out, no second end).
  const things = await api<{ name: string }[]>(survivor, "/things");
  assert.equal(things.length, DEVICES);
  for (const { name } of things) {
    const { history } = await api<{ history: AuditEntry[] }>(survivor, `/things/${name}/history`);
    const mine = history.filter((entry) => entry.jobId === jobId);
    assert.equal(mine.filter((e) => e.event === "queued").length, 1, `${name} queued once`);
    const ends = mine.filter((e) =>
      e.event === "device-update" && e.detail.status !== "IN_PROGRESS"
    );
    assert.deepEqual(ends.map((e) => e.detail.status), ["SUCCEEDED"], `${name} ended once`);
    assert.ok(!mine.some((e) => e.event === "timed_out" || e.event === "canceled"), name);
  }
  // The victim's devices came over: the survivor served every device at some point.
  assert.ok((await metric(survivor, "ota_mqtt_connections_total")) >= DEVICES);
  return { victim, survivor, before };
}

Deno.test({
  name:
    "cluster failover: kill -9 of a node that does not schedule, mid-rollout: its devices reconnect to the other node, resume and finish; every execution ends once",
  ignore: CLUSTER_IGNORE,
  async fn() {
    const cluster = await localCluster();
    try {
      const { survivor } = await killMidRollout(
        cluster,
        ({ scheduler, other }) => ({ victim: other, survivor: scheduler }),
        [],
      );
      assert.ok(await schedules(survivor), "the scheduler never changed");
    } finally {
      await cluster.close();
    }
  },
});

Deno.test({
  name:
    "cluster failover: kill -9 of the scheduler node mid-rollout: the other node takes the lease and the rate-limited rollout finishes; every execution queued once, ended once",
  ignore: CLUSTER_IGNORE,
  async fn() {
    const cluster = await localCluster();
    try {
      const { survivor, before } = await killMidRollout(
        cluster,
        ({ scheduler, other }) => ({ victim: scheduler, survivor: other }),
        // Half the fleet a minute, a minute being 6 s on the nodes' clocks: the other half is
        // released after the kill, by the node that took the scheduler over.
        ["--max-per-minute", String(DEVICES / 2)],
        10,
      );
      assert.equal(before.pending, DEVICES / 2, "half the things were still to be released");
      assert.ok(await schedules(survivor), "the survivor took the scheduler over");
    } finally {
      await cluster.close();
    }
  },
});
