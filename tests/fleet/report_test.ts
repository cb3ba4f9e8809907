/** The fleet's judgement of a run and its fault plan, as pure functions. */
import assert from "node:assert/strict";
import { judgeRun, type RunFacts } from "../../fleet/report.ts";
import { planDeviceFaults, planWorkerCrashes } from "../../fleet/fault_plan.ts";
import { seededRandom } from "../../lib/random.ts";

function happyFacts(overrides: Partial<RunFacts> = {}): RunFacts {
  return {
    options: {
      scenario: "happy",
      powerCutRate: 0,
      devices: 10,
      shard: { index: 1, count: 1 },
    },
    local: 10,
    finals: 10,
    bricked: 0,
    globalBad: 0,
    badDevices: 0,
    revertedByPowerCut: 0,
    trialPowerCuts: 0,
    expectedVersion: "1.1.0+0",
    updates: 1,
    runningVersion: { "1.1.0+0": 10 },
    runningPair: { "1.1.0+0 / 2.0.0+0": 10 },
    jobStatus: "COMPLETED",
    jobReason: null,
    lastCounts: { SUCCEEDED: 10, FAILED: 0 },
    total: { SUCCEEDED: 10, FAILED: 0 },
    ...overrides,
  };
}

Deno.test("judgeRun(): a happy run is as expected; one bricked or missing device is not", () => {
  assert.equal(judgeRun(happyFacts()).asExpected, true);
  assert.match(judgeRun(happyFacts()).expected, /every device on 1\.1\.0\+0/);
  assert.equal(judgeRun(happyFacts({ bricked: 1 })).asExpected, false);
  assert.equal(judgeRun(happyFacts({ finals: 9 })).asExpected, false);
  assert.equal(
    judgeRun(happyFacts({ runningVersion: { "1.1.0+0": 9, "1.0.0+0": 1 } })).asExpected,
    false,
    "a device left on the old image without a power cut to explain it",
  );
});

Deno.test("judgeRun(): rollback expects every device back on 1.0.0 and every execution FAILED", () => {
  const rollback = happyFacts({
    options: { ...happyFacts().options, scenario: "rollback" },
    runningVersion: { "1.0.0+0": 10 },
    lastCounts: { SUCCEEDED: 0, FAILED: 10 },
    total: { SUCCEEDED: 0, FAILED: 10 },
  });
  assert.equal(judgeRun(rollback).asExpected, true);
  assert.equal(
    judgeRun({ ...rollback, lastCounts: { SUCCEEDED: 1, FAILED: 9 } }).asExpected,
    false,
  );
});

Deno.test("planDeviceFaults(): the seed alone decides the plan; rates of 0 plan nothing", () => {
  const things = Array.from({ length: 50 }, (_, i) => `dev-${i}`);
  const rates = {
    disconnectRate: 0.3,
    corruptRate: 0.3,
    powerCutRate: 0.3,
    imageSize: 65536,
    blockSize: 4096,
  };
  const a = planDeviceFaults(things, rates, seededRandom(7));
  const b = planDeviceFaults(things, rates, seededRandom(7));
  assert.deepEqual(a, b);
  assert.ok(a.some((f) => f.message.type === "disconnect" && f.delayMs >= 200 && f.delayMs < 2200));
  assert.ok(a.some((f) => f.message.type === "cut-power"));
  for (const fault of a) {
    if (fault.message.type === "cut-power") {
      assert.ok(fault.message.atOperation >= 1 && fault.message.atOperation <= 16 + 40);
    }
  }
  const none = { ...rates, disconnectRate: 0, corruptRate: 0, powerCutRate: 0 };
  assert.deepEqual(planDeviceFaults(things, none, seededRandom(7)), []);
});

Deno.test("planWorkerCrashes(): sorted shares between 10% and 90%", () => {
  const plan = planWorkerCrashes(5, seededRandom(3));
  assert.equal(plan.length, 5);
  assert.deepEqual([...plan].sort((x, y) => x - y), plan);
  assert.ok(plan.every((share) => share >= 0.1 && share < 0.9));
});

Deno.test("judgeRun(): two components: every device on the new pair, or on the old one with a bad component; one mix and it is not", () => {
  const components = (
    scenario: "two-components" | "bad-component",
    runningPair: Record<string, number>,
    counts: { SUCCEEDED: number; FAILED: number },
  ) =>
    judgeRun(happyFacts({
      options: { scenario, powerCutRate: 0, devices: 10, shard: { index: 1, count: 1 } },
      runningPair,
      lastCounts: counts,
      total: counts,
    }));
  const done = { SUCCEEDED: 10, FAILED: 0 };
  const failed = { SUCCEEDED: 0, FAILED: 10 };
  assert.equal(components("two-components", { "1.1.0+0 / 2.1.0+0": 10 }, done).asExpected, true);
  assert.match(
    components("two-components", { "1.1.0+0 / 2.1.0+0": 10 }, done).expected,
    /every device on 1\.1\.0\+0 \/ 2\.1\.0\+0/,
  );
  const mixed = { "1.1.0+0 / 2.1.0+0": 9, "1.1.0+0 / 2.0.0+0": 1 };
  assert.equal(components("two-components", mixed, done).asExpected, false);
  assert.equal(components("bad-component", { "1.0.0+0 / 2.0.0+0": 10 }, failed).asExpected, true);
  assert.equal(
    components("bad-component", { "1.0.0+0 / 2.0.0+0": 9, "1.1.0+0 / 2.0.0+0": 1 }, failed)
      .asExpected,
    false,
  );
  assert.equal(
    components("bad-component", { "1.0.0+0 / 2.0.0+0": 10 }, done).asExpected,
    false,
    "a bad component cannot succeed",
  );
});
