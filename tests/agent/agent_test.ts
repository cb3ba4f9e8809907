/**
 * The agent on fake ports and fake time: the transition table row by row, and the behaviours
 * that depend on timers (retries, backoff, momentum) or on events arriving in the wrong state.
 */
import assert from "node:assert/strict";
import { type MqttPort } from "../../agent/ports.ts";
import { OtaAgent } from "../../agent/agent.ts";
import { encodeStreamBlock } from "../../protocol/stream_codec.ts";
import { devicePlatform } from "../../agent/device_runtime.ts";
import {
  AGENT_EVENTS,
  AGENT_STATES,
  type AgentEventType,
  type AgentState,
  findTransition,
  TRANSITIONS,
} from "../../agent/transition_table.ts";
import { AgentStateStore } from "../../bootloader/agent_store.ts";
import { signData } from "../../protocol/signatures.ts";
import { FwuState } from "../../bootloader/fwu.ts";
import { firmwareJobDocument } from "../helpers/ota_cloud.ts";
import { factoryDevice, SIGNER_CERT_PATH, testImage, testPki } from "../helpers/pki.ts";
import { installUpdate } from "../helpers/update.ts";
import { waitUntil } from "../helpers/wait.ts";
import { ResumeStore } from "../../agent/resume_record.ts";
import { BlockBitmap } from "../../agent/bitmap.ts";
import { fromBase64 } from "../../lib/base64.ts";

/** The rows, written out from the AWS table plus this project's additions. */
const EXPECTED: [AgentState | "All", AgentEventType, string, AgentState][] = [
  ["Ready", "Start", "start", "RequestingJob"],
  ["RequestingJob", "RequestJobDocument", "requestJob", "WaitingForJob"],
  ["RequestingJob", "RequestTimer", "requestJob", "WaitingForJob"],
  ["RequestingJob", "ReceivedJobDocument", "processJob", "CreatingFile"],
  ["WaitingForJob", "ReceivedJobDocument", "processJob", "CreatingFile"],
  ["WaitingForJob", "RequestTimer", "requestJob", "WaitingForJob"],
  ["WaitingForJob", "RequestJobDocument", "requestJob", "WaitingForJob"],
  ["CreatingFile", "StartSelfTest", "inSelfTest", "WaitingForJob"],
  ["CreatingFile", "CreateFile", "initFile", "RequestingFileBlock"],
  ["CreatingFile", "RequestTimer", "initFile", "RequestingFileBlock"],
  ["CreatingFile", "RequestJobDocument", "requestJob", "WaitingForJob"],
  ["RequestingFileBlock", "RequestFileBlock", "requestData", "WaitingForFileBlock"],
  ["RequestingFileBlock", "RequestTimer", "requestData", "WaitingForFileBlock"],
  ["RequestingFileBlock", "RequestJobDocument", "requestJob", "WaitingForJob"],
  ["WaitingForFileBlock", "ReceivedFileBlock", "processData", "WaitingForFileBlock"],
  ["WaitingForFileBlock", "RequestTimer", "requestData", "WaitingForFileBlock"],
  ["WaitingForFileBlock", "RequestFileBlock", "requestData", "WaitingForFileBlock"],
  ["WaitingForFileBlock", "RequestJobDocument", "requestJob", "WaitingForJob"],
  ["WaitingForFileBlock", "ReceivedJobDocument", "jobNotification", "RequestingJob"],
  ["WaitingForFileBlock", "CloseFile", "closeFile", "ClosingFile"],
  ["WaitingForFileBlock", "CreateFile", "initFile", "RequestingFileBlock"],
  ["ClosingFile", "CreateFile", "initFile", "RequestingFileBlock"],
  ["ClosingFile", "RequestJobDocument", "requestJob", "WaitingForJob"],
  ["Suspended", "Resume", "resume", "RequestingJob"],
  ["All", "Suspend", "suspend", "Suspended"],
  ["All", "UserAbort", "userAbort", "WaitingForJob"],
  ["All", "Shutdown", "shutdown", "Stopped"],
];

for (const [state, event, handler, next] of EXPECTED) {
  Deno.test(`transition table: ${state} + ${event} -> ${handler} -> ${next}`, () => {
    const states = state === "All"
      ? AGENT_STATES.filter((s) => s !== "Stopped" && s !== "ShuttingDown")
      : [state];
    for (const s of states) {
      const row = findTransition(s, event);
      assert.ok(row, `${s} + ${event} has a row`);
      assert.equal(row.handler, handler);
      assert.equal(row.next, next);
    }
  });
}

