/**
 * The PSA FWU component state model, state by state: every operation from every state, checked
 * against a matrix written from the spec's figure (not derived from the implementation's table),
 * then what a reboot does to each state.
 */
import assert from "node:assert/strict";
import type { Device } from "../../bootloader/device.ts";
import {
  FWU_TRANSITIONS,
  FwuState,
  fwuStateName,
  type FwuStateValue,
  fwuTransition,
} from "../../bootloader/fwu.ts";
import { PsaStatus } from "../../bootloader/psa_status.ts";
import { factoryDevice, testImage } from "../helpers/pki.ts";
import { installUpdate } from "../helpers/update.ts";

const S = FwuState;
const BAD = PsaStatus.ERROR_BAD_STATE;
const update = await testImage({ version: "1.1.0", securityCounter: 2 });
const padded = new Uint8Array(Math.ceil(update.length / 8) * 8).fill(0xff);
padded.set(update);

type Op = "start" | "write" | "finish" | "cancel" | "install" | "accept" | "reject" | "clean";
const OPS: Op[] = ["start", "write", "finish", "cancel", "install", "accept", "reject", "clean"];

/** Spec section 5.6 / figure "standard component state model": [status, next state]. */
const EXPECTED: Record<string, Partial<Record<Op, [number, FwuStateValue]>>> = {
  READY: { start: [0, S.WRITING] },
  WRITING: { write: [0, S.WRITING], finish: [0, S.CANDIDATE], cancel: [0, S.FAILED] },
  CANDIDATE: { cancel: [0, S.FAILED], install: [PsaStatus.SUCCESS_REBOOT, S.STAGED] },
  STAGED: { reject: [0, S.FAILED] },
  FAILED: { clean: [0, S.READY] },
  TRIAL: { accept: [0, S.UPDATED], reject: [PsaStatus.SUCCESS_REBOOT, S.REJECTED] },
  REJECTED: {},
  UPDATED: { clean: [0, S.READY] },
};

async function deviceIn(state: FwuStateValue): Promise<Device> {
  const { device } = await factoryDevice();
  await device.powerOn();
  const fwu = () => device.fwu;
  if (state === S.READY) return device;
  if (state === S.TRIAL || state === S.REJECTED || state === S.UPDATED) {
    await installUpdate(device, update);
    if (state === S.REJECTED) assert.equal(fwu().reject(0), PsaStatus.SUCCESS_REBOOT);
    if (state === S.UPDATED) assert.equal(fwu().accept(), 0);
    return device;
  }
  assert.equal(fwu().start(0), 0);
  if (state === S.FAILED) {
    assert.equal(fwu().cancel(0), 0);
    return device;
  }
  assert.equal(fwu().write(0, 0, padded), 0);
  if (state === S.WRITING) return device;
  assert.equal(await fwu().finish(0), 0);
  if (state === S.CANDIDATE) return device;
  assert.equal(fwu().install(), PsaStatus.SUCCESS_REBOOT);
  return device;
}

async function run(device: Device, op: Op): Promise<number> {
  const fwu = device.fwu;
  switch (op) {
    case "start":
      return fwu.start(0);
    case "write":
      return fwu.write(0, 0, padded.subarray(0, 64));
    case "finish":
      return await fwu.finish(0);
    case "cancel":
      return fwu.cancel(0);
    case "install":
      return fwu.install();
    case "accept":
      return fwu.accept();
    case "reject":
      return fwu.reject(0);
    case "clean":
      return fwu.clean(0);
  }
}

for (const [name, row] of Object.entries(EXPECTED)) {
  Deno.test(`FWU state ${name}: every operation returns the spec's status and state`, async (t) => {
    const state = S[name as keyof typeof S];
    for (const op of OPS) {
      await t.step(op, async () => {
        const device = await deviceIn(state);
        assert.equal(device.fwu.state, state, "setup");
        const [status, next] = row[op] ?? [BAD, state];
        assert.equal(await run(device, op), status, `${name} --${op}--> status`);
        assert.equal(
          fwuStateName(device.fwu.state),
          fwuStateName(next),
          `${name} --${op}--> state`,
        );
        assert.equal(
          fwuTransition(op, state)?.to,
          row[op]?.[1],
          "the transition table agrees with the spec",
        );
      });
    }
  });
}

