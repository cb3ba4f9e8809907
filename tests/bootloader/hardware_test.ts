/**
 * Wrong hardware (the TUF/Uptane catalogue's attack): an image carries the board it is built for
 * in a protected HARDWARE_ID TLV, and a device of another board refuses it, with the reason,
 * before anything is installed: the update service when it verifies the download, the bootloader
 * if a candidate is staged behind the service's back.
 */
import assert from "node:assert/strict";
import {
  bytesSource,
  decodeImage,
  encodeTlvArea,
  parseVersion,
  TLV_INFO_MAGIC,
  TlvType,
  wrongHardware,
} from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { buildFirmware } from "../../bootloader/firmware.ts";
import { FwuState } from "../../bootloader/fwu.ts";
import { PsaStatus } from "../../bootloader/psa_status.ts";
import { Device } from "../../bootloader/device.ts";
import { factoryDevice, TEST_BOARD, testPki } from "../helpers/pki.ts";
import { installUpdate, plantCandidate } from "../helpers/update.ts";

const pki = await testPki();
const signer = { privateKey: pki.signerKeys.privateKey, certificate: pki.signer };

function imageFor(hardwareId: string | undefined, version = "1.1.0") {
  return signImage({
    payload: buildFirmware({ behavior: "ok", version }, 8 * 1024),
    version: parseVersion(version)!,
    securityCounter: 2,
    ...(hardwareId !== undefined ? { hardwareId } : {}),
  }, signer);
}

Deno.test("image format: HARDWARE_ID is a protected TLV that decodes to the board id; a bad id is refused when signing", async () => {
  const image = await imageFor("board-b");
  const decoded = decodeImage(bytesSource(image));
  assert.ok(decoded.ok);
  assert.equal(decoded.image.hardwareId, "board-b");
  const tlv = decoded.image.tlvs.find((t) => t.type === TlvType.HARDWARE_ID)!;
  assert.equal(tlv.protected, true, "covered by the hash and the signature");
  const none = decodeImage(bytesSource(await imageFor(undefined)));
  assert.ok(none.ok);
  assert.equal(none.image.hardwareId, null);
  for (const bad of ["", "has space", "x".repeat(65), "ünï"]) {
    await assert.rejects(() => imageFor(bad), /'hardwareId' must be 1\.\.64/);
  }
  // In the unprotected area it is refused (anyone could change it there).
  const unprotected = encodeTlvArea(TLV_INFO_MAGIC, [
    { type: TlvType.HARDWARE_ID, value: new TextEncoder().encode("board-a") },
  ]);
  assert.equal(unprotected.length, 4 + 4 + 7);
  const decodedNone = decodeImage(bytesSource(await imageFor(undefined)));
  assert.ok(decodedNone.ok);
  const hashed = (await imageFor(undefined)).subarray(0, decodedNone.image.hashedSize);
  const forged = new Uint8Array([...hashed, ...unprotected]);
  const refused = decodeImage(bytesSource(forged));
  assert.equal(refused.ok, false);
  assert.match(
    !refused.ok ? refused.reason : "",
    /TLV HARDWARE_ID must be in the protected area/,
  );
});

Deno.test("wrongHardware: null for an image of any board or of this one, else the reason", () => {
  assert.equal(wrongHardware(null, "a"), null);
  assert.equal(wrongHardware("a", "a"), null);
  assert.equal(wrongHardware("b", "a"), "built for hardware b, this device is a");
  assert.equal(wrongHardware("b", null), "built for hardware b, this device is unnamed");
});

Deno.test("device: an image for another board is refused at close with the reason; nothing is installed", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  const other = await imageFor("board-b");
  await assert.rejects(() => installUpdate(device, other), /closeFile failed/);
  assert.equal(
    device.pal.lastError,
    `image verification failed: built for hardware board-b, this device is ${TEST_BOARD}`,
  );
  const info = device.fwu.query(0).info!;
  assert.equal(info.state, FwuState.FAILED);
  assert.equal(info.error, PsaStatus.ERROR_NOT_SUPPORTED);
  await device.reset("after the refusal");
  assert.equal(device.running?.version, "1.0.0+0");
});

Deno.test("device: an image for its own board, or for any board, installs", async () => {
  for (const board of [TEST_BOARD, undefined]) {
    const { device } = await factoryDevice();
    await device.powerOn();
    await installUpdate(device, await imageFor(board));
    assert.equal(device.running?.version, "1.1.0+0", `built for ${board ?? "any board"}`);
  }
});

Deno.test("bootloader: a candidate for another board staged behind the update service's back is refused and erased", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  plantCandidate(device, await imageFor("board-b"));
  await device.reset("planted candidate");
  assert.equal(device.running?.version, "1.0.0+0");
  assert.match(
    device.bootLogs.at(-1)!.join("\n"),
    /candidate refused and erased: built for hardware board-b, this device is ota-sim-board/,
  );
  assert.equal(device.fwu.query(0).info?.error, PsaStatus.ERROR_NOT_SUPPORTED);
});

Deno.test("device: a chip with no board id takes only images built for any board", async () => {
  const { device } = await factoryDevice();
  const unnamed = new Device({
    layout: device.layout,
    rom: { root: pki.rom.root, certificates: pki.rom.certificates! },
    flash: device.flash,
  });
  await unnamed.powerOn();
  const ours = await imageFor(TEST_BOARD);
  await assert.rejects(() => installUpdate(unnamed, ours), /closeFile failed/);
  assert.match(unnamed.pal.lastError ?? "", /this device is unnamed/);
});
