/** The cloud's way out through aedes: a job reply is not lost to the stream blocks after it. */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { aedesPublisher, topicMatches } from "../../broker/aedes_publisher.ts";
import { startEmbeddedBroker } from "../../broker/embedded.ts";
import { waitUntil } from "../helpers/wait.ts";

const JOBS = "$aws/things/dev-1/jobs/+/update/+";
const DATA = "$aws/things/dev-1/streams/s1/data/cbor";

Deno.test("aedes publisher: a QoS 1 reply followed at once by QoS 0 blocks to the same client arrives", async () => {
  const embedded = await startEmbeddedBroker();
  const publisher = aedesPublisher(embedded.broker);
  const client = await mqtt.connectAsync(embedded.url, { clientId: "dev-1", reconnectPeriod: 0 });
  try {
    const got: string[] = [];
    client.on("message", (topic, payload) => got.push(`${topic.split("/").at(-1)} ${payload}`));
    await client.subscribeAsync([JOBS], { qos: 1 });
    await client.subscribeAsync([DATA], { qos: 0 });
    // What the job and stream services do when a device's status update and its next stream
    // request meet: the reply (QoS 1) waits in aedes for a persistence lookup, the blocks do not.
    // Through the broker, aedes would take the reply for a duplicate of a later message and drop
    // it (aedes issue #994).
    publisher.together!("dev-1", () => {
      void publisher.publish("$aws/things/dev-1/jobs/j1/update/accepted", "reply", 1);
      for (let i = 0; i < 8; i++) void publisher.publishTo!("dev-1", DATA, `block-${i}`, 0);
    });
    // A last message after everything else: once it is in, nothing earlier is still on its way.
    await new Promise((resolve) => setImmediate(resolve));
    await publisher.publish("$aws/things/dev-1/jobs/j1/update/rejected", "marker", 1);
    await waitUntil(() => got.includes("rejected marker"), "the marker");
    assert.ok(got.includes("accepted reply"), `the reply was lost: ${got.join(", ")}`);
    assert.equal(got.filter((m) => m.startsWith("cbor block-")).length, 8);
  } finally {
    await client.endAsync();
    await embedded.close();
  }
});

/**
 * A broker with the device `dev-1` and a watcher subscribed to everything of dev-1, each with the
 * payloads it received.
 */
async function deviceAndWatcher() {
  const embedded = await startEmbeddedBroker();
  const publisher = aedesPublisher(embedded.broker);
  const client = await mqtt.connectAsync(embedded.url, { clientId: "dev-1", reconnectPeriod: 0 });
  const watcher = await mqtt.connectAsync(embedded.url, {
    clientId: "watcher",
    reconnectPeriod: 0,
  });
  const own: string[] = [];
  const watched: string[] = [];
  client.on("message", (_topic, payload) => own.push(String(payload)));
  watcher.on("message", (_topic, payload) => watched.push(String(payload)));
  await watcher.subscribeAsync(["$aws/things/dev-1/#"], { qos: 1 });
  return {
    publisher,
    client,
    own,
    watched,
    async close() {
      await client.endAsync();
      await watcher.endAsync();
      await embedded.close();
    },
  };
}

Deno.test("aedes publisher: publishTo goes through the broker for QoS 1, unknown clients and unsubscribed topics", async () => {
  const { publisher, client, own, watched, close } = await deviceAndWatcher();
  try {
    await client.subscribeAsync([DATA], { qos: 1 });
    // Straight to dev-1 only: the watcher, subscribed too, does not see it.
    await publisher.publishTo!("dev-1", DATA, "direct", 0);
    // Through the broker: everyone subscribed gets it.
    await publisher.publishTo!("dev-1", DATA, "qos1", 1);
    await publisher.publishTo!("dev-9", DATA, "unknown client", 0);
    await publisher.publishTo!("dev-1", "$aws/things/dev-1/other", "not subscribed", 0);
    await waitUntil(() => watched.length === 3 && own.length === 3, "the messages");
    assert.deepEqual(own.sort(), ["direct", "qos1", "unknown client"]);
    assert.deepEqual(watched.sort(), ["not subscribed", "qos1", "unknown client"]);
  } finally {
    await close();
  }
});

Deno.test("topicMatches: + is one level, # the rest, $ topics literal", () => {
  assert.ok(topicMatches("$aws/things/+/streams/#", "$aws/things/d/streams/s/data/cbor"));
  assert.ok(topicMatches("a/#", "a"));
  assert.ok(topicMatches("a/+/c", "a/b/c"));
  assert.ok(!topicMatches("a/+/c", "a/b/d"));
  assert.ok(!topicMatches("a/+", "a/b/c"));
  assert.ok(!topicMatches("a/b", "a"));
});

Deno.test("aedes publisher: publishTo sees a subscription made or dropped after it last looked", async () => {
  const { publisher, client, own, watched, close } = await deviceAndWatcher();
  try {
    // Not subscribed yet: through the broker (the watcher sees it).
    await publisher.publishTo!("dev-1", DATA, "before", 0);
    await client.subscribeAsync([DATA], { qos: 0 });
    // Subscribed now: straight to the client (the watcher does not see it).
    await publisher.publishTo!("dev-1", DATA, "after", 0);
    await client.unsubscribeAsync(DATA);
    // Unsubscribed: through the broker again, so not to the client.
    await publisher.publishTo!("dev-1", DATA, "gone", 0);
    await publisher.publish("$aws/things/dev-1/jobs/marker", "marker", 1);
    await waitUntil(() => watched.includes("marker"), "the marker");
    await waitUntil(() => own.includes("after"), "the direct block");
    assert.deepEqual(watched, ["before", "gone", "marker"]);
    assert.deepEqual(own, ["after"]);
  } finally {
    await close();
  }
});
