/** The agent's self-test verdicts, row by row. */
import assert from "node:assert/strict";
import { notOnTrialAction, trialVersionProblem } from "../../agent/self_test.ts";
import { FwuState } from "../../bootloader/fwu.ts";
import { PsaStatus } from "../../bootloader/psa_status.ts";

const V110 = "0x01010000";
const V100 = "0x01000000";
const V120 = "0x01020000";

Deno.test("trialVersionProblem(): newer passes; the same and older are refused with AWS's codes", () => {
  assert.equal(
    trialVersionProblem({ updatedBy: V100, running: V110, allowDowngrade: false }),
    null,
  );
  assert.equal(
    trialVersionProblem({ updatedBy: V110, running: V110, allowDowngrade: false })?.reason,
    "rejected: 0x00000010",
  );
  assert.equal(
    trialVersionProblem({ updatedBy: V120, running: V110, allowDowngrade: false })?.reason,
    "rejected: 0x0000000f",
  );
  assert.equal(trialVersionProblem({ updatedBy: V120, running: V110, allowDowngrade: true }), null);
  assert.equal(
    trialVersionProblem({ updatedBy: undefined, running: V110, allowDowngrade: false }),
    null,
  );
  assert.equal(
    trialVersionProblem({ updatedBy: "garbage", running: V110, allowDowngrade: false }),
    null,
  );
});

Deno.test("notOnTrialAction(): the table, first match wins", () => {
  const interrupted = { code: PsaStatus.ERROR_INSTALL_INTERRUPTED, detail: "install interrupted" };
  for (const state of [FwuState.CANDIDATE, FwuState.STAGED]) {
    assert.deepEqual(
      notOnTrialAction({
        updateState: state,
        failure: interrupted,
        updatedBy: V100,
        running: V100,
      }),
      { action: "activate" },
    );
  }
  assert.deepEqual(
    notOnTrialAction({
      updateState: FwuState.READY,
      failure: interrupted,
      updatedBy: V100,
      running: V100,
    }),
    { action: "download-again", detail: "install interrupted" },
  );
  const same = notOnTrialAction({
    updateState: FwuState.READY,
    failure: { code: PsaStatus.ERROR_BAD_STATE, detail: "reverted: crashed" },
    updatedBy: V100,
    running: V100,
  });
  assert.deepEqual(same, {
    action: "fail",
    reason: "rejected: 0x00000010",
    detail: "reverted: crashed",
  });
  const mismatch = notOnTrialAction({
    updateState: FwuState.READY,
    failure: interrupted,
    updatedBy: V100,
    running: V110,
  });
  assert.equal(mismatch.action, "fail");
  assert.equal(mismatch.action === "fail" && mismatch.reason, "rejected: 0x00000011");
  const nothing = notOnTrialAction({
    updateState: FwuState.READY,
    failure: null,
    updatedBy: V100,
    running: V110,
  });
  assert.equal(nothing.action === "fail" && nothing.detail, "the new image is not running");
});
