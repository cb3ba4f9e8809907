/**
 * The two-stage boot: the first stage verifies the second-stage bootloader against the root in
 * the read-only boot ROM region; a second-stage update runs once on trial and is kept only when
 * confirmed; a second stage that does not verify never runs.
 */
import assert from "node:assert/strict";
import type { Device } from "../../bootloader/device.ts";
import { FlashError, isPowerCut } from "../../bootloader/flash.ts";
import { factoryDevice, secondStageImage } from "../helpers/pki.ts";

/** The running second stage without its parsed version (the string says the same). */
const stageOf = (device: Device) => {
  const stage = device.secondStage;
  return stage && { slot: stage.slot, version: stage.version, trial: stage.trial };
};

const log = (device: { report(): { lastBootLog: readonly string[] } }) =>
  device.report().lastBootLog.join("\n");

Deno.test("two-stage boot: the first stage verifies the second stage, which verifies the firmware", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  const outcome = await device.powerOn();
  assert.equal(outcome.kind, "run");
  assert.deepEqual(stageOf(device), { slot: 0, version: "2.0.0+0", trial: false });
  assert.equal(device.running?.version, "1.0.0+0");
  assert.match(log(device), /stage 1: second stage 2\.0\.0\+0 from A verified/);
  assert.equal(
    device.flash.protection(device.layout.bootRom.firstSector),
    "read-only",
  );
});

Deno.test("two-stage boot: a second-stage update runs on trial, is kept when confirmed, reverted when not", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  assert.deepEqual(await device.installSecondStage(await secondStageImage("2.1.0")), { ok: true });
  await device.reset("new second stage");
  assert.deepEqual(stageOf(device), { slot: 1, version: "2.1.0+0", trial: true });
  assert.match(log(device), /new second stage 2\.1\.0\+0 in B: trial boot/);
  // Not confirmed: the next reset goes back to A.
  await device.reset("watchdog");
  assert.deepEqual(stageOf(device), { slot: 0, version: "2.0.0+0", trial: false });
  assert.match(log(device), /ran on trial and was not confirmed: back to A/);
  // Again, confirmed this time: B stays.
  assert.deepEqual(await device.installSecondStage(await secondStageImage("2.1.0")), { ok: true });
  await device.reset("new second stage");
  assert.equal(device.confirmSecondStage(), true);
  await device.reset("power cycle");
  assert.deepEqual(stageOf(device), { slot: 1, version: "2.1.0+0", trial: false });
  assert.equal(device.running?.version, "1.0.0+0", "the firmware is untouched throughout");
});

Deno.test("two-stage boot: second stages that are unsigned, signed by a rogue key or not bootloaders are refused", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  const rogue = await device.installSecondStage(await secondStageImage("6.6.6", "rogue"));
  assert.equal(rogue.ok, false);
  const garbage = await device.installSecondStage(new Uint8Array(512).fill(0x42));
  assert.equal(garbage.ok, false);
  assert.deepEqual(stageOf(device), { slot: 0, version: "2.0.0+0", trial: false });
  await device.reset("power cycle");
  assert.deepEqual(stageOf(device), { slot: 0, version: "2.0.0+0", trial: false });
});

Deno.test("threat: an attacker patches the bootloader to bypass image verification — mitigations: the boot ROM region is read-only, and a second stage altered in flash fails the first stage's check", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  const { bootRom, stage2 } = device.areas;
  // The first stage's region cannot be rewritten, even by code that calls the flash API.
  assert.throws(
    () => bootRom.eraseSector(0),
    (e: unknown) => e instanceof FlashError && e.code === "protected",
  );
  assert.throws(
    () => bootRom.program(0, new Uint8Array(8)),
    (e: unknown) => e instanceof FlashError && e.code === "protected",
  );
  assert.equal(device.flash.stats.refused, 2);
  // The second stage is in ordinary flash: patch it (a jump over the verification, say).
  device.powerOff();
  device.flash.powerOn();
  const bytes = stage2[0].read(0, stage2[0].sectorSize).slice();
  bytes[40]! ^= 0xff;
  stage2[0].eraseSector(0);
  stage2[0].program(0, bytes);
  const outcome = await device.powerOn();
  // Slot B is empty: nothing verifies, so nothing runs, the patched code least of all.
  assert.equal(outcome.kind, "recovery");
  assert.equal(device.state, "halted");
  assert.equal(device.running, null);
  assert.match(log(device), /second stage A refused: .*hash does not match/);
});

Deno.test("threat: a patched second stage with a good one in the other slot: the first stage falls back to the good one", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  await device.installSecondStage(await secondStageImage("2.1.0"));
  await device.reset("new second stage");
  device.confirmSecondStage();
  device.powerOff();
  device.flash.powerOn();
  const b = device.areas.stage2[1];
  const bytes = b.read(0, b.sectorSize).slice();
  bytes[100]! ^= 0x01;
  b.eraseSector(0);
  b.program(0, bytes);
  await device.powerOn();
  assert.deepEqual(stageOf(device), { slot: 0, version: "2.0.0+0", trial: false });
  assert.equal(device.running?.version, "1.0.0+0");
  assert.match(log(device), /falling back to second stage A/);
});

Deno.test("threat: an attacker replaces the verification certificate — mitigation: the root lives in the read-only boot ROM region; the refused writes are counted", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  const region = device.areas.bootRom;
  const before = region.read(0, region.sectorSize).slice();
  const rogueRoot = new Uint8Array(region.sectorSize).fill(0);
  assert.throws(() => region.eraseSector(0), FlashError);
  assert.throws(() => region.program(0, rogueRoot.subarray(0, 64)), FlashError);
  assert.deepEqual(region.read(0, region.sectorSize), before, "the root certificate is intact");
  assert.deepEqual(
    device.flash.refusals.map((r) => `${r.operation}:${r.protection}`),
    ["erase:read-only", "program:read-only"],
  );
  await device.reset("power cycle");
  assert.equal(device.running?.version, "1.0.0+0");
  assert.deepEqual(stageOf(device), { slot: 0, version: "2.0.0+0", trial: false });
});

Deno.test("two-stage boot: power cut at every flash operation of a second-stage update (install, trial boot, confirmation) never leaves the device without a second stage that boots", async () => {
  const next = await secondStageImage("2.1.0");
  let operations = 0;
  for (let cutAt = 1;; cutAt++) {
    const { device } = await factoryDevice({ twoStage: true });
    await device.powerOn();
    const before = device.flash.stats.operations;
    device.cutPowerAt({ atOperation: cutAt, torn: cutAt % 2 === 0 });
    let cut = false;
    try {
      const installed = await device.installSecondStage(next);
      if (installed.ok) {
        await device.reset("new second stage");
        device.confirmSecondStage();
        await device.reset("power cycle");
      }
    } catch (error) {
      if (!isPowerCut(error)) throw error;
      cut = true;
    }
    if (!cut) {
      operations = device.flash.stats.operations - before;
      device.flash.cancelPowerCut();
      assert.equal(stageOf(device)?.version, "2.1.0+0", "uncut, the update completes");
      break;
    }
    await device.powerOn();
    const context = `cut at operation ${cutAt}`;
    assert.equal(device.state, "running", `${context}: ${log(device)}`);
    assert.ok(
      ["2.0.0+0", "2.1.0+0"].includes(device.secondStage?.version ?? ""),
      `${context}: runs ${device.secondStage?.version}`,
    );
    assert.equal(device.running?.version, "1.0.0+0", context);
  }
  assert.ok(operations > 4, `the sweep covered ${operations} flash operations`);
});
