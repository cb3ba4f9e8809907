import assert from "node:assert/strict";
import {
  BOOT_DECISION_TABLE,
  type BootInputs,
  decideBoot,
} from "../../bootloader/boot_decision.ts";
import type { SlotTrailer } from "../../bootloader/trailer.ts";

const blank: SlotTrailer = {
  magic: "unset",
  imageOk: "unset",
  copyDone: "unset",
  writing: "unset",
  candidate: "unset",
  failed: "unset",
  failReason: null,
  failDetail: null,
};

function inputs(
  primary: Partial<SlotTrailer>,
  secondary: Partial<SlotTrailer>,
  swapInProgress = false,
): BootInputs {
  return {
    primary: { ...blank, ...primary },
    secondary: { ...blank, ...secondary },
    swapInProgress,
  };
}

const confirmed = { magic: "good", imageOk: "set", copyDone: "set" } as const;
const onTrial = { magic: "good", imageOk: "unset", copyDone: "set" } as const;

// One case per row, each chosen so that only that row (and the catch-all) could match it.
const rows: [number, BootInputs, string][] = [
  [1, inputs(onTrial, { magic: "good" }, true), "resume"],
  [2, inputs(confirmed, { magic: "good" }), "test"],
  [3, inputs(confirmed, { magic: "good", imageOk: "set" }), "perm"],
  [4, inputs(confirmed, { magic: "good", imageOk: "bad" }), "test"],
  [5, inputs(onTrial, {}), "revert"],
  [6, inputs(confirmed, { magic: "good", failed: "set" }), "none"],
  [7, inputs(confirmed, { magic: "bad" }), "none"],
  [8, inputs(confirmed, {}), "none"],
];

for (const [row, input, swap] of rows) {
  Deno.test(`decideBoot() row ${row}: ${BOOT_DECISION_TABLE[row - 1]!.why}`, () => {
    const decision = decideBoot(input);
    assert.equal(decision.row, row);
    assert.equal(decision.swap, swap);
  });
}

Deno.test("decideBoot(): a factory device (all trailers erased) boots the primary", () => {
  assert.equal(decideBoot(inputs({}, {})).swap, "none");
});

Deno.test("decideBoot(): an interrupted swap wins over every trailer state", () => {
  for (const primary of [{}, confirmed, onTrial, { magic: "bad" as const }]) {
    for (const secondary of [{}, { magic: "good" as const }, { failed: "set" as const }]) {
      assert.equal(decideBoot(inputs(primary, secondary, true)).swap, "resume");
    }
  }
});

Deno.test("decideBoot(): a trial image is reverted whatever the secondary magic says (MCUboot #1966)", () => {
  for (const magic of ["unset", "bad", "good"] as const) {
    assert.equal(
      decideBoot(inputs(onTrial, { magic, failed: "set" })).swap,
      "revert",
      `${magic}, failed`,
    );
    assert.equal(
      decideBoot(inputs(onTrial, { magic, failed: "bad" })).swap,
      "revert",
      `${magic}, torn failure`,
    );
  }
  assert.equal(decideBoot(inputs(onTrial, { magic: "bad" })).swap, "revert");
});

Deno.test("decideBoot(): only row 7 asks for a torn request to be recorded as refused", () => {
  for (const row of BOOT_DECISION_TABLE) {
    assert.equal(row.refuseRequest !== undefined, row.row === 7, `row ${row.row}`);
  }
});
