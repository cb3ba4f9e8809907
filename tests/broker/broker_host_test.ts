/** `deno task broker --host --public-url`: what it listens on and what it tells others to reach. */
import assert from "node:assert/strict";
import { withDeadline } from "../helpers/wait.ts";

Deno.test("broker process: --host 0.0.0.0 and --public-url: the ready line and the dashboard URL use the public URL", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ota-host-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("../../broker/main.ts", import.meta.url).pathname,
      "--port",
      "0",
      "--http-port",
      "0",
      "--host",
      "0.0.0.0",
      "--public-url",
      "http://ota.example.test:8080/",
      "--data",
      dataDir,
      "--token",
      "host-test-token",
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  let err = "";
  const reading = (async () => {
    for await (const t of child.stdout.pipeThrough(new TextDecoderStream())) out += t;
  })();
  const readingErr = (async () => {
    for await (const t of child.stderr.pipeThrough(new TextDecoderStream())) err += t;
  })();
  try {
    await withDeadline(
      (async () => {
        while (!out.includes("\n") || !err.includes("dashboard:")) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })(),
      "the broker's ready line and dashboard URL",
      60_000,
    );
    const ready = JSON.parse(out.split("\n")[0]!);
    assert.equal(ready.api, "http://ota.example.test:8080/api/");
    assert.equal(ready.dashboard, "http://ota.example.test:8080/dashboard/");
    assert.match(
      err,
      /^dashboard: http:\/\/ota\.example\.test:8080\/dashboard\/ \(it asks for the operator token\)$/m,
    );
    // Listening on every interface includes loopback.
    const port = Number(/:(\d+)$/.exec(ready.mqtt)![1]);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading;
    await readingErr;
    await Deno.remove(dataDir, { recursive: true });
  }
});