Deno.test("transition table: every other (state, event) pair has no row, and Stopped takes nothing", () => {
  assert.equal(TRANSITIONS.length, EXPECTED.length);
  for (const state of AGENT_STATES) {
    for (const event of AGENT_EVENTS) {
      const listed = EXPECTED.some(([s, e]) =>
        e === event &&
        (s === state || (s === "All" && state !== "Stopped" && state !== "ShuttingDown"))
      );
      assert.equal(findTransition(state, event) !== undefined, listed, `${state} + ${event}`);
    }
  }
});

const encoder = new TextEncoder();

/** A fake MQTT port that records what the agent sends. */
class FakeMqtt implements MqttPort {
  readonly published: { topic: string; payload: string | Uint8Array; qos: number }[] = [];
  readonly subscribed: string[] = [];
  /** Acknowledges QoS 1 status updates, as the Jobs service would. */
  agent: OtaAgent | null = null;
  publish(topic: string, payload: Uint8Array | string, qos: 0 | 1) {
    this.published.push({ topic, payload, qos });
    if (this.agent && qos === 1 && topic.endsWith("/update")) {
      const { clientToken } = JSON.parse(String(payload));
      const agent = this.agent;
      queueMicrotask(() =>
        agent.handleMessage(`${topic}/accepted`, encoder.encode(JSON.stringify({ clientToken })))
      );
    }
    return Promise.resolve();
  }
  subscribe(topics: string | readonly string[]) {
    this.subscribed.push(...[topics].flat());
    return Promise.resolve();
  }
  unsubscribe() {
    return Promise.resolve();
  }
  count(suffix: string): number {
    return this.published.filter((p) => p.topic.endsWith(suffix)).length;
  }
  statuses(): Record<string, unknown>[] {
    return this.published.filter((p) => p.topic.endsWith("/update")).map((p) =>
      JSON.parse(String(p.payload))
    );
  }
}

async function agentOnFakes(config: Record<string, unknown> = {}) {
  const { device, clock } = await factoryDevice();
  await device.powerOn();
  const mqtt = new FakeMqtt();
  const agent = new OtaAgent({
    thingName: "dev-1",
    mqtt,
    platform: devicePlatform(device),
    store: new AgentStateStore(device.areas.agentState),
    clock,
    config: {
      maxFirmwareSize: device.fwu.maxSize,
      blockSize: 1024,
      requestTimeoutMs: 1000,
      statusAckTimeoutMs: 500,
      maxStatusRetries: 0,
      ...config,
    },
  });
  mqtt.agent = agent;
  return { device, clock, mqtt, agent };
}

/** A job document for `image`, signed by the trusted signer, on stream s1. */
async function jobDocumentFor(image: Uint8Array) {
  const signature = await signData((await testPki()).signerKeys.privateKey, image);
  return firmwareJobDocument({
    stream: "s1",
    size: image.length,
    signature,
    certFile: SIGNER_CERT_PATH,
  });
}

async function jobPayload(size = 4096) {
  const image = await testImage({ version: "1.1.0", payloadSize: size });
  const document = await jobDocumentFor(image);
  return {
    image,
    payload: encoder.encode(
      JSON.stringify({
        clientToken: "x",
        execution: { jobId: "job-1", status: "QUEUED", versionNumber: 1, jobDocument: document },
      }),
    ),
  };
}

Deno.test("agent: a lost $next/get reply is asked again with exponential backoff (the AWS agent waits forever)", async () => {
  const { clock, mqtt, agent } = await agentOnFakes({ jobRequestBackoffMs: [1000, 8000] });
  agent.start();
  await agent.idle();
  assert.equal(mqtt.count("$next/get"), 1);
  assert.equal(agent.state, "WaitingForJob");
  const at: number[] = [];
  for (const step of [999, 1, 1999, 1, 3999, 1, 7999, 1, 7999, 1]) {
    clock.advance(step);
    await agent.idle();
    at.push(mqtt.count("$next/get"));
  }
  assert.deepEqual(
    at,
    [1, 2, 2, 3, 3, 4, 4, 5, 5, 6],
    "retries after 1 s, 2 s, 4 s, then every 8 s",
  );
  await agent.shutdown();
});

