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
  NO_CIPHERS,
  recordSwapStep,
  type SwapCipherRecord,
  type SwapCipherRecords,
  type SwapKind,
  type SwapStatus,
} from "./swap_status.ts";
import { payloadCipher } from "../protocol/image_encryption.ts";
import { isFilledWith } from "../lib/bytes.ts";
import { ERASED } from "./flash.ts";
import {
  eraseTrailer,
  writeTrailerFailure,
  writeTrailerFlag,
  writeTrailerMagic,
} from "./trailer.ts";

/** Copy buffer size (MCUboot copies through 1 KiB). */
export const COPY_CHUNK = 1024;

/** A payload turned by AES-128-CTR as it is copied: its slot range and its key. */
interface SlotCipher {
  readonly start: number;
  readonly end: number;
  readonly key: Uint8Array;
}

/** The unwrapped keys of a swap's cipher records (see {@linkcode SwapCipherRecords}). */
export interface SwapKeys {
  readonly primary: Uint8Array | null;
  readonly secondary: Uint8Array | null;
}

/** Keys of a swap of plaintext images. */
export const NO_KEYS: SwapKeys = { primary: null, secondary: null };

function copySector(
  from: FlashArea,
  fromSector: number,
  to: FlashArea,
  toSector: number,
  cipher: SlotCipher | null,
): void {
  to.eraseSectorIfNeeded(toSector);
  const size = from.sectorSize;
  const base = fromSector * size;
  if (!cipher || base >= cipher.end || base + size <= cipher.start) {
    // Chunk by chunk; chunks that read as erased are skipped (saves operations and wear).
    to.copySectorFrom(from, fromSector, toSector, COPY_CHUNK);
    return;
  }
  // Through the cipher: every payload chunk is turned and written, even one that reads as
  // erased (its other side does not); the rest is copied as above. Redoing this after a cut
  // gives the same bytes: CTR turns each byte by its place in the payload alone.
  for (let at = 0; at < size; at += COPY_CHUNK) {
    const length = Math.min(COPY_CHUNK, size - at);
    let chunk = from.read(base + at, length);
    const start = Math.max(base + at, cipher.start);
    const end = Math.min(base + at + length, cipher.end);
    if (start < end) {
      chunk = chunk.slice();
      const inChunk = start - base - at;
      chunk.set(
        payloadCipher(cipher.key, start - cipher.start, chunk.subarray(inChunk, end - base - at)),
        inChunk,
      );
    }
    if (isFilledWith(chunk, ERASED)) continue;
    to.program(toSector * size + at, chunk);
  }
}

/**
 * Starts a new swap of `sectors` image sectors and runs it to the end; `ciphers` are the
 * encrypted payloads it turns, `keys` their unwrapped keys.
 */
export function performSwap(
  areas: DeviceAreas,
  kind: SwapKind,
  sectors: number,
  log: (line: string) => void,
  ciphers: SwapCipherRecords = NO_CIPHERS,
  keys: SwapKeys = NO_KEYS,
): void {
  beginSwapStatus(areas.swapStatus, kind, sectors, ciphers);
  log(
    `swap ${kind}: started over ${sectors} sectors${
      ciphers.secondary ? ", decrypting the new image" : ""
    }${ciphers.primary ? ", encrypting the old one again" : ""}`,
  );
  continueSwap(
    areas,
    { state: "in-progress", kind, sectors, progress: new Array(sectors).fill(0), ciphers },
    log,
    keys,
  );
}

/**
 * Continues a recorded swap from its progress, then finalizes the trailers. The secondary slot's
 * payload, if recorded as encrypted, is decrypted on its way to the scratch sector (so it never
 * sits in clear in the secondary slot); the primary's, if recorded, is encrypted again on its way
 * to the secondary slot. `keys` must hold the key of each recorded payload.
 */
export function continueSwap(
  areas: DeviceAreas,
  status: Extract<SwapStatus, { state: "in-progress" }>,
  log: (line: string) => void,
  keys: SwapKeys = NO_KEYS,
): void {
  const { primary, secondary, scratch, swapStatus } = areas;
  const cipherOf = (record: SwapCipherRecord | null, key: Uint8Array | null) => {
    if (!record) return null;
    if (!key) throw new Error("an encrypted payload's key is needed to swap it");
    return { start: record.start, end: record.end, key };
  };
  const fromSecondary = cipherOf(status.ciphers.secondary, keys.secondary);
  const fromPrimary = cipherOf(status.ciphers.primary, keys.primary);
  for (let sector = status.sectors - 1; sector >= 0; sector--) {
    let step = status.progress[sector] ?? 0;
    if (step === 3) continue;
    if (step === 0) {
      copySector(secondary, sector, scratch, 0, fromSecondary);
      recordSwapStep(swapStatus, sector, 0);
      step = 1;
    }
    if (step === 1) {
      copySector(primary, sector, secondary, sector, fromPrimary);
      recordSwapStep(swapStatus, sector, 1);
      step = 2;
    }
    if (step === 2) {
      copySector(scratch, 0, primary, sector, null);
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
  } else if (kind === "dependency") {
    writeTrailerFailure(
      secondary,
      PsaStatus.ERROR_DEPENDENCY_NEEDED,
      "the running components no longer met its dependencies: went back",
    );
  }
  endSwapStatus(swapStatus);
}
