/**
 * Whether a device's flash would boot an image from the trusted signer, asked without touching
 * the device: the boot ROM runs on a copy-on-write clone of its flash. The one check behind the
 * fleet's `bricked` count and the tests' "the device stays trusted".
 *
 * @example
 * ```ts ignore
 * if (!await bootsTrustedImage(device.flash, layout, rom, clock)) bricked++;
 * ```
 *
 * @module
 */

import type { Clock } from "../lib/clock.ts";
import type { BootRom } from "./bootloader.ts";
import { bootChain } from "./first_stage.ts";
import type { NorFlash } from "./flash.ts";
import { type DeviceLayout, openAreas } from "./layout.ts";

/**
 * True when booting `flash` now would run an application image (not recovery mode, not a halt).
 * The device's own flash and state are left as they are.
 */
export async function bootsTrustedImage(
  flash: NorFlash,
  layout: DeviceLayout,
  rom: BootRom,
  clock: Clock,
): Promise<boolean> {
  const clone = flash.clone();
  clone.powerOn();
  const outcome = await bootChain({ areas: openAreas(clone, layout), rom, clock });
  return outcome.kind === "run";
}

/**
 * Erases both application slots, as a flash failure (or someone with a programmer) would: what
 * no update can be blamed for and only recovery mode can mend.
 */
export function eraseApplicationSlots(flash: NorFlash, layout: DeviceLayout): void {
  const areas = openAreas(flash, layout);
  for (const area of [areas.primary, areas.secondary]) {
    for (let sector = 0; sector < area.sectorCount; sector++) area.eraseSectorIfNeeded(sector);
  }
}

/**
 * A factory reset: the primary slot gets back what `factory` (a chip as it left the factory)
 * holds there, the secondary slot is erased. The one-way security counter is not reset (fuses
 * cannot be), so a factory image older than what the device has confirmed since no longer boots:
 * the device comes up in recovery mode and waits for a signed image over the air.
 */
export function restoreFactorySlots(
  flash: NorFlash,
  factory: NorFlash,
  layout: DeviceLayout,
): void {
  eraseApplicationSlots(flash, layout);
  const from = openAreas(factory, layout).primary;
  const to = openAreas(flash, layout).primary;
  const size = to.sectorSize;
  for (let sector = 0; sector < to.sectorCount; sector++) {
    if (from.isErased(sector * size, size)) continue;
    to.program(sector * size, from.read(sector * size, size));
  }
}