Deno.test("agent: subscriptions a loaded broker did not acknowledge are made again before the job is asked for", async () => {
  const { clock, mqtt, agent } = await agentOnFakes({ jobRequestBackoffMs: [1000, 8000] });
  // The first four SUBSCRIBEs are never acknowledged (the port times them out).
  let refusals = 4;
  const subscribe = mqtt.subscribe.bind(mqtt);
  mqtt.subscribe = (topics: string | readonly string[]) => {
    if (refusals-- > 0) return Promise.reject(new Error("subscribe not acknowledged"));
    return subscribe(topics);
  };
  agent.start();
  await agent.idle();
  assert.equal(mqtt.count("$next/get"), 0, "no question asked without a way to hear the answer");
  for (let i = 0; i < 4 && mqtt.count("$next/get") === 0; i++) {
    clock.advance(8_000);
    await agent.idle();
  }
  assert.equal(mqtt.count("$next/get"), 1);
  assert.ok(
    mqtt.subscribed.some((topic) => topic.includes("jobs/$next/get")),
    `${mqtt.subscribed}`,
  );
  const { payload } = await jobPayload();
  agent.handleMessage("$aws/things/dev-1/jobs/$next/get/accepted", payload);
  await agent.idle();
  assert.notEqual(agent.state, "WaitingForJob", "the job reply was heard");
  await agent.shutdown();
});

Deno.test("agent: a stalled download fails the job with the momentum reason and the agent keeps running", async () => {
  const { device, clock, mqtt, agent } = await agentOnFakes({ maxMomentum: 3 });
  const { payload } = await jobPayload();
  agent.start();
  await agent.idle();
  agent.handleMessage("$aws/things/dev-1/jobs/$next/get/accepted", payload);
  await agent.idle();
  assert.equal(agent.state, "WaitingForFileBlock");
  assert.equal(device.fwu.state, FwuState.WRITING);
  for (let i = 0; i < 4; i++) {
    clock.advance(1000);
    await agent.idle();
  }
  assert.equal(mqtt.count("/get/cbor"), 3, "three unanswered requests");
  const failed = mqtt.statuses().find((s) => s.status === "FAILED")!;
  assert.match(String((failed.statusDetails as Record<string, string>).reason), /^0x0000000e: /);
  assert.equal(agent.state, "WaitingForJob", "back to waiting, not shut down");
  assert.equal(device.fwu.state, FwuState.READY, "the partial download is cleaned");
  await agent.shutdown();
});

Deno.test("agent: a job notified while its own request failed (no PUBACK) is taken at once, not at the next retry", async () => {
  const { clock, mqtt, agent } = await agentOnFakes({ jobRequestBackoffMs: [1000, 30_000] });
  const publish = mqtt.publish.bind(mqtt);
  let failRequests = true;
  mqtt.publish = (topic: string, payload: Uint8Array | string, qos: 0 | 1) => {
    const sent = publish(topic, payload, qos);
    return failRequests && topic.endsWith("$next/get")
      ? Promise.reject(new Error("publish not acknowledged within 10000 ms"))
      : sent;
  };
  agent.start();
  await agent.idle();
  assert.equal(agent.state, "RequestingJob", "the failed request leaves it asking");
  failRequests = false;
  const { payload } = await jobPayload();
  agent.handleMessage("$aws/things/dev-1/jobs/notify-next", payload);
  await agent.idle();
  assert.equal(agent.state, "WaitingForFileBlock", "downloading without waiting for a retry");
  assert.equal(mqtt.count("$next/get"), 1);
  clock.advance(1000);
  await agent.idle();
  assert.equal(mqtt.count("$next/get"), 1, "and no retry of the request it no longer needs");
  await agent.shutdown();
});

Deno.test("agent: each block received pushes the request timeout back; silence re-requests exactly one timeout after the last block", async () => {
  const { clock, mqtt, agent } = await agentOnFakes({ blocksPerRequest: 8 });
  const { payload, image } = await jobPayload(6 * 1024);
  agent.start();
  await agent.idle();
  agent.handleMessage("$aws/things/dev-1/jobs/$next/get/accepted", payload);
  await agent.idle();
  assert.equal(mqtt.count("/get/cbor"), 1);
  for (let i = 0; i < 4; i++) {
    clock.advance(900);
    agent.handleMessage(
      "$aws/things/dev-1/streams/s1/data/cbor",
      encodeStreamBlock({
        fileId: 0,
        blockId: i,
        blockSize: 1024,
        payload: image.subarray(i * 1024, (i + 1) * 1024),
        hash: null,
      }),
    );
    await agent.idle();
  }
  assert.equal(mqtt.count("/get/cbor"), 1, "blocks keep coming: no request again");
  clock.advance(999);
  await agent.idle();
  assert.equal(mqtt.count("/get/cbor"), 1, "not before the timeout after the last block");
  clock.advance(1);
  await agent.idle();
  assert.equal(mqtt.count("/get/cbor"), 2, "asked again for what is missing");
  await agent.shutdown();
});

