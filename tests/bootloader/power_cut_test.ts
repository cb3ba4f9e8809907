/**
 * Exhaustive power-cut sweep, in the manner of MCUboot's simulator but also with torn
 * operations: for a complete update of a 64 KiB image and for a revert, power is cut at every
 * single flash operation (once cleanly, once tearing the operation), the device is rebooted,
 * and the invariants are checked before the update is carried through to the end.
 */
import assert from "node:assert/strict";
import { Device } from "../../bootloader/device.ts";
import { isPowerCut, type NorFlash } from "../../bootloader/flash.ts";
import { FwuState } from "../../bootloader/fwu.ts";
import { bytesSource, decodeImage } from "../../protocol/image_format.ts";
import { OtaImageState } from "../../protocol/ota_pal_status.ts";
import { toHex } from "../../lib/bytes.ts";
import { factoryDevice, smallLayout, testImage, testPki } from "../helpers/pki.ts";
import { installUpdate } from "../helpers/update.ts";
import { createDelta } from "fossil-delta";
import { buildFirmware, evolveFirmware } from "../../bootloader/firmware.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { parseVersion } from "../../protocol/image_format.ts";
import { ECDH_P256 } from "../../protocol/image_encryption.ts";
import { SecureElement } from "../../bootloader/secure_element.ts";

const IMAGE_PAYLOAD = 64 * 1024;
const layout = smallLayout(24);

/** The image's plaintext digest (its SHA256 TLV): what a boot record of it says. */
function digestOf(image: Uint8Array): string {
  const decoded = decodeImage(bytesSource(image));
  if (!decoded.ok) throw new Error(decoded.reason);
  return toHex(decoded.image.sha256!);
}

const oldImage = await testImage({
  version: "1.0.0",
  securityCounter: 1,
  payloadSize: IMAGE_PAYLOAD,
});
const newImage = await testImage({
  version: "1.1.0",
  securityCounter: 2,
  payloadSize: IMAGE_PAYLOAD,
});
// The same release made as real firmware changes (from 1.0.0's payload), and the delta patch
// from the 1.0.0 image to it: the delta sweep below installs it through the patch.
const deltaImage = await signImage(
  {
    payload: evolveFirmware(buildFirmware({ behavior: "ok", version: "1.0.0" }, IMAGE_PAYLOAD), {
      behavior: "ok",
      version: "1.1.0",
    }),
    version: parseVersion("1.1.0")!,
    securityCounter: 2,
  },
  { privateKey: (await testPki()).signerKeys.privateKey, certificate: (await testPki()).signer },
);
const deltaPatch = new Uint8Array(createDelta(oldImage, deltaImage));
// The same release encrypted for the product's key, which every device's secure element holds.
const productKey = await crypto.subtle.generateKey(ECDH_P256, true, ["deriveBits"]);
const element = await SecureElement.generate();
await element.installImageKey(
  new Uint8Array(await crypto.subtle.exportKey("pkcs8", productKey.privateKey)),
);
const newPayload = buildFirmware({ behavior: "ok", version: "1.1.0" }, IMAGE_PAYLOAD);
const oldPayload = buildFirmware({ behavior: "ok", version: "1.0.0" }, IMAGE_PAYLOAD);
const encryptedImage = await signImage(
  { payload: newPayload, version: parseVersion("1.1.0")!, securityCounter: 2 },
  { privateKey: (await testPki()).signerKeys.privateKey, certificate: (await testPki()).signer },
  { encryptTo: productKey.publicKey },
);
const trusted = new Set(
  [oldImage, newImage, deltaImage, encryptedImage].map(digestOf),
);

/**
 * Whether a 16-byte block of the encrypted release's plaintext sits at its place in the secondary
 * slot: the plaintext may pass through the scratch sector into the primary slot, never there.
 */
function plaintextInSecondary(device: Device): boolean {
  const decoded = decodeImage(bytesSource(encryptedImage));
  if (!decoded.ok) throw new Error(decoded.reason);
  const slot = device.areas.secondary.read(decoded.image.payloadOffset, newPayload.length);
  for (let at = 0; at + 16 <= newPayload.length; at += 16) {
    // Erased flash reads as 0xff, and the old image (plaintext, rightly in the secondary slot
    // once the new one is installed) shares blocks with the new one: such blocks prove nothing.
    const block = newPayload.subarray(at, at + 16);
    if (block.every((byte) => byte === 0xff)) continue;
    if (block.every((byte, i) => byte === oldPayload[at + i])) continue;
    let same = true;
    for (let i = at; i < at + 16 && same; i++) same = slot[i] === newPayload[i];
    if (same) return true;
  }
  return false;
}

/** Runs `step`, treating a power cut as the end of the attempt. Returns whether it was cut. */
async function cutTolerant(step: () => Promise<unknown>): Promise<boolean> {
  try {
    await step();
    return false;
  } catch (error) {
    if (isPowerCut(error)) return true;
    throw error;
  }
}

/**
 * How the update's image arrives: whole, as a delta patch from the running image, or whole and
 * encrypted for the device's secure element.
 */
let delivery: "image" | "patch" | "encrypted" = "image";

/** The whole update as the agent drives it: download, verify, activate, reboot, test, confirm. */
async function fullUpdate(device: Device): Promise<void> {
  if (delivery === "patch") await installUpdate(device, deltaImage, undefined, deltaPatch);
  else if (delivery === "encrypted") await installUpdate(device, encryptedImage);
  else await installUpdate(device, newImage);
  assert.equal(device.running?.version, "1.1.0+0");
  assert.equal(device.selfTest().passed, true);
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
}

