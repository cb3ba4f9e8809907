/**
 * Durability: the broker process is killed with SIGKILL in the middle of a rollout and started
 * again on the same data directory; the rollout finishes and every execution is accounted for.
 * Devices are plain MQTT clients speaking the Jobs device API (the agent is tested elsewhere).
 */
import assert from "node:assert/strict";
import mqtt, { type MqttClient } from "mqtt";
import { waitUntil } from "../helpers/wait.ts";
import { freePort, startBrokerProcess } from "../../cluster/broker_process.ts";

const TOKEN = "durability-token";
const SERVICE_SECRET = "service-secret-for-test";

function startBroker(dataDir: string, mqttPort: number, httpPort: number) {
  return startBrokerProcess({
    dataDir,
    mqttPort,
    httpPort,
    token: TOKEN,
    serviceSecret: SERVICE_SECRET,
  });
}

async function api(base: string, method: string, path: string, body?: unknown) {
  const response = await fetch(`${base.replace(/\/$/, "")}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}` },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return await response.json();
}

/** A device that starts and finishes whatever job it is given, acknowledging each step. */
function device(url: string, thing: string): MqttClient {
  const client = mqtt.connect(url, {
    clientId: thing,
    username: thing,
    password: `secret-${thing}-x`,
    reconnectPeriod: 50,
  });
  const jobs = `$aws/things/${thing}/jobs`;
  const work = (execution: { jobId?: string; status?: string } | undefined) => {
    if (!execution?.jobId) return;
    const status = execution.status === "QUEUED" ? "IN_PROGRESS" : "SUCCEEDED";
    client.publish(
      `${jobs}/${execution.jobId}/update`,
      JSON.stringify({ status, clientToken: thing }),
      { qos: 1 },
    );
  };
  client.on("connect", () => {
    client.subscribe(
      [`${jobs}/notify-next`, `${jobs}/$next/get/accepted`, `${jobs}/+/update/accepted`],
      { qos: 1 },
      () => {
        client.publish(`${jobs}/$next/get`, "{}", { qos: 1 });
      },
    );
  });
  client.on("message", (topic, payload) => {
    const body = JSON.parse(payload.toString());
    if (topic.endsWith("/update/accepted")) {
      if (body.executionState?.status === "IN_PROGRESS") {
        work({ jobId: topic.split("/")[4]!, status: "IN_PROGRESS" });
      }
      return;
    }
    work(body.execution);
  });
  return client;
}

Deno.test("durability: SIGKILL mid-rollout, restart on the same directory, and the rollout finishes with every execution intact", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ota-durability-" });
  const mqttPort = freePort();
  const httpPort = freePort();
  const things = Array.from({ length: 6 }, (_, i) => `dev-${i}`);
  const clients: MqttClient[] = [];
  let broker = await startBroker(dataDir, mqttPort, httpPort);
  try {
    for (const thing of things) {
      await api(broker.api, "PUT", `/things/${thing}`, {
        secret: `secret-${thing}-x`,
        groups: ["fleet"],
      });
    }
    // Two per simulated minute at 60x: two every real second.
    const created = await api(broker.api, "POST", "/jobs", {
      jobId: "ota-1",
      document: { afr_ota: {} },
      targets: { groups: ["fleet"] },
      rollout: { maximumPerMinute: 2 },
    });
    assert.equal(created.counts?.QUEUED, 2, JSON.stringify(created));
    for (const thing of things) clients.push(device(broker.mqtt, thing));
    let before: { counts: Record<string, number> } = { counts: {} };
    await waitUntil(
      async () => {
        before = await api(broker.api, "GET", "/jobs/ota-1");
        return (before.counts.SUCCEEDED ?? 0) >= 2;
      },
      "two devices to succeed before the broker is killed",
      30_000,
      20,
    );
    assert.ok(
      before.counts.SUCCEEDED! >= 2 && before.counts.SUCCEEDED! < 6,
      `mid-rollout: ${JSON.stringify(before.counts)}`,
    );
    await broker.kill();

    broker = await startBroker(dataDir, mqttPort, httpPort);
    let after: { status: string; counts: Record<string, number> } = { status: "", counts: {} };
    await waitUntil(
      async () => {
        after = await api(broker.api, "GET", "/jobs/ota-1");
        return after.status === "COMPLETED";
      },
      "the rollout to complete on the restarted broker",
      60_000,
      50,
    );
    assert.equal(after.status, "COMPLETED", JSON.stringify(after));
    assert.equal(after.counts.SUCCEEDED, 6);
    for (const thing of things) {
      const history = await api(broker.api, "GET", `/things/${thing}/history`);
      const execution = history.executions.find((e: { jobId: string }) => e.jobId === "ota-1");
      assert.equal(execution.status, "SUCCEEDED", thing);
      assert.equal(
        history.history.filter((h: { event: string }) => h.event === "queued").length,
        1,
        `${thing} queued exactly once`,
      );
      assert.ok(
        execution.versionNumber >= 3,
        `${thing}: QUEUED(1) -> IN_PROGRESS(2) -> SUCCEEDED(3)`,
      );
    }
  } finally {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    await broker.kill();
    await Deno.remove(dataDir, { recursive: true });
  }
});
