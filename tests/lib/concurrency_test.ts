import assert from "node:assert/strict";
import fc from "fast-check";
import { forEachLimited } from "../../lib/concurrency.ts";

Deno.test("forEachLimited: property: every item once, never more than the limit in flight", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.nat(3), { maxLength: 40 }),
      fc.integer({ min: 1, max: 8 }),
      async (delays, limit) => {
        let inFlight = 0;
        let peak = 0;
        const seen: number[] = [];
        await forEachLimited(delays, limit, async (delay, index) => {
          inFlight++;
          peak = Math.max(peak, inFlight);
          for (let i = 0; i < delay; i++) await Promise.resolve();
          seen.push(index);
          inFlight--;
        });
        assert.deepEqual([...seen].sort((a, b) => a - b), delays.map((_, i) => i));
        assert.ok(peak <= limit, `peak ${peak} > limit ${limit}`);
      },
    ),
  );
});

Deno.test("forEachLimited: the first failure rejects and no item starts after it", async () => {
  const started: number[] = [];
  await assert.rejects(
    forEachLimited([0, 1, 2, 3, 4, 5], 2, async (n) => {
      started.push(n);
      await Promise.resolve();
      if (n === 1) throw new Error("item 1 failed");
    }),
    /item 1 failed/,
  );
  assert.ok(started.length <= 3, `started ${started}`);
  await assert.rejects(forEachLimited([1], 0, async () => {}), RangeError);
});