/** Carries an update through from whatever state a power cut left, as a retrying agent would. */
async function carryThrough(device: Device): Promise<void> {
  for (let round = 0; round < 4; round++) {
    const running = device.running!;
    if (running.version === "1.1.0+0") {
      if (running.trial) device.pal.setPlatformImageState(null, OtaImageState.Accepted);
      return;
    }
    if (device.fwu.state === FwuState.STAGED) {
      await device.reset("staged update waiting for its reboot");
      continue;
    }
    await fullUpdate(device);
  }
  throw new Error("update could not be carried through");
}

function checkBooted(device: Device, context: string, minimumCounter: number): void {
  assert.equal(device.state, "running", `${context}: device must boot, not ${device.state}`);
  const record = device.bootRecord!;
  assert.ok(
    trusted.has(toHex(record.digest)),
    `${context}: booted an image that is neither old nor new`,
  );
  assert.ok(
    device.report().securityCounter >= minimumCounter,
    `${context}: security counter fell to ${device.report().securityCounter}`,
  );
  if (delivery === "encrypted") {
    assert.equal(
      plaintextInSecondary(device),
      false,
      `${context}: plaintext in the secondary slot`,
    );
  }
}

async function baseline(): Promise<NorFlash> {
  const { device } = await factoryDevice({
    layout,
    factory: { version: "1.0.0", securityCounter: 1, payloadSize: IMAGE_PAYLOAD },
  });
  await device.powerOn();
  return device.flash;
}

function deviceOn(flash: NorFlash, seed: number): Device {
  return new Device({
    layout,
    rom: device0Rom,
    flash: flash.clone({ seed }),
    ...(delivery === "encrypted" ? { secureElement: element } : {}),
  });
}

const device0Rom = (await testPki()).rom;

for (const how of ["image", "patch", "encrypted"] as const) {
  Deno.test(`power cut at every flash operation of a complete update never bricks the device (${how})`, async () => {
    delivery = how;
    await sweepUpdate();
  });
}

/**
 * Cuts the power at every flash operation of an update (once cleanly, once torn), then carries
 * the update through: a patch cut short is applied again from its start, as the agent does.
 */
async function sweepUpdate(): Promise<void> {
  const factory = await baseline();
  const probe = deviceOn(factory, 0);
  await probe.powerOn();
  const before = probe.flash.stats.operations;
  await fullUpdate(probe);
  const total = probe.flash.stats.operations - before;
  assert.ok(total > 300, `a 64 KiB update should take hundreds of flash operations, took ${total}`);

  let covered = 0;
  for (let cutAt = 1; cutAt <= total; cutAt++) {
    for (const torn of [false, true]) {
      const device = deviceOn(factory, cutAt * 2 + Number(torn));
      await device.powerOn();
      device.cutPowerAt({ atOperation: cutAt, torn });
      const wasCut = await cutTolerant(() => fullUpdate(device));
      assert.ok(wasCut, `operation ${cutAt} should have been cut`);
      const context = `update cut at op ${cutAt}/${total}${torn ? " (torn)" : ""}`;
      await device.powerOn();
      checkBooted(device, context, 1);
      await carryThrough(device);
      await device.reset("final check");
      assert.equal(device.running?.version, "1.1.0+0", context);
      assert.equal(device.running?.trial, false, context);
      assert.equal(device.report().securityCounter, 2, context);
      covered++;
    }
  }
  console.log(
    `update sweep (${delivery}): ${total} flash operations, ${covered} cut points (clean and torn) covered`,
  );
}

for (const how of ["image", "encrypted"] as const) {
  Deno.test(`power cut at every flash operation of a revert always ends on the previous image (${how})`, async () => {
    delivery = how;
    await sweepRevert();
  });
}

/**
 * Cuts the power at every flash operation of the revert of an unconfirmed update: it always
 * completes to the previous image (an encrypted release goes back to the secondary slot
 * encrypted again).
 */
async function sweepRevert(): Promise<void> {
  const factory = await baseline();
  const setup = deviceOn(factory, 0);
  await setup.powerOn();
  await installUpdate(setup, delivery === "encrypted" ? encryptedImage : newImage);
  assert.equal(setup.running?.trial, true);
  setup.powerOff();
  const trialFlash = setup.flash;
  trialFlash.powerOn();

  const probe = deviceOn(trialFlash, 1);
  const before = probe.flash.stats.operations;
  await probe.powerOn();
  assert.equal(probe.running?.version, "1.0.0+0");
  const total = probe.flash.stats.operations - before;
  assert.ok(total > 100, `a revert should take many flash operations, took ${total}`);

  let covered = 0;
  for (let cutAt = 1; cutAt <= total; cutAt++) {
    for (const torn of [false, true]) {
      const device = deviceOn(trialFlash, cutAt * 2 + Number(torn));
      device.cutPowerAt({ atOperation: cutAt, torn });
      const wasCut = await cutTolerant(() => device.powerOn());
      assert.ok(wasCut, `operation ${cutAt} should have been cut`);
      const context = `revert cut at op ${cutAt}/${total}${torn ? " (torn)" : ""}`;
      await device.powerOn();
      checkBooted(device, context, 1);
      assert.equal(device.running?.version, "1.0.0+0", `${context}: the revert must complete`);
      assert.equal(device.running?.trial, false, context);
      await device.reset("second boot");
      assert.equal(device.running?.version, "1.0.0+0", `${context}: stays reverted`);
      await carryThrough(device);
      assert.equal(device.running?.version, "1.1.0+0", context);
      covered++;
    }
  }
  console.log(
    `revert sweep (${delivery}): ${total} flash operations, ${covered} cut points (clean and torn) covered`,
  );
}
