import assert from "node:assert/strict";
import { ManualClock } from "../../lib/clock.ts";
import { RateLimitedLog } from "../../lib/rate_limited_log.ts";

Deno.test("RateLimitedLog: at most `limit` lines a window; the rest are counted and said once", () => {
  const clock = new ManualClock(0);
  const lines: string[] = [];
  const log = new RateLimitedLog((l) => lines.push(l), clock, { limit: 3, windowMs: 1000 });
  for (let i = 0; i < 1000; i++) log.write(`line ${i}`);
  assert.deepEqual(lines, ["line 0", "line 1", "line 2"]);
  assert.equal(log.suppressed, 997);
  clock.advance(999);
  log.write("still the first window");
  assert.equal(lines.length, 3);
  clock.advance(1);
  log.write("second window");
  assert.deepEqual(lines.slice(3), [
    "... 998 more like these in 1 s were not logged",
    "second window",
  ]);
  assert.equal(log.suppressed, 0);
});
