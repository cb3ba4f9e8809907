/**
 * Encrypted images (MCUboot's ENC_EC256): the key wrap, the payload cipher, the staged check with
 * the secure element's key, and devices installing and reverting encrypted updates with the
 * plaintext never in the secondary slot.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ECDH_P256,
  payloadCipher,
  unwrapImageKey,
  wrapImageKey,
} from "../../protocol/image_encryption.ts";
import {
  bytesSource,
  decodeImage,
  isEncrypted,
  parseVersion,
} from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { validateImage } from "../../bootloader/image_validate.ts";
import { SecureElement } from "../../bootloader/secure_element.ts";
import { Device } from "../../bootloader/device.ts";
import { buildFirmware } from "../../bootloader/firmware.ts";
import { OtaImageState } from "../../protocol/ota_pal_status.ts";
import { factoryDevice, smallLayout, testPki } from "../helpers/pki.ts";
import { fileFor, installUpdate, writeAll } from "../helpers/update.ts";
import { otaPalMain, OtaPalMainStatus } from "../../protocol/ota_pal_status.ts";
import { PsaStatus } from "../../bootloader/psa_status.ts";
import { deviceLayout } from "../../bootloader/layout.ts";
import {
  beginSwapStatus,
  readSwapStatus,
  recordSwapStep,
  swapStatusCapacity,
} from "../../bootloader/swap_status.ts";

const pki = await testPki();

/** A product's image key pair as `image encryption-keygen` makes it (PKCS#8 and public key). */
async function productKey(): Promise<{ pkcs8: Uint8Array; publicKey: CryptoKey }> {
  const pair = await crypto.subtle.generateKey(ECDH_P256, true, ["deriveBits"]);
  return {
    pkcs8: new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
    publicKey: pair.publicKey,
  };
}

async function elementWith(pkcs8: Uint8Array | null): Promise<SecureElement> {
  const element = await SecureElement.generate();
  if (pkcs8) await element.installImageKey(pkcs8);
  return element;
}

const product = await productKey();
const element = await elementWith(product.pkcs8);

function payloadOf(version: string, size = 8 * 1024): Uint8Array {
  return buildFirmware({ behavior: "ok", version }, size);
}

async function encryptedImage(
  version: string,
  options: { securityCounter?: number; size?: number; to?: CryptoKey } = {},
): Promise<Uint8Array> {
  return await signImage(
    {
      payload: payloadOf(version, options.size),
      version: parseVersion(version)!,
      securityCounter: options.securityCounter ?? 1,
    },
    { privateKey: pki.signerKeys.privateKey, certificate: pki.signer },
    { encryptTo: options.to ?? product.publicKey },
  );
}

Deno.test("image key wrap: the holder of the private key unwraps the key; another key is refused", async () => {
  const key = crypto.getRandomValues(new Uint8Array(16));
  const tlv = await wrapImageKey(key, product.publicKey);
  assert.equal(tlv.length, 113);
  assert.equal(tlv[0], 0x04, "an uncompressed P-256 point first");
  const unwrapped = await element.unwrapImageKey(tlv);
  assert.ok(unwrapped.ok);
  assert.deepEqual(unwrapped.key, key);
  const stranger = await elementWith((await productKey()).pkcs8);
  const refused = await stranger.unwrapImageKey(tlv);
  assert.ok(!refused.ok);
  assert.match(refused.reason, /key MAC mismatch/);
  const keyless = await elementWith(null);
  assert.deepEqual(await keyless.unwrapImageKey(tlv), {
    ok: false,
    reason: "no image key in the secure element",
  });
  assert.equal(element.toChip().imageKey?.extractable, false, "the image key stays inside");
});