Deno.test("agent: blocks outside a download are dropped and counted; bad blocks never reach flash", async () => {
  const { device, mqtt, agent } = await agentOnFakes();
  const { payload, image } = await jobPayload();
  agent.start();
  await agent.idle();
  const block = (
    i: number,
    data: Uint8Array,
    extra: Partial<{ fileId: number; blockSize: number }> = {},
  ) =>
    encodeStreamBlock({
      fileId: 0,
      blockId: i,
      blockSize: 1024,
      payload: data,
      hash: null,
      ...extra,
    });
  agent.handleMessage("$aws/things/dev-1/streams/s1/data/cbor", block(0, image.subarray(0, 1024)));
  await agent.idle();
  assert.equal(agent.statistics.packetsDropped, 1, "no download: dropped");
  agent.handleMessage("$aws/things/dev-1/jobs/$next/get/accepted", payload);
  await agent.idle();
  const before = device.flash.stats.programs;
  for (
    const bad of [
      block(0, image.subarray(0, 1000)), // wrong size
      block(0, image.subarray(0, 1024), { fileId: 9 }), // wrong file
      block(0, image.subarray(0, 1024), { blockSize: 2048 }), // wrong block size
      block(99, image.subarray(0, 1024)), // past the end
      new Uint8Array([0xff, 0x00, 0x13]), // not CBOR
    ]
  ) {
    agent.handleMessage("$aws/things/dev-1/streams/s1/data/cbor", bad);
  }
  agent.handleMessage(
    "$aws/things/dev-1/streams/other/data/cbor",
    block(0, image.subarray(0, 1024)),
  );
  await agent.idle();
  assert.equal(device.flash.stats.programs, before, "nothing written");
  assert.ok(agent.statistics.packetsDropped >= 5, `dropped: ${agent.statistics.packetsDropped}`);
  agent.handleMessage("$aws/things/dev-1/streams/s1/data/cbor", block(0, image.subarray(0, 1024)));
  agent.handleMessage("$aws/things/dev-1/streams/s1/data/cbor", block(0, image.subarray(0, 1024)));
  await agent.idle();
  assert.equal(agent.statistics.packetsProcessed, 1, "a duplicate is accepted once");
  assert.ok(
    mqtt.statuses().some((s) => (s.statusDetails as Record<string, string>).receive === "1/5"),
  );
  await agent.shutdown();
});

Deno.test("agent: a user abort fails the job as aborted and leaves the PAL clean", async () => {
  const { device, mqtt, agent } = await agentOnFakes();
  const { payload } = await jobPayload();
  agent.start();
  await agent.idle();
  agent.handleMessage("$aws/things/dev-1/jobs/$next/get/accepted", payload);
  await agent.idle();
  agent.abort();
  await agent.idle();
  const failed = mqtt.statuses().find((s) => s.status === "FAILED")!;
  assert.equal((failed.statusDetails as Record<string, string>).reason, "aborted: 0x00000013");
  assert.equal(device.fwu.state, FwuState.READY);
  assert.equal(agent.state, "WaitingForJob");
  await agent.shutdown();
  assert.equal(agent.state, "Stopped");
});

Deno.test("agent: suspended, it drops blocks; resumed, it asks for the job again", async () => {
  const { mqtt, agent } = await agentOnFakes();
  const { payload, image } = await jobPayload();
  agent.start();
  await agent.idle();
  agent.handleMessage("$aws/things/dev-1/jobs/$next/get/accepted", payload);
  await agent.idle();
  agent.suspend();
  await agent.idle();
  assert.equal(agent.state, "Suspended");
  agent.handleMessage(
    "$aws/things/dev-1/streams/s1/data/cbor",
    encodeStreamBlock({
      fileId: 0,
      blockId: 0,
      blockSize: 1024,
      payload: image.subarray(0, 1024),
      hash: null,
    }),
  );
  await agent.idle();
  assert.equal(agent.statistics.packetsProcessed, 0);
  assert.ok(agent.unexpected.includes("Suspended/ReceivedFileBlock"));
  const requests = mqtt.count("$next/get");
  agent.resume();
  await agent.idle();
  assert.equal(mqtt.count("$next/get"), requests + 1);
  assert.equal(agent.blocksRemaining, 5, "the bitmap survives the suspension");
  await agent.shutdown();
});

