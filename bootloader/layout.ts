/**
 * The device's partition map: two image slots (each ending in its own trailer sector), one
 * scratch sector, one swap-status sector, the agent's two-sector persistent area and the
 * security-counter fuse bank.
 *
 * @module
 */

import { FlashArea } from "./flash_area.ts";
import { type FlashGeometry, NorFlash } from "./flash.ts";
import { swapStatusCapacity } from "./swap_status.ts";

/** Sector counts of each area. */
export interface LayoutOptions {
  /** Image sectors per slot (the trailer sector comes on top). @default {128} */
  readonly slotSectors?: number;
  /** Flash geometry overrides. */
  readonly geometry?: Partial<FlashGeometry>;
}

/** Resolved layout, in sectors. */
export interface DeviceLayout {
  /** Flash geometry of the chip. */
  readonly geometry: FlashGeometry;
  /** Image sectors per slot. */
  readonly slotSectors: number;
  /** Running image slot (image sectors + trailer sector). */
  readonly primary: { firstSector: number; sectorCount: number };
  /** Update slot (image sectors + trailer sector). */
  readonly secondary: { firstSector: number; sectorCount: number };
  /** One sector the swap moves data through. */
  readonly scratch: { firstSector: number; sectorCount: number };
  /** One sector recording swap progress. */
  readonly swapStatus: { firstSector: number; sectorCount: number };
  /** Two sectors, A/B, for the agent's resume state. */
  readonly agentState: { firstSector: number; sectorCount: number };
  /** One sector of one-time-programmable fuses holding the security counter. */
  readonly fuses: { firstSector: number; sectorCount: number };
  /** One read-only sector holding the root certificate the first stage trusts. */
  readonly bootRom: { firstSector: number; sectorCount: number };
  /** Two slots of the second-stage bootloader (image sectors only). */
  readonly stage2: readonly [
    { firstSector: number; sectorCount: number },
    { firstSector: number; sectorCount: number },
  ];
  /** Two sectors, A/B, recording which second stage is active, pending or on trial. */
  readonly stage2State: { firstSector: number; sectorCount: number };
  /** The trust store's two sectors (see trust_store.ts). */
  readonly trustStore: { firstSector: number; sectorCount: number };
}

/** Sectors of each second-stage bootloader slot. */
export const STAGE2_SECTORS = 2;

/** Opened areas of one chip. */
export interface DeviceAreas {
  /** Running image slot. */
  readonly primary: FlashArea;
  /** Update slot. */
  readonly secondary: FlashArea;
  /** Swap scratch sector. */
  readonly scratch: FlashArea;
  /** Swap status sector. */
  readonly swapStatus: FlashArea;
  /** Agent resume-state area. */
  readonly agentState: FlashArea;
  /** Security counter fuses. */
  readonly fuses: FlashArea;
  /** The boot ROM region (root certificate), read-only once provisioned. */
  readonly bootRom: FlashArea;
  /** The second-stage bootloader slots. */
  readonly stage2: readonly [FlashArea, FlashArea];
  /** Which second stage is active, pending or on trial. */
  readonly stage2State: FlashArea;
  /** The trust store: signers, revoked keys, root links. */
  readonly trustStore: FlashArea;
}

/**
 * Builds a layout and checks that the swap-status sector can record every image sector.
 *
 * @example
 * ```ts
 * import { deviceLayout } from "./layout.ts";
 * const layout = deviceLayout({ slotSectors: 16 });
 * layout.secondary.firstSector; // 17
 * ```
 */
export function deviceLayout(options: LayoutOptions = {}): DeviceLayout {
  const slotSectors = options.slotSectors ?? 128;
  const geometryIn = options.geometry ?? {};
  const sectorSize = geometryIn.sectorSize ?? 4096;
  const writeUnit = geometryIn.writeUnit ?? 8;
  if (!Number.isInteger(slotSectors) || slotSectors < 1) {
    throw new RangeError(
      `Cannot build layout: 'slotSectors' must be a positive integer: current value is ${slotSectors}`,
    );
  }
  // What the swap-status sector records (its own layout says, cipher records included).
  const maxSlotSectors = swapStatusCapacity(sectorSize, writeUnit);
  if (slotSectors > maxSlotSectors) {
    throw new RangeError(
      `Cannot build layout: ${slotSectors} sectors per slot need more swap-status records than one ${sectorSize}-byte sector holds (at most ${maxSlotSectors})`,
    );
  }
  let next = 0;
  const take = (count: number) => {
    const area = { firstSector: next, sectorCount: count };
    next += count;
    return area;
  };
  const primary = take(slotSectors + 1);
  const secondary = take(slotSectors + 1);
  const scratch = take(1);
  const swapStatus = take(1);
  const agentState = take(2);
  const fuses = take(1);
  // Appended after the first areas, so that their offsets stay what they were.
  const bootRom = take(1);
  const stage2 = [take(STAGE2_SECTORS), take(STAGE2_SECTORS)] as const;
  const stage2State = take(2);
  const trustStore = take(2);
  const geometry: FlashGeometry = {
    sectorSize,
    writeUnit,
    sectorCount: next,
    eraseCycleLimit: geometryIn.eraseCycleLimit ?? 10_000,
  };
  return {
    geometry,
    slotSectors,
    primary,
    secondary,
    scratch,
    swapStatus,
    agentState,
    fuses,
    bootRom,
    stage2,
    stage2State,
    trustStore,
  };
}

/**
 * Creates an erased chip sized for `layout`.
 *
 * @example
 * ```ts
 * import { createFlash, deviceLayout } from "./layout.ts";
 * createFlash(deviceLayout({ slotSectors: 4 })).geometry.sectorCount; // 22
 * ```
 */
export function createFlash(
  layout: DeviceLayout,
  options: { seed?: number; strict?: boolean } = {},
): NorFlash {
  const flash = new NorFlash({ ...layout.geometry, ...options });
  // The fuses are one-time-programmable silicon: bits blow, nothing (a compromised application
  // calling the flash API directly included) can erase them and lower the security counter.
  flash.protect(layout.fuses.firstSector, layout.fuses.sectorCount, "one-time-programmable");
  return flash;
}

/**
 * Opens every area of `layout` on `flash`.
 *
 * @example
 * ```ts
 * import { createFlash, deviceLayout, openAreas } from "./layout.ts";
 * const layout = deviceLayout({ slotSectors: 4 });
 * openAreas(createFlash(layout), layout).primary.size; // 20480
 * ```
 */
export function openAreas(flash: NorFlash, layout: DeviceLayout): DeviceAreas {
  const open = (name: string, spec: { firstSector: number; sectorCount: number }) =>
    new FlashArea(flash, { name, ...spec });
  return {
    primary: open("primary", layout.primary),
    secondary: open("secondary", layout.secondary),
    scratch: open("scratch", layout.scratch),
    swapStatus: open("swap-status", layout.swapStatus),
    agentState: open("agent-state", layout.agentState),
    fuses: open("fuses", layout.fuses),
    bootRom: open("boot-rom", layout.bootRom),
    stage2: [open("stage2-a", layout.stage2[0]), open("stage2-b", layout.stage2[1])],
    stage2State: open("stage2-state", layout.stage2State),
    trustStore: open("trust-store", layout.trustStore),
  };
}

/** Largest signed image (header + payload + TLVs) a slot holds. */
export function maxImageSize(layout: DeviceLayout): number {
  return layout.slotSectors * layout.geometry.sectorSize;
}
