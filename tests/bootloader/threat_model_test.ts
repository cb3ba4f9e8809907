/**
 * The threats of "Threat modeling for the IoT device bootloader" (seed documents 000/001), each
 * shown failing against the device on its own, below any network defence (the threat model counts
 * non-bootloader mitigations as unreliable): every test names the threat and the mitigation it
 * proves. The network half of the first threat is in tests/e2e/attacks_test.ts.
 */
import assert from "node:assert/strict";
import { FwuState } from "../../bootloader/fwu.ts";
import { FlashError } from "../../bootloader/flash.ts";
import { OtaImageState } from "../../protocol/ota_pal_status.ts";
import type { FlashArea } from "../../bootloader/flash_area.ts";
import { readTrailer, writeTrailerMagic } from "../../bootloader/trailer.ts";
import { factoryDevice, testImage } from "../helpers/pki.ts";
import { installUpdate, plantCandidate } from "../helpers/update.ts";

/** Rewrites part of an area as an attacker with flash access would: read, erase, program. */
function patch(area: FlashArea, offset: number, change: (bytes: Uint8Array) => void): void {
  const sector = Math.floor(offset / area.sectorSize);
  const bytes = area.read(sector * area.sectorSize, area.sectorSize).slice();
  change(bytes.subarray(offset - sector * area.sectorSize));
  area.eraseSector(sector);
  area.program(sector * area.sectorSize, bytes);
}

/** Powers the device off and gives the test (the attacker) the chip, as flash access would. */
function attackerHasFlash(device: Awaited<ReturnType<typeof factoryDevice>>["device"]) {
  device.powerOff();
  device.flash.powerOn();
}

Deno.test("threat: a hijacked connection delivers a malicious image — mitigation: the bootloader verifies the signature on every boot and refuses it", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  // Whatever the network did, the bytes in the update slot are the attacker's: a valid image
  // format, signed by a key the device does not trust, marked for installation.
  attackerHasFlash(device);
  plantCandidate(
    device,
    await testImage({ version: "9.9.9", securityCounter: 9, signer: "rogue" }),
  );
  await device.powerOn();
  assert.equal(device.running?.version, "1.0.0+0", "the trusted image still runs");
  assert.equal(device.report().securityCounter, 1);
  assert.match(device.report().lastBootLog.join("\n"), /refused|not trusted|does not verify/i);
  await device.reset("again");
  assert.equal(device.running?.version, "1.0.0+0", "and the candidate is never retried");
});

Deno.test("threat: a buffer overflow patches the stored image — mitigation: verification on boot falls back to the previous image, or enters fail-safe recovery instead of running it", async () => {
  // With a previous image kept: the patched one is refused and the previous one boots.
  const kept = (await factoryDevice()).device;
  await kept.powerOn();
  await installUpdate(kept, await testImage({ version: "1.1.0", securityCounter: 1 }));
  kept.pal.setPlatformImageState(null, OtaImageState.Accepted);
  attackerHasFlash(kept);
  // A malicious patch rewrites a few bytes of the running image's code.
  const at = 4096 + 64;
  patch(kept.areas.primary, at, (code) => code.set([0xde, 0xad, 0xbe, 0xef]));
  await kept.powerOn();
  assert.equal(kept.running?.version, "1.0.0+0");
  assert.match(kept.report().lastBootLog.join("\n"), /falling back/);

  // With nothing left to fall back on: no code runs; the device waits in recovery.
  const alone = (await factoryDevice()).device;
  await alone.powerOn();
  attackerHasFlash(alone);
  patch(alone.areas.primary, at, (code) => code.set([0xde, 0xad, 0xbe, 0xef]));
  const outcome = await alone.powerOn();
  assert.equal(outcome.kind, "recovery");
  assert.equal(alone.state, "recovery");
  assert.equal(alone.running, null, "the patched image never runs");
});

Deno.test("threat: the device is booted into a previously stored, exploitable image — mitigations: the one-way security counter, fuses the flash controller will not erase, and erasing the old image once the new one is confirmed", async () => {
  const { device } = await factoryDevice({ erasePreviousImage: false });
  await device.powerOn();
  await installUpdate(device, await testImage({ version: "1.1.0", securityCounter: 2 }));
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
  assert.equal(device.report().securityCounter, 2);
  attackerHasFlash(device);
  // The old 1.0.0 (counter 1) still sits in the secondary slot after the swap: ask for it.
  const trailer = device.areas.secondary.sectorCount - 1;
  device.areas.secondary.eraseSector(trailer);
  writeTrailerMagic(device.areas.secondary);
  // And try to lower the counter first: the fuses are one-time-programmable.
  const fuses = device.layout.fuses.firstSector;
  assert.throws(
    () => device.flash.eraseSector(fuses),
    (error: unknown) => error instanceof FlashError && error.code === "protected",
  );
  assert.deepEqual(device.flash.refusals.at(-1), {
    operation: "erase",
    sector: fuses,
    protection: "one-time-programmable",
  });
  await device.powerOn();
  assert.equal(device.running?.version, "1.1.0+0", "the old image is refused: counter 1 < 2");
  assert.match(
    device.report().lastBootLog.join("\n"),
    /security counter 1 is below the device's 2/,
  );
  assert.equal(device.report().securityCounter, 2);

  // Hardened: the old image is erased as soon as the new one is confirmed.
  const hardened = (await factoryDevice({ erasePreviousImage: true })).device;
  await hardened.powerOn();
  await installUpdate(hardened, await testImage({ version: "1.1.0", securityCounter: 2 }));
  hardened.pal.setPlatformImageState(null, OtaImageState.Accepted);
  assert.equal(hardened.fwu.state, FwuState.READY, "UPDATED, then cleaned");
  assert.ok(
    hardened.areas.secondary.read(0, 4096).every((b) => b === 0xff),
    "nothing of 1.0.0 is left to boot",
  );
  assert.equal(readTrailer(hardened.areas.secondary).magic, "unset");
  await hardened.reset("power cycle");
  assert.equal(hardened.running?.version, "1.1.0+0");
});

Deno.test("threat: an OTA image bricks the device — mitigation: the watchdog resets a hung trial image and the bootloader rolls back", async () => {
  const { device, clock } = await factoryDevice();
  await device.powerOn();
  await installUpdate(device, await testImage({ version: "1.1.0", behavior: "hang" }));
  assert.equal(device.running?.behavior, "hang");
  clock.advance(30_000);
  await device.settle();
  assert.equal(device.running?.version, "1.0.0+0");
  assert.equal(device.running?.trial, false);
  assert.ok(device.resets.some((reset) => reset.reason === "watchdog"));
  assert.equal(device.fwu.state, FwuState.FAILED);
});
