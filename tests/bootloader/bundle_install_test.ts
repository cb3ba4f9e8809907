/**
 * Two components installed together (PSA FWU multi-component install): a second-stage
 * bootloader staged with an application that depends on it come up on trial after one reboot,
 * and are both kept or both reverted: on a failed self-test, on a second stage that crashes, and
 * at every flash operation a power cut can hit, from the install to the confirmation.
 */
import assert from "node:assert/strict";
import { Device } from "../../bootloader/device.ts";
import { isPowerCut, type NorFlash } from "../../bootloader/flash.ts";
import { FwuState, SECOND_STAGE_COMPONENT, unboundSecondStage } from "../../bootloader/fwu.ts";
import { type SecondStageBehavior, secondStagePayload } from "../../bootloader/first_stage.ts";
import { buildFirmware } from "../../bootloader/firmware.ts";
import { type ImageDependency, ImageId, parseVersion } from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { OtaImageState } from "../../protocol/ota_pal_status.ts";
import { PsaStatus } from "../../bootloader/psa_status.ts";
import { factoryDevice, smallLayout, testPki } from "../helpers/pki.ts";
import { installUpdate } from "../helpers/update.ts";

const pki = await testPki();
const signer = { privateKey: pki.signerKeys.privateKey, certificate: pki.signer };
const needsStage = (version: string): ImageDependency[] => [
  { imageId: ImageId.SECOND_STAGE, minVersion: parseVersion(version)! },
];

function application(version: string, counter: number, dependencies: ImageDependency[]) {
  return signImage({
    payload: buildFirmware({ behavior: "ok", version }, 16 * 1024),
    version: parseVersion(version)!,
    securityCounter: counter,
    dependencies,
  }, signer);
}

function secondStage(version: string, behavior: SecondStageBehavior = "boots") {
  return signImage({
    payload: secondStagePayload(version, behavior),
    version: parseVersion(version)!,
    securityCounter: 1,
  }, signer);
}

const newApp = await application("1.1.0", 2, needsStage("2.1.0"));
const newStage = await secondStage("2.1.0");

/** Which application and second stage run: "1.0.0+0/2.0.0+0" and so on. */
function pair(device: Device): string {
  return `${device.running?.version}/${device.secondStage?.version}`;
}
const OLD = "1.0.0+0/2.0.0+0";
const NEW = "1.1.0+0/2.1.0+0";

/** Stages the second stage, then downloads, verifies and installs the application: one reboot. */
async function installBundle(device: Device, stage = newStage, app = newApp): Promise<void> {
  const staged = await device.stageSecondStage(stage);
  if (!staged.ok) throw new Error(`stageSecondStage: ${staged.reason}`);
  await installUpdate(device, app);
}

Deno.test("bundle: one reboot brings both up on trial; accepting keeps both, and later boots keep them", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  assert.deepEqual(await device.stageSecondStage(newStage), { ok: true });
  assert.equal(device.fwu.query(SECOND_STAGE_COMPONENT).info?.state, FwuState.CANDIDATE);
  await installUpdate(device, newApp);
  assert.equal(pair(device), NEW);
  assert.equal(device.running?.trial, true);
  assert.equal(device.secondStage?.trial, true);
  assert.equal(device.fwu.query(SECOND_STAGE_COMPONENT).info?.state, FwuState.TRIAL);
  assert.equal(device.resets.length, 1, "one reboot for both");
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
  assert.equal(device.secondStage?.trial, false);
  assert.equal(device.fwu.query(SECOND_STAGE_COMPONENT).info?.state, FwuState.READY);
  assert.equal(device.report().securityCounter, 2);
  await device.reset("after the update");
  assert.equal(pair(device), NEW);
  assert.equal(device.running?.trial, false);
  assert.equal(device.secondStage?.trial, false);
});

Deno.test("bundle: a failed self-test rejects both: the reboot brings back the old pair", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  await installBundle(device);
  assert.equal(pair(device), NEW);
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Rejected), 0);
  await device.reset("the agent resets after a rejection");
  assert.equal(pair(device), OLD);
  assert.equal(device.running?.trial, false);
  assert.equal(device.secondStage?.trial, false);
});

