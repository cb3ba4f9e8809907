/**
 * The operator API and the pre-signed file URLs over real HTTP, against what clients send that
 * they should not: a chunked body far past the limit, malformed percent-escapes, the Bearer
 * scheme in another case, suffix byte ranges.
 */
import assert from "node:assert/strict";
import { startCloud } from "../../broker/cloud.ts";
import { bearerToken, operatorApi } from "../../broker/operator_api.ts";

const TOKEN = "limits-token-123";

async function serve() {
  const cloud = await startCloud();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: TOKEN }),
  );
  const base = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  cloud.files.baseUrl = base;
  return {
    cloud,
    base,
    async close() {
      await server.shutdown();
      await cloud.close();
    },
  };
}

Deno.test("operator API: a chunked body past the limit is refused while it is read, not after", async () => {
  const { base, close } = await serve();
  try {
    let pulled = 0;
    const chunk = new Uint8Array(64 * 1024).fill(0x20);
    const total = 200 * 1024 * 1024;
    // No Content-Length: the body arrives chunked and only its bytes say how large it is.
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled >= total) return controller.close();
        pulled += chunk.length;
        controller.enqueue(chunk);
      },
    });
    const response = await fetch(`${base}/api/jobs`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body,
    }).catch((error) => error as Error);
    if (response instanceof Response) {
      assert.equal(response.status, 413);
      assert.match(await response.text(), /body larger than 1048576 bytes/);
    }
    // The server stopped reading at the limit: the client never had to produce the 200 MB.
    assert.ok(pulled < 32 * 1024 * 1024, `the client produced ${pulled} bytes`);
  } finally {
    await close();
  }
});

Deno.test("operator API and files: malformed percent-escapes are a 400, authenticated or not", async () => {
  const { base, close } = await serve();
  try {
    const files = await fetch(`${base}/files/%`);
    assert.equal(files.status, 400);
    assert.match(await files.text(), /malformed percent-escape/);
    const api = await fetch(`${base}/api/things/%E0%A4%A`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(api.status, 400);
    assert.match(await api.text(), /malformed percent-escape/);
    const unauthenticated = await fetch(`${base}/api/things/%E0%A4%A`);
    assert.equal(unauthenticated.status, 401);
    await unauthenticated.body?.cancel();
  } finally {
    await close();
  }
});

Deno.test("operator API: the Bearer scheme is case-insensitive; the token is not", async () => {
  assert.equal(bearerToken("Bearer abc"), "abc");
  assert.equal(bearerToken("bearer abc"), "abc");
  assert.equal(bearerToken("BEARER   abc"), "abc");
  assert.equal(bearerToken("Basic abc"), "");
  assert.equal(bearerToken(null), "");
  const { base, close } = await serve();
  try {
    for (const scheme of ["bearer", "BEARER", "Bearer"]) {
      const response = await fetch(`${base}/api/things`, {
        headers: { authorization: `${scheme} ${TOKEN}` },
      });
      assert.equal(response.status, 200, scheme);
      await response.body?.cancel();
    }
    const wrong = await fetch(`${base}/api/things`, {
      headers: { authorization: `bearer ${TOKEN.toUpperCase()}` },
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
  } finally {
    await close();
  }
});

Deno.test("pre-signed URLs: a suffix range (bytes=-N) serves the last N bytes", async () => {
  const { cloud, close } = await serve();
  try {
    const file = Uint8Array.from({ length: 1000 }, (_, i) => i & 0xff);
    await cloud.store.putFile("fw.bin", file);
    const url = cloud.files.presign("fw.bin", 60);
    const last = await fetch(url, { headers: { range: "bytes=-100" } });
    assert.equal(last.status, 206);
    assert.equal(last.headers.get("content-range"), "bytes 900-999/1000");
    assert.deepEqual(new Uint8Array(await last.arrayBuffer()), file.slice(900));
    const more = await fetch(url, { headers: { range: "bytes=-5000" } });
    assert.equal(more.status, 206, "a suffix longer than the file is the whole file");
    assert.equal(more.headers.get("content-range"), "bytes 0-999/1000");
    await more.body?.cancel();
    const none = await fetch(url, { headers: { range: "bytes=-0" } });
    assert.equal(none.status, 416);
    await none.body?.cancel();
    const neither = await fetch(url, { headers: { range: "bytes=-" } });
    assert.equal(neither.status, 416);
    await neither.body?.cancel();
  } finally {
    await close();
  }
});

Deno.test("operator API: /healthz answers without a token: the store answers, which broker runs, whether it schedules, the cloud's clock", async () => {
  const { base, cloud, close } = await serve();
  try {
    const before = Date.now();
    const ok = await fetch(`${base}/healthz`);
    const after = Date.now();
    assert.equal(ok.status, 200);
    const { clock, ...rest } = await ok.json();
    assert.deepEqual(rest, {
      status: "ok",
      store: "ok",
      broker: "embedded",
      scheduler: true,
    });
    assert.equal(clock.scale, 1);
    assert.ok(clock.now >= before && clock.now <= after, "an unscaled cloud keeps real time");
    await cloud.close(); // the store closed under the API: not ready any more
    const down = await fetch(`${base}/healthz`);
    assert.equal(down.status, 503);
    const body = await down.json();
    assert.equal(body.status, "unavailable");
    assert.match(body.store, /^failing: /);
  } finally {
    await close().catch(() => {});
  }
});

Deno.test("operator API: /metrics in the Prometheus text format counts connections, refusals, executions and commits", async () => {
  const { mqttConnect } = await import("../helpers/mqtt_login.ts");
  const { base, cloud, close } = await serve();
  try {
    await cloud.provisionThing("dev-m", "metrics-secret-1");
    await cloud.jobs.addThingToGroup("fleet", "dev-m");
    await cloud.jobs.createJob({
      jobId: "m1",
      document: { op: "x" },
      targets: { groups: ["fleet"] },
    });
    const ok = await mqttConnect(cloud.url, "dev-m", "metrics-secret-1");
    assert.equal(ok, 0);
    const refused = await mqttConnect(cloud.url, "dev-m", "wrong-secret");
    assert.notEqual(refused, 0);
    await cloud.store.committed();
    const response = await fetch(`${base}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /text\/plain; version=0\.0\.4/);
    const text = await response.text();
    const value = (series: string) =>
      Number(new RegExp(`^${series.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1]);
    assert.ok(value("ota_mqtt_connections_total") >= 1, text);
    assert.ok(value("ota_mqtt_refusals_total") >= 1, text);
    assert.equal(value('ota_job_executions{status="QUEUED"}'), 1);
    assert.ok(value("ota_store_commits_total") >= 1);
    assert.match(text, /^# TYPE ota_mqtt_connected gauge$/m);
  } finally {
    await close();
  }
});
