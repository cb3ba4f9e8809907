/** The scaled clock: real time sped up from an origin that clocks made apart can share. */
import assert from "node:assert/strict";
import { ScaledClock } from "../../lib/clock.ts";

Deno.test("ScaledClock: clocks with one origin read the same time however far apart they are made", async () => {
  const origin = Date.now() - 10_000;
  const first = new ScaledClock(60, { origin });
  // Made later, as a cluster's second node is.
  const made = Date.now();
  while (Date.now() < made + 50) await new Promise((resolve) => setTimeout(resolve, 10));
  const second = new ScaledClock(60, { origin });
  const [a, real, b] = [first.now(), Date.now(), second.now()];
  // Read within a millisecond or two of each other: at most 60 ms of this clock apart each.
  assert.ok(Math.abs(a - b) <= 2 * 60, `${a} vs ${b}`);
  // Ten real seconds after the origin, ten simulated minutes have passed.
  assert.ok(Math.abs(a - (origin + (real - origin) * 60)) <= 2 * 60);
  assert.ok(a - real >= 9 * 60_000, "runs ahead of real time since the origin");
});

Deno.test("ScaledClock: without an origin it reads real time when it is made, then runs scale times faster", () => {
  const before = Date.now();
  const clock = new ScaledClock(1000);
  const now = clock.now();
  const after = Date.now();
  assert.ok(clock.origin >= before && clock.origin <= after);
  assert.ok(now >= before && now <= after + (after - before) * 1000 + 1000);
  assert.throws(() => new ScaledClock(0), /'scale' must be a positive number/);
});
