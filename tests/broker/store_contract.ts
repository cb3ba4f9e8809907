/**
 * What every {@linkcode CloudStore} must do, as one suite run against each backend (SQLite in
 * store_test.ts, PostgreSQL in postgres_store_test.ts): the same calls, the same answers.
 */
import assert from "node:assert/strict";
import type { ExecutionStatus } from "../../broker/job_execution.ts";
import type { CloudStore, ExecutionRecord, JobRecord } from "../../broker/store.ts";

/** A fresh, empty store and how to get rid of it. */
export interface StoreUnderTest {
  readonly store: CloudStore;
  cleanup(): Promise<void>;
}

/** An execution record with defaults. */
export function execution(
  jobId: string,
  thing: string,
  status: ExecutionStatus,
  more: Partial<ExecutionRecord> = {},
): ExecutionRecord {
  return {
    jobId,
    thing,
    status,
    statusDetails: {},
    versionNumber: 1,
    executionNumber: 1,
    queuedAt: 0,
    startedAt: null,
    updatedAt: 0,
    deadline: null,
    ...more,
  };
}

/** A job record with defaults. */
export function jobRecord(jobId: string, more: Partial<JobRecord> = {}): JobRecord {
  return {
    jobId,
    status: "IN_PROGRESS",
    spec: { document: { v: 1 } },
    createdAt: 1,
    pending: [],
    notifiedAt: [],
    reason: null,
    ...more,
  };
}

/** One case of the contract: what it shows, and the calls on a fresh store. */
export interface StoreCase {
  readonly name: string;
  run(store: CloudStore): Promise<void>;
}

/**
 * Registers the contract as one test per case for a backend whose stores are cheap to open.
 * `ignore` (a reason) reports them ignored, e.g. when the database program is not installed.
 */
export function storeContract(
  backend: string,
  open: () => Promise<StoreUnderTest>,
  ignore: false | string = false,
): void {
  for (const { name, run } of STORE_CASES) {
    Deno.test({
      name: `store contract (${backend}): ${name}`,
      ignore: ignore !== false,
      async fn() {
        const opened = await open();
        try {
          await run(opened.store);
        } finally {
          await opened.cleanup();
        }
      },
    });
  }
}

/** Every case of the contract. */
export const STORE_CASES: StoreCase[] = [];

