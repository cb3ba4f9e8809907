/** The job service in fake time over an in-memory SQLite store, the device API driven directly. */
import assert from "node:assert/strict";
import { JobService } from "../../broker/job_service.ts";
import { type JobSpec } from "../../broker/job_spec.ts";
import { SqliteStore } from "../../broker/sqlite_store.ts";
import { ManualClock } from "../../lib/clock.ts";

const MIN = 60_000;
const encoder = new TextEncoder();

function setup(options: { path?: string; clock?: ManualClock } = {}) {
  const store = new SqliteStore(options.path ?? ":memory:");
  const clock = options.clock ?? new ManualClock(Date.parse("2026-06-01T00:00:00Z"));
  const sent: { topic: string; body: Record<string, unknown> }[] = [];
  const jobs = new JobService({
    store,
    clock,
    publisher: {
      publish: (topic, payload) => {
        sent.push({ topic, body: JSON.parse(String(payload)) });
        return Promise.resolve();
      },
    },
  });
  const things = async (n: number, group = "fleet") => {
    const names = Array.from({ length: n }, (_, i) => `dev-${String(i).padStart(3, "0")}`);
    for (const name of names) await store.addToGroup(group, name);
    return names;
  };
  const device = async (thing: string, path: string, body: Record<string, unknown> = {}) => {
    const topic = `$aws/things/${thing}/jobs/${path}`;
    const mark = sent.length;
    await jobs.handleDeviceMessage(thing, topic, encoder.encode(JSON.stringify(body)));
    // The job's review after an ended execution runs after the reply: let it settle too.
    await jobs.flush();
    store.commit(); // what the service publishes leaves at the commit
    return sent.slice(mark).find((m) => m.topic.startsWith(topic + "/"));
  };
  /** A device that starts its job and ends it with `status`. */
  const finish = async (thing: string, jobId: string, status: string) => {
    await device(thing, `${jobId}/update`, { status: "IN_PROGRESS" });
    return await device(thing, `${jobId}/update`, { status });
  };
  const advance = async (ms: number) => {
    clock.advance(ms);
    await jobs.tick();
  };
  return {
    store,
    clock,
    jobs,
    /** What the service published, once the writes behind it are committed. */
    get sent() {
      store.commit();
      return sent;
    },
    things,
    device,
    finish,
    advance,
  };
}

const document = { afr_ota: { protocols: ["MQTT"], streamname: "s", files: [] } };
const job = (spec: Partial<JobSpec> = {}): JobSpec => ({
  jobId: "job-1",
  document,
  targets: { groups: ["fleet"] },
  ...spec,
});

Deno.test("job service: maximumPerMinute rolls a 30-thing job out 10 per minute", async () => {
  const s = setup();
  await s.things(30);
  assert.ok((await s.jobs.createJob(job({ rollout: { maximumPerMinute: 10 } }))).ok);
  const queued = async () => (await s.store.executionsOfJob("job-1")).length;
  assert.equal(await queued(), 10);
  await s.advance(30_000);
  assert.equal(await queued(), 10);
  await s.advance(30_000);
  assert.equal(await queued(), 20);
  await s.advance(MIN);
  assert.equal(await queued(), 30);
  assert.equal((await s.jobs.counts("job-1")).pending, 0);
  assert.equal(
    s.sent.filter((m) => m.topic.endsWith("/notify-next")).length,
    30,
    "each thing is notified once",
  );
});

Deno.test("job service: the exponential rate steps up with notified things (base 2, x2 every 4 notified)", async () => {
  const s = setup();
  await s.things(40);
  await s.jobs.createJob(
    job({
      rollout: {
        exponentialRate: {
          baseRatePerMinute: 2,
          incrementFactor: 2,
          rateIncreaseCriteria: { numberOfNotifiedThings: 4 },
        },
      },
    }),
  );
  const perMinute: number[] = [];
  let last = 0;
  for (let minute = 0; minute < 5; minute++) {
    const now = (await s.store.executionsOfJob("job-1")).length;
    perMinute.push(now - last);
    last = now;
    await s.advance(MIN);
  }
  assert.deepEqual(
    perMinute,
    [2, 2, 4, 8, 24],
    "rate 2, 2, 4 (4 notified), 8 (8 notified), 32 (16 notified: the last 24 go)",
  );
});

