/** The protocol floor's script: one device's wire log turned into actions, waits and replies. */
import assert from "node:assert/strict";
import { protocolScript, renamed } from "../../bench/protocol_script.ts";
import { parseWireLog, wireBytes, type WireRecord, wireRecord } from "../../fleet/wire_log.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
let clock = 0;
const sent = (packet: Record<string, unknown> & { cmd: string }) =>
  wireRecord("dev-00007", "sent", packet, clock++);
const received = (packet: Record<string, unknown> & { cmd: string }) =>
  wireRecord("dev-00007", "received", packet, clock++);
const connect = () =>
  sent({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: 4,
    clientId: "dev-00007",
    username: "dev-00007",
    password: "a-secret-of-32-bytes-for-testing",
    keepalive: 60,
    clean: true,
  });
const publish = (topic: string, payload: string, qos = 0, messageId?: number) => ({
  cmd: "publish",
  topic,
  payload: bytes(payload),
  qos,
  retain: false,
  dup: false,
  ...(messageId !== undefined ? { messageId } : {}),
});

/** A device's update in small: connect, subscribe, ask, get a reply and two blocks, reboot. */
function update(): WireRecord[] {
  return [
    connect(),
    received({ cmd: "connack", returnCode: 0, sessionPresent: false }),
    sent({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "jobs/dev-00007/+", qos: 1 }],
    }),
    received({ cmd: "suback", messageId: 1, granted: [1] }),
    sent(publish("jobs/dev-00007/get", "{}", 1, 2)),
    received({ cmd: "puback", messageId: 2 }),
    received(publish("jobs/dev-00007/accepted", '{"thing":"dev-00007"}', 1, 9)),
    sent({ cmd: "puback", messageId: 9 }),
    received({ cmd: "pingresp" }),
    sent(publish("streams/dev-00007/get", "2")),
    received(publish("streams/dev-00007/data", "block-1")),
    received(publish("streams/dev-00007/data", "block-2")),
    // the reset: no DISCONNECT, a new connection
    connect(),
    received({ cmd: "connack", returnCode: 0, sessionPresent: false }),
    sent(publish("jobs/dev-00007/update", "SUCCEEDED", 1, 1)),
    received({ cmd: "puback", messageId: 1 }),
    sent({ cmd: "disconnect" }),
  ];
}

Deno.test("protocol script: actions in order, each waiting for what the device had received", () => {
  const script = protocolScript(update());
  assert.equal(script.thing, "dev-00007");
  assert.equal(script.connections.length, 2);
  const [first, second] = script.connections;
  assert.deepEqual(first!.connect, {
    keepalive: 60,
    clean: true,
    protocolVersion: 4,
    passwordBytes: 32,
    withUsername: true,
  });
  assert.deepEqual(first!.steps.map((s) => [s.action.kind, s.afterReceived]), [
    ["subscribe", 1],
    ["publish", 2],
    // puback and the reply: 4; the ping's answer is not waited for
    ["publish", 4],
  ]);
  // What came back after each action is its reply; the device's own PUBACK is not an action.
  assert.deepEqual(first!.steps.map((s) => s.replies.length), [0, 1, 2]);
  assert.equal(
    new TextDecoder().decode(first!.steps[1]!.replies[0]!.payload),
    '{"thing":"dev-00007"}',
  );
  assert.equal(first!.steps[1]!.replies[0]!.qos, 1);
  assert.equal(first!.receivedAtEnd, 6);
  assert.equal(first!.end, "drop");
  assert.equal(second!.steps.length, 1);
  assert.equal(second!.receivedAtEnd, 2);
  assert.equal(second!.end, "disconnect");
  // Every packet is in the totals, pings and acknowledgements included.
  assert.equal(script.recorded.packetsSent, 8);
  assert.equal(script.recorded.packetsReceived, 9);
  assert.equal(script.recorded.publishesSent, 3);
  assert.equal(script.recorded.publishesReceived, 3);
  assert.equal(
    script.recorded.bytesSent,
    update().filter((r) => r.direction === "sent").reduce((n, r) => n + r.bytes, 0),
  );
});

Deno.test("protocol script: a log it cannot replay is refused with the record that says why", () => {
  assert.throws(() => protocolScript([]), /the wire log is empty/);
  const [, , subscribe] = update();
  assert.throws(
    () => protocolScript([subscribe!]),
    /record 1 \(sent subscribe\): before the first CONNECT/,
  );
  assert.throws(
    () => protocolScript([connect(), received(publish("a", "b"))]),
    /record 2 \(received publish\): a PUBLISH before the device subscribed/,
  );
  assert.throws(
    () =>
      protocolScript([
        connect(),
        { ...received({ cmd: "connack", returnCode: 0 }), thing: "dev-00008" },
      ]),
    /another thing, dev-00008/,
  );
  assert.throws(
    () => protocolScript([connect(), sent(publish("a", "b", 2, 5))]),
    /QoS 2 is not replayed/,
  );
});

Deno.test("wire log: sizes are mqtt-packet's, passwords are never written, lines parse back", () => {
  const packet = publish("jobs/dev-00007/get", "{}", 1, 2);
  const record = wireRecord("dev-00007", "sent", packet, 1.23456);
  // fixed header 2, topic 2 + 18, message id 2, payload 2
  assert.equal(record.bytes, 26);
  assert.equal(wireBytes(packet), 26);
  assert.equal(record.seconds, 1.235);
  const login = connect();
  assert.equal(login.connect?.passwordBytes, 32);
  assert.ok(!JSON.stringify(login).includes("a-secret"), "the password is not in the log");
  const text = [record, login].map((r) => JSON.stringify(r)).join("\n") + "\n";
  assert.deepEqual(parseWireLog(text), [record, login]);
  assert.throws(() => parseWireLog('{"thing":"x"}\n'), /wire log line 1: expected seconds/);
  assert.throws(() => parseWireLog("\nnot json"), /wire log line 2: not JSON/);
});

Deno.test("renamed: every occurrence of a name, the same array when there is none", () => {
  const from = bytes("dev-00007");
  const to = bytes("dev-12345");
  const text = bytes("a dev-00007 b dev-00007");
  assert.equal(new TextDecoder().decode(renamed(text, from, to)), "a dev-12345 b dev-12345");
  assert.equal(new TextDecoder().decode(text), "a dev-00007 b dev-00007", "the input is kept");
  const other = bytes("nothing here");
  assert.equal(renamed(other, from, to), other);
  assert.throws(() => renamed(text, from, bytes("dev-1")), /different lengths/);
});
