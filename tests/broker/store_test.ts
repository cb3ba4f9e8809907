/** The SQLite store's execution queries: counts and overdue executions agree with the records. */
import { DatabaseSync } from "node:sqlite";
import assert from "node:assert/strict";
import { type ExecutionRecord, SqliteStore } from "../../broker/store.ts";
import type { ExecutionStatus } from "../../broker/job_execution.ts";

function execution(jobId: string, thing: string, status: ExecutionStatus): ExecutionRecord {
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
  };
}

Deno.test("store: execution counts by status and overdue executions follow every update", () => {
  const directory = Deno.makeTempDirSync();
  const store = new SqliteStore(`${directory}/cloud.db`);
  try {
    assert.deepEqual(store.executionStatusCounts("job-a"), {});
    store.putExecution(execution("job-a", "t1", "QUEUED"));
    store.putExecution(execution("job-a", "t2", "IN_PROGRESS"));
    store.putExecution(execution("job-a", "t3", "IN_PROGRESS"));
    store.putExecution(execution("job-b", "t1", "SUCCEEDED"));
    // A status change replaces the row, so the old status no longer counts.
    store.putExecution(execution("job-a", "t2", "SUCCEEDED"));
    assert.deepEqual(store.executionStatusCounts("job-a"), {
      QUEUED: 1,
      IN_PROGRESS: 1,
      SUCCEEDED: 1,
    });
    assert.deepEqual(store.executionStatusCounts("job-b"), { SUCCEEDED: 1 });
    assert.deepEqual(store.executionsOfJob("job-a").map((e) => e.thing), ["t1", "t3", "t2"]);
    // Overdue: in progress with a deadline at or before now; no deadline is never overdue.
    store.putExecution({ ...execution("job-a", "t4", "IN_PROGRESS"), deadline: 5_000 });
    store.putExecution({ ...execution("job-a", "t5", "IN_PROGRESS"), deadline: 9_000 });
    store.putExecution({ ...execution("job-a", "t6", "SUCCEEDED"), deadline: 1_000 });
    assert.deepEqual(store.overdueExecutions("job-a", 4_999).map((e) => e.thing), []);
    assert.deepEqual(store.overdueExecutions("job-a", 5_000).map((e) => e.thing), ["t4"]);
    assert.deepEqual(store.overdueExecutions("job-a", 10_000).map((e) => e.thing), ["t4", "t5"]);
  } finally {
    store.close();
    Deno.removeSync(directory, { recursive: true });
  }
});

Deno.test("store: commits are WAL + NORMAL by default, fsynced each with powerLossDurable, and survive reopening", () => {
  const directory = Deno.makeTempDirSync();
  try {
    const quick = new SqliteStore(`${directory}/quick.db`);
    const durable = new SqliteStore(`${directory}/durable.db`, { powerLossDurable: true });
    assert.equal(quick.synchronous, "NORMAL");
    assert.equal(durable.synchronous, "FULL");
    quick.putExecution(execution("job-a", "t1", "SUCCEEDED"));
    quick.close();
    durable.close();
    const reopened = new SqliteStore(`${directory}/quick.db`);
    assert.deepEqual(reopened.executionStatusCounts("job-a"), { SUCCEEDED: 1 });
    reopened.close();
  } finally {
    Deno.removeSync(directory, { recursive: true });
  }
});

Deno.test("store: a database from before the deadline column is migrated and its overdue executions still found", () => {
  const directory = Deno.makeTempDirSync();
  try {
    const path = `${directory}/old.db`;
    const old = new DatabaseSync(path);
    old.exec(
      "CREATE TABLE executions (job_id TEXT NOT NULL, thing TEXT NOT NULL, status TEXT NOT NULL," +
        " body TEXT NOT NULL, PRIMARY KEY (job_id, thing));",
    );
    const late = { ...execution("job-a", "t1", "IN_PROGRESS"), deadline: 1_000 };
    const fine = { ...execution("job-a", "t2", "IN_PROGRESS"), deadline: 9_000 };
    for (const e of [late, fine]) {
      old.prepare("INSERT INTO executions VALUES (?, ?, ?, ?)").run(
        e.jobId,
        e.thing,
        e.status,
        JSON.stringify(e),
      );
    }
    old.close();
    const store = new SqliteStore(path);
    assert.deepEqual(store.overdueExecutions("job-a", 5_000).map((e) => e.thing), ["t1"]);
    assert.deepEqual(store.executionStatusCounts("job-a"), { IN_PROGRESS: 2 });
    store.close();
  } finally {
    Deno.removeSync(directory, { recursive: true });
  }
});