Deno.test("image key wrap: property: any flipped bit of the TLV is refused, never a wrong key, never a throw", async () => {
  const key = crypto.getRandomValues(new Uint8Array(16));
  const tlv = await wrapImageKey(key, product.publicKey);
  const pair = await crypto.subtle.importKey("pkcs8", product.pkcs8.slice(), ECDH_P256, false, [
    "deriveBits",
  ]);
  await fc.assert(
    fc.asyncProperty(fc.nat(tlv.length - 1), fc.nat(7), async (at, bit) => {
      const altered = tlv.slice();
      altered[at]! ^= 1 << bit;
      const result = await unwrapImageKey(altered, pair);
      assert.equal(result.ok, false, `byte ${at} bit ${bit}`);
    }),
    { numRuns: 60 },
  );
  // Truncated or padded TLVs are refused by length.
  assert.match(
    ((await unwrapImageKey(tlv.subarray(0, 112), pair)) as { reason: string }).reason,
    /112 bytes, expected 113/,
  );
});

Deno.test("payload cipher: any range turns on its own, as the whole does (CTR by payload offset)", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      fc.uint8Array({ minLength: 1, maxLength: 600 }),
      fc.nat(599),
      fc.nat(600),
      (key, data, from, length) => {
        const whole = payloadCipher(key, 0, data);
        const start = from % data.length;
        const end = Math.min(data.length, start + length);
        const part = payloadCipher(key, start, data.subarray(start, end));
        assert.deepEqual(part, whole.subarray(start, end));
        assert.deepEqual(payloadCipher(key, 0, whole), data, "decrypting is encrypting");
      },
    ),
  );
});

Deno.test("encrypted image: signed over the plaintext, payload in ciphertext, checked staged with the element's key", async () => {
  const image = await encryptedImage("1.1.0");
  const decoded = decodeImage(bytesSource(image));
  assert.ok(decoded.ok);
  assert.ok(isEncrypted(decoded.image));
  assert.equal(decoded.image.encryptedKey?.length, 113);
  const payload = payloadOf("1.1.0");
  const start = decoded.image.payloadOffset;
  assert.notDeepEqual(image.subarray(start, start + payload.length), payload);
  const options = { root: pki.root };
  const staged = await validateImage(bytesSource(image), {
    ...options,
    staged: { keys: element },
  });
  assert.ok(staged.ok, staged.ok ? "" : staged.reason);
  // Read as if installed (plaintext expected), the ciphertext does not match the hash.
  const asInstalled = await validateImage(bytesSource(image), options);
  assert.ok(!asInstalled.ok);
  assert.match(asInstalled.reason, /hash does not match/);
  const noKey = await validateImage(bytesSource(image), { ...options, staged: {} });
  assert.ok(!noKey.ok);
  assert.match(noKey.reason, /encrypted, and no key on this device/);
  const otherDevice = await validateImage(bytesSource(image), {
    ...options,
    staged: { keys: await elementWith((await productKey()).pkcs8) },
  });
  assert.ok(!otherDevice.ok);
  assert.match(otherDevice.reason, /cannot decrypt: key MAC mismatch/);
});

Deno.test("encrypted image: property: any flipped byte of the ciphertext payload fails the staged check, never throws", async () => {
  const image = await encryptedImage("1.1.0", { size: 2048 });
  const decoded = decodeImage(bytesSource(image));
  assert.ok(decoded.ok);
  const start = decoded.image.payloadOffset;
  await fc.assert(
    fc.asyncProperty(fc.nat(2047), fc.integer({ min: 1, max: 255 }), async (at, flip) => {
      const altered = image.slice();
      altered[start + at]! ^= flip;
      const result = await validateImage(bytesSource(altered), {
        root: pki.root,
        staged: { keys: element },
      });
      assert.ok(!result.ok);
      assert.match(result.reason, /hash does not match/);
    }),
    { numRuns: 40 },
  );
});