{
  const test = (name: string, run: (store: CloudStore) => Promise<void>) =>
    STORE_CASES.push({ name, run });

  test("things are stored, replaced, listed by name and deleted with their memberships", async (store) => {
    assert.equal(await store.getThing("b"), null);
    await store.putThing({ name: "b", secret: { salt: "s", hash: "h1" }, attributes: { x: "1" } });
    await store.putThing({ name: "a", secret: { salt: "s", hash: "h0" }, attributes: {} });
    await store.putThing({ name: "b", secret: { salt: "s", hash: "h2" }, attributes: { y: "2" } });
    assert.deepEqual(await store.getThing("b"), {
      name: "b",
      secret: { salt: "s", hash: "h2" },
      attributes: { y: "2" },
    });
    assert.deepEqual((await store.listThings()).map((t) => t.name), ["a", "b"]);
    await store.addToGroup("g", "b");
    assert.equal(await store.deleteThing("b"), true);
    assert.equal(await store.deleteThing("b"), false, "deleting twice finds nothing");
    assert.equal(await store.getThing("b"), null);
    assert.deepEqual(await store.groupMembers("g"), [], "its memberships went with it");
  });

  test("groups keep members in the order they joined; adding twice or removing an absent one changes nothing", async (store) => {
    assert.equal(await store.addToGroup("fleet", "t2"), true);
    assert.equal(await store.addToGroup("fleet", "t1"), true);
    assert.equal(await store.addToGroup("fleet", "t2"), false);
    assert.equal(await store.addToGroup("canary", "t1"), true);
    assert.deepEqual(await store.groupMembers("fleet"), ["t2", "t1"]);
    assert.deepEqual(await store.groupsOf("t1"), ["canary", "fleet"]);
    assert.deepEqual(await store.listGroups(), [
      { group: "canary", members: 1 },
      { group: "fleet", members: 2 },
    ]);
    assert.equal(await store.removeFromGroup("fleet", "t9"), false);
    assert.equal(await store.removeFromGroup("fleet", "t2"), true);
    assert.deepEqual(await store.groupMembers("fleet"), ["t1"]);
    assert.deepEqual(await store.groupMembers("nobody"), []);
  });

  test("jobs are read back as written, listed oldest first, and a change is seen at once", async (store) => {
    assert.equal(await store.getJob("j2"), null);
    await store.putJob(jobRecord("j2", { createdAt: 20, pending: ["a", "b"] }));
    await store.putJob(jobRecord("j1", { createdAt: 10 }));
    assert.deepEqual(
      await store.getJob("j2"),
      jobRecord("j2", { createdAt: 20, pending: ["a", "b"] }),
    );
    assert.deepEqual((await store.listJobs()).map((j) => j.jobId), ["j1", "j2"]);
    await store.putJob(jobRecord("j2", { createdAt: 20, pending: ["b"], status: "PAUSED" }));
    const changed = (await store.getJob("j2"))!;
    assert.deepEqual([changed.status, changed.pending], ["PAUSED", ["b"]]);
    assert.deepEqual((await store.listJobs()).map((j) => j.pending.length), [0, 1]);
  });

  test("execution counts by status, overdue executions and orders follow every write", async (store) => {
    assert.deepEqual(await store.executionStatusCounts("job-a"), {});
    await store.putExecution(execution("job-a", "t1", "QUEUED"));
    await store.putExecution(execution("job-a", "t2", "IN_PROGRESS"));
    await store.putExecution(execution("job-a", "t3", "IN_PROGRESS"));
    await store.putExecution(execution("job-b", "t1", "SUCCEEDED"));
    // A status change replaces the record (it moves to the end), the old status stops counting.
    await store.putExecution(execution("job-a", "t2", "SUCCEEDED"));
    assert.deepEqual(await store.executionStatusCounts("job-a"), {
      QUEUED: 1,
      IN_PROGRESS: 1,
      SUCCEEDED: 1,
    });
    assert.deepEqual(await store.executionStatusCounts("job-b"), { SUCCEEDED: 1 });
    assert.deepEqual(await store.executionsByStatus(), { QUEUED: 1, IN_PROGRESS: 1, SUCCEEDED: 2 });
    assert.deepEqual((await store.executionsOfJob("job-a")).map((e) => e.thing), [
      "t1",
      "t3",
      "t2",
    ]);
    await store.putExecution(execution("job-a", "t1", "IN_PROGRESS", { versionNumber: 2 }));
    assert.deepEqual(
      (await store.executionsOfThing("t1")).map((e) => `${e.jobId}:${e.status}`),
      ["job-b:SUCCEEDED", "job-a:IN_PROGRESS"],
    );
    assert.equal((await store.getExecution("job-a", "t1"))?.versionNumber, 2);
    assert.equal(await store.getExecution("job-a", "t9"), null);
    // Overdue: in progress with a deadline at or before now; no deadline is never overdue.
    await store.putExecution(execution("job-a", "t4", "IN_PROGRESS", { deadline: 5_000 }));
    await store.putExecution(execution("job-a", "t5", "IN_PROGRESS", { deadline: 9_000 }));
    await store.putExecution(execution("job-a", "t6", "SUCCEEDED", { deadline: 1_000 }));
    const overdue = async (now: number) =>
      (await store.overdueExecutions("job-a", now)).map((e) => e.thing);
    assert.deepEqual(await overdue(4_999), []);
    assert.deepEqual(await overdue(5_000), ["t4"]);
    assert.deepEqual(await overdue(10_000), ["t4", "t5"]);
  });

  test("the audit log is kept in order and filtered by job and thing", async (store) => {
    await store.audit({ at: 1, jobId: "j", thing: null, event: "job-created", detail: { n: 2 } });
    await store.audit({ at: 2, jobId: "j", thing: "t1", event: "queued", detail: {} });
    await store.audit({ at: 3, jobId: "k", thing: "t1", event: "queued", detail: {} });
    assert.deepEqual((await store.history({})).map((e) => e.at), [1, 2, 3]);
    assert.deepEqual((await store.history({ jobId: "j" })).map((e) => e.event), [
      "job-created",
      "queued",
    ]);
    assert.deepEqual((await store.history({ thing: "t1" })).map((e) => e.jobId), ["j", "k"]);
    assert.deepEqual(await store.history({ jobId: "j", thing: "t1" }), [
      { at: 2, jobId: "j", thing: "t1", event: "queued", detail: {} },
    ]);
    assert.deepEqual((await store.history({ jobId: "j" }))[0]!.detail, { n: 2 });
  });

  test("files keep every byte; streams and records are read back, records in the order last written", async (store) => {
    const bytes = Uint8Array.from({ length: 512 }, (_, i) => i % 256);
    await store.putFile("fw.bin", bytes);
    assert.deepEqual(await store.getFile("fw.bin"), bytes);
    assert.equal(await store.getFile("none"), null);
    await store.putStream("s2", { 0: "fw.bin" });
    await store.putStream("s1", { 0: "a", 1: "b" });
    assert.deepEqual(await store.listStreams(), [
      { streamId: "s1", files: { 0: "a", 1: "b" } },
      { streamId: "s2", files: { 0: "fw.bin" } },
    ]);
    await store.putRecord("profile", "p1", { name: "p1", v: 1 });
    await store.putRecord("profile", "p2", { name: "p2" });
    await store.putRecord("other", "p1", { name: "x" });
    await store.putRecord("profile", "p1", { name: "p1", v: 2 });
    assert.deepEqual(await store.getRecord("profile", "p1"), { name: "p1", v: 2 });
    assert.equal(await store.getRecord("profile", "p9"), null);
    assert.deepEqual(await store.listRecords("profile"), [{ name: "p2" }, { name: "p1", v: 2 }]);
  });

  test("a transaction is all or nothing; one begun inside another joins it; callbacks run only after a commit", async (store) => {
    const heard: string[] = [];
    await assert.rejects(
      store.transaction(async () => {
        await store.putExecution(execution("job-a", "t1", "QUEUED"));
        await store.putJob(jobRecord("job-a"));
        store.afterCommit(() => heard.push("rolled back"));
        await store.transaction(() => store.addToGroup("fleet", "t1"));
        throw new Error("abandoned");
      }),
      /abandoned/,
    );
    assert.equal(await store.getExecution("job-a", "t1"), null);
    assert.equal(await store.getJob("job-a"), null);
    assert.deepEqual(await store.groupMembers("fleet"), [], "the inner transaction went too");
    const result = await store.transaction(async () => {
      await store.putExecution(execution("job-a", "t2", "QUEUED"));
      store.afterCommit(() => heard.push("committed"));
      assert.deepEqual(heard, [], "not before the commit");
      return "done";
    });
    assert.equal(result, "done");
    await store.committed();
    assert.deepEqual(heard, ["committed"]);
    assert.equal((await store.getExecution("job-a", "t2"))?.status, "QUEUED");
    await store.putExecution(execution("job-a", "t3", "QUEUED"));
    store.afterCommit(() => heard.push("after a single write"));
    await store.committed();
    assert.deepEqual(heard, ["committed", "after a single write"]);
  });

  test("transactions that lock the same thing run one after the other: concurrent read-modify-writes lose nothing", async (store) => {
    await store.putExecution(execution("job-a", "t1", "IN_PROGRESS", { versionNumber: 0 }));
    const bump = () =>
      store.transaction(async () => {
        await store.lockThing("t1");
        const current = (await store.getExecution("job-a", "t1"))!;
        await store.putExecution({ ...current, versionNumber: current.versionNumber + 1 });
      });
    await Promise.all(Array.from({ length: 25 }, bump));
    assert.equal((await store.getExecution("job-a", "t1"))?.versionNumber, 25);
  });

  test("notifications: QUEUED executions are unnotified until marked for their execution number", async (store) => {
    await store.putExecution(execution("job-a", "t1", "QUEUED"));
    await store.putExecution(execution("job-a", "t2", "QUEUED"));
    await store.putExecution(execution("job-a", "t3", "IN_PROGRESS"));
    await store.putExecution(execution("job-b", "t1", "QUEUED"));
    const unnotified = async (jobId: string) =>
      (await store.unnotifiedExecutions(jobId)).map((e) => `${e.thing}#${e.executionNumber}`);
    assert.deepEqual(await unnotified("job-a"), ["t1#1", "t2#1"]);
    await store.markNotified("job-a", "t1", 1);
    await store.markNotified("job-a", "t1", 1); // twice is once
    assert.deepEqual(await unnotified("job-a"), ["t2#1"]);
    assert.deepEqual(await unnotified("job-b"), ["t1#1"], "marks are per job");
    // A retry is a new execution number: it needs telling again.
    await store.putExecution(execution("job-a", "t1", "QUEUED", { executionNumber: 2 }));
    assert.deepEqual(await unnotified("job-a"), ["t2#1", "t1#2"]);
  });

  test("check answers while the store is open", async (store) => {
    await store.check();
  });
}