Deno.test("store: reads served from memory agree with the file after writes, a rollback and reopening", () => {
  const directory = Deno.makeTempDirSync();
  const path = `${directory}/cloud.db`;
  const store = new SqliteStore(path);
  const fromFile = () => new SqliteStore(path);
  const job = {
    jobId: "job-a",
    status: "IN_PROGRESS" as const,
    spec: { document: { v: 1 } },
    createdAt: 1,
    pending: ["t3", "t4"],
    notifiedAt: [],
    reason: null,
  };
  try {
    store.putJob(job);
    // Counted (and cached) before the writes that follow, which must keep the counts exact.
    assert.deepEqual(store.executionStatusCounts("job-a"), {});
    assert.equal(store.getExecution("job-a", "t1"), null);
    store.putExecution(execution("job-a", "t1", "QUEUED"));
    store.putExecution(execution("job-a", "t2", "QUEUED"));
    store.putExecution(execution("job-a", "t1", "IN_PROGRESS"));
    store.putExecution(execution("job-b", "t1", "QUEUED"));
    assert.deepEqual(store.executionStatusCounts("job-a"), { QUEUED: 1, IN_PROGRESS: 1 });
    assert.throws(() =>
      store.transaction(() => {
        store.putExecution(execution("job-a", "t2", "SUCCEEDED"));
        store.putJob({ ...job, pending: [] });
        throw new Error("abandoned");
      }), /abandoned/);
    store.commit();
    const other = fromFile();
    try {
      for (const s of [store, other]) {
        assert.deepEqual(s.executionStatusCounts("job-a"), { QUEUED: 1, IN_PROGRESS: 1 });
        assert.equal(s.getExecution("job-a", "t2")?.status, "QUEUED");
        assert.deepEqual(s.getJob("job-a")?.pending, ["t3", "t4"]);
        // Replaced rows move to the end, in memory as in the file.
        assert.deepEqual(s.executionsOfThing("t1").map((e) => `${e.jobId}:${e.status}`), [
          "job-a:IN_PROGRESS",
          "job-b:QUEUED",
        ]);
      }
    } finally {
      other.close();
    }
    // A cached record cannot be changed in place behind the store's back.
    const cached = store.getJob("job-a")!;
    assert.throws(() => (cached.pending as string[]).push("t9"), TypeError);
    assert.throws(() => {
      (store.getExecution("job-a", "t1")!.statusDetails as Record<string, string>).x = "y";
    }, TypeError);
  } finally {
    store.close();
    Deno.removeSync(directory, { recursive: true });
  }
});

Deno.test("store: writes of one turn commit together; acknowledgements wait for the commit; a failed transaction undoes only itself", async () => {
  const directory = Deno.makeTempDirSync();
  const path = `${directory}/cloud.db`;
  const store = new SqliteStore(path);
  const reader = new DatabaseSync(path);
  const countOnDisk = () =>
    Number((reader.prepare("SELECT COUNT(*) AS n FROM executions").get() as { n: number }).n);
  try {
    const heard: string[] = [];
    store.putExecution(execution("job-a", "t1", "QUEUED"));
    store.afterCommit(() => heard.push(`ack t1 with ${countOnDisk()} on disk`));
    assert.throws(() =>
      store.transaction(() => {
        store.putExecution(execution("job-a", "t2", "QUEUED"));
        throw new Error("abandoned");
      }), /abandoned/);
    store.transaction(() => store.putExecution(execution("job-a", "t3", "QUEUED")));
    store.afterCommit(() => heard.push("ack t3"));
    assert.equal(countOnDisk(), 0, "nothing is visible before the commit");
    assert.deepEqual(heard, [], "nobody hears of an uncommitted change");
    await store.committed();
    assert.deepEqual(heard, ["ack t1 with 2 on disk", "ack t3"]);
    assert.equal(countOnDisk(), 2, "t1 and t3, not the abandoned t2");
    assert.equal(store.getExecution("job-a", "t2"), null);
    const done: string[] = [];
    store.afterCommit(() => done.push("nothing pending: at once"));
    assert.deepEqual(done, ["nothing pending: at once"]);
    store.putExecution(execution("job-a", "t4", "QUEUED"));
    store.close(); // commits what is pending
    assert.equal(countOnDisk(), 3);
  } finally {
    reader.close();
    Deno.removeSync(directory, { recursive: true });
  }
});
