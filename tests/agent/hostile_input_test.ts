/**
 * Hostile input on every topic a device listens to: random bytes delivered mid-download on the
 * job notification and reply topics, the stream's data and rejection topics. Nothing escapes the
 * agent (a device never crashes on input from the network), and the update then completes as if
 * the garbage had never come. fast-check prints the seed and path of a failing case.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { rig, signedUpdate, startJob } from "../helpers/agent_rig.ts";
import { waitUntil } from "../helpers/wait.ts";

/** Every topic the agent subscribes to, for a thing, job and stream. */
const TOPICS = [
  "jobs/notify-next",
  "jobs/$next/get/accepted",
  "jobs/$next/get/rejected",
  "jobs/job-1/update/accepted",
  "jobs/job-1/update/rejected",
  "jobs/job-1/get/accepted",
  "jobs/job-1/get/rejected",
  "streams/stream-1/data/cbor",
  "streams/stream-1/rejected/cbor",
] as const;

Deno.test("hostile input: random bytes on every subscribed topic mid-download change nothing", async () => {
  const { image, signature } = await signedUpdate("1.1.0");
  const garbage = fc.array(
    fc.record({
      topic: fc.constantFrom(...TOPICS),
      // Binary noise, and text that is JSON but not an object (a string, a number, an array).
      payload: fc.oneof(
        fc.uint8Array({ maxLength: 2048 }),
        fc.oneof(fc.string(), fc.integer(), fc.array(fc.nat(), { maxLength: 4 })).map((v) =>
          new TextEncoder().encode(JSON.stringify(v))
        ),
      ),
    }),
    { minLength: 1, maxLength: 40 },
  );
  await fc.assert(
    fc.asyncProperty(garbage, async (messages) => {
      const r = await rig();
      try {
        await r.runtime.start();
        await startJob(r, image, signature);
        await waitUntil(
          () => (r.runtime.agent?.blocksRemaining ?? 99) < 17,
          "the download to start",
        );
        const agent = r.runtime.agent!;
        for (const { topic, payload } of messages) {
          assert.doesNotThrow(() =>
            agent.handleMessage(`$aws/things/${r.thing}/${topic}`, payload)
          );
        }
        const execution = r.cloud.execution(r.thing, "job-1");
        await r.cloud.waitFor(() => execution.status === "SUCCEEDED", "SUCCEEDED");
        await waitUntil(() => r.runtime.device.running?.trial === false, "confirmation");
        assert.equal(r.runtime.device.running?.version, "1.1.0+0");
      } finally {
        await r.close();
      }
    }),
    { numRuns: 8 },
  );
});
