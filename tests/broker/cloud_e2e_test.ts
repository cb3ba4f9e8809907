/**
 * The real agent against the real cloud: authenticated devices, the job service and the stream
 * service on the embedded aedes, state in SQLite.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import mqtt from "mqtt";
import { decodeStreamBlock, encodeGetStreamRequest } from "../../protocol/stream_codec.ts";
import { cloudDevice } from "../helpers/cloud_device.ts";
import { DeviceRuntime } from "../../agent/device_runtime.ts";
import { startCloud } from "../../broker/cloud.ts";
import { FwuState } from "../../bootloader/fwu.ts";
import { signedUpdate } from "../helpers/agent_rig.ts";
import { firmwareJobDocument } from "../helpers/ota_cloud.ts";
import { SIGNER_CERT_PATH } from "../helpers/pki.ts";
import { waitUntil, withDeadline } from "../helpers/wait.ts";
import { Semaphore } from "../../lib/concurrency.ts";

async function fleet(count: number, cloudUrl: string, secret: (thing: string) => string) {
  const runtimes: DeviceRuntime[] = [];
  for (let i = 0; i < count; i++) {
    const thing = `dev-${i}`;
    runtimes.push(
      await cloudDevice({
        seed: i + 1,
        thingName: thing,
        brokerUrl: cloudUrl,
        mqttOptions: { username: thing, password: secret(thing) },
      }),
    );
  }
  return runtimes;
}

Deno.test("cloud e2e: four authenticated devices update through the job and stream services", async () => {
  const cloud = await startCloud({ tickMs: 100 });
  const runtimes = await fleet(4, cloud.url, (t) => `secret-of-${t}`);
  try {
    for (let i = 0; i < runtimes.length; i++) {
      await cloud.provisionThing(`dev-${i}`, `secret-of-dev-${i}`);
      await cloud.jobs.addThingToGroup("fleet", `dev-${i}`);
    }
    const { image, signature } = await signedUpdate("1.1.0");
    cloud.streams.addStream("fw-1-1-0", new Map([[0, image]]));
    await Promise.all(runtimes.map((r) => r.start()));
    const created = await cloud.jobs.createJob({
      jobId: "ota-1",
      document: firmwareJobDocument({
        stream: "fw-1-1-0",
        size: image.length,
        signature,
        certFile: SIGNER_CERT_PATH,
      }),
      targets: { groups: ["fleet"] },
      rollout: { maximumPerMinute: 1000 },
    });
    assert.ok(created.ok);
    await waitUntil(
      async () => (await cloud.jobs.counts("ota-1")).SUCCEEDED === 4,
      "all four SUCCEEDED",
    );
    await waitUntil(
      () =>
        runtimes.every((r) => r.device.running?.version === "1.1.0+0" && !r.device.running.trial),
      "all confirmed",
    );
    assert.equal((await cloud.store.getJob("ota-1"))!.status, "COMPLETED");
    for (const r of runtimes) assert.equal(r.device.fwu.state, FwuState.UPDATED);
    const history = (await cloud.store.history({ jobId: "ota-1", thing: "dev-2" })).map((h) =>
      h.event === "device-update" ? (h.detail as { status: string }).status : h.event
    );
    assert.deepEqual(history.slice(0, 2), ["queued", "IN_PROGRESS"]);
    assert.equal(history[history.length - 1], "SUCCEEDED");
    assert.ok(
      cloud.streams.stats.blocksEncoded <= 17,
      `each block encoded once for all devices: ${cloud.streams.stats.blocksEncoded}`,
    );
    assert.ok(cloud.streams.stats.blocksSent >= 4 * 17);
  } finally {
    for (const r of runtimes) await r.stop();
    await cloud.close();
  }
});

Deno.test("cloud e2e: a device with a wrong secret never connects and its execution stays queued", async () => {
  const cloud = await startCloud({ tickMs: 100 });
  const [runtime] = await fleet(1, cloud.url, () => "wrong");
  try {
    await cloud.provisionThing("dev-0", "right");
    await cloud.jobs.addThingToGroup("fleet", "dev-0");
    await cloud.jobs.createJob({
      jobId: "ota-1",
      document: { afr_ota: { protocols: ["MQTT"], streamname: "s", files: [] } },
      targets: { groups: ["fleet"] },
    });
    await runtime!.start();
    await waitUntil(
      () => cloud.refusals.some((r) => /bad credentials for 'dev-0'/.test(r)),
      "the refusal",
    );
    assert.equal((await cloud.store.getExecution("ota-1", "dev-0"))!.status, "QUEUED");
  } finally {
    await runtime!.stop();
    await cloud.close();
  }
});

Deno.test("cloud e2e: malformed CBOR, bad JSON and garbage bytes are answered or dropped, and the broker keeps serving", async () => {
  const cloud = await startCloud();
  try {
    await cloud.provisionThing("dev-x", "secret-x");
    await cloud.jobs.createJob({
      jobId: "job-x",
      document: { afr_ota: {} },
      targets: { things: ["dev-x"] },
    });
    const { default: mqtt } = await import("mqtt");
    const { connect } = await import("node:net");
    const client = await mqtt.connectAsync(cloud.url, {
      clientId: "dev-x",
      username: "dev-x",
      password: "secret-x",
      reconnectPeriod: 0,
    });
    const replies: string[] = [];
    client.on("message", (topic) => replies.push(topic));
    await client.subscribeAsync([
      "$aws/things/dev-x/streams/s/rejected/cbor",
      "$aws/things/dev-x/jobs/+/update/rejected",
      "$aws/things/dev-x/jobs/$next/get/accepted",
    ], { qos: 1 });
    await client.publishAsync(
      "$aws/things/dev-x/streams/s/get/cbor",
      Buffer.from([0xff, 0x00, 0x13, 0x37]),
      { qos: 1 },
    );
    await client.publishAsync("$aws/things/dev-x/jobs/job-x/update", "{not json", { qos: 1 });
    const socket = connect(cloud.broker!.port, "127.0.0.1");
    await withDeadline(
      new Promise<void>((resolve) => socket.on("connect", () => resolve())),
      "the raw socket to connect",
    );
    const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    socket.write(new Uint8Array(4096).fill(0xa5));
    await withDeadline(closed, "the broker to close the socket that sent garbage", 10_000);
    await client.publishAsync("$aws/things/dev-x/jobs/$next/get", "{}", { qos: 1 });
    await waitUntil(() => replies.length === 3, "three answers");
    assert.deepEqual(replies.sort(), [
      "$aws/things/dev-x/jobs/$next/get/accepted",
      "$aws/things/dev-x/jobs/job-x/update/rejected",
      "$aws/things/dev-x/streams/s/rejected/cbor",
    ]);
    await client.endAsync();
  } finally {
    await cloud.close();
  }
});

Deno.test("cloud e2e: devices sharing one connection turn connect one after the other, each turn ending once connected", async () => {
  const cloud = await startCloud({ tickMs: 100 });
  const turns = new Semaphore(1);
  let inTurn = 0;
  let most = 0;
  const ended: string[] = [];
  const runtimes: DeviceRuntime[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const thing = `dev-${i}`;
      const secret = await cloud.provisionThing(thing, null);
      runtimes.push(
        await cloudDevice({
          seed: i + 1,
          thingName: thing,
          brokerUrl: cloud.url,
          mqttOptions: { username: thing, password: secret },
          connectGate: async () => {
            const release = await turns.acquire();
            most = Math.max(most, ++inTurn);
            return () => {
              inTurn--;
              ended.push(thing);
              release();
            };
          },
        }),
      );
    }
    await Promise.all(runtimes.map((r) => r.start()));
    await waitUntil(() => ended.length === 3, "every device's turn to end");
    assert.equal(most, 1, "one connection attempt at a time");
    await waitUntil(
      async () =>
        (await Promise.all(["dev-0", "dev-1", "dev-2"].map((t) => cloud.shadows.get(t))))
          .every((shadow) => shadow !== null),
      "every device connected and reported",
    );
  } finally {
    for (const r of runtimes) await r.stop();
    await cloud.close();
  }
});

Deno.test("cloud e2e: a GetStream request's blocks leave the broker in one socket write", async () => {
  const cloud = await startCloud();
  await cloud.provisionThing("dev-0", "secret-of-dev-0");
  const image = new Uint8Array(10 * 4096).map((_, i) => i % 253);
  cloud.streams.addStream("fw", new Map([[0, image]]));
  // The server side of the device's connection, and the batches of chunks written to it.
  const writes: number[] = [];
  cloud.broker!.broker.on("client", (client) => {
    const conn = client.conn as unknown as {
      _writev(chunks: unknown[], callback: () => void): void;
      _write(chunk: unknown, encoding: string, callback: () => void): void;
    };
    const writev = conn._writev.bind(conn);
    const write = conn._write.bind(conn);
    conn._writev = (chunks, callback) => {
      writes.push(chunks.length);
      writev(chunks, callback);
    };
    conn._write = (chunk, encoding, callback) => {
      writes.push(1);
      write(chunk, encoding, callback);
    };
  });
  const device = await mqtt.connectAsync(cloud.url, {
    clientId: "dev-0",
    username: "dev-0",
    password: "secret-of-dev-0",
    reconnectPeriod: 0,
  });
  try {
    const blocks: number[] = [];
    device.on("message", (_topic, payload) => {
      const block = decodeStreamBlock(payload);
      if (block.ok) blocks.push(block.value.blockId);
    });
    await device.subscribeAsync("$aws/things/dev-0/streams/fw/data/cbor", { qos: 0 });
    const before = writes.length;
    await device.publishAsync(
      "$aws/things/dev-0/streams/fw/get/cbor",
      Buffer.from(encodeGetStreamRequest({
        clientToken: "t",
        fileId: 0,
        blockSize: 4096,
        offset: 0,
        numberOfBlocks: 8,
        bitmap: new Uint8Array([0xff, 0x03]),
      })),
      { qos: 0 },
    );
    await waitUntil(() => blocks.length === 8, "the 8 blocks");
    assert.deepEqual(blocks, [0, 1, 2, 3, 4, 5, 6, 7]);
    // One writev with every piece of the 8 PUBLISH packets, where aedes alone wrote 8 times.
    assert.equal(writes.length - before, 1);
  } finally {
    await device.endAsync();
    await cloud.close();
  }
});
