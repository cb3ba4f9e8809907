/**
 * The swap-status sector: records the swap in progress (type, size) and, per image sector, how
 * far its three-step exchange through the scratch sector got, so a swap interrupted by a power
 * cut is completed on the next boot.
 *
 * Records are written in order and never rewritten; a record that is not erased counts as
 * written, because the step it records had finished before the record was programmed (a torn
 * record write therefore means "done", and needs no second program).
 *
 * @module
 */

import { alignUp, bytesEqual, isFilledWith, viewOf } from "../lib/bytes.ts";
import { ERASED } from "./flash.ts";
import type { FlashArea } from "./flash_area.ts";
import { TRAILER_MAGIC } from "./trailer.ts";

/**
 * Kinds of swap: "dependency" is a revert of an image whose dependencies the running components
 * no longer meet (a second stage that went back while the application it came with stayed).
 */
export type SwapKind = "test" | "perm" | "revert" | "fallback" | "dependency";

const KIND_CODES: Record<SwapKind, number> = {
  test: 2,
  perm: 3,
  revert: 4,
  fallback: 6,
  dependency: 7,
};

/** What the swap-status sector says. */
export type SwapStatus =
  | { readonly state: "idle" }
  | { readonly state: "done" }
  | {
    readonly state: "in-progress";
    readonly kind: SwapKind;
    /** Image sectors being exchanged (from index 0). */
    readonly sectors: number;
    /** Steps done (0..3) for each image sector. */
    readonly progress: readonly number[];
    /** The encrypted payloads the swap turns (recorded before it began). */
    readonly ciphers: SwapCipherRecords;
  };

/**
 * An encrypted payload a swap decrypts or encrypts as it copies: where it lies in its slot and its
 * key as the image carries it (the wrapped ENC_EC256 TLV, never the key itself: the swap status
 * is flash, and the secure element unwraps it again when a swap resumes).
 */
export interface SwapCipherRecord {
  /** Slot offsets of the payload's first byte and of the byte after its last. */
  readonly start: number;
  readonly end: number;
  readonly wrappedKey: Uint8Array;
}

/**
 * What a swap turns: the secondary slot's image is decrypted into the primary, the primary's is
 * encrypted again on its way to the secondary (null: copied as it is).
 */
export interface SwapCipherRecords {
  readonly primary: SwapCipherRecord | null;
  readonly secondary: SwapCipherRecord | null;
}

/** A swap of plaintext images. */
export const NO_CIPHERS: SwapCipherRecords = { primary: null, secondary: null };

const WRAPPED_KEY_BYTES = 113;

function positions(area: { readonly writeUnit: number; readonly sectorSize: number }) {
  const field = Math.max(8, area.writeUnit);
  const kind = 0;
  const size = field;
  const magic = 2 * field;
  const done = magic + alignUp(16, field);
  const records = done + field;
  // The two cipher records sit at the end of the sector, after the step records' room.
  const cipherRecord = alignUp(8 + WRAPPED_KEY_BYTES, area.writeUnit);
  const ciphers = area.sectorSize - 2 * cipherRecord;
  return { field, kind, size, magic, done, records, cipherRecord, ciphers };
}

/**
 * How many image sectors one status sector can track.
 *
 * @example
 * ```ts
 * import { swapStatusCapacity } from "./swap_status.ts";
 * swapStatusCapacity(4096, 8); // 158
 * ```
 */
export function swapStatusCapacity(sectorSize: number, writeUnit: number): number {
  const p = positions({ sectorSize, writeUnit });
  return Math.floor((p.ciphers - p.records) / (3 * writeUnit));
}

