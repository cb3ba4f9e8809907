import assert from "node:assert/strict";
import { operatorLog, rateLimited } from "../../broker/operator_log.ts";

Deno.test("operatorLog: text lines split into fields (values with spaces quoted); json one object a line", () => {
  const lines: string[] = [];
  const text = operatorLog("text", (l) => lines.push(l), () => 0);
  text("job-paused", { job: "j1", reason: "health gate: 1 of 2" });
  assert.equal(lines[0], '1970-01-01T00:00:00.000Z job-paused job=j1 reason="health gate: 1 of 2"');
  const json = operatorLog("json", (l) => lines.push(l), () => 0);
  json("client-connected", { client: "dev-1" });
  assert.deepEqual(JSON.parse(lines[1]!), {
    time: "1970-01-01T00:00:00.000Z",
    event: "client-connected",
    client: "dev-1",
  });
});

Deno.test("rateLimited: at most `limit` events a window; the next window's first says how many were left out", () => {
  let now = 0;
  const seen: Record<string, unknown>[] = [];
  const log = rateLimited((event, fields) => seen.push({ event, ...fields }), {
    limit: 2,
    windowMs: 1000,
    now: () => now,
  });
  for (let i = 0; i < 10; i++) log("client-connected", { n: i });
  assert.equal(seen.length, 2);
  now = 1000;
  log("client-connected", { n: 10 });
  assert.deepEqual(seen[2], { event: "client-connected", n: 10, suppressed: 8 });
});
