/**
 * The protocol floor's script: one fleet device's MQTT conversation (its `--wire-log`, see
 * fleet/wire_log.ts) turned into what a bare mqtt.js client replays and what a responder answers
 * from memory. Taken from a real fleet run, so the floor does on the wire what a device does and
 * the two cannot drift apart.
 *
 * A client replays the device's own actions (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PUBLISH, the end of
 * each connection) in order, each once it has received as many packets on that connection as the
 * device had when it acted. The responder answers each action with the PUBLISHes the device
 * received between that action and its next one. PUBACKs, SUBACKs and pings are the MQTT
 * libraries' own, as in the fleet; pings depend on time and are left out of the waiting.
 *
 * @example
 * ```ts ignore
 * const script = protocolScript(parseWireLog(await Deno.readTextFile("wire.jsonl")));
 * script.connections.length; // 2: before and after the reboot
 * ```
 *
 * @module
 */
import type { WireRecord } from "../fleet/wire_log.ts";

/** A PUBLISH the responder sends, with the recorded thing's name where the device's goes. */
export interface ScriptMessage {
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly qos: 0 | 1;
}

/** One thing the device did. */
export type ScriptAction =
  | { readonly kind: "subscribe"; readonly topics: readonly { topic: string; qos: 0 | 1 }[] }
  | { readonly kind: "unsubscribe"; readonly topics: readonly string[] }
  | { readonly kind: "publish"; readonly message: ScriptMessage };

/** An action, when the device took it, and what the cloud sent back before its next one. */
export interface ScriptStep {
  readonly action: ScriptAction;
  /** Packets (pings aside) the device had received on this connection before acting. */
  readonly afterReceived: number;
  readonly replies: readonly ScriptMessage[];
}

/** One MQTT connection of the device, from CONNECT to its end. */
export interface ScriptConnection {
  readonly connect: {
    readonly keepalive: number;
    readonly clean: boolean;
    readonly protocolVersion: number;
    readonly passwordBytes: number;
    readonly withUsername: boolean;
  };
  readonly steps: readonly ScriptStep[];
  /** Packets (pings aside) received on this connection before it ended. */
  readonly receivedAtEnd: number;
  /** DISCONNECT sent (`disconnect`) or the socket dropped without one (`drop`: a reset). */
  readonly end: "disconnect" | "drop";
}

/** A device's whole update on the wire. */
export interface ProtocolScript {
  /** The thing whose log this was: its name is replaced by each client's own. */
  readonly thing: string;
  readonly connections: readonly ScriptConnection[];
  /** What the recorded device's connections carried (pings included), to check a replay by. */
  readonly recorded: Readonly<WireCounts>;
}

const qosOf = (value: unknown): 0 | 1 => value === 1 ? 1 : 0;

/** What a connection carried, counted from zero: the recorded device's and each client's. */
export interface WireCounts {
  packetsSent: number;
  packetsReceived: number;
  bytesSent: number;
  bytesReceived: number;
  publishesSent: number;
  publishesReceived: number;
}

/** Counts at zero. */
export function noTraffic(): WireCounts {
  return {
    packetsSent: 0,
    packetsReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    publishesSent: 0,
    publishesReceived: 0,
  };
}

/**
 * Builds the script from one thing's records, in the order they were logged. Throws, saying
 * why, on a log it cannot replay (no CONNECT first, QoS 2, a PUBLISH before any action).
 */
