/** The one bootability check (the fleet's `bricked`, the tests' "stays trusted") on devices that can and cannot boot. */
import assert from "node:assert/strict";
import { bootsTrustedImage, eraseApplicationSlots } from "../../bootloader/bootability.ts";
import { factoryDevice, smallLayout } from "../helpers/pki.ts";

Deno.test("bootsTrustedImage(): a factory device boots; with its slots erased it does not, and the device is untouched", async () => {
  const layout = smallLayout();
  const { device, clock, pki } = await factoryDevice({ layout });
  assert.equal(await bootsTrustedImage(device.flash, layout, pki.rom, clock), true);
  const before = device.flash.stats.erases;
  assert.equal(await bootsTrustedImage(device.flash, layout, pki.rom, clock), true);
  assert.equal(device.flash.stats.erases, before, "the check ran on a clone");
  eraseApplicationSlots(device.flash, layout);
  assert.equal(await bootsTrustedImage(device.flash, layout, pki.rom, clock), false);
});

Deno.test("bootsTrustedImage(): a flash holding only an image from an untrusted signer does not boot", async () => {
  const layout = smallLayout();
  const { device, clock, pki } = await factoryDevice({
    layout,
    factory: { version: "1.0.0", signer: "rogue" },
  });
  assert.equal(await bootsTrustedImage(device.flash, layout, pki.rom, clock), false);
});
