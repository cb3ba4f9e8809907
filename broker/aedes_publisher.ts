/**
 * How the cloud's services publish from inside aedes: to subscribers through the broker, and a
 * stream's blocks straight to the one client that asked, past aedes' per-broker duplicate check.
 *
 * Why past it: aedes numbers every message it publishes and drops, for each client, a message
 * numbered lower than the last one it delivered there, to filter copies of one message that
 * reach a client twice. A QoS 1 message waits for a persistence lookup (offline queues) before it
 * is delivered, a QoS 0 one does not, so a QoS 0 message published after a QoS 1 one to the same
 * client overtakes it, and the QoS 1 message is then dropped as a duplicate: a job reply lost
 * whenever the device's stream blocks went out in that window (aedes issue #994, open; with
 * Redis persistence in a cluster the window is a network round trip). Blocks handed to the
 * client unnumbered neither are checked nor move the client's mark.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Aedes, AedesPublishPacket, Client } from "aedes";
import { writeTogether } from "./embedded.ts";
import type { Publisher } from "./stream_service.ts";

/**
 * A Buffer over the same bytes, made once per array: the stream service publishes each cached
 * block message to thousands of devices, and a fresh view per publish was a tenth of what the
 * broker allocated at 10,000 devices.
 */
export function bufferOf(payload: Uint8Array): Buffer {
  let view = bufferViews.get(payload);
  if (!view) {
    view = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    bufferViews.set(payload, view);
  }
  return view;
}

const bufferViews = new WeakMap<Uint8Array, Buffer>();

/** aedes' QoS 0 delivery to one client (an instance field of its Client, not in its types). */
type DeliverQoS0 = (packet: AedesPublishPacket, done: () => void) => void;

/**
 * Publishes from inside aedes; `together` writes a burst to one client in one socket write
 * ({@linkcode writeTogether}): a request's 8 blocks leave in one writev instead of 8.
 * `publishTo` hands a QoS 0 message to a client connected here and subscribed to its topic
 * directly (no routing, no duplicate check: see the module's note); anything else is published.
 *
 * @example
 * ```ts ignore
 * const publisher = aedesPublisher(broker);
 * await publisher.publish("$aws/things/dev-1/jobs/notify-next", "{}", 1);
 * ```
 */
export function aedesPublisher(broker: Aedes): Publisher {
  // Connected clients by id (a device's id is its thing name), from aedes' documented events.
  const clients = new Map<string, Client>();
  broker.on("client", (client) => clients.set(client.id, client));
  // Whether a client is subscribed to the topic it was last sent blocks on: asked for every block
  // (a stream's blocks share one topic), answered again only after its subscriptions change.
  const lastTopic = new WeakMap<Client, { topic: string; subscribed: boolean }>();
  const forget = (_subscriptions: unknown, client: Client) => lastTopic.delete(client);
  broker.on("subscribe", forget);
  broker.on("unsubscribe", forget);
  const subscribed = (client: Client, topic: string) => {
    const known = lastTopic.get(client);
    if (known?.topic === topic) return known.subscribed;
    const answer = subscribedTo(client, topic);
    lastTopic.set(client, { topic, subscribed: answer });
    return answer;
  };
  broker.on("clientDisconnect", (client) => {
    // A takeover (same id, new connection): whichever of its events comes first, the newer stays.
    if (clients.get(client.id) === client) clients.delete(client.id);
  });
  const packetOf = (topic: string, payload: Uint8Array | string, qos: 0 | 1) =>
    ({
      cmd: "publish",
      topic,
      payload: typeof payload === "string" ? Buffer.from(payload) : bufferOf(payload),
      qos,
      retain: false,
      dup: false,
    }) as unknown as AedesPublishPacket;
  const publish = (topic: string, payload: Uint8Array | string, qos: 0 | 1) =>
    new Promise<void>((resolve, reject) => {
      broker.publish(
        packetOf(topic, payload, qos),
        (error?: Error) => (error ? reject(error) : resolve()),
      );
    });
  return {
    together(clientId, handOver) {
      const conn = clients.get(clientId)?.conn;
      if (conn) writeTogether(conn, handOver);
      else handOver();
    },
    publish,
    publishTo(clientId: string, topic: string, payload: Uint8Array | string, qos: 0 | 1) {
      const client = clients.get(clientId);
      const deliver0 = (client as unknown as { deliver0?: DeliverQoS0 } | undefined)?.deliver0;
      if (qos !== 0 || !client || !deliver0 || !subscribed(client, topic)) {
        return publish(topic, payload, qos);
      }
      return new Promise<void>((resolve) => deliver0(packetOf(topic, payload, 0), resolve));
    },
  };
}

/** Whether one of the client's subscription filters matches `topic` (MQTT wildcards). */
function subscribedTo(client: Client, topic: string): boolean {
  const filters = Object.keys((client as unknown as { subscriptions: object }).subscriptions);
  return filters.some((filter) => topicMatches(filter, topic));
}

/**
 * Whether an MQTT topic filter matches a topic name (`+` one level, `#` the rest).
 *
 * @example
 * ```ts
 * import { topicMatches } from "./aedes_publisher.ts";
 * topicMatches("$aws/things/+/streams/#", "$aws/things/d/streams/s/data/cbor"); // true
 * ```
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (filter === topic) return true;
  const wanted = filter.split("/");
  const levels = topic.split("/");
  for (let i = 0; i < wanted.length; i++) {
    if (wanted[i] === "#") return i < levels.length || i === levels.length;
    if (i >= levels.length) return false;
    if (wanted[i] !== "+" && wanted[i] !== levels[i]) return false;
  }
  return wanted.length === levels.length;
}