Deno.test("bundle: a second stage that crashes on trial takes the application back with it", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  await installBundle(device, await secondStage("2.1.0", "crashes"));
  assert.equal(pair(device), OLD);
  const log = device.bootLogs.at(-1)!.join("\n");
  assert.match(log, /2\.1\.0\+0 crashed before booting firmware/);
  assert.match(log, /candidate refused and erased: needs second-stage bootloader 2\.1\.0\+0/);
  const info = device.fwu.query(0).info!;
  assert.equal(info.state, FwuState.FAILED);
  assert.equal(info.error, PsaStatus.ERROR_DEPENDENCY_NEEDED);
});

const appWithout = await application("1.1.0", 2, []);

Deno.test("bundle: an application that does not depend on the second stage it comes with is not installed", async () => {
  const { device: unbound } = await factoryDevice({ twoStage: true });
  await unbound.powerOn();
  await assert.rejects(
    () => installBundle(unbound, newStage, appWithout),
    /activateNewImage failed: install failed: PSA_ERROR_DEPENDENCY_NEEDED/,
  );
  assert.match(
    unbound.fwu.query(0).info?.errorDetail ?? "",
    /^app does not depend on second stage 2\.1\.0\+0$/,
  );
  assert.equal(unbound.fwu.query(SECOND_STAGE_COMPONENT).info?.state, FwuState.CANDIDATE);
  await unbound.reset("nothing installed");
  assert.equal(pair(unbound), OLD);
});

Deno.test("unboundSecondStage: the application must need a second stage newer than the running one and met by the staged one", () => {
  const v = (text: string) => parseVersion(text)!;
  assert.equal(unboundSecondStage(needsStage("2.1.0"), v("2.1.0"), v("2.0.0")), null);
  assert.equal(unboundSecondStage(needsStage("2.0.5"), v("2.1.0"), v("2.0.0")), null);
  assert.equal(
    unboundSecondStage(needsStage("2.2.0"), v("2.1.0"), v("2.0.0")),
    "app needs second stage 2.2.0+0, comes with 2.1.0+0",
  );
  assert.equal(
    unboundSecondStage(needsStage("2.0.0"), v("2.1.0"), v("2.0.0")),
    "app does not depend on second stage 2.1.0+0 (needs 2.0.0+0, met by the running one)",
  );
  assert.equal(
    unboundSecondStage([], v("2.1.0"), v("2.0.0")),
    "app does not depend on second stage 2.1.0+0",
  );
});

Deno.test("bundle: the power going between the two confirmations leaves the old pair, not a mix", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  await installBundle(device);
  // The application's confirmation reaches the flash, the second stage's does not.
  device.cutPowerAt({ atOperation: 2, torn: false });
  assert.throws(() => device.pal.setPlatformImageState(null, OtaImageState.Accepted), isPowerCut);
  await device.powerOn();
  assert.equal(pair(device), OLD);
  assert.match(
    device.bootLogs.at(-1)!.join("\n"),
    /1\.1\.0\+0 needs second-stage bootloader 2\.1\.0\+0 or later, runs 2\.0\.0\+0: going back to 1\.0\.0\+0/,
  );
  assert.equal(device.report().securityCounter, 1, "the counter was not raised");
});

// ---- power-cut sweep ------------------------------------------------------------------------

const layout = smallLayout(16);

async function factoryFlash(): Promise<NorFlash> {
  const { device } = await factoryDevice({ layout, twoStage: true });
  await device.powerOn();
  return device.flash;
}

function deviceOn(flash: NorFlash, seed: number): Device {
  return new Device({ layout, rom: pki.rom, flash: flash.clone({ seed }) });
}

/** The whole update as the agent drives it: stage, download, install, reboot, accept. */
async function fullBundle(device: Device): Promise<void> {
  await installBundle(device);
  assert.equal(pair(device), NEW);
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
}

/** From whatever a cut left: a pair on trial is accepted, an old pair is updated again. */
async function carryThrough(device: Device): Promise<void> {
  for (let round = 0; round < 4; round++) {
    if (pair(device) === NEW) {
      if (device.running?.trial) {
        assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
      }
      return;
    }
    if (device.fwu.state === FwuState.STAGED) {
      await device.reset("staged update waiting for its reboot");
      continue;
    }
    if (device.fwu.state === FwuState.TRIAL) {
      // The old pair cannot be on trial; anything on trial here is stray: back out of it.
      device.pal.setPlatformImageState(null, OtaImageState.Rejected);
      await device.reset("rejected");
      continue;
    }
    await fullBundle(device);
  }
  throw new Error(`the bundle could not be carried through (${pair(device)})`);
}

