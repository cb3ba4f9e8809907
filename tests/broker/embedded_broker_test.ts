/**
 * The embedded broker reads every packet a client sends exactly once, even when a connection
 * hands over its next bytes synchronously from inside a read (as Deno's sockets can): aedes reads
 * them from the callback that ends the previous packet, and a publish that ends synchronously
 * made that read re-enter the packet parser (the packet came out twice, the bytes after it were
 * lost). The connection here is scripted so that the SUBSCRIBE sent after a QoS 0 PUBLISH arrives
 * while the parser is still emitting that PUBLISH.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import type { AedesPublishPacket, AuthorizePublishHandler } from "aedes";
import { startEmbeddedBroker } from "../../broker/embedded.ts";
import { waitUntil } from "../helpers/wait.ts";

/** MQTT 3.1.1 packets, by hand (only what this test sends). */
const utf8 = (text: string) => {
  const bytes = new TextEncoder().encode(text);
  return [bytes.length >> 8, bytes.length & 0xff, ...bytes];
};
const packet = (type: number, body: number[]) => Uint8Array.from([type, body.length, ...body]);
const connectPacket = (clientId: string) =>
  packet(0x10, [...utf8("MQTT"), 4, 0x02, 0, 60, ...utf8(clientId)]);
const publishPacket = (topic: string, payload: string) =>
  packet(0x30, [...utf8(topic), ...new TextEncoder().encode(payload)]);
const subscribePacket = (messageId: number, topic: string) =>
  packet(0x82, [messageId >> 8, messageId & 0xff, ...utf8(topic), 0]);

/**
 * A client connection whose bytes the test hands over (`send`): they land in the stream's buffer
 * at once when the broker is waiting for data, else on its next read.
 */
class ScriptedConnection extends Duplex {
  readonly received: number[] = [];
  #held: Uint8Array[] = [];
  #readWaiting = false;

  send(bytes: Uint8Array): void {
    if (this.#readWaiting) {
      this.#readWaiting = false;
      this.push(Buffer.from(bytes));
    } else {
      this.#held.push(bytes);
    }
  }

  override _read(): void {
    const next = this.#held.shift();
    if (next) this.push(Buffer.from(next));
    else this.#readWaiting = true;
  }

  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    this.received.push(...chunk);
    callback();
  }

  /** Whether the broker wrote `bytes` somewhere in what it sent. */
  hasReceived(bytes: number[]): boolean {
    const text = this.received.join(",");
    return text.includes(bytes.join(","));
  }
}

Deno.test("embedded broker: a SUBSCRIBE read from inside a synchronously ended PUBLISH is answered, and the PUBLISH is handled once", async () => {
  const connection = new ScriptedConnection();
  const topic = "dev-1/shadow/update";
  const authorizePublish: AuthorizePublishHandler = (_client, packet, done) => {
    // The parser is emitting this PUBLISH now: the SUBSCRIBE lands in the socket's buffer while
    // it does, so the read made when the PUBLISH ends finds it.
    if (packet.topic === topic) connection.send(subscribePacket(7, "dev-1/notify"));
    done(null);
  };
  const embedded = await startEmbeddedBroker({ aedes: { authorizePublish } });
  const published: string[] = [];
  embedded.broker.on("publish", (p: AedesPublishPacket, client: unknown) => {
    if (client) published.push(p.topic);
  });
  try {
    embedded.broker.handle(connection as never);
    connection.send(connectPacket("dev-1"));
    await waitUntil(() => connection.hasReceived([0x20, 0x02, 0x00, 0x00]), "the CONNACK");
    connection.send(publishPacket(topic, "{}"));
    await waitUntil(
      () => connection.hasReceived([0x90, 0x03, 0x00, 0x07, 0x00]),
      `the SUBACK of the SUBSCRIBE that followed the PUBLISH (got ${connection.received}, published ${published})`,
      5_000,
    );
    assert.deepEqual(published, [topic], "the PUBLISH was handled exactly once");
  } finally {
    connection.destroy();
    await embedded.close();
  }
});

Deno.test("embedded broker: a burst of 100,000 service publishes, most to topics nobody follows, completes without exhausting the stack", async () => {
  const embedded = await startEmbeddedBroker();
  try {
    const { default: mqtt } = await import("mqtt");
    const client = await mqtt.connectAsync(embedded.url, {
      clientId: "watcher",
      reconnectPeriod: 0,
    });
    let received = 0;
    client.on("message", () => received++);
    await client.subscribeAsync("burst/followed", { qos: 0 });
    const burst = 100_000;
    let done = 0;
    for (let i = 0; i < burst; i++) {
      embedded.broker.publish({
        cmd: "publish",
        // The first thousand keep deliveries in flight; the rest, to topics nobody follows,
        // complete at once (past aedes' default cap they queued and unwound recursively).
        topic: i < 1000 ? "burst/followed" : `burst/nobody/${i % 7}`,
        payload: Buffer.from("x"),
        qos: 0,
        retain: false,
        dup: false,
      }, () => done++);
    }
    await waitUntil(() => done === burst && received === 1000, "every publish completed");
    await client.endAsync();
  } finally {
    await embedded.close();
  }
});
