/**
 * The two-stage boot: the first stage verifies the second-stage bootloader against the root in
 * the read-only boot ROM region; a second-stage update runs once on trial and is kept only when
 * confirmed; a second stage that does not verify never runs.
 */
import assert from "node:assert/strict";
import { FlashError } from "../../bootloader/flash.ts";
import { factoryDevice, secondStageImage } from "../helpers/pki.ts";

const log = (device: { report(): { lastBootLog: readonly string[] } }) =>
  device.report().lastBootLog.join("\n");

Deno.test("two-stage boot: the first stage verifies the second stage, which verifies the firmware", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  const outcome = await device.powerOn();
  assert.equal(outcome.kind, "run");
  assert.deepEqual(device.secondStage, { slot: 0, version: "2.0.0+0", trial: false });
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
  assert.deepEqual(device.secondStage, { slot: 1, version: "2.1.0+0", trial: true });
  assert.match(log(device), /new second stage 2\.1\.0\+0 in B: trial boot/);
  // Not confirmed: the next reset goes back to A.
  await device.reset("watchdog");
  assert.deepEqual(device.secondStage, { slot: 0, version: "2.0.0+0", trial: false });
  assert.match(log(device), /ran on trial and was not confirmed: back to A/);
  // Again, confirmed this time: B stays.
  assert.deepEqual(await device.installSecondStage(await secondStageImage("2.1.0")), { ok: true });
  await device.reset("new second stage");
  assert.equal(device.confirmSecondStage(), true);
  await device.reset("power cycle");
  assert.deepEqual(device.secondStage, { slot: 1, version: "2.1.0+0", trial: false });
  assert.equal(device.running?.version, "1.0.0+0", "the firmware is untouched throughout");
});

Deno.test("two-stage boot: second stages that are unsigned, signed by a rogue key or not bootloaders are refused", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  const rogue = await device.installSecondStage(await secondStageImage("6.6.6", "rogue"));
  assert.equal(rogue.ok, false);
  const garbage = await device.installSecondStage(new Uint8Array(512).fill(0x42));
  assert.equal(garbage.ok, false);
  assert.deepEqual(device.secondStage, { slot: 0, version: "2.0.0+0", trial: false });
  await device.reset("power cycle");
  assert.deepEqual(device.secondStage, { slot: 0, version: "2.0.0+0", trial: false });
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
  assert.deepEqual(device.secondStage, { slot: 0, version: "2.0.0+0", trial: false });
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
  assert.deepEqual(device.secondStage, { slot: 0, version: "2.0.0+0", trial: false });
});
