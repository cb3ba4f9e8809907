/**
 * The SQLite store: the store contract, and what is its own (durability settings, migrating an
 * old file, reads from memory agreeing with the file, group commits).
 */
import { DatabaseSync } from "node:sqlite";
import assert from "node:assert/strict";
import { SqliteStore } from "../../broker/sqlite_store.ts";
import { execution, storeContract } from "./store_contract.ts";

storeContract("SQLite", () => {
  const store = new SqliteStore(":memory:");
  return Promise.resolve({ store, cleanup: () => store.close() });
});

Deno.test("store: commits are WAL + NORMAL by default, fsynced each with powerLossDurable, and survive reopening", async () => {
  const directory = Deno.makeTempDirSync();
  try {
    const quick = new SqliteStore(`${directory}/quick.db`);
    const durable = new SqliteStore(`${directory}/durable.db`, { powerLossDurable: true });
    assert.equal(quick.synchronous, "NORMAL");
    assert.equal(durable.synchronous, "FULL");
    await quick.putExecution(execution("job-a", "t1", "SUCCEEDED"));
    await quick.close();
    await durable.close();
    const reopened = new SqliteStore(`${directory}/quick.db`);
    assert.deepEqual(await reopened.executionStatusCounts("job-a"), { SUCCEEDED: 1 });
    await reopened.close();
  } finally {
    Deno.removeSync(directory, { recursive: true });
  }
});

Deno.test("store: a database from before the deadline column is migrated and its overdue executions still found", async () => {
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
    assert.deepEqual((await store.overdueExecutions("job-a", 5_000)).map((e) => e.thing), ["t1"]);
    assert.deepEqual(await store.executionStatusCounts("job-a"), { IN_PROGRESS: 2 });
    await store.close();
  } finally {
    Deno.removeSync(directory, { recursive: true });
  }
});

Deno.test("store: reads served from memory agree with the file after writes, a rollback and reopening", async () => {
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
    await store.putJob(job);
    // Counted (and cached) before the writes that follow, which must keep the counts exact.
    assert.deepEqual(await store.executionStatusCounts("job-a"), {});
    assert.equal(await store.getExecution("job-a", "t1"), null);
    await store.putExecution(execution("job-a", "t1", "QUEUED"));
    await store.putExecution(execution("job-a", "t2", "QUEUED"));
    await store.putExecution(execution("job-a", "t1", "IN_PROGRESS"));
    await store.putExecution(execution("job-b", "t1", "QUEUED"));
    assert.deepEqual(await store.executionStatusCounts("job-a"), { QUEUED: 1, IN_PROGRESS: 1 });
    await assert.rejects(
      store.transaction(async () => {
        await store.putExecution(execution("job-a", "t2", "SUCCEEDED"));
        await store.putJob({ ...job, pending: [] });
        throw new Error("abandoned");
      }),
      /abandoned/,
    );
    store.commit();
    const other = fromFile();
    try {
      for (const s of [store, other]) {
        assert.deepEqual(await s.executionStatusCounts("job-a"), { QUEUED: 1, IN_PROGRESS: 1 });
        assert.equal((await s.getExecution("job-a", "t2"))?.status, "QUEUED");
        assert.deepEqual((await s.getJob("job-a"))?.pending, ["t3", "t4"]);
        // Replaced rows move to the end, in memory as in the file.
        assert.deepEqual((await s.executionsOfThing("t1")).map((e) => `${e.jobId}:${e.status}`), [
          "job-a:IN_PROGRESS",
          "job-b:QUEUED",
        ]);
      }
    } finally {
      await other.close();
    }
    // A cached record cannot be changed in place behind the store's back.
    const cached = (await store.getJob("job-a"))!;
    assert.throws(() => (cached.pending as string[]).push("t9"), TypeError);
    const cachedExecution = (await store.getExecution("job-a", "t1"))!;
    assert.throws(() => {
      (cachedExecution.statusDetails as Record<string, string>).x = "y";
    }, TypeError);
  } finally {
    await store.close();
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
    await store.putExecution(execution("job-a", "t1", "QUEUED"));
    store.afterCommit(() => heard.push(`ack t1 with ${countOnDisk()} on disk`));
    await assert.rejects(
      store.transaction(async () => {
        await store.putExecution(execution("job-a", "t2", "QUEUED"));
        throw new Error("abandoned");
      }),
      /abandoned/,
    );
    await store.transaction(() => store.putExecution(execution("job-a", "t3", "QUEUED")));
    store.afterCommit(() => heard.push("ack t3"));
    assert.equal(countOnDisk(), 0, "nothing is visible before the commit");
    assert.deepEqual(heard, [], "nobody hears of an uncommitted change");
    await store.committed();
    assert.deepEqual(heard, ["ack t1 with 2 on disk", "ack t3"]);
    assert.equal(countOnDisk(), 2, "t1 and t3, not the abandoned t2");
    assert.equal(await store.getExecution("job-a", "t2"), null);
    const done: string[] = [];
    store.afterCommit(() => done.push("nothing pending: at once"));
    assert.deepEqual(done, ["nothing pending: at once"]);
    await store.putExecution(execution("job-a", "t4", "QUEUED"));
    await store.close(); // commits what is pending
    assert.equal(countOnDisk(), 3);
  } finally {
    reader.close();
    Deno.removeSync(directory, { recursive: true });
  }
});