Deno.test("job service: device API — $next/get, update with expectedVersion, notify-next, terminal state, describe, start-next", async () => {
  const s = setup();
  await s.things(1);
  await s.jobs.createJob(job({ jobId: "job-1" }));
  await s.jobs.createJob(job({ jobId: "job-2" }));
  const next = (await s.device("dev-000", "$next/get", { clientToken: "t1" }))!;
  assert.equal(next.topic, "$aws/things/dev-000/jobs/$next/get/accepted");
  const execution = next.body.execution as Record<string, unknown>;
  assert.equal(execution.jobId, "job-1");
  assert.equal(execution.status, "QUEUED");
  assert.deepEqual(execution.jobDocument, document);
  assert.equal(next.body.clientToken, "t1");
  const started = (await s.device("dev-000", "job-1/update", {
    status: "IN_PROGRESS",
    expectedVersion: 1,
    clientToken: "t2",
  }))!;
  assert.equal(started.topic, "$aws/things/dev-000/jobs/job-1/update/accepted");
  assert.equal((started.body.executionState as Record<string, unknown>).versionNumber, 2);
  const stale =
    (await s.device("dev-000", "job-1/update", { status: "IN_PROGRESS", expectedVersion: 1 }))!;
  assert.equal(stale.body.code, "VersionMismatch");
  assert.equal((stale.body.executionState as Record<string, unknown>).versionNumber, 2);
  const mark = s.sent.length;
  await s.device("dev-000", "job-1/update", {
    status: "SUCCEEDED",
    statusDetails: { reason: "accepted  v1.1.0" },
  });
  const notify = s.sent.slice(mark).find((m) => m.topic.endsWith("/notify-next"))!;
  assert.equal(
    (notify.body.execution as Record<string, unknown>).jobId,
    "job-2",
    "the next job is pushed",
  );
  assert.equal(
    (await s.device("dev-000", "job-1/update", { status: "IN_PROGRESS" }))!.body.code,
    "InvalidStateTransition",
  );
  const described = (await s.device("dev-000", "job-1/get", {}))!;
  assert.equal((described.body.execution as Record<string, unknown>).status, "SUCCEEDED");
  assert.equal((described.body.execution as Record<string, unknown>).jobDocument, undefined);
  const startNext =
    (await s.device("dev-000", "start-next", { statusDetails: { step: "download" } }))!;
  assert.equal((startNext.body.execution as Record<string, unknown>).status, "IN_PROGRESS");
  const pending = (await s.device("dev-000", "get", {}))!;
  assert.equal((pending.body.inProgressJobs as unknown[]).length, 1);
  assert.equal((await s.device("dev-000", "nope/get", {}))!.body.code, "ResourceNotFound");
  assert.equal(
    (await s.device("dev-000", "job-2/update", { status: "QUEUED" }))!.body.code,
    "InvalidRequest",
  );
  assert.equal((await s.device("dev-000", "frobnicate", {}))!.body.code, "InvalidTopic");
  const garbage = s.sent.length;
  await s.jobs.handleDeviceMessage(
    "dev-000",
    "$aws/things/dev-000/jobs/job-2/update",
    new Uint8Array([0xff, 0x7b]),
  );
  assert.equal(s.sent[garbage]!.body.code, "InvalidJson");
  assert.ok(
    (await s.store.history({ thing: "dev-000", jobId: "job-1" })).some((h) =>
      h.event === "device-update" && (h.detail as { status: string }).status === "SUCCEEDED"
    ),
  );
});

