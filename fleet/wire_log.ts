/**
 * A device's MQTT conversation as `deno task fleet --wire-log FILE` writes it: one JSON object
 * per packet the device sent or received, in order, with its size on the wire. What it shows is
 * what the device's mqtt.js client wrote and parsed, so a user sees exactly what an update costs
 * on the link, and the benchmark's protocol floor replays it (bench/protocol_script.ts).
 * Secrets stay out: a CONNECT's password is written as its length only.
 *
 * @example
 * ```ts
 * import { parseWireLog, wireRecord } from "./wire_log.ts";
 *
 * const record = wireRecord("dev-00001", "sent", {
 *   cmd: "publish", topic: "t", payload: new TextEncoder().encode("hi"), qos: 0,
 *   retain: false, dup: false,
 * }, 1.5);
 * record.bytes; // 7: the fixed header (2), the topic (3), the payload (2)
 * parseWireLog(JSON.stringify(record)).length; // 1
 * ```
 *
 * @module
 */
import { Buffer } from "node:buffer";
import mqttPacket from "mqtt-packet";

/** Which way a packet went, seen from the device. */
export type WireDirection = "sent" | "received";

/** One packet. Fields beyond `cmd` and `bytes` are there for the packets that carry them. */
export interface WireRecord {
  /** Seconds since the run started. */
  readonly seconds: number;
  readonly thing: string;
  readonly direction: WireDirection;
  /** MQTT packet type as mqtt-packet names it: connect, connack, publish, puback, ... */
  readonly cmd: string;
  /** The whole packet's size on the wire: fixed header, variable header and payload. */
  readonly bytes: number;
  readonly topic?: string;
  readonly qos?: number;
  readonly retain?: boolean;
  readonly messageId?: number;
  /** A PUBLISH's payload, base64. */
  readonly payload?: string;
  readonly subscriptions?: readonly { readonly topic: string; readonly qos: number }[];
  readonly unsubscriptions?: readonly string[];
  readonly granted?: readonly number[];
  readonly connect?: {
    readonly clientId: string;
    readonly username?: string;
    /** The password's length in bytes; the password itself is never written. */
    readonly passwordBytes: number;
    readonly keepalive: number;
    readonly clean: boolean;
    readonly protocolVersion: number;
  };
  readonly returnCode?: number;
  readonly sessionPresent?: boolean;
}

/** The parts of an mqtt-packet object this log reads (mqtt.js' `packetsend` / `packetreceive`). */
export interface MqttPacketLike {
  readonly cmd: string;
  readonly [field: string]: unknown;
}

const toBytes = (value: unknown): Uint8Array | null =>
  value instanceof Uint8Array
    ? value
    : typeof value === "string"
    ? new TextEncoder().encode(value)
    : null;

/** The size of `packet` on the wire, as mqtt-packet writes it. */
export function wireBytes(packet: MqttPacketLike, protocolVersion = 4): number {
  // mqtt-packet copies payloads with Buffer methods: a plain Uint8Array becomes a Buffer view.
  const payload = packet.payload;
  const generatable = payload instanceof Uint8Array && !Buffer.isBuffer(payload)
    ? { ...packet, payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) }
    : packet;
  return mqttPacket.generate(generatable as unknown as mqttPacket.Packet, { protocolVersion })
    .length;
}

/**
 * One packet as a log record: the fields this log knows, and the packet's size as mqtt-packet
 * writes it (which throws on a packet it could not write: mqtt.js' packets it wrote or parsed).
 */
export function wireRecord(
  thing: string,
  direction: WireDirection,
  packet: MqttPacketLike,
  seconds: number,
  protocolVersion = 4,
): WireRecord {
  const p = packet as Record<string, unknown>;
  const fields: Record<string, unknown> = {
    seconds: Math.round(seconds * 1000) / 1000,
    thing,
    direction,
    cmd: packet.cmd,
    bytes: wireBytes(packet, protocolVersion),
  };
  if (typeof p.topic === "string") fields.topic = p.topic;
  if (typeof p.qos === "number") fields.qos = p.qos;
  if (typeof p.retain === "boolean" && packet.cmd === "publish") fields.retain = p.retain;
  if (typeof p.messageId === "number") fields.messageId = p.messageId;
  if (packet.cmd === "publish") {
    fields.payload = (toBytes(p.payload) ?? new Uint8Array()).toBase64();
  }
  if (Array.isArray(p.subscriptions)) {
    fields.subscriptions = (p.subscriptions as { topic: string; qos: number }[]).map((s) => ({
      topic: s.topic,
      qos: s.qos,
    }));
  }
  if (Array.isArray(p.unsubscriptions)) fields.unsubscriptions = [...p.unsubscriptions];
  if (Array.isArray(p.granted)) fields.granted = [...p.granted];
  if (packet.cmd === "connect") {
    fields.connect = {
      clientId: String(p.clientId ?? ""),
      ...(typeof p.username === "string" ? { username: p.username } : {}),
      passwordBytes: toBytes(p.password)?.length ?? 0,
      keepalive: Number(p.keepalive ?? 0),
      clean: p.clean !== false,
      protocolVersion: Number(p.protocolVersion ?? 4),
    };
  }
  if (typeof p.returnCode === "number") fields.returnCode = p.returnCode;
  if (typeof p.sessionPresent === "boolean") fields.sessionPresent = p.sessionPresent;
  return fields as unknown as WireRecord;
}

/**
 * Reads a wire log: one record per non-empty line. Throws on the first line that is not a record,
 * naming the line.
 */
export function parseWireLog(text: string): WireRecord[] {
  const records: WireRecord[] = [];
  for (const [index, line] of text.split("\n").entries()) {
    if (line.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new Error(`wire log line ${index + 1}: not JSON`);
    }
    const r = value as Partial<WireRecord> | null;
    if (
      typeof r !== "object" || r === null || typeof r.thing !== "string" ||
      (r.direction !== "sent" && r.direction !== "received") || typeof r.cmd !== "string" ||
      typeof r.bytes !== "number" || typeof r.seconds !== "number"
    ) {
      throw new Error(
        `wire log line ${index + 1}: expected seconds, thing, direction, cmd and bytes`,
      );
    }
    records.push(r as WireRecord);
  }
  return records;
}
