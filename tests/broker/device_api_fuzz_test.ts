/**
 * Hostile input on the cloud side: a device (real mqtt.js client, real aedes over TCP, real job
 * and stream services) publishes random and half-valid payloads on every topic the services
 * serve - Jobs `get`, `start-next`, `$next/get`, `<job>/get`, `<job>/update` (its own job and an
 * unknown one) and the stream's `get/cbor`. The broker never goes down, every rejection is JSON
 * with a code and a message, the device's execution only ever moves along legal transitions
 * (a terminal status is final), and a bystander device is served throughout.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import mqtt from "mqtt";
import { startCloud } from "../../broker/cloud.ts";
import { EXECUTION_STATUSES, TERMINAL_STATUSES } from "../../broker/job_execution.ts";
import { encodeGetStreamRequest } from "../../protocol/stream_codec.ts";
import { waitUntil } from "../helpers/wait.ts";

/** Every real status, and two that are not. */
const STATUSES = [...EXECUTION_STATUSES, "in_progress", ""];

/** JSON that looks like a request, with every field possibly wrong. */
const requestLike = fc.record({
  clientToken: fc.oneof(fc.string({ maxLength: 80 }), fc.integer(), fc.constant(null)),
  status: fc.constantFrom(...STATUSES),
  statusDetails: fc.oneof(
    fc.dictionary(fc.string({ maxLength: 10 }), fc.string({ maxLength: 40 }), { maxKeys: 12 }),
    fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
    fc.constant("not an object"),
  ),
  expectedVersion: fc.oneof(fc.integer({ min: -2, max: 5 }), fc.string({ maxLength: 4 })),
  executionNumber: fc.oneof(fc.integer({ min: -1, max: 3 }), fc.constant("1")),
  includeJobDocument: fc.oneof(fc.boolean(), fc.constant("yes")),
  stepTimeoutInMinutes: fc.oneof(fc.integer({ min: -5, max: 20_000 }), fc.constant(1.5)),
}, { requiredKeys: [] }).map((value) => new TextEncoder().encode(JSON.stringify(value)));

const payloads = fc.oneof(
  requestLike,
  fc.uint8Array({ maxLength: 1024 }),
  fc.jsonValue({ maxDepth: 3 }).map((value) => new TextEncoder().encode(JSON.stringify(value))),
  fc.record({
    s: fc.oneof(fc.integer({ min: -1, max: 5 }), fc.string({ maxLength: 4 })),
    f: fc.integer({ min: -1, max: 3 }),
    l: fc.integer({ min: -1, max: 1 << 20 }),
    o: fc.integer({ min: -1, max: 1 << 20 }),
    n: fc.integer({ min: -1, max: 1 << 20 }),
  }).map((r) => {
    try {
      return encodeGetStreamRequest({
        fileId: r.f,
        blockSize: r.l,
        offset: r.o,
        numberOfBlocks: r.n,
        bitmap: new Uint8Array(typeof r.s === "number" ? Math.max(0, r.s) : 1).fill(0xff),
        clientToken: "fuzz",
      });
    } catch {
      return new Uint8Array([0xa1, 0x61, 0x66, r.f & 0x1f]);
    }
  }),
);

const SUFFIXES = [
  "jobs/get",
  "jobs/start-next",
  "jobs/$next/get",
  "jobs/fuzz-job/get",
  "jobs/fuzz-job/update",
  "jobs/unknown-job/update",
  "jobs/unknown-job/get",
  "streams/fuzz-stream/get/cbor",
  "streams/no-such-stream/get/cbor",
];

Deno.test("device API fuzz: any payload on any service topic: the broker serves on, rejections say why, executions move legally", async () => {
  const cloud = await startCloud();
  const clients: mqtt.MqttClient[] = [];
  try {
    for (const thing of ["fuzzer", "bystander"]) {
      await cloud.provisionThing(thing, `secret-${thing}`);
    }
    cloud.streams.addStream("fuzz-stream", new Map([[0, new Uint8Array(5000).fill(7)]]));
    const created = await cloud.jobs.createJob({
      jobId: "fuzz-job",
      document: { afr_ota: { protocols: ["MQTT"], streamname: "fuzz-stream", files: [] } },
      targets: { things: ["fuzzer", "bystander"] },
    });
    assert.ok(created.ok);
    const connect = async (thing: string) => {
      const client = await mqtt.connectAsync(cloud.url, {
        clientId: thing,
        username: thing,
        password: `secret-${thing}`,
        reconnectPeriod: 100,
      });
      clients.push(client);
      await client.subscribeAsync(`$aws/things/${thing}/#`, { qos: 1 });
      return client;
    };
    const fuzzer = await connect("fuzzer");
    const bystander = await connect("bystander");
    const unexplained: string[] = [];
    fuzzer.on("message", (topic, payload) => {
      if (!topic.endsWith("/rejected")) return;
      try {
        const body = JSON.parse(payload.toString());
        if (typeof body.code !== "string" || typeof body.message !== "string") {
          unexplained.push(`${topic}: ${payload}`);
        }
      } catch {
        unexplained.push(`${topic}: not JSON: ${payload}`);
      }
    });
    let answers = 0;
    bystander.on("message", (topic) => {
      if (topic.endsWith("/jobs/$next/get/accepted")) answers++;
    });
    let terminalSeen: string | null = null;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom(...SUFFIXES), payloads), { minLength: 1, maxLength: 12 }),
        async (messages) => {
          for (const [suffix, payload] of messages) {
            await fuzzer.publishAsync(`$aws/things/fuzzer/${suffix}`, Buffer.from(payload), {
              qos: 1,
            });
          }
          // The broker still serves the bystander, after (in order) everything the fuzzer sent.
          const before = answers;
          await bystander.publishAsync(
            "$aws/things/bystander/jobs/$next/get",
            JSON.stringify({ clientToken: "still-there" }),
            { qos: 1 },
          );
          await waitUntil(() => answers > before, "the bystander to be answered");
          const status = (await cloud.store.getExecution("fuzz-job", "fuzzer"))?.status;
          assert.ok(status !== undefined && EXECUTION_STATUSES.includes(status), `${status}`);
          if (terminalSeen !== null) {
            assert.equal(status, terminalSeen, "a terminal status is final");
          } else if (TERMINAL_STATUSES.has(status)) {
            terminalSeen = status;
          }
          assert.deepEqual(unexplained, [], "every rejection has a code and a message");
        },
      ),
      { numRuns: 40 },
    );
    assert.equal((await cloud.store.getExecution("fuzz-job", "bystander"))?.status, "QUEUED");
  } finally {
    for (const client of clients) await client.endAsync(true);
    await cloud.close();
  }
});