export function protocolScript(records: readonly WireRecord[]): ProtocolScript {
  const thing = records[0]?.thing;
  if (thing === undefined) throw new Error("the wire log is empty");
  const connections: ScriptConnection[] = [];
  let current: {
    connect: ScriptConnection["connect"];
    steps: { action: ScriptAction; afterReceived: number; replies: ScriptMessage[] }[];
    received: number;
    end: "disconnect" | "drop";
  } | null = null;
  const recorded = noTraffic();
  const close = () => {
    if (!current) return;
    connections.push({
      connect: current.connect,
      steps: current.steps,
      receivedAtEnd: current.received,
      end: current.end,
    });
    current = null;
  };
  for (const [index, record] of records.entries()) {
    const where = `wire log record ${index + 1} (${record.direction} ${record.cmd})`;
    if (record.thing !== thing) throw new Error(`${where}: another thing, ${record.thing}`);
    if (record.qos === 2) throw new Error(`${where}: QoS 2 is not replayed`);
    if (record.direction === "sent") {
      recorded.packetsSent++;
      recorded.bytesSent += record.bytes;
    } else {
      recorded.packetsReceived++;
      recorded.bytesReceived += record.bytes;
    }
    if (record.cmd === "publish") {
      if (record.direction === "sent") recorded.publishesSent++;
      else recorded.publishesReceived++;
    }
    if (record.direction === "sent" && record.cmd === "connect") {
      close();
      const c = record.connect;
      if (!c) throw new Error(`${where}: no connect options`);
      current = {
        connect: {
          keepalive: c.keepalive,
          clean: c.clean,
          protocolVersion: c.protocolVersion,
          passwordBytes: c.passwordBytes,
          withUsername: c.username !== undefined,
        },
        steps: [],
        received: 0,
        end: "drop",
      };
      continue;
    }
    if (!current) throw new Error(`${where}: before the first CONNECT`);
    const connection = current as NonNullable<typeof current>;
    if (record.direction === "received") {
      if (record.cmd === "pingresp") continue;
      connection.received++;
      if (record.cmd === "publish") {
        const last = connection.steps[connection.steps.length - 1];
        if (!last) throw new Error(`${where}: a PUBLISH before the device subscribed`);
        last.replies.push(messageOf(record, where));
      }
      continue;
    }
    const action = actionOf(record, where);
    if (action === "disconnect") connection.end = "disconnect";
    else if (action) {
      connection.steps.push({ action, afterReceived: connection.received, replies: [] });
    }
  }
  close();
  return { thing, connections, recorded };
}

function messageOf(record: WireRecord, where: string): ScriptMessage {
  if (record.topic === undefined || record.payload === undefined) {
    throw new Error(`${where}: a PUBLISH without topic or payload`);
  }
  return {
    topic: record.topic,
    payload: Uint8Array.fromBase64(record.payload),
    qos: qosOf(record.qos),
  };
}

/** A sent packet as an action; null for the ones the MQTT library sends by itself. */
function actionOf(record: WireRecord, where: string): ScriptAction | "disconnect" | null {
  switch (record.cmd) {
    case "publish":
      return { kind: "publish", message: messageOf(record, where) };
    case "subscribe":
      return {
        kind: "subscribe",
        topics: (record.subscriptions ?? []).map((s) => ({ topic: s.topic, qos: qosOf(s.qos) })),
      };
    case "unsubscribe":
      return { kind: "unsubscribe", topics: [...(record.unsubscriptions ?? [])] };
    case "disconnect":
      return "disconnect";
    default:
      // puback, pingreq, pubrec...: answers the client library makes on its own.
      return null;
  }
}

/**
 * `bytes` with every occurrence of `from` replaced by `to` (same length: thing names of one
 * run are); the same array when `from` does not occur.
 */
export function renamed(bytes: Uint8Array, from: Uint8Array, to: Uint8Array): Uint8Array {
  if (from.length !== to.length) throw new Error("renamed: names of different lengths");
  let copy: Uint8Array | null = null;
  for (let i = indexOf(bytes, from, 0); i >= 0; i = indexOf(bytes, from, i + from.length)) {
    copy ??= bytes.slice();
    copy.set(to, i);
  }
  return copy ?? bytes;
}

/** Whether `needle` occurs in `haystack`. */
export function includesBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  return indexOf(haystack, needle, 0) >= 0;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0];
  outer: for (let i = from; i + needle.length <= haystack.length; i++) {
    if (haystack[i] !== first) continue;
    for (let j = 1; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Every action of the script in order, across connections: what a responder follows. */
export function scriptTriggers(script: ProtocolScript): readonly ScriptStep[] {
  return script.connections.flatMap((c) => c.steps);
}
