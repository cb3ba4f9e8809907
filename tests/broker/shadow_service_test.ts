/** The shadow service (reported state), and a real device reporting itself after boot. */
import assert from "node:assert/strict";
import { MAX_SHADOW_BYTES, ShadowService } from "../../broker/shadow_service.ts";
import { SqliteStore } from "../../broker/sqlite_store.ts";
import { ManualClock } from "../../lib/clock.ts";
import { inProcessDevice, qualificationCloud } from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";

function service() {
  const store = new SqliteStore(":memory:");
  const published: { topic: string; body: Record<string, unknown> }[] = [];
  const shadows = new ShadowService({
    store,
    clock: new ManualClock(Date.parse("2026-06-01T00:00:00Z")),
    publisher: {
      publish(topic, payload) {
        published.push({ topic, body: JSON.parse(String(payload)) });
        return Promise.resolve();
      },
    },
  });
  const send = (value: unknown) =>
    shadows.handleUpdate(
      "dev-1",
      typeof value === "string" ? new TextEncoder().encode(value) : new TextEncoder().encode(
        JSON.stringify(value),
      ),
    );
  return { store, shadows, published, send };
}

Deno.test("shadow: reported state merges key by key, null deletes, every accepted update bumps the version", async () => {
  const { store, shadows, published, send } = service();
  try {
    await send({
      state: { reported: { firmware: "1.0.0", slots: { a: 1, b: 2 } } },
      clientToken: "t1",
    });
    await send({ state: { reported: { slots: { b: null, c: 3 }, counter: 2 } } });
    assert.deepEqual((await shadows.get("dev-1"))?.reported, {
      firmware: "1.0.0",
      slots: { a: 1, c: 3 },
      counter: 2,
    });
    assert.equal((await shadows.get("dev-1"))?.version, 2);
    assert.equal(published[0]!.topic, "$aws/things/dev-1/shadow/update/accepted");
    assert.equal(published[0]!.body.clientToken, "t1");
    assert.equal(published[1]!.body.version, 2);
    assert.deepEqual([...(await shadows.all()).keys()], ["dev-1"]);
    assert.equal(await shadows.get("dev-2"), null);
  } finally {
    await store.close();
  }
});

Deno.test("shadow: bad updates are rejected with AWS codes and a message, and change nothing", async () => {
  const { store, shadows, published, send } = service();
  try {
    await send({ state: { reported: { firmware: "1.0.0" } } });
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 7; i++) deep = { nested: deep };
    const cases: [unknown, number, RegExp][] = [
      ["{not json", 400, /not UTF-8 JSON/],
      [[1, 2], 400, /JSON object/],
      [{ state: { desired: { x: 1 } } }, 400, /state.reported must be an object/],
      [{ state: { reported: "1.0.0" } }, 400, /state.reported must be an object/],
      [{ state: { reported: deep } }, 400, /nests deeper than 6/],
      [{ state: { reported: { blob: "x".repeat(MAX_SHADOW_BYTES) } } }, 413, /exceeds/],
    ];
    for (const [input, code, message] of cases) {
      const before = published.length;
      await send(input);
      const answer = published[before]!;
      assert.equal(answer.topic, "$aws/things/dev-1/shadow/update/rejected", String(input));
      assert.equal(answer.body.code, code);
      assert.match(String(answer.body.message), message);
    }
    assert.deepEqual((await shadows.get("dev-1"))?.reported, { firmware: "1.0.0" });
    assert.equal((await shadows.get("dev-1"))?.version, 1);
  } finally {
    await store.close();
  }
});

Deno.test("shadow end to end: a device reports its firmware, slots, counter and boot log after it boots", async () => {
  const side = await qualificationCloud("MQTT");
  const rig = await inProcessDevice(side);
  try {
    await rig.runtime.start();
    await waitUntil(
      async () => (await side.cloud.shadows.get(side.thing)) !== null,
      "the device's report",
    );
    const reported = (await side.cloud.shadows.get(side.thing))!.reported;
    assert.equal(reported.firmware, "1.0.0+0");
    assert.equal(reported.securityCounter, 1);
    assert.deepEqual(reported.slots, {
      primary: { version: "1.0.0+0", imageOk: "unset" },
      secondary: { version: null, failed: "unset" },
    });
    const boot = reported.boot as { count: number; log: string[] };
    assert.equal(boot.count, 1);
    assert.ok(boot.log.some((line) => line.includes("booting 1.0.0+0")), boot.log.join("\n"));
  } finally {
    await rig.runtime.stop();
    await side.close();
  }
});