Deno.test("agent: a job it cannot take is reported REJECTED with a reason and the agent asks for the next one", async () => {
  const { mqtt, agent } = await agentOnFakes();
  agent.start();
  await agent.idle();
  const requests = mqtt.count("$next/get");
  const document = {
    afr_ota: {
      protocols: ["MQTT"],
      streamname: "s1",
      files: [{
        filepath: "../../etc/passwd",
        filesize: 100,
        fileid: 0,
        certfile: "c",
        "sig-sha256-ecdsa": btoa("0123456789abcdef"),
      }],
    },
  };
  const payload = encoder.encode(
    JSON.stringify({ execution: { jobId: "bad-job", status: "QUEUED", jobDocument: document } }),
  );
  agent.handleMessage("$aws/things/dev-1/jobs/notify-next", payload);
  await agent.idle();
  const status = mqtt.statuses().find((s) => s.status === "REJECTED")!;
  assert.ok(status, "REJECTED reported");
  assert.match(String((status.statusDetails as Record<string, string>).detail), /allowed names/);
  assert.ok(mqtt.published.some((p) => p.topic === "$aws/things/dev-1/jobs/bad-job/update"));
  assert.equal(mqtt.count("$next/get"), requests + 1, "asks for the next job");
  assert.equal(agent.state, "WaitingForJob");
  await agent.shutdown();
});

/**
 * A connection as the broker sees it: a clean session each time it comes back (subscriptions
 * gone), replies delivered only to subscribed topics, nothing sent while it is down.
 */
class FakeConnection implements MqttPort {
  up = true;
  readonly subscriptions = new Set<string>();
  readonly published: string[] = [];
  /** Publishes refused because the connection was down. */
  refused = 0;
  /** Called for each status update, before it is sent (to break the connection right then). */
  beforeUpdate: (() => void) | null = null;
  agent: OtaAgent | null = null;
  publish(topic: string, payload: Uint8Array | string) {
    if (topic.endsWith("/update")) this.beforeUpdate?.();
    if (!this.up) {
      this.refused++;
      return Promise.reject(new Error("not connected"));
    }
    this.published.push(topic);
    if (topic.endsWith("/update")) {
      const { clientToken } = JSON.parse(String(payload));
      this.#reply(`${topic}/accepted`, { clientToken });
    }
    return Promise.resolve();
  }
  subscribe(topics: string | readonly string[]) {
    if (!this.up) return Promise.reject(new Error("not connected"));
    for (const topic of [topics].flat()) this.subscriptions.add(topic);
    return Promise.resolve();
  }
  unsubscribe(topic: string) {
    this.subscriptions.delete(topic);
    return Promise.resolve();
  }
  drop() {
    this.up = false;
    this.subscriptions.clear();
    this.agent!.suspend();
  }
  restore() {
    this.up = true;
    this.agent!.resume();
  }
  #reply(topic: string, body: object) {
    const heard = [...this.subscriptions].some((filter) => topicMatches(filter, topic));
    const agent = this.agent!;
    if (heard) {
      queueMicrotask(() => agent.handleMessage(topic, encoder.encode(JSON.stringify(body))));
    }
  }
}

function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

Deno.test("agent: a report retried after its connection dropped subscribes again first, so the acknowledgement is heard", async () => {
  const { device, clock } = await factoryDevice();
  await device.powerOn();
  const { image } = await jobPayload();
  await installUpdate(device, image);
  assert.equal(device.running?.trial, true);
  const connection = new FakeConnection();
  const agent = new OtaAgent({
    thingName: "dev-1",
    mqtt: connection,
    platform: devicePlatform(device),
    store: new AgentStateStore(device.areas.agentState),
    clock,
    config: {
      maxFirmwareSize: device.fwu.maxSize,
      statusAckTimeoutMs: 5_000,
      maxStatusRetries: 10,
    },
  });
  connection.agent = agent;
  agent.start();
  await agent.idle();
  // The job comes back testing this image; the SUCCEEDED is the first update, and the connection
  // goes just as it is sent, then comes back (clean session) while the report waits for its reply.
  connection.beforeUpdate = () => {
    connection.beforeUpdate = null;
    connection.drop();
    queueMicrotask(() => connection.restore());
  };
  agent.handleMessage(
    "$aws/things/dev-1/jobs/$next/get/accepted",
    encoder.encode(JSON.stringify({
      execution: {
        jobId: "job-1",
        status: "IN_PROGRESS",
        versionNumber: 2,
        statusDetails: { self_test: "ready", updatedBy: "0x01000000" },
        jobDocument: await jobDocumentFor(image),
      },
    })),
  );
  // (Not agent.idle(): the report's handler waits on the fake clock for its acknowledgement.)
  await waitUntil(() => connection.refused === 1 && connection.up, "the first attempt lost");
  assert.equal(device.running?.trial, true, "not confirmed without the cloud's acknowledgement");
  // The second attempt, one acknowledgement timeout later, subscribes before it publishes.
  clock.advance(5_000);
  await agent.idle();
  await device.settle();
  assert.equal(device.running?.trial, false, "confirmed once the retry was acknowledged");
  assert.equal(connection.published.filter((t) => t.endsWith("/update")).length, 1);
  await agent.shutdown();
});

