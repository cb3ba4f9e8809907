import assert from "node:assert/strict";
import fc from "fast-check";
import { startCloud } from "../../broker/cloud.ts";
import { operatorApi } from "../../broker/operator_api.ts";

const TOKEN = "operator-token-123";

async function setup() {
  const cloud = await startCloud();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: TOKEN }),
  );
  const base = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/api`;
  const call = async (
    method: string,
    path: string,
    body?: unknown,
    token: string | null = TOKEN,
  ) => {
    const headers: Record<string, string> = {};
    if (token !== null) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${base}${path}`, {
      method,
      headers,
      ...(body !== undefined
        ? {
          body: typeof body === "string" ? body : JSON.stringify(body),
        }
        : {}),
    });
    return { status: response.status, body: await response.json() };
  };
  return {
    cloud,
    call,
    async close() {
      await server.shutdown();
      await cloud.close();
    },
  };
}

Deno.test("operator API: no token, a wrong token or device credentials get 401", async () => {
  const s = await setup();
  try {
    await s.cloud.provisionThing("dev-1", "device-secret");
    assert.equal((await s.call("GET", "/jobs", undefined, null)).status, 401);
    assert.equal((await s.call("GET", "/jobs", undefined, "nope")).status, 401);
    assert.equal((await s.call("GET", "/jobs", undefined, "device-secret")).status, 401);
    assert.equal((await s.call("GET", "/jobs")).status, 200);
  } finally {
    await s.close();
  }
});

Deno.test("operator API: generateSecret registers a thing with a secret shown once, which logs it in", async () => {
  const s = await setup();
  try {
    const created = await s.call("PUT", "/things/dev-g", { generateSecret: true, groups: ["g"] });
    assert.equal(created.status, 201);
    const secret = created.body.secret as string;
    assert.match(secret, /^[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(created.body.groups, ["g"]);
    const shown = await s.call("GET", "/things/dev-g");
    assert.ok(!JSON.stringify(shown.body).includes(secret), "never shown again");
    for (
      const bad of [
        { generateSecret: true, secret: "chosen-secret" },
        { generateSecret: false, secret: "chosen-secret" },
        { generateSecret: "yes" },
        {},
      ]
    ) {
      assert.equal((await s.call("PUT", "/things/dev-h", bad)).status, 400, JSON.stringify(bad));
    }
    const { default: mqtt } = await import("mqtt");
    const login = (password: string) =>
      mqtt.connectAsync(s.cloud.url, {
        clientId: "dev-g",
        username: "dev-g",
        password,
        reconnectPeriod: 0,
      });
    const client = await login(secret);
    await client.endAsync();
    await assert.rejects(login(`${secret.slice(0, -1)}${secret.endsWith("A") ? "B" : "A"}`));
  } finally {
    await s.close();
  }
});

Deno.test("operator API: things, groups, jobs, executions by status, history, cancel", async () => {
  const s = await setup();
  try {
    for (const name of ["dev-1", "dev-2", "dev-3"]) {
      const created = await s.call("PUT", `/things/${name}`, {
        secret: `secret-${name}-xyz`,
        groups: ["fleet"],
      });
      assert.equal(created.status, 201);
    }
    assert.equal((await s.call("PUT", "/things/bad name", { secret: "12345678" })).status, 400);
    assert.equal((await s.call("PUT", "/things/dev-9", { secret: "short" })).status, 400);
    assert.deepEqual((await s.call("GET", "/groups/fleet")).body.things, [
      "dev-1",
      "dev-2",
      "dev-3",
    ]);
    const job = await s.call("POST", "/jobs", {
      jobId: "ota-1",
      document: { afr_ota: {} },
      targets: { groups: ["fleet"] },
    });
    assert.equal(job.status, 201);
    assert.equal(job.body.counts.QUEUED, 3);
    assert.equal(
      (await s.call("POST", "/jobs", {
        jobId: "ota-1",
        document: {},
        targets: { groups: ["fleet"] },
      })).status,
      400,
    );
    const bad = await s.call("POST", "/jobs", "{not json");
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /not JSON/);
    await s.cloud.jobs.handleDeviceMessage(
      "dev-2",
      "$aws/things/dev-2/jobs/ota-1/update",
      new TextEncoder().encode(JSON.stringify({ status: "IN_PROGRESS" })),
    );
    await s.cloud.jobs.handleDeviceMessage(
      "dev-2",
      "$aws/things/dev-2/jobs/ota-1/update",
      new TextEncoder().encode(
        JSON.stringify({ status: "FAILED", statusDetails: { reason: "0x000000e3: 0x00000095" } }),
      ),
    );
    const failed = await s.call("GET", "/jobs/ota-1/executions?status=FAILED");
    assert.deepEqual(failed.body.map((e: { thing: string }) => e.thing), ["dev-2"]);
    assert.equal((await s.call("GET", "/jobs/ota-1/executions?status=BOGUS")).status, 400);
    const history = await s.call("GET", "/things/dev-2/history");
    assert.ok(
      history.body.history.some((h: { detail: { statusDetails?: { reason?: string } } }) =>
        h.detail.statusDetails?.reason === "0x000000e3: 0x00000095"
      ),
    );
    const canceled = await s.call("POST", "/jobs/ota-1/cancel", { reason: "bad build" });
    assert.equal(canceled.status, 200);
    assert.equal(canceled.body.counts.CANCELED, 2);
    assert.equal((await s.call("POST", "/jobs/ota-1/cancel", {})).status, 409);
    assert.equal((await s.call("GET", "/jobs/nope")).status, 404);
    assert.equal((await s.call("GET", "/nothing")).status, 404);
    const listed = await s.call("GET", "/jobs");
    assert.equal(listed.body[0].status, "CANCELED");
  } finally {
    await s.close();
  }
});

Deno.test("operator API: property: any JSON (or not-JSON) body on any write endpoint gets a 2xx or 4xx with a reason, never a 5xx, and the API keeps serving", async () => {
  const s = await setup();
  try {
    const endpoints = [
      ["PUT", "/things/fuzzed-thing"],
      ["PUT", "/groups/fuzz/things/fuzzed-thing"],
      ["POST", "/jobs"],
      ["POST", "/jobs/some-job/cancel"],
      ["POST", "/jobs/some-job/pause"],
      ["POST", "/jobs/some-job/resume"],
      ["POST", "/signing-profiles"],
      ["POST", "/ota-updates"],
      ["PUT", "/streams/fuzz-stream"],
    ] as const;
    const body = fc.oneof(
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc.string({ maxLength: 200 }),
      fc.constant("{"),
      fc.record({ jobId: fc.string(), targets: fc.jsonValue(), document: fc.jsonValue() }).map((
        v,
      ) => JSON.stringify(v)),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...endpoints), body, async ([method, path], text) => {
        const reply = await s.call(method, path, text);
        assert.ok(reply.status < 500, `${method} ${path} ${text} -> ${reply.status}`);
        if (reply.status >= 400) {
          assert.equal(typeof reply.body.error, "string", JSON.stringify(reply.body));
        }
      }),
      { numRuns: 150 },
    );
    assert.equal((await s.call("GET", "/things")).status, 200, "still serving");
  } finally {
    await s.close();
  }
});
