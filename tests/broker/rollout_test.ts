import assert from "node:assert/strict";
import fc from "fast-check";
import {
  firedAbortCriterion,
  notificationsAllowed,
  ratePerMinute,
  rolloutConfigProblems,
  shouldRetry,
  timeoutDeadline,
} from "../../broker/rollout.ts";

const MIN = 60_000;

Deno.test("ratePerMinute() follows the AWS worked example: 50 -> 100 -> 200 -> 400 per 1000 notified", () => {
  const config = {
    exponentialRate: {
      baseRatePerMinute: 50,
      incrementFactor: 2,
      rateIncreaseCriteria: { numberOfNotifiedThings: 1000 },
    },
  };
  const rates = [0, 999, 1000, 1999, 2000, 3000, 4000].map((notified) =>
    ratePerMinute(config, { notified, succeeded: 0 })
  );
  assert.deepEqual(rates, [50, 50, 100, 100, 200, 400, 800]);
  assert.equal(
    ratePerMinute(config, { notified: 100_000, succeeded: 0 }),
    1000,
    "never above 1000 per minute",
  );
  const bySuccess = {
    maximumPerMinute: 300,
    exponentialRate: {
      baseRatePerMinute: 10,
      incrementFactor: 1.5,
      rateIncreaseCriteria: { numberOfSucceededThings: 10 },
    },
  };
  assert.equal(
    ratePerMinute(bySuccess, { notified: 1000, succeeded: 9 }),
    10,
    "counts succeeded things only",
  );
  assert.equal(ratePerMinute(bySuccess, { notified: 0, succeeded: 20 }), 22);
  assert.equal(
    ratePerMinute(bySuccess, { notified: 0, succeeded: 200 }),
    300,
    "capped by maximumPerMinute",
  );
  assert.equal(ratePerMinute({}, { notified: 0, succeeded: 0 }), 1000);
});

Deno.test("rolloutConfigProblems() states every out-of-range field", () => {
  assert.deepEqual(rolloutConfigProblems({ maximumPerMinute: 1000 }), []);
  assert.equal(rolloutConfigProblems({ maximumPerMinute: 0 }).length, 1);
  assert.equal(
    rolloutConfigProblems({
      exponentialRate: { baseRatePerMinute: 0, incrementFactor: 1.05, rateIncreaseCriteria: {} },
    }).length,
    3,
  );
  assert.equal(
    rolloutConfigProblems({
      exponentialRate: {
        baseRatePerMinute: 5,
        incrementFactor: 2,
        rateIncreaseCriteria: { numberOfNotifiedThings: 1, numberOfSucceededThings: 1 },
      },
    }).length,
    1,
  );
});

Deno.test("notificationsAllowed(): property: a pacer that always takes what is allowed never exceeds the rate in any 60 s window", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 50 }),
      fc.array(fc.integer({ min: 0, max: 20_000 }), { maxLength: 60 }),
      (rate, gaps) => {
        const sent: number[] = [];
        let now = 0;
        for (const gap of gaps) {
          now += gap;
          const n = notificationsAllowed(rate, sent, now);
          for (let i = 0; i < n; i++) sent.push(now);
        }
        for (const at of sent) {
          assert.ok(sent.filter((t) => t > at - MIN && t <= at).length <= rate);
        }
      },
    ),
  );
});

Deno.test("notificationsAllowed() lets a fixed 1000/min rollout of 3000 things take three minutes in fake time", () => {
  const sent: number[] = [];
  for (let now = 0; sent.length < 3000; now += 1000) {
    const n = Math.min(3000 - sent.length, notificationsAllowed(1000, sent, now));
    for (let i = 0; i < n; i++) sent.push(now);
  }
  assert.equal(
    sent[sent.length - 1],
    2 * MIN,
    "the third thousand goes out at the start of minute 3",
  );
});

