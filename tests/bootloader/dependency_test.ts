/**
 * Dependencies between a device's images (MCUboot's DEPENDENCY TLV): an application that needs a
 * newer second-stage bootloader is refused, with the reason, by the update service and by the
 * bootloader until that bootloader runs; a second stage that needs a newer application likewise.
 */
import assert from "node:assert/strict";
import {
  bytesSource,
  decodeImage,
  encodeTlvArea,
  type ImageDependency,
  ImageId,
  parseVersion,
  TLV_INFO_MAGIC,
  unmetDependency,
} from "../../protocol/image_format.ts";
import { hashedRegion, signImage } from "../../protocol/image_sign.ts";
import { secondStagePayload } from "../../bootloader/first_stage.ts";
import { buildFirmware } from "../../bootloader/firmware.ts";
import { concatBytes } from "../../lib/bytes.ts";
import { factoryDevice, testPki } from "../helpers/pki.ts";
import { installUpdate, plantCandidate } from "../helpers/update.ts";
import { OtaImageState } from "../../protocol/ota_pal_status.ts";

const pki = await testPki();
const signer = { privateKey: pki.signerKeys.privateKey, certificate: pki.signer };
const needs = (imageId: number, version: string): ImageDependency => ({
  imageId,
  minVersion: parseVersion(version)!,
});

function application(version: string, counter: number, dependencies: ImageDependency[]) {
  return signImage({
    payload: buildFirmware({ behavior: "ok", version }, 8 * 1024),
    version: parseVersion(version)!,
    securityCounter: counter,
    dependencies,
  }, signer);
}

function secondStage(version: string, dependencies: ImageDependency[] = []) {
  return signImage({
    payload: secondStagePayload(version),
    version: parseVersion(version)!,
    securityCounter: 1,
    dependencies,
  }, signer);
}

Deno.test("image format: DEPENDENCY TLVs (protected, one per image) round-trip; a second for the same image is refused", async () => {
  const image = await application("1.1.0", 2, [
    needs(ImageId.SECOND_STAGE, "2.1.0+3"),
    needs(7, "1.0.0"),
  ]);
  const decoded = decodeImage(bytesSource(image));
  assert.ok(decoded.ok);
  assert.deepEqual(decoded.image.dependencies, [
    needs(ImageId.SECOND_STAGE, "2.1.0+3"),
    needs(7, "1.0.0"),
  ]);
  assert.ok(decoded.image.tlvs.filter((t) => t.type === 0x40).every((t) => t.protected));
  const twice = concatBytes([
    hashedRegion({
      payload: new Uint8Array(16),
      version: parseVersion("1.0.0")!,
      securityCounter: 1,
      dependencies: [needs(1, "2.0.0"), needs(1, "2.1.0")],
    }),
    encodeTlvArea(TLV_INFO_MAGIC, []),
  ]);
  const refused = decodeImage(bytesSource(twice));
  assert.ok(!refused.ok);
  assert.match(refused.reason, /protected TLV area: duplicate TLV DEPENDENCY/);
});

Deno.test("unmetDependency: the first need the running images do not meet, by name and version", () => {
  const running = new Map([[ImageId.SECOND_STAGE, parseVersion("2.1.0")!]]);
  assert.equal(unmetDependency([needs(ImageId.SECOND_STAGE, "2.1.0")], running), null);
  assert.equal(
    unmetDependency([needs(ImageId.SECOND_STAGE, "2.2.0")], running),
    "needs second-stage bootloader 2.2.0+0 or later, runs 2.1.0+0",
  );
  assert.equal(
    unmetDependency([needs(ImageId.APPLICATION, "1.0.0")], running),
    "needs application 1.0.0+0 or later, has none",
  );
  assert.equal(unmetDependency([], new Map()), null);
});

Deno.test("device: an application that needs a newer second stage is refused at close and by the bootloader, and installs once that second stage runs", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  const app = await application("1.1.0", 2, [needs(ImageId.SECOND_STAGE, "2.1.0")]);
  // Through the update service: refused when it verifies the image.
  await assert.rejects(() => installUpdate(device, app), /closeFile failed/);
  assert.match(
    device.pal.lastError ?? "",
    /needs second-stage bootloader 2\.1\.0\+0 or later, runs 2\.0\.0\+0/,
  );
  // Behind the update service's back (an install request written to flash): the bootloader
  // refuses it too.
  const { device: planted } = await factoryDevice({ twoStage: true });
  await planted.powerOn();
  plantCandidate(planted, app);
  await planted.reset("planted candidate");
  assert.equal(planted.running?.version, "1.0.0+0");
  assert.match(
    planted.bootLogs.at(-1)!.join("\n"),
    /candidate refused and erased: needs second-stage bootloader 2\.1\.0\+0 or later/,
  );

  // The bootloader first, then the application.
  assert.deepEqual(await device.installSecondStage(await secondStage("2.1.0")), { ok: true });
  await device.reset("new second stage");
  assert.ok(device.confirmSecondStage());
  await installUpdate(device, app);
  assert.equal(device.running?.version, "1.1.0+0");
});

Deno.test("device: a second stage that needs a newer application is refused, with the reason", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  const stage = await secondStage("2.1.0", [needs(ImageId.APPLICATION, "1.1.0")]);
  const refused = await device.installSecondStage(stage);
  assert.deepEqual(refused, {
    ok: false,
    reason: "needs application 1.1.0+0 or later, runs 1.0.0+0",
    downgrade: false,
  });
  await installUpdate(device, await application("1.1.0", 2, []));
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
  assert.deepEqual(await device.installSecondStage(stage), { ok: true });
});