/** Reads the swap status. A torn erase or torn header never reads as a swap in progress. */
export function readSwapStatus(area: FlashArea, maxSectors: number): SwapStatus {
  const p = positions(area);
  const head = area.read(0, p.records);
  const magic = head.subarray(p.magic, p.magic + 16);
  if (!bytesEqual(magic, TRAILER_MAGIC)) return { state: "idle" };
  if (!isFilledWith(head, ERASED, p.done, p.done + p.field)) return { state: "done" };
  const kindCode = head[p.kind];
  const kind = (Object.keys(KIND_CODES) as SwapKind[]).find((k) => KIND_CODES[k] === kindCode);
  const sectors = viewOf(head).getUint32(p.size, true);
  if (!kind || sectors < 1 || sectors > maxSectors) return { state: "idle" };
  const records = area.read(p.records, sectors * 3 * area.writeUnit);
  const progress: number[] = [];
  for (let sector = 0; sector < sectors; sector++) {
    let steps = 0;
    while (steps < 3) {
      const at = (sector * 3 + steps) * area.writeUnit;
      if (isFilledWith(records, ERASED, at, at + area.writeUnit)) break;
      steps++;
    }
    progress.push(steps);
  }
  const cipherAt = (index: number): SwapCipherRecord | null => {
    const record = area.read(p.ciphers + index * p.cipherRecord, p.cipherRecord);
    if (isFilledWith(record, ERASED)) return null;
    const view = viewOf(record);
    return {
      start: view.getUint32(0, true),
      end: view.getUint32(4, true),
      wrappedKey: record.slice(8, 8 + WRAPPED_KEY_BYTES),
    };
  };
  return {
    state: "in-progress",
    kind,
    sectors,
    progress,
    ciphers: { primary: cipherAt(0), secondary: cipherAt(1) },
  };
}

/**
 * Starts recording a swap: erase, kind, size, the payloads it turns, then the magic that makes it
 * "in progress" (so a cut before the magic leaves no half-recorded swap to resume).
 */
export function beginSwapStatus(
  area: FlashArea,
  kind: SwapKind,
  sectors: number,
  ciphers: SwapCipherRecords = NO_CIPHERS,
): void {
  const p = positions(area);
  area.eraseSectorIfNeeded(0);
  for (const [index, cipher] of [ciphers.primary, ciphers.secondary].entries()) {
    if (!cipher) continue;
    if (cipher.wrappedKey.length !== WRAPPED_KEY_BYTES) {
      throw new RangeError(`a wrapped image key has ${WRAPPED_KEY_BYTES} bytes`);
    }
    const record = new Uint8Array(p.cipherRecord).fill(ERASED);
    viewOf(record).setUint32(0, cipher.start, true);
    viewOf(record).setUint32(4, cipher.end, true);
    record.set(cipher.wrappedKey, 8);
    area.program(p.ciphers + index * p.cipherRecord, record);
  }
  const kindUnit = new Uint8Array(p.field).fill(ERASED);
  kindUnit[0] = KIND_CODES[kind];
  area.program(p.kind, kindUnit);
  const sizeUnit = new Uint8Array(p.field).fill(ERASED);
  viewOf(sizeUnit).setUint32(0, sectors, true);
  area.program(p.size, sizeUnit);
  const magicUnit = new Uint8Array(alignUp(16, p.field)).fill(ERASED);
  magicUnit.set(TRAILER_MAGIC);
  area.program(p.magic, magicUnit);
}

/**
 * The three step records per write-unit size, made once: a swap writes three per sector (195
 * for a 256 KiB image), and a fresh buffer each was 2% of a fleet Worker's time.
 */
const stepRecords = new Map<number, readonly Uint8Array[]>();

/** Records that `step` (0..2) of image sector `sector` is complete. */
export function recordSwapStep(area: FlashArea, sector: number, step: number): void {
  const p = positions(area);
  let records = stepRecords.get(area.writeUnit);
  if (!records) {
    records = [1, 2, 3].map((code) => {
      const record = new Uint8Array(area.writeUnit).fill(ERASED);
      record[0] = code;
      return record;
    });
    stepRecords.set(area.writeUnit, records);
  }
  area.program(p.records + (sector * 3 + step) * area.writeUnit, records[step]!);
}

/** Marks the swap finished. */
export function endSwapStatus(area: FlashArea): void {
  const p = positions(area);
  const unit = new Uint8Array(p.field).fill(ERASED);
  unit[0] = 0x01;
  area.program(p.done, unit);
}