Deno.test("firedAbortCriterion() waits for the minimum, counts per failure type, and checks criteria in order", () => {
  const twenty = {
    failureType: "FAILED",
    action: "CANCEL",
    thresholdPercentage: 20,
    minNumberOfExecutedThings: 100,
  } as const;
  const fiftyAll = {
    failureType: "ALL",
    action: "PAUSE",
    thresholdPercentage: 50,
    minNumberOfExecutedThings: 10,
  } as const;
  assert.equal(
    firedAbortCriterion([twenty], { FAILED: 50, SUCCEEDED: 40 }),
    null,
    "90 executed < 100",
  );
  assert.equal(
    firedAbortCriterion([twenty], { FAILED: 20, SUCCEEDED: 80, QUEUED: 900 }),
    twenty,
    "queued ones do not count",
  );
  assert.equal(firedAbortCriterion([twenty], { FAILED: 19, SUCCEEDED: 81 }), null);
  assert.equal(
    firedAbortCriterion([twenty, fiftyAll], { FAILED: 3, REJECTED: 2, TIMED_OUT: 1, SUCCEEDED: 4 }),
    fiftyAll,
  );
  assert.equal(firedAbortCriterion([twenty], {}), null);
});

Deno.test("shouldRetry() retries FAILED and TIMED_OUT as configured, at most 10 times", () => {
  const config = [{ failureType: "FAILED", numberOfRetries: 2 }, {
    failureType: "TIMED_OUT",
    numberOfRetries: 1,
  }] as const;
  assert.deepEqual([0, 1, 2].map((n) => shouldRetry(config, "FAILED", n)), [true, true, false]);
  assert.deepEqual([0, 1].map((n) => shouldRetry(config, "TIMED_OUT", n)), [true, false]);
  assert.equal(shouldRetry(config, "REJECTED", 0), false, "REJECTED is never retried");
  assert.equal(shouldRetry([{ failureType: "ALL", numberOfRetries: 10 }], "FAILED", 10), false);
});

Deno.test("timeoutDeadline() follows the AWS step-timer example (12:00/12:05/12:10/12:13)", () => {
  // In-progress timeout 20 min from 12:00; a step of 5 min set at 12:05 -> 12:10; a later step of
  // 10 min set at 12:13 would end 12:23 but stops at the in-progress deadline 12:20.
  assert.equal(
    timeoutDeadline({
      startedAt: 0,
      inProgressTimeoutMinutes: 20,
      stepSetAt: 5 * MIN,
      stepTimeoutMinutes: 5,
    }),
    10 * MIN,
  );
  assert.equal(
    timeoutDeadline({
      startedAt: 0,
      inProgressTimeoutMinutes: 20,
      stepSetAt: 13 * MIN,
      stepTimeoutMinutes: 10,
    }),
    20 * MIN,
  );
  assert.equal(timeoutDeadline({ startedAt: 0 }), null);
  assert.equal(timeoutDeadline({ startedAt: 0, stepSetAt: MIN, stepTimeoutMinutes: 1 }), 2 * MIN);
});

Deno.test("firedAbortCriterion(): exactly at the threshold percentage it fires, one failure fewer it does not", () => {
  // Every executed count up to 200 and every whole percentage: where the failures are exactly
  // that percentage of the executions, the criterion fires; one failure fewer, it does not.
  for (let executed = 1; executed <= 200; executed++) {
    for (let threshold = 1; threshold <= 100; threshold++) {
      if ((threshold * executed) % 100 !== 0) continue;
      const atThreshold = (threshold * executed) / 100;
      const criterion = {
        failureType: "ALL",
        action: "CANCEL",
        thresholdPercentage: threshold,
        minNumberOfExecutedThings: 1,
      } as const;
      const counts = (failed: number) => ({ FAILED: failed, SUCCEEDED: executed - failed });
      assert.equal(
        firedAbortCriterion([criterion], counts(atThreshold)),
        criterion,
        `${atThreshold} of ${executed} is ${threshold}%`,
      );
      if (atThreshold > 0) {
        assert.equal(firedAbortCriterion([criterion], counts(atThreshold - 1)), null);
      }
    }
  }
});
