/**
 * `deno task broker` as a process: refused logins and ACL violations are logged with the client
 * id, the remote address and the reason; a flood of them is cut to a bounded number of lines.
 */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { waitUntil } from "../helpers/wait.ts";
import { freePort } from "../../lib/free_port.ts";

const TOKEN = "refusal-log-token";

/** One MQTT login attempt that the broker answers (accepted or refused). */
function tryLogin(url: string, clientId: string, password: string): Promise<void> {
  return new Promise((resolve) => {
    const client = mqtt.connect(url, {
      clientId,
      username: clientId,
      password,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    });
    const done = () => client.end(true, {}, () => resolve());
    client.once("connect", done);
    client.once("error", done);
    client.once("close", done);
  });
}

Deno.test("broker process: refused logins and ACL violations are logged, and a flood of them is bounded", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ota-refusals-" });
  const mqttPort = freePort();
  const httpPort = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("../../broker/main.ts", import.meta.url).pathname,
      "--port",
      String(mqttPort),
      "--http-port",
      String(httpPort),
      "--data",
      dataDir,
      "--token",
      TOKEN,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const reading = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
  })();
  let stdout = "";
  const readingOut = (async () => {
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) stdout += text;
  })();
  try {
    await waitUntil(() => stdout.includes("\n"), "the broker to be ready", 60_000);
    const url = `mqtt://127.0.0.1:${mqttPort}`;
    // A device the cloud knows, logging in with the wrong secret, then one publishing elsewhere.
    const put = await fetch(`http://127.0.0.1:${httpPort}/api/things/dev-1`, {
      method: "PUT",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ secret: "right-secret-123" }),
    });
    assert.equal(put.status, 201, await put.text());
    await tryLogin(url, "dev-1", "wrong-secret");
    await waitUntil(
      () => / refused reason="connect refused: bad credentials for 'dev-1'/.test(stderr),
      "the refused login in the log",
    );
    assert.match(stderr, /client 'dev-1' from 127\.0\.0\.1:\d+/);
    const device = await mqtt.connectAsync(url, {
      clientId: "dev-1",
      username: "dev-1",
      password: "right-secret-123",
      reconnectPeriod: 0,
    });
    await device.publishAsync("$aws/things/dev-2/jobs/x/update", "{}", { qos: 0 }).catch(() => {});
    await waitUntil(
      () => stderr.includes("publish to '$aws/things/dev-2/jobs/x/update' refused"),
      "the ACL violation in the log",
    );
    await device.endAsync(true);
    // A flood: 200 bad logins within a window of 10 s give at most 20 lines.
    const before = stderr.split("\n").filter((l) => / refused reason=/.test(l)).length;
    for (let i = 0; i < 200; i++) await tryLogin(url, `intruder-${i}`, "guess");
    const after = stderr.split("\n").filter((l) => / refused reason=/.test(l)).length;
    assert.ok(after - before <= 20, `${after - before} refusal lines for 200 refused logins`);
    assert.ok(after > before || before >= 20, "the flood was logged at all");
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading;
    await readingOut;
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("broker process: --log-format json writes one event a line: started, client connected, update created", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ota-json-log-" });
  const mqttPort = freePort();
  const httpPort = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("../../broker/main.ts", import.meta.url).pathname,
      "--port",
      String(mqttPort),
      "--http-port",
      String(httpPort),
      "--data",
      dataDir,
      "--token",
      TOKEN,
      "--log-format",
      "json",
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const reading = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
  })();
  const readingOut = (async () => {
    for await (const _ of child.stdout) { /* the ready line */ }
  })();
  const events = () =>
    stderr.split("\n").filter((l) => l.startsWith("{")).map((l) =>
      JSON.parse(l) as Record<string, unknown>
    );
  try {
    await waitUntil(() => events().some((e) => e.event === "started"), "the started event", 60_000);
    const api = `http://127.0.0.1:${httpPort}/api`;
    const headers = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
    const put = await fetch(`${api}/things/dev-7`, {
      method: "PUT",
      headers,
      body: JSON.stringify({ secret: "seven-secret-1", groups: ["g"] }),
    });
    await put.body?.cancel();
    const job = await fetch(`${api}/jobs`, {
      method: "POST",
      headers,
      body: JSON.stringify({ jobId: "j7", document: { op: "x" }, targets: { groups: ["g"] } }),
    });
    assert.equal(job.status, 201, await job.text());
    await tryLogin(`mqtt://127.0.0.1:${mqttPort}`, "dev-7", "seven-secret-1");
    await waitUntil(
      () => events().some((e) => e.event === "client-connected" && e.client === "dev-7"),
      "the client-connected event",
    );
    const created = events().find((e) => e.event === "job-created");
    assert.equal(created?.job, "j7");
    for (const e of events()) {
      assert.ok(typeof e.time === "string" && !Number.isNaN(Date.parse(e.time as string)));
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading;
    await readingOut;
    await Deno.remove(dataDir, { recursive: true });
  }
});