Deno.test("FWU transition table has exactly the spec's transitions", () => {
  const fromSpec = Object.entries(EXPECTED).flatMap(([name, row]) =>
    Object.entries(row).map(([op, [, to]]) => `${name}-${op}->${fwuStateName(to)}`)
  );
  const fromTable = FWU_TRANSITIONS.map((t) =>
    `${fwuStateName(t.from)}-${t.operation}->${fwuStateName(t.to)}`
  );
  assert.deepEqual(fromTable.sort(), fromSpec.sort());
});

const AFTER_REBOOT: [FwuStateValue, FwuStateValue][] = [
  [S.READY, S.READY],
  [S.WRITING, S.WRITING], // staging is not volatile: a download survives a power cut
  [S.CANDIDATE, S.CANDIDATE],
  [S.STAGED, S.TRIAL],
  [S.FAILED, S.FAILED],
  [S.TRIAL, S.FAILED],
  [S.REJECTED, S.FAILED],
  [S.UPDATED, S.UPDATED],
];
for (const [before, after] of AFTER_REBOOT) {
  Deno.test(`FWU state ${fwuStateName(before)} becomes ${fwuStateName(after)} across a reboot`, async () => {
    const device = await deviceIn(before);
    await device.reset("reboot");
    assert.equal(fwuStateName(device.fwu.state), fwuStateName(after));
  });
}

Deno.test("FWU errors: unknown component, misaligned and oversized writes, garbage and downgrade candidates", async () => {
  const device = await deviceIn(S.READY);
  const fwu = device.fwu;
  assert.equal(fwu.start(1), PsaStatus.ERROR_DOES_NOT_EXIST);
  assert.equal(fwu.query(1).status, PsaStatus.ERROR_DOES_NOT_EXIST);
  assert.equal(fwu.start(0, new Uint8Array(4)), PsaStatus.ERROR_NOT_SUPPORTED);
  assert.equal(fwu.start(0), 0);
  assert.equal(fwu.write(0, 3, new Uint8Array(8)), PsaStatus.ERROR_INVALID_ARGUMENT);
  assert.equal(
    fwu.write(0, fwu.maxSize - 8, new Uint8Array(16)),
    PsaStatus.ERROR_INSUFFICIENT_STORAGE,
  );
  assert.equal(fwu.state, S.WRITING, "argument errors change nothing");
  assert.equal(fwu.write(0, 0, new Uint8Array(100).fill(7)), 0);
  assert.equal(await fwu.finish(0), PsaStatus.ERROR_DATA_INVALID);
  assert.equal(fwu.state, S.FAILED);
  assert.match(fwu.query(0).info?.errorDetail ?? "", /bad header magic/);
  assert.equal(fwu.clean(0), 0);

  const { device: newer } = await factoryDevice({ factory: { version: "3.0.0" } });
  await newer.powerOn();
  const old = await testImage({ version: "2.0.0" });
  assert.equal(newer.fwu.start(0), 0);
  assert.equal(newer.fwu.write(0, 0, old), 0);
  assert.equal(await newer.fwu.finish(0), 0);
  assert.equal(newer.fwu.install(), PsaStatus.ERROR_NOT_PERMITTED);
  assert.equal(newer.fwu.state, S.FAILED);
});

Deno.test("FWU write accepts a repeat of bytes already written and refuses different ones", async () => {
  const device = await deviceIn(S.READY);
  assert.equal(device.fwu.start(0), 0);
  assert.equal(device.fwu.write(0, 0, padded.subarray(0, 1024)), 0);
  assert.equal(
    device.fwu.write(0, 512, padded.subarray(512, 2048)),
    0,
    "overlapping identical data is fine",
  );
  assert.equal(device.fwu.write(0, 0, new Uint8Array(8)), PsaStatus.ERROR_STORAGE_FAILURE);
  assert.equal(device.fwu.state, S.FAILED);
});

Deno.test("FWU query reports the active version, capacity and candidate digest", async () => {
  const device = await deviceIn(S.CANDIDATE);
  const info = device.fwu.query(0).info!;
  assert.deepEqual(info.version, { major: 1, minor: 0, revision: 0, build: 0 });
  assert.equal(info.maxSize, 16 * 4096);
  assert.equal(info.flags, 0);
  assert.equal(info.candidateDigest?.length, 32);
});