/** The download record the agent has saved in the device's agent area, as the next boot reads it. */
function savedRecord(device: Awaited<ReturnType<typeof factoryDevice>>["device"]) {
  const record = new ResumeStore(new AgentStateStore(device.areas.agentState)).loadRecord();
  if (!record) return null;
  return {
    record,
    remaining: (count: number) =>
      BlockBitmap.fromBytes(fromBase64(record.bitmap)!, count)!.remaining,
  };
}

Deno.test("agent: the block bitmap is saved every persistEveryBlocks blocks, not at every block", async () => {
  const { device, agent } = await agentOnFakes({ persistEveryBlocks: 4, blocksPerRequest: 32 });
  const { payload, image } = await jobPayload(16 * 1024);
  const count = Math.ceil(image.length / 1024);
  agent.start();
  await agent.idle();
  agent.handleMessage("$aws/things/dev-1/jobs/$next/get/accepted", payload);
  await agent.idle();
  assert.equal(savedRecord(device)?.remaining(count), count, "saved when the file opened");
  const seen: number[] = [];
  for (let i = 0; i < 9; i++) {
    agent.handleMessage(
      "$aws/things/dev-1/streams/s1/data/cbor",
      encodeStreamBlock({
        fileId: 0,
        blockId: i,
        blockSize: 1024,
        payload: image.subarray(i * 1024, (i + 1) * 1024),
        hash: null,
      }),
    );
    await agent.idle();
    seen.push(count - savedRecord(device)!.remaining(count));
  }
  assert.deepEqual(seen, [0, 0, 0, 4, 4, 4, 4, 8, 8], "blocks the saved record says are in flash");
  await agent.shutdown();
});

Deno.test("agent: the trial image is confirmed only after SUCCEEDED is acknowledged, never before", async () => {
  const { device, clock } = await factoryDevice();
  await device.powerOn();
  const { image } = await jobPayload();
  await installUpdate(device, image);
  const mqtt = new FakeMqtt(); // no agent attached: nothing is acknowledged by itself
  const agent = new OtaAgent({
    thingName: "dev-1",
    mqtt,
    platform: devicePlatform(device),
    store: new AgentStateStore(device.areas.agentState),
    clock,
    config: { maxFirmwareSize: device.fwu.maxSize, statusAckTimeoutMs: 5_000, maxStatusRetries: 3 },
  });
  agent.start();
  await agent.idle();
  agent.handleMessage(
    "$aws/things/dev-1/jobs/$next/get/accepted",
    encoder.encode(JSON.stringify({
      execution: {
        jobId: "job-1",
        status: "IN_PROGRESS",
        versionNumber: 2,
        statusDetails: { self_test: "ready", updatedBy: "0x01000000" },
        jobDocument: await jobDocumentFor(image),
      },
    })),
  );
  await waitUntil(() => mqtt.statuses().some((s) => s.status === "SUCCEEDED"), "SUCCEEDED sent");
  assert.equal(device.running?.trial, true, "sent, not acknowledged: still on trial");
  clock.advance(4_999);
  await device.settle();
  assert.equal(device.running?.trial, true, "still nothing heard");
  const sent = mqtt.statuses().filter((s) => s.status === "SUCCEEDED").at(-1)!;
  agent.handleMessage(
    "$aws/things/dev-1/jobs/job-1/update/accepted",
    encoder.encode(JSON.stringify({ clientToken: sent.clientToken })),
  );
  await agent.idle();
  await device.settle();
  assert.equal(device.running?.trial, false, "confirmed once the cloud acknowledged it");
  await agent.shutdown();
});
