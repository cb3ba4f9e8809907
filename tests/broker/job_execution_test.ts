import assert from "node:assert/strict";
import {
  applyDeviceUpdate,
  applyServiceChange,
  canTransition,
  EXECUTION_STATUSES,
  type ExecutionStatus,
  parseUpdateRequest,
  TERMINAL_STATUSES,
} from "../../broker/job_execution.ts";

// Written from rollout-services.md §1.1, not from the implementation's table.
const DEVICE: Record<ExecutionStatus, ExecutionStatus[]> = {
  QUEUED: ["IN_PROGRESS", "REJECTED"],
  IN_PROGRESS: ["IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"],
  SUCCEEDED: [],
  FAILED: [],
  TIMED_OUT: [],
  REJECTED: [],
  REMOVED: [],
  CANCELED: [],
};
const SERVICE: Record<ExecutionStatus, ExecutionStatus[]> = {
  QUEUED: ["CANCELED", "REMOVED"],
  IN_PROGRESS: ["TIMED_OUT", "REMOVED"],
  SUCCEEDED: [],
  FAILED: [],
  TIMED_OUT: [],
  REJECTED: [],
  REMOVED: [],
  CANCELED: [],
};

for (const from of EXECUTION_STATUSES) {
  Deno.test(`execution transitions from ${from}: device and service, table by table`, () => {
    for (const to of EXECUTION_STATUSES) {
      assert.equal(
        canTransition(from, to, "device"),
        DEVICE[from].includes(to),
        `device ${from} -> ${to}`,
      );
      assert.equal(
        canTransition(from, to, "service"),
        SERVICE[from].includes(to),
        `service ${from} -> ${to}`,
      );
      const forced = SERVICE[from].includes(to) || (from === "IN_PROGRESS" && to === "CANCELED");
      assert.equal(
        canTransition(from, to, "service", true),
        forced,
        `service (force) ${from} -> ${to}`,
      );
    }
  });
}

Deno.test("applyDeviceUpdate() checks expectedVersion first, then the table, and raises the version", () => {
  const queued = { status: "QUEUED" as const, statusDetails: { a: "1" }, versionNumber: 3 };
  const mismatch = applyDeviceUpdate(queued, { status: "IN_PROGRESS", expectedVersion: 2 });
  assert.ok(!mismatch.ok && mismatch.code === "VersionMismatch");
  const started = applyDeviceUpdate(queued, { status: "IN_PROGRESS", expectedVersion: 3 });
  assert.ok(started.ok);
  assert.deepEqual(started.state, {
    status: "IN_PROGRESS",
    statusDetails: { a: "1" },
    versionNumber: 4,
  });
  const skip = applyDeviceUpdate(queued, { status: "SUCCEEDED" });
  assert.ok(!skip.ok && skip.code === "InvalidStateTransition");
  for (const terminal of TERMINAL_STATUSES) {
    const result = applyDeviceUpdate({ status: terminal, statusDetails: {}, versionNumber: 1 }, {
      status: "IN_PROGRESS",
    });
    assert.ok(!result.ok && result.code === "InvalidStateTransition", terminal);
  }
});

Deno.test("applyServiceChange() needs force to cancel an execution in progress and never touches a terminal one", () => {
  const running = { status: "IN_PROGRESS" as const, statusDetails: {}, versionNumber: 5 };
  assert.ok(!applyServiceChange(running, "CANCELED").ok);
  const forced = applyServiceChange(running, "CANCELED", { force: true });
  assert.ok(forced.ok && forced.state.status === "CANCELED" && forced.state.versionNumber === 6);
  const done = applyServiceChange(
    { status: "SUCCEEDED", statusDetails: {}, versionNumber: 9 },
    "CANCELED",
    { force: true },
  );
  assert.ok(!done.ok && done.code === "TerminalStateReached");
});

Deno.test("parseUpdateRequest() takes only device-settable statuses and AWS-shaped statusDetails", () => {
  assert.ok(
    parseUpdateRequest({
      status: "IN_PROGRESS",
      statusDetails: { receive: "1/2" },
      expectedVersion: 2,
    }).ok,
  );
  for (
    const bad of [
      null,
      [],
      "x",
      {},
      { status: "QUEUED" },
      { status: "CANCELED" },
      { status: "FAILED", statusDetails: [] },
      { status: "FAILED", statusDetails: { "bad key": "v" } },
      { status: "FAILED", statusDetails: { k: 1 } },
      { status: "FAILED", statusDetails: { k: "x".repeat(1025) } },
      { status: "FAILED", expectedVersion: -1 },
      { status: "FAILED", expectedVersion: 1.5 },
    ]
  ) {
    const result = parseUpdateRequest(bad);
    assert.ok(!result.ok && result.code === "InvalidRequest", JSON.stringify(bad));
  }
});