Deno.test("job service: an abort criterion cancels queued executions and leaves those in progress running", async () => {
  const s = setup();
  const names = await s.things(10);
  await s.jobs.createJob(
    job({
      abort: [{
        failureType: "FAILED",
        action: "CANCEL",
        thresholdPercentage: 50,
        minNumberOfExecutedThings: 4,
      }],
    }),
  );
  await s.finish(names[0]!, "job-1", "FAILED");
  await s.finish(names[1]!, "job-1", "FAILED");
  await s.finish(names[2]!, "job-1", "SUCCEEDED");
  assert.equal((await s.store.getJob("job-1"))!.status, "IN_PROGRESS", "3 executed < 4");
  await s.device(names[3]!, "job-1/update", { status: "IN_PROGRESS" });
  await s.finish(names[4]!, "job-1", "FAILED");
  const job1 = (await s.store.getJob("job-1"))!;
  assert.equal(job1.status, "CANCELED");
  assert.match(job1.reason ?? "", /abort criterion/);
  const counts = await s.jobs.counts("job-1");
  assert.equal(counts.IN_PROGRESS, 1, "in-progress executions keep running");
  assert.equal(counts.CANCELED, 5);
  assert.equal(counts.QUEUED, 0);
});

Deno.test("job service: a PAUSE abort stops the rollout until an operator resumes it", async () => {
  const s = setup();
  const names = await s.things(6);
  await s.jobs.createJob(
    job({
      rollout: { maximumPerMinute: 2 },
      abort: [{
        failureType: "ALL",
        action: "PAUSE",
        thresholdPercentage: 50,
        minNumberOfExecutedThings: 2,
      }],
    }),
  );
  await s.finish(names[0]!, "job-1", "REJECTED");
  await s.finish(names[1]!, "job-1", "FAILED");
  assert.equal((await s.store.getJob("job-1"))!.status, "PAUSED");
  await s.advance(5 * MIN);
  assert.equal(
    (await s.store.executionsOfJob("job-1")).length,
    2,
    "nothing rolled out while paused",
  );
  assert.ok((await s.jobs.resumeJob("job-1")).ok);
  assert.equal((await s.store.executionsOfJob("job-1")).length, 4);
});

Deno.test("job service: in-progress and step timeouts end executions TIMED_OUT, and retries re-queue them", async () => {
  const s = setup();
  const [a, b] = await s.things(2);
  await s.jobs.createJob(
    job({
      timeout: { inProgressTimeoutInMinutes: 10 },
      retry: [{ failureType: "TIMED_OUT", numberOfRetries: 1 }],
    }),
  );
  await s.device(a!, "job-1/update", { status: "IN_PROGRESS" });
  await s.device(b!, "job-1/update", { status: "IN_PROGRESS", stepTimeoutInMinutes: 3 });
  await s.advance(3 * MIN);
  assert.equal(
    (await s.store.getExecution("job-1", b!))!.status,
    "QUEUED",
    "b timed out at 3 min and was retried",
  );
  assert.equal((await s.store.getExecution("job-1", b!))!.executionNumber, 2);
  assert.equal((await s.store.getExecution("job-1", a!))!.status, "IN_PROGRESS");
  await s.advance(7 * MIN);
  assert.equal(
    (await s.store.getExecution("job-1", a!))!.status,
    "QUEUED",
    "a timed out at 10 min and was retried",
  );
  await s.device(a!, "job-1/update", { status: "IN_PROGRESS" });
  await s.advance(10 * MIN);
  assert.equal((await s.store.getExecution("job-1", a!))!.status, "TIMED_OUT", "no retry left");
  assert.ok(
    (await s.store.history({ thing: b!, jobId: "job-1" })).some((h) => h.event === "timed_out"),
  );
});

