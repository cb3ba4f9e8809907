/**
 * The agent's MQTT port over an mqtt.js client: promise-based publish/subscribe, incoming
 * messages routed to the agent, and the connection's ups and downs turned into suspend/resume.
 *
 * @module
 */

import type { MqttClient } from "mqtt";
import type { MqttPort } from "./ports.ts";
import type { OtaAgent } from "./agent.ts";

/**
 * Wraps a connected mqtt.js client. Every call settles within `timeoutMs`: a QoS 1 publish whose
 * PUBACK is lost with its connection would otherwise keep the agent's one-at-a-time mailbox
 * waiting for good, suspend and resume events included.
 *
 * @example
 * ```ts ignore
 * const port = mqttPort(client, { timeoutMs: 10_000 });
 * await port.publish("$aws/things/dev-1/jobs/$next/get", "{}", 1);
 * ```
 */
export function mqttPort(client: MqttClient, options: { timeoutMs?: number } = {}): MqttPort {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const settled = async <T>(what: string, work: () => Promise<T>): Promise<T> => {
    if (!client.connected) throw new Error("not connected");
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onClose: (() => void) | undefined;
    try {
      return await Promise.race([
        work(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${what} not acknowledged within ${timeoutMs} ms`)),
            timeoutMs,
          );
          // A connection that closes under a pending call ends it now, not at the timeout.
          onClose = () => reject(new Error(`${what}: connection closed`));
          client.once("close", onClose);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (onClose) client.removeListener("close", onClose);
    }
  };
  return {
    async publish(topic, payload, qos) {
      await settled(
        "publish",
        () =>
          client.publishAsync(
            topic,
            typeof payload === "string" ? payload : Buffer.from(payload),
            { qos },
          ),
      );
    },
    async subscribe(topics, qos) {
      const list = typeof topics === "string" ? [topics] : [...topics];
      const refusal = (codes: readonly unknown[]) => {
        const at = codes.findIndex((code) => code === 128);
        return at >= 0 ? new Error(`subscription to '${list[at]}' refused`) : null;
      };
      let granted;
      try {
        granted = await settled("subscribe", () => client.subscribeAsync(list, { qos }));
      } catch (error) {
        // mqtt.js fails the whole call on a refusal without saying which topic: the SUBACK does.
        const codes = (error as { packet?: { granted?: unknown[] } }).packet?.granted;
        throw (codes && refusal(codes)) ?? error;
      }
      const refused = refusal(granted.map((g) => g.qos));
      if (refused) throw refused;
    },
    async unsubscribe(topic) {
      await settled("unsubscribe", () => client.unsubscribeAsync(topic));
    },
  };
}

/** A port for a device that cannot reach the network (every call fails). */
export const unreachableMqtt: MqttPort = {
  publish: () => Promise.reject(new Error("no network")),
  subscribe: () => Promise.reject(new Error("no network")),
  unsubscribe: () => Promise.reject(new Error("no network")),
};

/**
 * Routes `client`'s messages to `agent`, suspends it when the connection drops and resumes it
 * when the connection comes back. Returns a function that detaches it.
 */
export function attachAgent(
  client: MqttClient,
  agent: OtaAgent,
  filter?: (topic: string, payload: Uint8Array) => Uint8Array | null,
): () => void {
  let suspended = false;
  const onMessage = (topic: string, payload: Uint8Array) => {
    // A plain Uint8Array view of mqtt.js's Buffer (which a fresh socket read backs and nobody
    // writes again): copying every 4 KiB block here was a quarter of a Worker's allocations.
    const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
    // A filter stands for the radio link: it may damage or lose a message on its way in.
    const delivered = filter ? filter(topic, bytes) : bytes;
    if (delivered) agent.handleMessage(topic, delivered);
  };
  const onDown = () => {
    if (suspended) return;
    suspended = true;
    agent.suspend();
  };
  const onUp = () => {
    if (!suspended) return;
    suspended = false;
    agent.resume();
  };
  client.on("message", onMessage);
  client.on("close", onDown);
  client.on("offline", onDown);
  client.on("connect", onUp);
  return () => {
    client.off("message", onMessage);
    client.off("close", onDown);
    client.off("offline", onDown);
    client.off("connect", onUp);
  };
}
