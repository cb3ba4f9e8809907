/**
 * The agent's MQTT port over an mqtt.js client: promise-based publish/subscribe, incoming
 * messages routed to the agent, and the connection's ups and downs turned into suspend/resume.
 *
 * @module
 */

import type { MqttClient } from "mqtt";
import type { MqttPort } from "./ports.ts";
import type { OtaAgent } from "./agent.ts";
import { type Clock, systemClock, type TimerId } from "../lib/clock.ts";

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
export function mqttPort(
  client: MqttClient,
  options: { timeoutMs?: number; clock?: Clock } = {},
): MqttPort {
  const timeoutMs = options.timeoutMs ?? 10_000;
  // Real time by default, whatever the device's clock: a timeout of the connection, not of the
  // simulated world.
  const clock = options.clock ?? systemClock;
  // One timer and one close listener for all of the port's calls, not one of each per call: a
  // device makes a call for every request and status, and a Node-style timer with its listener
  // cost about 2% of a fleet Worker's time. Every call waits the same time, so the oldest one
  // waiting is always the next to expire.
  const waiting = new Set<WaitingCall>();
  let timer: TimerId | undefined;
  let listening = false;
  const stopListening = () => {
    if (listening) client.removeListener("close", onClose);
    listening = false;
  };
  const onClose = () => {
    // A connection that closes under a pending call ends it now, not at the timeout.
    stopListening();
    if (timer !== undefined) clock.clearTimer(timer);
    timer = undefined;
    const calls = [...waiting];
    waiting.clear();
    for (const call of calls) call.fail(new Error(`${call.what}: connection closed`));
  };
  const expire = () => {
    timer = undefined;
    const now = clock.now();
    for (const call of waiting) {
      if (call.deadline > now) {
        timer = clock.setTimer(call.deadline - now, expire);
        return;
      }
      waiting.delete(call);
      call.fail(new Error(`${call.what} not acknowledged within ${timeoutMs} ms`));
    }
    // Nothing waits any more: nothing of the port is left on the client.
    stopListening();
  };
  const settled = async <T>(what: string, work: () => Promise<T>): Promise<T> => {
    if (!client.connected) throw new Error("not connected");
    let call: WaitingCall | undefined;
    const expired = new Promise<never>((_, fail) => {
      call = { what, deadline: clock.now() + timeoutMs, fail };
    });
    waiting.add(call!);
    if (!listening) {
      client.on("close", onClose);
      listening = true;
    }
    // A timer armed for an earlier call stays: at its turn it re-arms for the oldest call left.
    timer ??= clock.setTimer(timeoutMs, expire);
    try {
      return await Promise.race([work(), expired]);
    } finally {
      waiting.delete(call!);
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

/** A call of the port waiting for its acknowledgement. */
interface WaitingCall {
  readonly what: string;
  /** When it fails, in the port's clock's time. */
  readonly deadline: number;
  readonly fail: (error: Error) => void;
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
