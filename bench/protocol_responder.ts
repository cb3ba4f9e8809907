/**
 * The broker side of the protocol floor: the same aedes the cloud runs, and instead of the cloud a
 * responder that answers every client action with the PUBLISHes the recorded device received
 * after the same action (see protocol_script.ts), from memory: no store, no job service, no
 * signing, no login check. Each client is followed through the script by its own cursor; a
 * client's thing name takes the recorded one's place in topics and payloads.
 *
 * Runs in the caller's process or as its own (`deno run -A bench/protocol_responder.ts
 * --wire-log FILE`, printing one JSON line with its address and serving until killed), as the
 * cloud's broker runs in its own process in the benchmark.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { AedesPublishPacket, Client } from "aedes";
import { aedesPublisher } from "../broker/aedes_publisher.ts";
import { startEmbeddedBroker } from "../broker/embedded.ts";
import { parseWireLog } from "../fleet/wire_log.ts";
import {
  includesBytes,
  type ProtocolScript,
  protocolScript,
  renamed,
  type ScriptAction,
} from "./protocol_script.ts";

/** A running responder. */
export interface Responder {
  readonly url: string;
  /** Client actions no step of the script matched (a replay that went astray). */
  readonly unmatched: () => number;
  close(): Promise<void>;
}

/** A reply, as sent: the same bytes for every client when no client's name is in it. */
interface PreparedReply {
  readonly topic: string;
  readonly qos: 0 | 1;
  readonly shared: Uint8Array | null;
  readonly payload: Uint8Array;
}

/**
 * Starts aedes on a free port of 127.0.0.1 answering clients from `script`.
 *
 * @example
 * ```ts ignore
 * const responder = await startResponder(script);
 * // ... clients replay the script against responder.url ...
 * await responder.close();
 * ```
 */
export async function startResponder(
  script: ProtocolScript,
  options: { readonly port?: number } = {},
): Promise<Responder> {
  const recordedName = new TextEncoder().encode(script.thing);
  // Each connection's steps: a client's n-th connection follows the script's n-th.
  const connections = script.connections.map((connection) =>
    connection.steps.map((step) => ({
      action: step.action,
      replies: step.replies.map((m): PreparedReply => ({
        topic: m.topic,
        qos: m.qos,
        payload: m.payload,
        shared: includesBytes(m.payload, recordedName) ? null : m.payload,
      })),
    }))
  );
  /** Per thing: its latest connection, which of the script's it is, and the next step there. */
  const followed = new Map<string, { client: Client; connection: number; next: number }>();
  let unmatched = 0;
  // Login, ACLs, everything allowed: the floor measures the protocol, not the cloud's checks.
  const embedded = await startEmbeddedBroker({ ...(options.port ? { port: options.port } : {}) });
  const broker = embedded.broker;
  // The cloud's own way out: QoS 1 through the broker, QoS 0 straight to the client.
  const publisher = aedesPublisher(broker);
  broker.on("client", (client) => {
    const before = followed.get(client.id);
    followed.set(client.id, {
      client,
      connection: before ? before.connection + 1 : 0,
      next: 0,
    });
  });
  const answer = (client: Client, matches: (action: ScriptAction) => boolean) => {
    const thing = client.id;
    const state = followed.get(thing);
    // aedes also reports the subscriptions a closing connection loses as unsubscribes: only the
    // client's latest connection is followed.
    if (!state || state.client !== client || (client as { closed?: boolean }).closed) return;
    const steps = connections[state.connection] ?? [];
    let at = state.next;
    while (at < steps.length && !matches(steps[at]!.action)) at++;
    const trigger = steps[at];
    if (!trigger) {
      unmatched++;
      return;
    }
    state.next = at + 1;
    if (trigger.replies.length === 0) return;
    const name = new TextEncoder().encode(thing);
    // As the cloud's services do: a step's answers handed over at once, in one socket write.
    publisher.together!(thing, () => {
      for (const reply of trigger.replies) {
        void publisher.publishTo!(
          thing,
          reply.topic.replaceAll(script.thing, thing),
          reply.shared ?? renamed(reply.payload, recordedName, name),
          reply.qos,
        );
      }
    });
  };
  const topicOf = (client: Client, topic: string) => topic.replaceAll(client.id, script.thing);
  broker.on("publish", (packet: AedesPublishPacket, client: Client | null) => {
    if (!client) return;
    const topic = topicOf(client, packet.topic);
    answer(client, (a) => a.kind === "publish" && a.message.topic === topic);
  });
  broker.on("subscribe", (subscriptions, client) => {
    const first = subscriptions[0] && topicOf(client, subscriptions[0].topic);
    answer(client, (a) => a.kind === "subscribe" && a.topics[0]?.topic === first);
  });
  broker.on("unsubscribe", (unsubscriptions, client) => {
    const first = unsubscriptions[0] !== undefined && topicOf(client, unsubscriptions[0]);
    answer(client, (a) => a.kind === "unsubscribe" && a.topics[0] === first);
  });
  return {
    url: embedded.url,
    unmatched: () => unmatched,
    close: () => embedded.close(),
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: { "wire-log": { type: "string" }, port: { type: "string" } },
  });
  if (!values["wire-log"]) {
    console.error("Usage: protocol_responder.ts --wire-log FILE [--port N]");
    Deno.exit(2);
  }
  let script: ProtocolScript;
  try {
    script = protocolScript(parseWireLog(await Deno.readTextFile(values["wire-log"])));
  } catch (error) {
    console.error(`protocol_responder: ${(error as Error).message}`);
    Deno.exit(1);
  }
  const responder = await startResponder(script, { port: Number(values.port ?? 0) });
  console.log(JSON.stringify({ mqtt: responder.url }));
  const stop = async () => {
    await responder.close();
    console.log(JSON.stringify({ unmatched: responder.unmatched() }));
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
