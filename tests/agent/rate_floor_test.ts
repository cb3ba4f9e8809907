/** The slow-retrieval watch: pure, on a clock the test gives. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { RateWatch } from "../../agent/rate_floor.ts";

Deno.test("RateWatch: a window below the floor says so once it is over; one at or above it starts the next", () => {
  const watch = new RateWatch({ bytesPerSecond: 1000, windowSeconds: 10 }, 0);
  assert.equal(watch.received(5000, 5_000), null, "not over yet, however slow");
  assert.equal(watch.received(5000, 10_000), null, "10,000 bytes in 10 s: at the floor");
  assert.equal(watch.received(9000, 19_000), null, "the next window has just begun");
  assert.equal(
    watch.check(20_000),
    "download too slow: 900 B/s over the last 10 s, below the job's floor of 1000 B/s",
  );
});

Deno.test("RateWatch: a restart (the device's own pause) starts a fresh window", () => {
  const watch = new RateWatch({ bytesPerSecond: 1000, windowSeconds: 10 }, 0);
  watch.received(100, 1_000);
  watch.restart(60_000);
  assert.equal(watch.check(65_000), null);
  assert.equal(watch.received(20_000, 70_000), null);
});

Deno.test("RateWatch: property: it complains exactly when a whole window received less than the floor", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 100_000 }),
      fc.integer({ min: 1, max: 60 }),
      fc.array(fc.record({ bytes: fc.nat(50_000), gap: fc.nat(20_000) }), { maxLength: 40 }),
      (floor, windowSeconds, arrivals) => {
        const watch = new RateWatch({ bytesPerSecond: floor, windowSeconds }, 0);
        let windowStart = 0;
        let bytes = 0;
        let now = 0;
        for (const arrival of arrivals) {
          now += arrival.gap;
          bytes += arrival.bytes;
          const said = watch.received(arrival.bytes, now);
          const elapsed = now - windowStart;
          const over = elapsed >= windowSeconds * 1000;
          const slow = over && bytes * 1000 / elapsed < floor;
          assert.equal(said !== null, slow, JSON.stringify({ now, bytes, elapsed }));
          if (slow) return;
          if (over) {
            windowStart = now;
            bytes = 0;
          }
        }
      },
    ),
  );
});