Deno.test("power cut at every flash operation of a two-component install and its confirmation: never bricked, never a mix", async () => {
  const factory = await factoryFlash();
  const probe = deviceOn(factory, 0);
  await probe.powerOn();
  const before = probe.flash.stats.operations;
  await fullBundle(probe);
  const total = probe.flash.stats.operations - before;
  assert.ok(total > 100, `a two-component update takes many flash operations, took ${total}`);

  let covered = 0;
  const outcomes = new Map<string, number>();
  for (let cutAt = 1; cutAt <= total; cutAt++) {
    for (const torn of [false, true]) {
      const device = deviceOn(factory, cutAt * 2 + Number(torn));
      await device.powerOn();
      device.cutPowerAt({ atOperation: cutAt, torn });
      let wasCut = false;
      try {
        await fullBundle(device);
      } catch (error) {
        if (!isPowerCut(error)) throw error;
        wasCut = true;
      }
      const context = `cut at op ${cutAt}/${total}${torn ? " (torn)" : ""}`;
      assert.ok(wasCut, `${context}: should have been cut`);
      await device.powerOn();
      assert.equal(device.state, "running", `${context}: must boot, not ${device.state}`);
      const after = pair(device);
      assert.ok(after === OLD || after === NEW, `${context}: a mix: ${after}`);
      outcomes.set(after, (outcomes.get(after) ?? 0) + 1);
      // A second boot (the trial's unconfirmed reboot) settles to a pair too.
      await device.reset("second boot");
      assert.ok([OLD, NEW].includes(pair(device)), `${context}: a mix after a reboot`);
      await carryThrough(device);
      await device.reset("final check");
      assert.equal(pair(device), NEW, context);
      assert.equal(device.running?.trial, false, context);
      assert.equal(device.secondStage?.trial, false, context);
      assert.equal(device.report().securityCounter, 2, context);
      covered++;
    }
  }
  assert.ok((outcomes.get(OLD) ?? 0) > 0 && (outcomes.get(NEW) ?? 0) > 0, "both ends are reached");
  console.log(
    `two-component sweep: ${total} flash operations, ${covered} cut points (clean and torn): ` +
      `${outcomes.get(OLD) ?? 0} old pair, ${outcomes.get(NEW) ?? 0} new pair after the cut`,
  );
});

Deno.test("power cut at every flash operation of a two-component revert: always ends on the old pair", async () => {
  const setup = deviceOn(await factoryFlash(), 0);
  await setup.powerOn();
  await installBundle(setup);
  assert.equal(pair(setup), NEW);
  setup.powerOff();
  const trialFlash = setup.flash;
  trialFlash.powerOn();

  const probe = deviceOn(trialFlash, 1);
  const before = probe.flash.stats.operations;
  await probe.powerOn();
  assert.equal(pair(probe), OLD);
  const total = probe.flash.stats.operations - before;
  assert.ok(total > 20, `a revert takes many flash operations, took ${total}`);

  for (let cutAt = 1; cutAt <= total; cutAt++) {
    for (const torn of [false, true]) {
      const device = deviceOn(trialFlash, cutAt * 2 + Number(torn));
      device.cutPowerAt({ atOperation: cutAt, torn });
      const context = `revert cut at op ${cutAt}/${total}${torn ? " (torn)" : ""}`;
      await assert.rejects(() => device.powerOn(), isPowerCut, context);
      await device.powerOn();
      assert.equal(pair(device), OLD, `${context}: the revert must complete`);
      assert.equal(device.running?.trial, false, context);
      await device.reset("second boot");
      assert.equal(pair(device), OLD, `${context}: stays reverted`);
      await carryThrough(device);
      assert.equal(pair(device), NEW, context);
    }
  }
  console.log(`two-component revert sweep: ${total} flash operations, ${total * 2} cut points`);
});