Deno.test("job service: FAILED executions are retried up to the configured count", async () => {
  const s = setup();
  const [a] = await s.things(1);
  await s.jobs.createJob(job({ retry: [{ failureType: "FAILED", numberOfRetries: 2 }] }));
  for (let attempt = 1; attempt <= 3; attempt++) {
    assert.equal((await s.store.getExecution("job-1", a!))!.executionNumber, attempt);
    await s.finish(a!, "job-1", "FAILED");
  }
  assert.equal((await s.store.getExecution("job-1", a!))!.status, "FAILED");
  assert.equal((await s.store.getJob("job-1"))!.status, "COMPLETED");
});

Deno.test("job service: a CONTINUOUS job reaches a thing that joins its group later; a SNAPSHOT job does not", async () => {
  const s = setup();
  await s.things(2);
  await s.jobs.createJob(job({ jobId: "snap", targetSelection: "SNAPSHOT" }));
  await s.jobs.createJob(job({ jobId: "cont", targetSelection: "CONTINUOUS" }));
  await s.jobs.addThingToGroup("fleet", "late-joiner");
  assert.equal((await s.store.getExecution("cont", "late-joiner"))?.status, "QUEUED");
  assert.equal(await s.store.getExecution("snap", "late-joiner"), null);
  await s.jobs.removeThingFromGroup("fleet", "late-joiner");
  assert.equal((await s.store.getExecution("cont", "late-joiner"))?.status, "REMOVED");
  await s.jobs.addThingToGroup("fleet", "late-joiner");
  assert.equal(
    (await s.store.getExecution("cont", "late-joiner"))?.status,
    "QUEUED",
    "a rejoining thing gets the job again",
  );
});

Deno.test("job service: health-gated waves start only when the previous wave has ended", async () => {
  const s = setup();
  const names = await s.things(6);
  await s.jobs.createJob(job({ healthGate: { waveSize: 2 } }));
  assert.equal((await s.store.executionsOfJob("job-1")).length, 2);
  await s.finish(names[0]!, "job-1", "SUCCEEDED");
  await s.advance(MIN);
  assert.equal(
    (await s.store.executionsOfJob("job-1")).length,
    2,
    "one device of the wave has not confirmed yet",
  );
  await s.finish(names[1]!, "job-1", "SUCCEEDED");
  assert.equal((await s.store.executionsOfJob("job-1")).length, 4);
});

Deno.test("job service: scheduled start and end (STOP_ROLLOUT, FORCE_CANCEL), and force-cancel", async () => {
  const s = setup();
  await s.things(4);
  const now = s.clock.now();
  await s.jobs.createJob(
    job({
      jobId: "later",
      rollout: { maximumPerMinute: 1 },
      scheduling: {
        startTime: now + 30 * MIN,
        endTime: now + 32 * MIN + 1,
        endBehavior: "STOP_ROLLOUT",
      },
    }),
  );
  assert.equal((await s.store.getJob("later"))!.status, "SCHEDULED");
  assert.equal((await s.store.executionsOfJob("later")).length, 0);
  await s.advance(30 * MIN);
  assert.equal((await s.store.executionsOfJob("later")).length, 1);
  await s.advance(2 * MIN + 1);
  await s.advance(5 * MIN);
  assert.ok((await s.store.executionsOfJob("later")).length <= 3, "no rollout after the end");
  assert.equal((await s.jobs.counts("later")).pending, 0);

  await s.jobs.createJob(job({ jobId: "forced" }));
  await s.device("dev-000", "forced/update", { status: "IN_PROGRESS" });
  assert.ok((await s.jobs.cancelJob("forced")).ok);
  assert.equal(
    (await s.store.getExecution("forced", "dev-000"))!.status,
    "IN_PROGRESS",
    "without force, in progress continues",
  );
  await s.jobs.createJob(job({ jobId: "forced-2" }));
  await s.device("dev-001", "forced-2/update", { status: "IN_PROGRESS" });
  await s.jobs.cancelJob("forced-2", { force: true });
  assert.equal((await s.store.getExecution("forced-2", "dev-001"))!.status, "CANCELED");
  assert.equal(
    (await s.device("dev-001", "forced-2/update", { status: "SUCCEEDED" }))!.body.code,
    "InvalidStateTransition",
  );
});