Deno.test("image format: an encrypted header without its key TLV, or a key TLV on a plaintext image, is refused", async () => {
  const image = await encryptedImage("1.1.0");
  // Clear the header's ENCRYPTED_AES128 flag (byte 16, bit 2): the TLV is now out of place.
  const cleared = image.slice();
  cleared[16]! &= ~0x04;
  const result = decodeImage(bytesSource(cleared));
  assert.ok(!result.ok);
  assert.match(result.reason, /ENC_EC256 TLV but its header does not say it is encrypted/);
  // AES-256 (0x08) is not supported.
  const aes256 = image.slice();
  aes256[16]! |= 0x08;
  const refused = decodeImage(bytesSource(aes256));
  assert.ok(!refused.ok);
  assert.match(refused.reason, /unsupported header flags 0x8/);
});

/** A factory 1.0.0 device (plaintext image) with `element` in it. */
async function deviceWith(element: SecureElement | null): Promise<Device> {
  const { device } = await factoryDevice({
    layout: smallLayout(24),
    factory: { version: "1.0.0", securityCounter: 1 },
  });
  const withElement = new Device({
    layout: smallLayout(24),
    rom: device.rom,
    flash: device.flash,
    ...(element ? { secureElement: element } : {}),
  });
  await withElement.powerOn();
  return withElement;
}

/** Whether any 16-byte block of `plaintext` sits at its place in the secondary slot. */
function plaintextInSecondary(device: Device, image: Uint8Array, plaintext: Uint8Array): boolean {
  const decoded = decodeImage(bytesSource(image));
  if (!decoded.ok) throw new Error(decoded.reason);
  const start = decoded.image.payloadOffset;
  const slot = device.areas.secondary.read(start, plaintext.length);
  for (let at = 0; at + 16 <= plaintext.length; at += 16) {
    // Erased flash reads as 0xff: a block of the firmware that is all 0xff proves nothing.
    if (plaintext.subarray(at, at + 16).every((byte) => byte === 0xff)) continue;
    let same = true;
    for (let i = at; i < at + 16 && same; i++) same = slot[i] === plaintext[i];
    if (same) return true;
  }
  return false;
}

Deno.test("device: an encrypted update installs decrypted, and a revert takes it back to the secondary slot encrypted", async () => {
  const device = await deviceWith(element);
  const v11 = await encryptedImage("1.1.0", { securityCounter: 2 });
  await installUpdate(device, v11);
  assert.equal(device.running?.version, "1.1.0+0");
  assert.equal(device.running?.trial, true);
  assert.match(device.bootLogs.at(-1)!.join("\n"), /decrypting the new image/);
  // Installed: the primary holds the plaintext payload; the secondary the old plaintext image.
  const decoded = decodeImage(bytesSource(v11));
  assert.ok(decoded.ok);
  const start = decoded.image.payloadOffset;
  const plain = payloadOf("1.1.0");
  assert.deepEqual(device.areas.primary.read(start, plain.length), plain);
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);

  const v12 = await encryptedImage("1.2.0", { securityCounter: 3 });
  await installUpdate(device, v12);
  assert.equal(device.running?.version, "1.2.0+0");
  assert.match(device.bootLogs.at(-1)!.join("\n"), /encrypting the old one again/);
  // 1.1.0 left the primary slot encrypted again with its own key.
  assert.equal(plaintextInSecondary(device, v11, plain), false);
  // Not confirmed: the next reset reverts to 1.1.0, and 1.2.0 goes back encrypted.
  await device.reset("self-test not passed");
  assert.equal(device.running?.version, "1.1.0+0");
  assert.equal(device.running?.trial, false);
  assert.equal(plaintextInSecondary(device, v12, payloadOf("1.2.0")), false);
  assert.deepEqual(device.areas.primary.read(start, plain.length), plain);
});

