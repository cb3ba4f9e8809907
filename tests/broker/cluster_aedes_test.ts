/**
 * Two aedes nodes on one real redis-server are one broker to their clients (mqtt.js on real TCP
 * ports): a message published on one node reaches a subscriber on the other, a retained message
 * set on one is found on the other, and a device whose node goes away finds its persistent session
 * (its subscription) on the other node.
 */
import assert from "node:assert/strict";
import mqtt, { type MqttClient } from "mqtt";
import { startEmbeddedBroker } from "../../broker/embedded.ts";
import { clusterAedesOptions, redisAddress } from "../../broker/cluster_aedes.ts";
import { type LocalService, startRedis } from "../../cluster/local_services.ts";
import { systemProgram } from "../helpers/system_program.ts";
import { waitUntil, withDeadline } from "../helpers/wait.ts";

const REDIS = systemProgram("redis-server", "redis-server");

async function node(redis: LocalService) {
  const cluster = clusterAedesOptions(redis.url);
  const broker = await startEmbeddedBroker({ aedes: cluster.options });
  return {
    url: broker.url,
    async close() {
      await broker.close();
      await cluster.close();
    },
  };
}

async function client(url: string, clientId: string, clean = true): Promise<MqttClient> {
  const c = mqtt.connect(url, { clientId, clean, reconnectPeriod: 0 });
  await withDeadline(
    new Promise((resolve, reject) => {
      c.once("connect", resolve);
      c.once("error", reject);
    }),
    `${clientId} to connect`,
  );
  return c;
}

/** Publishes (QoS 1) until `heard()` holds: cross-node routes go live a moment after a SUBACK. */
async function publishUntil(
  sender: MqttClient,
  topic: string,
  payload: string,
  heard: () => boolean,
  what: string,
): Promise<void> {
  await waitUntil(async () => {
    await sender.publishAsync(topic, payload, { qos: 1 });
    return heard();
  }, what);
}

Deno.test("redisAddress: host and port from a redis URL, or a one-line error", () => {
  assert.deepEqual(redisAddress("redis://10.0.0.5:6380"), { host: "10.0.0.5", port: 6380 });
  assert.deepEqual(redisAddress("redis://cache"), { host: "cache", port: 6379 });
  assert.throws(() => redisAddress("http://x:1"), /expected redis:\/\/HOST:PORT/);
  assert.throws(() => redisAddress("redis://x:99999"), /expected redis:\/\/HOST:PORT/);
});

Deno.test({
  name:
    "broker cluster: two aedes nodes on one redis deliver to each other, share retained messages and sessions",
  ignore: REDIS.ignore,
  // ioredis and mqtt.js keep timers between calls; every connection is closed at the end.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const redis = await startRedis(REDIS.require());
    const a = await node(redis);
    const b = await node(redis);
    const clients: MqttClient[] = [];
    try {
      // Across nodes: subscribed on A, published on B.
      const listener = await client(a.url, "listener");
      clients.push(listener);
      const received: string[] = [];
      listener.on("message", (topic, payload) => received.push(`${topic} ${payload}`));
      await listener.subscribeAsync("fleet/+/status", { qos: 1 });
      const talker = await client(b.url, "talker");
      clients.push(talker);
      await publishUntil(
        talker,
        "fleet/dev-1/status",
        "up",
        () => received.includes("fleet/dev-1/status up"),
        "delivery across nodes",
      );

      // Retained on A, found on B.
      await listener.publishAsync("fleet/config", "v2", { qos: 1, retain: true });
      const late = await client(b.url, "late");
      clients.push(late);
      const retained: string[] = [];
      late.on("message", (_topic, payload, packet) => {
        if (packet.retain) retained.push(String(payload));
      });
      await late.subscribeAsync("fleet/config", { qos: 1 });
      await waitUntil(() => retained.includes("v2"), "the retained message on the other node");

      // A persistent session made on A is found on B: its subscription holds there without
      // being made again.
      const device = await client(a.url, "dev-7", false);
      await device.subscribeAsync("jobs/dev-7/notify", { qos: 1 });
      await device.endAsync();
      const back = mqtt.connect(b.url, { clientId: "dev-7", clean: false, reconnectPeriod: 0 });
      clients.push(back);
      const notified: string[] = [];
      back.on("message", (_topic, payload) => notified.push(String(payload)));
      const connack = await withDeadline(
        new Promise<{ sessionPresent: boolean }>((resolve) => back.once("connect", resolve)),
        "dev-7 to reconnect on the other node",
      );
      assert.equal(connack.sessionPresent, true, "its session is there");
      await publishUntil(
        talker,
        "jobs/dev-7/notify",
        "job-1",
        () => notified.includes("job-1"),
        "a notification through the resumed subscription",
      );
    } finally {
      await Promise.all(clients.map((c) => c.endAsync(true)));
      await a.close();
      await b.close();
      await redis.stop();
    }
  },
});