Deno.test("job service: createJob refuses invalid specs with every reason", async () => {
  const s = setup();
  const result = await s.jobs.createJob({
    jobId: "bad id",
    document: {},
    targets: {},
    rollout: { maximumPerMinute: 0 },
    timeout: { inProgressTimeoutInMinutes: 0 },
    retry: [{ failureType: "FAILED", numberOfRetries: 11 }],
  });
  assert.ok(!result.ok);
  for (
    const fragment of [
      "jobId",
      "targets",
      "maximumPerMinute",
      "inProgressTimeoutInMinutes",
      "numberOfRetries",
    ]
  ) assert.match(result.reason, new RegExp(fragment));
  await s.things(1);
  assert.ok((await s.jobs.createJob(job())).ok);
  assert.ok(!(await s.jobs.createJob(job())).ok, "duplicate job id");
});

Deno.test("job service: state lives in the SQLite file, so a new service on the same file carries on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ota-store-" });
  try {
    const first = setup({ path: `${dir}/cloud.db` });
    await first.things(5);
    await first.jobs.createJob(job({ rollout: { maximumPerMinute: 2 } }));
    await first.finish("dev-000", "job-1", "SUCCEEDED");
    await first.device("dev-001", "job-1/update", { status: "IN_PROGRESS" });
    await first.store.close();
    const second = setup({ path: `${dir}/cloud.db`, clock: first.clock });
    assert.equal((await second.store.getExecution("job-1", "dev-000"))!.status, "SUCCEEDED");
    assert.equal((await second.store.getExecution("job-1", "dev-001"))!.status, "IN_PROGRESS");
    await second.advance(MIN);
    await second.advance(MIN);
    assert.equal(
      (await second.store.executionsOfJob("job-1")).length,
      5,
      "the rollout continues where it stopped",
    );
    await second.store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("job service: a malformed job spec is refused with every problem named, and nothing is stored", async () => {
  const s = setup();
  await s.things(2);
  const bad = {
    jobId: "bad job id!",
    document: ["not", "an", "object"],
    targets: {},
    targetSelection: "SOMETIMES",
    abort: [{
      failureType: "BORED",
      action: "PANIC",
      thresholdPercentage: 101,
      minNumberOfExecutedThings: 0,
    }],
    timeout: { inProgressTimeoutInMinutes: 0 },
    retry: [
      { failureType: "NEVER", numberOfRetries: 11 },
      { failureType: "FAILED", numberOfRetries: 1 },
      { failureType: "FAILED", numberOfRetries: 1 },
    ],
    healthGate: { waveSize: 0 },
  } as unknown as JobSpec;
  const refused = await s.jobs.createJob(bad);
  assert.ok(!refused.ok);
  for (
    const problem of [
      "document must be a JSON object",
      "targets must name at least one thing or group",
      "targetSelection must be SNAPSHOT or CONTINUOUS",
      "abort[0].failureType is invalid",
      "abort[0].action must be CANCEL or PAUSE",
      "abort[0].thresholdPercentage must be 0..100",
      "abort[0].minNumberOfExecutedThings must be >= 1",
      "timeout.inProgressTimeoutInMinutes must be 1..10080",
      "retry[0].failureType is invalid",
      "retry[0].numberOfRetries must be 0..10",
      "retry holds at most 2 criteria",
      "healthGate.waveSize must be a positive integer",
    ]
  ) {
    assert.ok(refused.reason.includes(problem), `${problem} in: ${refused.reason}`);
  }
  const huge = await s.jobs.createJob(job({ document: { blob: "x".repeat(40 * 1024) } }));
  assert.ok(!huge.ok && /document must be at most \d+ bytes/.test(huge.reason));
  assert.deepEqual(await s.store.listJobs(), []);
  assert.deepEqual(s.sent, [], "nobody was notified");
});

Deno.test("job service: pause and resume only from the states they apply to", async () => {
  const s = setup();
  await s.things(3);
  assert.ok(!(await s.jobs.pauseJob("missing")).ok);
  assert.ok(!(await s.jobs.resumeJob("missing")).ok);
  assert.ok((await s.jobs.createJob(job({ rollout: { maximumPerMinute: 1 } }))).ok);
  assert.ok(!(await s.jobs.resumeJob("job-1")).ok, "an active job is not paused");
  assert.ok((await s.jobs.pauseJob("job-1")).ok);
  assert.ok(!(await s.jobs.pauseJob("job-1")).ok, "already paused");
  await s.advance(5 * MIN);
  assert.equal(
    (await s.store.executionsOfJob("job-1")).length,
    1,
    "a paused job rolls out no further",
  );
  assert.ok((await s.jobs.resumeJob("job-1")).ok);
  assert.equal((await s.store.executionsOfJob("job-1")).length, 2, "resuming rolls out at once");
  await s.advance(MIN);
  assert.equal((await s.store.executionsOfJob("job-1")).length, 3);
});

Deno.test("job service: device updates for unknown jobs and bad step timeouts are refused with AWS codes", async () => {
  const s = setup();
  await s.things(1);
  await s.jobs.createJob(job());
  assert.equal(
    (await s.device("dev-000", "job-2/update", { status: "IN_PROGRESS" }))!.body.code,
    "ResourceNotFound",
  );
  for (const stepTimeoutInMinutes of [0, 10081, 1.5, "3"]) {
    const reply = (await s.device("dev-000", "job-1/update", {
      status: "IN_PROGRESS",
      stepTimeoutInMinutes,
    }))!;
    assert.equal(reply.topic.endsWith("/rejected"), true, String(stepTimeoutInMinutes));
    assert.equal(reply.body.code, "InvalidRequest");
  }
  assert.equal(
    (await s.store.getExecution("job-1", "dev-000"))!.status,
    "QUEUED",
    "nothing changed",
  );
  // start-next with a step timeout starts the queued execution; asked again, it returns it.
  const started = (await s.device("dev-000", "start-next", { stepTimeoutInMinutes: 5 }))!;
  assert.equal((started.body.execution as { status: string }).status, "IN_PROGRESS");
  const again = (await s.device("dev-000", "start-next", {}))!;
  assert.equal((again.body.execution as { jobId: string }).jobId, "job-1");
  await s.finish("dev-000", "job-1", "SUCCEEDED");
  assert.equal(
    (await s.device("dev-000", "start-next", {}))!.body.execution,
    undefined,
    "nothing next",
  );
});

Deno.test("job service: a thing leaving the group before its turn is dropped from the rollout", async () => {
  const s = setup();
  const [first, second, third] = await s.things(3);
  await s.jobs.createJob(job({ rollout: { maximumPerMinute: 1 } }));
  await s.jobs.removeThingFromGroup("fleet", third!);
  assert.equal(
    (await s.jobs.counts("job-1")).pending,
    1,
    `${second} still waits, ${third} does not`,
  );
  await s.jobs.removeThingFromGroup("fleet", first!);
  assert.equal((await s.store.getExecution("job-1", first!))!.status, "REMOVED");
  await s.advance(2 * MIN);
  assert.equal(await s.store.getExecution("job-1", third!), null, "never queued");
  assert.equal((await s.store.getExecution("job-1", second!))!.status, "QUEUED");
});

Deno.test("job service: a health gate pauses the rollout when a wave falls short, with the reason; resume opens the next wave", async () => {
  const s = setup();
  const names = await s.things(6);
  await s.jobs.createJob(job({ healthGate: { waveSize: 2, minSuccessPercent: 100 } }));
  assert.deepEqual((await s.store.executionsOfJob("job-1")).map((e) => e.thing), names.slice(0, 2));
  await s.finish(names[0]!, "job-1", "SUCCEEDED");
  await s.finish(names[1]!, "job-1", "FAILED");
  await s.advance(MIN);
  const paused = (await s.store.getJob("job-1"))!;
  assert.equal(paused.status, "PAUSED");
  assert.match(
    paused.reason ?? "",
    /health gate: 1 of the 2 things of the last wave succeeded \(50%\), below the 100% required/,
  );
  assert.equal(
    (await s.store.executionsOfJob("job-1")).length,
    2,
    "nobody after the failing wave is notified",
  );
  await s.advance(10 * MIN);
  assert.equal((await s.store.executionsOfJob("job-1")).length, 2, "and stays so while paused");
  assert.ok((await s.jobs.resumeJob("job-1")).ok);
  assert.equal(
    (await s.store.executionsOfJob("job-1")).length,
    4,
    "the operator's resume opens the next wave",
  );
});

Deno.test("job service: a health gate passes at exactly its percentage and cancels when told to", async () => {
  const s = setup();
  const names = await s.things(8);
  await s.jobs.createJob(job({ healthGate: { waveSize: 4, minSuccessPercent: 75 } }));
  for (const [i, thing] of names.slice(0, 4).entries()) {
    await s.finish(thing, "job-1", i === 0 ? "FAILED" : "SUCCEEDED");
  }
  assert.equal(
    (await s.store.executionsOfJob("job-1")).length,
    8,
    "3 of 4 is 75%: the next wave opens",
  );
  const c = setup();
  const others = await c.things(4);
  await c.jobs.createJob(
    job({ healthGate: { waveSize: 2, minSuccessPercent: 60, onFailure: "CANCEL" } }),
  );
  await c.finish(others[0]!, "job-1", "SUCCEEDED");
  await c.finish(others[1]!, "job-1", "REJECTED");
  const canceled = (await c.store.getJob("job-1"))!;
  assert.equal(canceled.status, "CANCELED");
  assert.match(canceled.reason ?? "", /health gate: 1 of the 2/);
  assert.equal((await c.store.executionsOfJob("job-1")).length, 2);
});

Deno.test("job service: a health gate's settings are checked", async () => {
  const s = setup();
  await s.things(2);
  for (
    const [gate, problem] of [
      [{ waveSize: 2, minSuccessPercent: 101 }, /minSuccessPercent must be a number 0..100/],
      [{ waveSize: 2, onFailure: "STOP" }, /onFailure must be PAUSE or CANCEL/],
    ] as const
  ) {
    const created = await s.jobs.createJob(job({ healthGate: gate as never }));
    assert.equal(created.ok, false);
    assert.match(created.ok ? "" : created.reason, problem);
  }
});

Deno.test("job service: a continuous job runs again on a thing that succeeded and reports older firmware, or is provisioned again", async () => {
  const s = setup();
  const [a, b, c] = await s.things(3);
  await s.jobs.createJob(job({ targetSelection: "CONTINUOUS", firmwareVersion: "1.1.0+0" }));
  for (const thing of [a!, b!, c!]) await s.finish(thing, "job-1", "SUCCEEDED");
  const execution = async (thing: string) => (await s.store.getExecution("job-1", thing))!;
  await s.jobs.thingReported(a!, "1.1.0+0");
  assert.equal((await execution(a!)).status, "SUCCEEDED", "runs the job's firmware: nothing to do");
  await s.jobs.thingReported(a!, "1.2.0+0");
  assert.equal((await execution(a!)).status, "SUCCEEDED", "runs newer firmware: nothing to do");
  await s.jobs.thingReported(a!, "1.0.0+0");
  assert.equal((await execution(a!)).status, "QUEUED", "reset to the factory image: updated again");
  assert.equal((await execution(a!)).executionNumber, 2);
  await s.jobs.thingReported(b!, null);
  assert.equal(
    (await execution(b!)).status,
    "QUEUED",
    "no firmware at all (recovery mode): updated again",
  );
  await s.jobs.thingReprovisioned(c!);
  assert.equal(
    (await execution(c!)).status,
    "QUEUED",
    "a replaced device under the same name: updated again",
  );
  await s.finish(a!, "job-1", "SUCCEEDED");
  assert.equal((await execution(a!)).status, "SUCCEEDED");
  assert.equal((await execution(a!)).executionNumber, 2);
});

Deno.test("job service: a snapshot job, or one that is over, is not run again on a reset thing", async () => {
  const s = setup();
  const [a] = await s.things(1);
  await s.jobs.createJob(job({ firmwareVersion: "1.1.0+0" }));
  await s.finish(a!, "job-1", "SUCCEEDED");
  await s.jobs.thingReported(a!, "1.0.0+0");
  await s.jobs.thingReprovisioned(a!);
  assert.equal((await s.store.getExecution("job-1", a!))!.status, "SUCCEEDED");
  const created = await s.jobs.createJob(job({ jobId: "job-2", firmwareVersion: "one.two" }));
  assert.equal(created.ok, false);
  assert.match(created.ok ? "" : created.reason, /firmwareVersion must be X.Y.Z/);
});

Deno.test("job service: a job whose targets name no thing is refused, not completed with 0 of 0", async () => {
  const s = setup();
  await s.things(2);
  const typo = await s.jobs.createJob(job({ targets: { groups: ["flet"] } }));
  assert.equal(typo.ok, false);
  assert.match(
    typo.ok ? "" : typo.reason,
    /the targets name no thing \(group 'flet' has no members\)/,
  );
  const unknown = await s.jobs.createJob(job({ targets: { things: ["dev-999"] } }));
  assert.equal(unknown.ok, false);
  assert.match(unknown.ok ? "" : unknown.reason, /no thing named 'dev-999'/);
  const waiting = await s.jobs.createJob(
    job({ targets: { groups: ["later"] }, targetSelection: "CONTINUOUS" }),
  );
  assert.equal(waiting.ok, true, "a continuous job may wait for its group to fill");
});

Deno.test("job service: a scheduler taking over tells exactly the things its predecessor queued but never told", async () => {
  const store = new SqliteStore(":memory:");
  const clock = new ManualClock(Date.parse("2026-06-01T00:00:00Z"));
  const told: string[] = [];
  const service = (lost: string | null, scheduling: boolean) =>
    new JobService({
      store,
      clock,
      scheduling,
      publisher: {
        publish: (topic) => {
          // The old scheduler dies before its notification of `lost` reaches the broker.
          if (lost !== null && topic.includes(`/${lost}/`)) {
            return Promise.reject(new Error("died"));
          }
          if (topic.endsWith("/notify-next")) told.push(topic.split("/")[2]!);
          return Promise.resolve();
        },
      },
    });
  for (const thing of ["dev-0", "dev-1", "dev-2"]) await store.addToGroup("fleet", thing);
  const old = service("dev-1", true);
  assert.ok((await old.createJob(job())).ok);
  await old.flush();
  assert.deepEqual(told.sort(), ["dev-0", "dev-2"]);
  told.length = 0;
  const next = service(null, false);
  await next.tick();
  assert.deepEqual(told, [], "a node that does not schedule tells nobody");
  next.scheduling = true;
  await next.tick();
  await next.flush();
  assert.deepEqual(told, ["dev-1"], "only the thing never told");
  await next.tick();
  await next.flush();
  assert.deepEqual(told, ["dev-1"], "and only once");
  assert.ok(
    (await store.history({ thing: "dev-1" })).some((e) => e.event === "renotified"),
    "the audit log says so",
  );
  await store.close();
});
