/** The SQLite store's execution queries: status filter and counts agree with the records. */
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

Deno.test("store: execution counts by status and the status filter follow every update", () => {
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
    assert.deepEqual(
      store.executionsOfJob("job-a", "IN_PROGRESS").map((e) => e.thing),
      ["t3"],
    );
    assert.deepEqual(store.executionsOfJob("job-a").map((e) => e.thing), ["t1", "t3", "t2"]);
  } finally {
    store.close();
    Deno.removeSync(directory, { recursive: true });
  }
});
