/**
 * One Worker of the protocol floor (see protocol_clients.ts): its share of bare mqtt.js clients,
 * each replaying a fleet device's update on the wire (protocol_script.ts), connections opened in
 * turns as the fleet's Workers open them (1,024 at a time).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import mqtt, { type MqttClient } from "mqtt";
import type { WireTraffic } from "../agent/device_runtime.ts";
import { Semaphore } from "../lib/concurrency.ts";
import {
  noTraffic,
  type ProtocolScript,
  renamed,
  type ScriptConnection,
} from "./protocol_script.ts";

/** Main -> Worker. */
export interface ProtocolWorkerJob {
  readonly brokerUrl: string;
  readonly things: readonly string[];
  readonly script: ProtocolScript;
}

/** What the Worker's clients carried, summed, and which did not finish. */
export interface ProtocolWorkerTotals extends WireTraffic {
  readonly publishesSent: number;
  readonly publishesReceived: number;
  /** Clients that ended on an error, and the first few reasons. */
  readonly failed: number;
  readonly failures: readonly string[];
}

/** Worker -> main. */
export type ProtocolWorkerReport = { readonly type: "done"; readonly totals: ProtocolWorkerTotals };

const scope = self as unknown as Worker;
/** As in fleet/worker.ts: the broker's listen queue holds 4,096. */
const connectTurns = new Semaphore(1024);

type Counts = {
  -readonly [K in keyof Omit<ProtocolWorkerTotals, "failed" | "failures">]: number;
};

/** A Buffer over the same bytes: mqtt-packet writes payloads with Buffer methods. */
const bufferOf = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);

async function replayConnection(
  url: string,
  thing: string,
  script: ProtocolScript,
  connection: ScriptConnection,
  counts: Counts,
): Promise<void> {
  const from = new TextEncoder().encode(script.thing);
  const to = new TextEncoder().encode(thing);
  const endTurn = await connectTurns.acquire();
  const client: MqttClient = mqtt.connect(url, {
    clientId: thing,
    ...(connection.connect.withUsername ? { username: thing } : {}),
    password: "p".repeat(connection.connect.passwordBytes),
    keepalive: connection.connect.keepalive,
    clean: connection.connect.clean,
    protocolVersion: connection.connect.protocolVersion as 4 | 5,
    reconnectPeriod: 0,
    connectTimeout: 30_000,
    manualConnect: true,
  });
  let received = 0;
  let waiting: { count: number; resolve: () => void } | null = null;
  let failure: Error | null = null;
  let rejectWait: ((error: Error) => void) | null = null;
  client.on("packetsend", (packet) => {
    counts.packetsSent++;
    if (packet.cmd === "publish") counts.publishesSent++;
  });
  client.on("packetreceive", (packet) => {
    counts.packetsReceived++;
    if (packet.cmd === "publish") counts.publishesReceived++;
    if (packet.cmd === "pingresp") return;
    received++;
    if (waiting && received >= waiting.count) {
      const { resolve } = waiting;
      waiting = null;
      resolve();
    }
  });
  client.once("connect", endTurn);
  client.on("close", () => {
    endTurn();
    failure ??= new Error("connection closed");
    rejectWait?.(failure);
  });
  client.on("error", (error) => {
    failure = error;
    rejectWait?.(error);
  });
  const until = (count: number) =>
    received >= count ? Promise.resolve() : new Promise<void>((resolve, reject) => {
      if (failure) return reject(failure);
      waiting = { count, resolve };
      rejectWait = reject;
    });
  client.connect();
  try {
    for (const step of connection.steps) {
      await until(step.afterReceived);
      const action = step.action;
      if (action.kind === "publish") {
        const payload = bufferOf(renamed(action.message.payload, from, to));
        client.publish(action.message.topic.replaceAll(script.thing, thing), payload, {
          qos: action.message.qos,
        });
      } else if (action.kind === "subscribe") {
        client.subscribe(
          action.topics.map((t) => t.topic.replaceAll(script.thing, thing)),
          { qos: action.topics[0]?.qos ?? 0 },
        );
      } else {
        client.unsubscribe(action.topics.map((t) => t.replaceAll(script.thing, thing)));
      }
    }
    await until(connection.receivedAtEnd);
  } finally {
    rejectWait = null;
    const stream = client.stream as { bytesRead?: number; bytesWritten?: number } | undefined;
    // A reset drops the socket without DISCONNECT; a shutdown says goodbye.
    await client.endAsync(connection.end === "drop").catch(() => {});
    counts.bytesSent += stream?.bytesWritten ?? 0;
    counts.bytesReceived += stream?.bytesRead ?? 0;
  }
}

scope.onmessage = async (event: MessageEvent<ProtocolWorkerJob>) => {
  const { brokerUrl, things, script } = event.data;
  const counts: Counts = noTraffic();
  let failed = 0;
  const failures: string[] = [];
  await Promise.all(things.map(async (thing) => {
    try {
      for (const connection of script.connections) {
        await replayConnection(brokerUrl, thing, script, connection, counts);
      }
    } catch (error) {
      failed++;
      if (failures.length < 5) failures.push(`${thing}: ${(error as Error).message}`);
    }
  }));
  scope.postMessage(
    { type: "done", totals: { ...counts, failed, failures } } satisfies ProtocolWorkerReport,
  );
};
