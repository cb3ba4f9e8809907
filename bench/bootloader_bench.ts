/**
 * Costs of the device model that a fleet multiplies by thousands: a boot (validate a 256 KiB
 * image), a swap, the signature check with and without the shared result cache, and the flash
 * model's program path.
 */
import { Device, flashFactoryImage } from "../bootloader/device.ts";
import {
  sha256,
  signData,
  VerificationCache,
  verifyingKey,
  verifySignature,
} from "../protocol/signatures.ts";
import { NorFlash } from "../bootloader/flash.ts";
import { createFlash, deviceLayout } from "../bootloader/layout.ts";
import { bytesSource, decodeImage } from "../protocol/image_format.ts";
import { testImage, testPki } from "../tests/helpers/pki.ts";
import { installUpdate } from "../tests/helpers/update.ts";

const pki = await testPki();
const layout = deviceLayout({ slotSectors: 72 });
const factoryImage = await testImage({ version: "1.0.0", payloadSize: 256 * 1024 });
const update = await testImage({ version: "1.1.0", payloadSize: 256 * 1024 });
const factory = createFlash(layout);
flashFactoryImage(factory, layout, factoryImage);

Deno.bench("boot: validate a 256 KiB primary image (verification cached)", {
  group: "boot",
  baseline: true,
}, async () => {
  const device = new Device({ layout, rom: pki.rom, flash: factory.clone() });
  await device.powerOn();
});

// Signed once: signing is the cloud's work, and an ECDSA signature per iteration was most of what
// this measured (3.4 ms of it against 1 ms without).
const updateSignature = await signData(pki.signerKeys.privateKey, update);
Deno.bench("update: download, verify, install by swap (65 sectors) and confirm a 256 KiB image", {
  group: "update",
}, async () => {
  const device = new Device({ layout, rom: pki.rom, flash: factory.clone() });
  await device.powerOn();
  await installUpdate(device, update, updateSignature);
});

const message = update;
const digest = sha256(message);
const signature = await signData(pki.signerKeys.privateKey, message);
const verifier = await verifyingKey(pki.signerKeys.publicKey);
Deno.bench(
  "ECDSA P-256 verify of a 256 KiB file, uncached",
  { group: "verify", baseline: true },
  async () => {
    await verifySignature(verifier, message, digest, signature, new VerificationCache());
  },
);
const shared = new VerificationCache();
Deno.bench(
  "ECDSA P-256 verify of a 256 KiB file, shared cache hit",
  { group: "verify" },
  async () => {
    await verifySignature(verifier, message, digest, signature, shared);
  },
);

Deno.bench("decode image header and TLVs", { group: "decode" }, () => {
  decodeImage(bytesSource(update));
});

const block = new Uint8Array(4096).fill(0x5a);
Deno.bench("flash: program 64 sectors of 4 KiB and erase them", { group: "flash" }, () => {
  const flash = new NorFlash({ sectorCount: 64 });
  for (let s = 0; s < 64; s++) flash.program(s * 4096, block);
  for (let s = 0; s < 64; s++) flash.eraseSector(s);
});
