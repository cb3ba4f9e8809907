/** The agent's MQTT port: no call may keep the agent waiting for ever. */
import assert from "node:assert/strict";
import type { MqttClient } from "mqtt";
import { EventEmitter } from "node:events";
import { mqttPort } from "../../agent/mqtt_transport.ts";

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
