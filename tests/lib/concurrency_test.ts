import assert from "node:assert/strict";
import fc from "fast-check";
import { forEachLimited, Semaphore } from "../../lib/concurrency.ts";

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

Deno.test("Semaphore: property: never more holders than the limit, every waiter served in order, a double release gives back one place", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 4 }),
      fc.array(fc.boolean(), { minLength: 1, maxLength: 30 }),
      async (limit, releaseTwice) => {
        const semaphore = new Semaphore(limit);
        let holders = 0;
        let most = 0;
        const order: number[] = [];
        const releases: (() => void)[] = [];
        const granted = releaseTwice.map((_, i) =>
          semaphore.acquire().then((release) => {
            holders++;
            most = Math.max(most, holders);
            order.push(i);
            releases.push(() => {
              holders--;
              release();
              if (releaseTwice[i]) release();
            });
          })
        );
        // Release whoever holds a place until everyone has had one.
        for (let served = 0; served < releaseTwice.length; served++) {
          // Bounded: a semaphore that never grants would otherwise spin here for ever.
          for (let turns = 0; releases.length === 0; turns++) {
            if (turns > 100_000) throw new Error(`nobody holds a place for release ${served}`);
            await Promise.resolve();
          }
          releases.shift()!();
        }
        await Promise.all(granted);
        assert.ok(most <= limit, `${most} holders at once with a limit of ${limit}`);
        assert.deepEqual(order, releaseTwice.map((_, i) => i), "first come, first served");
        assert.equal(semaphore.waiting, 0);
      },
    ),
  );
});