Deno.test("device: an encrypted image it cannot decrypt, or whose plaintext does not match its signature, is refused at close with the reason; nothing is installed", async () => {
  const image = await encryptedImage("1.1.0", { securityCounter: 2 });
  for (
    const [element, reason] of [
      [null, /encrypted, and no key on this device/],
      [await elementWith(null), /cannot decrypt: no image key in the secure element/],
      [await elementWith((await productKey()).pkcs8), /cannot decrypt: key MAC mismatch/],
    ] as const
  ) {
    const device = await deviceWith(element);
    await assert.rejects(() => installUpdate(device, image), /closeFile failed/);
    assert.match(device.pal.lastError ?? "", reason);
    await device.reset("after the refusal");
    assert.equal(device.running?.version, "1.0.0+0");
  }
  // Decrypted with the right key, a ciphertext altered in transit does not match its signature.
  const decoded = decodeImage(bytesSource(image));
  assert.ok(decoded.ok);
  const altered = image.slice();
  altered[decoded.image.payloadOffset + 100]! ^= 0x20;
  const device = await deviceWith(element);
  await assert.rejects(() => installUpdate(device, altered), /closeFile failed/);
  assert.match(device.pal.lastError ?? "", /image hash does not match its SHA256 TLV/);
  await device.reset("after the refusal");
  assert.equal(device.running?.version, "1.0.0+0");
});

/** A device with an encrypted 1.1.0 staged (installed, not yet rebooted into). */
async function stagedDevice(): Promise<Device> {
  const device = await deviceWith(element);
  const image = await encryptedImage("1.1.0", { securityCounter: 2 });
  const file = await fileFor(image);
  assert.equal(device.pal.createFileForRx(file), 0);
  writeAll(device, file, image);
  assert.equal(otaPalMain(await device.pal.closeFile(file)), OtaPalMainStatus.Success);
  assert.equal(device.fwu.install(), PsaStatus.SUCCESS_REBOOT);
  return device;
}

Deno.test("device: one boot at a time: resets and power-ons that come while a boot waits (on the element, a signature) never run two boots over one flash", async () => {
  // The boot of an encrypted update waits for the secure element and for WebCrypto; two boots
  // interleaved over the same flash swapped twice and bricked the device.
  for (let round = 0; round < 5; round++) {
    const device = await stagedDevice();
    const booted = device.bootLogs.length;
    await Promise.all([device.reset("software reboot"), device.reset("watchdog")]);
    assert.equal(device.state, "running", `round ${round}: ${device.bootLogs.at(-1)?.join(" | ")}`);
    assert.equal(device.running?.version, "1.1.0+0");
    assert.equal(device.running?.trial, true);
    assert.equal(device.bootLogs.length, booted + 1, "the boot the first reset began was void");

    // A power-on while a boot runs with the power on is that same boot, not a second one.
    const again = await stagedDevice();
    const before = again.bootLogs.length;
    const [first, second] = await Promise.all([again.reset("software reboot"), again.powerOn()]);
    assert.equal(first, second);
    assert.equal(again.bootLogs.length, before + 1);
    assert.equal(again.running?.trial, true);
  }
});

Deno.test("layout: a slot may have as many sectors as the swap-status sector records, its cipher records included, and no more", async () => {
  const most = swapStatusCapacity(4096, 8);
  assert.equal(most, 158);
  assert.equal(deviceLayout({ slotSectors: most }).slotSectors, most);
  assert.throws(
    () => deviceLayout({ slotSectors: most + 1 }),
    /159 sectors per slot need more swap-status records than one 4096-byte sector holds \(at most 158\)/,
  );
  // The largest slot, swapped with both payloads encrypted: the last step record and the
  // cipher records stay apart.
  const { device } = await factoryDevice({ layout: deviceLayout({ slotSectors: most }) });
  const status = device.areas.swapStatus;
  const key = await wrapImageKey(new Uint8Array(16), product.publicKey);
  const record = { start: 32, end: 1000, wrappedKey: key };
  beginSwapStatus(status, "test", most, { primary: record, secondary: record });
  for (let sector = 0; sector < most; sector++) {
    for (let step = 0; step < 3; step++) recordSwapStep(status, sector, step);
  }
  const read = readSwapStatus(status, most);
  assert.ok(read.state === "in-progress");
  assert.ok(read.progress.every((steps) => steps === 3));
  assert.deepEqual(read.ciphers, { primary: record, secondary: record });
});
