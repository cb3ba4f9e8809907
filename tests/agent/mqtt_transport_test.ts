/** The agent's MQTT port: no call may keep the agent waiting for ever. */
import assert from "node:assert/strict";
import type { MqttClient } from "mqtt";
import { EventEmitter } from "node:events";
import mqtt from "mqtt";
import { mqttPort } from "../../agent/mqtt_transport.ts";
import { ManualClock } from "../../lib/clock.ts";
import { startCloud } from "../../broker/cloud.ts";

/** A client whose broker never answers (a PUBACK lost with its connection). */
function silentClient(connected: boolean): MqttClient {
  const never = () => new Promise<never>(() => {});
  return Object.assign(new EventEmitter(), {
    connected,
    publishAsync: never,
    subscribeAsync: never,
    unsubscribeAsync: never,
  }) as unknown as MqttClient;
}

Deno.test("mqttPort: a publish, subscribe or unsubscribe nobody answers fails after the timeout", async () => {
  const port = mqttPort(silentClient(true), { timeoutMs: 30 });
  await assert.rejects(port.publish("t", "x", 1), /publish not acknowledged within 30 ms/);
  await assert.rejects(port.subscribe("t", 0), /subscribe not acknowledged within 30 ms/);
  await assert.rejects(port.unsubscribe("t"), /unsubscribe not acknowledged within 30 ms/);
});

Deno.test("mqttPort: each call fails at its own deadline, a later one not with an earlier one; nothing stays on the client", async () => {
  const clock = new ManualClock();
  const client = silentClient(true);
  const port = mqttPort(client, { timeoutMs: 1_000, clock });
  const outcomes: string[] = [];
  const track = (name: string, call: Promise<void>) =>
    call.then(
      () => outcomes.push(`${name} ok`),
      (e: Error) => outcomes.push(`${name}: ${e.message}`),
    );
  const first = track("first", port.publish("t", "1", 1));
  clock.advance(600);
  const second = track("second", port.subscribe("t", 1));
  clock.advance(399);
  await Promise.resolve();
  assert.deepEqual(outcomes, [], "nothing is due yet");
  clock.advance(1);
  await first;
  assert.deepEqual(outcomes, ["first: publish not acknowledged within 1000 ms"]);
  clock.advance(599);
  await Promise.resolve();
  assert.equal(outcomes.length, 1, "the later call still waits");
  clock.advance(1);
  await second;
  assert.deepEqual(outcomes.slice(1), ["second: subscribe not acknowledged within 1000 ms"]);
  assert.equal(client.listenerCount("close"), 0, "no listener left behind");
  assert.equal(clock.pendingTimers, 0, "no timer left behind");
});

Deno.test("mqttPort: a connection that closes under a pending call fails it at once, not at the timeout", async () => {
  const client = silentClient(true);
  const port = mqttPort(client, { timeoutMs: 60_000 });
  const pending = port.publish("t", "x", 1);
  client.emit("close");
  await assert.rejects(pending, /publish: connection closed/);
  assert.equal(client.listenerCount("close"), 0, "no listener left behind");
});

Deno.test("mqttPort: a disconnected client fails at once", async () => {
  const port = mqttPort(silentClient(false), { timeoutMs: 60_000 });
  await assert.rejects(port.publish("t", "x", 0), /not connected/);
});

Deno.test("mqttPort: several topics go in one SUBSCRIBE, and a refused one fails the call naming it", async () => {
  const cloud = await startCloud();
  try {
    const secret = await cloud.provisionThing("dev-1", null);
    const client = await mqtt.connectAsync(cloud.url, {
      clientId: "dev-1",
      username: "dev-1",
      password: secret,
      reconnectPeriod: 0,
    });
    const port = mqttPort(client);
    const sent: string[] = [];
    client.on("packetsend", (packet) => sent.push(packet.cmd));
    await port.subscribe([
      "$aws/things/dev-1/jobs/notify-next",
      "$aws/things/dev-1/jobs/$next/get/+",
    ], 1);
    assert.deepEqual(sent.filter((cmd) => cmd === "subscribe"), ["subscribe"], "one packet");
    await assert.rejects(
      port.subscribe(["$aws/things/dev-1/jobs/+/get/+", "$aws/things/dev-2/jobs/notify-next"], 1),
      /subscription to '\$aws\/things\/dev-2\/jobs\/notify-next' refused/,
    );
    await client.endAsync();
  } finally {
    await cloud.close();
  }
});
