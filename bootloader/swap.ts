/**
 * Swap using scratch, resumable: each image sector is exchanged in three recorded steps
 * (secondary -> scratch, primary -> secondary, scratch -> primary), then the trailers are
 * rewritten. Slot trailers live in their own sector outside the exchanged region, so the swap
 * never moves its own bookkeeping; progress lives in the swap-status sector.
 *
 * @module
 */

import type { FlashArea } from "./flash_area.ts";
import type { DeviceAreas } from "./layout.ts";
import { PsaStatus } from "./psa_status.ts";
import {
  beginSwapStatus,
  endSwapStatus,
  recordSwapStep,
  type SwapKind,
  type SwapStatus,
} from "./swap_status.ts";
import {
  eraseTrailer,
  writeTrailerFailure,
  writeTrailerFlag,
  writeTrailerMagic,
} from "./trailer.ts";

/** Copy buffer size (MCUboot copies through 1 KiB). */
export const COPY_CHUNK = 1024;

function copySector(from: FlashArea, fromSector: number, to: FlashArea, toSector: number): void {
  to.eraseSectorIfNeeded(toSector);
  // Chunk by chunk; chunks that read as erased are skipped (saves operations and wear).
  to.copySectorFrom(from, fromSector, toSector, COPY_CHUNK);
}

/** Starts a new swap of `sectors` image sectors and runs it to the end. */
export function performSwap(
  areas: DeviceAreas,
  kind: SwapKind,
  sectors: number,
  log: (line: string) => void,
): void {
  beginSwapStatus(areas.swapStatus, kind, sectors);
  log(`swap ${kind}: started over ${sectors} sectors`);
  continueSwap(
    areas,
    { state: "in-progress", kind, sectors, progress: new Array(sectors).fill(0) },
    log,
  );
}

/** Continues a recorded swap from its progress, then finalizes the trailers. */
export function continueSwap(
  areas: DeviceAreas,
  status: Extract<SwapStatus, { state: "in-progress" }>,
  log: (line: string) => void,
): void {
  const { primary, secondary, scratch, swapStatus } = areas;
  for (let sector = status.sectors - 1; sector >= 0; sector--) {
    let step = status.progress[sector] ?? 0;
    if (step === 3) continue;
    if (step === 0) {
      copySector(secondary, sector, scratch, 0);
      recordSwapStep(swapStatus, sector, 0);
      step = 1;
    }
    if (step === 1) {
      copySector(primary, sector, secondary, sector);
      recordSwapStep(swapStatus, sector, 1);
      step = 2;
    }
    if (step === 2) {
      copySector(scratch, 0, primary, sector);
      recordSwapStep(swapStatus, sector, 2);
    }
  }
  finalizeSwap(areas, status.kind);
  log(`swap ${status.kind}: complete`);
}

/**
 * Rewrites the trailers for the swap's outcome. Idempotent: a cut anywhere in here leaves the
 * swap "in progress" and the next boot runs this again from the top.
 */
function finalizeSwap(areas: DeviceAreas, kind: SwapKind): void {
  const { primary, secondary, swapStatus } = areas;
  eraseTrailer(primary);
  writeTrailerFlag(primary, "copyDone");
  if (kind !== "test") writeTrailerFlag(primary, "imageOk");
  writeTrailerMagic(primary);
  if (kind === "fallback") {
    // The secondary now holds the corrupted image that was in the primary: wipe it.
    for (let sector = 0; sector < secondary.sectorCount - 1; sector++) {
      secondary.eraseSectorIfNeeded(sector);
    }
  }
  eraseTrailer(secondary);
  if (kind === "revert") {
    writeTrailerFailure(
      secondary,
      PsaStatus.ERROR_NOT_PERMITTED,
      "trial image was not confirmed: reverted",
    );
  } else if (kind === "fallback") {
    writeTrailerFailure(
      secondary,
      PsaStatus.ERROR_INVALID_SIGNATURE,
      "primary image failed validation: fell back",
    );
  }
  endSwapStatus(swapStatus);
}
