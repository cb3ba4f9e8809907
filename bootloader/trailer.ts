/**
 * The slot trailer: flags at the end of each slot's last sector, each in its own write unit so
 * it can be programmed once without an erase (MCUboot's magic, image_ok and copy_done), plus the
 * firmware-update service's progress marks (writing, candidate, failed + reason) for the
 * secondary slot.
 *
 * @module
 */

import { alignUp, bytesEqual, concatBytes, isFilledWith, viewOf } from "../lib/bytes.ts";
import { ERASED } from "./flash.ts";
import { type FlashArea, sectorMemo } from "./flash_area.ts";

/** MCUboot's trailer magic for an 8-byte maximum alignment. */
export const TRAILER_MAGIC = new Uint8Array([
  0x77,
  0xc2,
  0x95,
  0xf3,
  0x60,
  0xd2,
  0xef,
  0x7f,
  0x35,
  0x52,
  0x50,
  0x0f,
  0x2c,
  0xb6,
  0x79,
  0x80,
]);

/** State of the magic field. */
export type MagicState = "good" | "unset" | "bad";
/** State of a one-byte flag field: 0x01, erased, or anything else. */
export type FlagState = "set" | "unset" | "bad";

/** A decoded trailer. */
export interface SlotTrailer {
  readonly magic: MagicState;
  readonly imageOk: FlagState;
  readonly copyDone: FlagState;
  /** The firmware-update service started writing this slot. */
  readonly writing: FlagState;
  /** The written image was verified and is a candidate. */
  readonly candidate: FlagState;
  /** The update in this slot failed (refused, cancelled, reverted). */
  readonly failed: FlagState;
  /** PSA status recorded with `failed`. */
  readonly failReason: number | null;
  /** Human-readable detail recorded with `failed`. */
  readonly failDetail: string | null;
}

/** Trailer fields that are single flags. */
export type TrailerFlag = "imageOk" | "copyDone" | "writing" | "candidate";

const FAIL_DETAIL_BYTES = 64;

/** Offsets of every field inside the trailer sector, for a given write unit. */
function fieldOffsets(sectorSize: number, writeUnit: number) {
  const field = Math.max(8, writeUnit);
  const magic = sectorSize - alignUp(16, field);
  const imageOk = magic - field;
  const copyDone = imageOk - field;
  const writing = copyDone - field;
  const candidate = writing - field;
  const failed = candidate - field;
  const failDetail = failed - alignUp(FAIL_DETAIL_BYTES, field);
  return { field, magic, imageOk, copyDone, writing, candidate, failed, failDetail };
}

function flagState(bytes: Uint8Array): FlagState {
  if (isFilledWith(bytes, ERASED)) return "unset";
  return bytes[0] === 0x01 && isFilledWith(bytes.subarray(1), ERASED) ? "set" : "bad";
}

function trailerBase(area: FlashArea): number {
  return (area.sectorCount - 1) * area.sectorSize;
}

/**
 * Reads the trailer of a slot (its last sector).
 *
 * @example
 * ```ts ignore
 * const trailer = readTrailer(areas.primary);
 * trailer.magic; // "unset" on a factory device
 * ```
 */
export function readTrailer(area: FlashArea): SlotTrailer {
  // The update service asks for its state (two trailers) before every block it writes: the
  // trailer sector rarely changes meanwhile, so what was read from it stands until it does.
  return trailerOf(area, area.sectorCount - 1, () => Object.freeze(decodeTrailer(area)));
}

const trailerOf = sectorMemo<SlotTrailer>();

function decodeTrailer(area: FlashArea): SlotTrailer {
  const o = fieldOffsets(area.sectorSize, area.writeUnit);
  const bytes = area.read(trailerBase(area) + o.failDetail, area.sectorSize - o.failDetail);
  const at = (offset: number, length: number) =>
    bytes.subarray(offset - o.failDetail, offset - o.failDetail + length);
  const magicBytes = at(o.magic, 16);
  const magic: MagicState = isFilledWith(magicBytes, ERASED)
    ? "unset"
    : bytesEqual(magicBytes, TRAILER_MAGIC)
    ? "good"
    : "bad";
  const failedUnit = at(o.failed, o.field);
  const failedState: FlagState = isFilledWith(failedUnit, ERASED)
    ? "unset"
    : failedUnit[0] === 0x01
    ? "set"
    : "bad";
  let failReason: number | null = null;
  let failDetail: string | null = null;
  if (failedState === "set") {
    failReason = viewOf(failedUnit).getInt32(4, true);
    const detail = at(o.failDetail, FAIL_DETAIL_BYTES);
    const end = detail.indexOf(ERASED);
    failDetail = new TextDecoder().decode(detail.subarray(0, end === -1 ? detail.length : end));
  }
  return {
    magic,
    imageOk: flagState(at(o.imageOk, o.field)),
    copyDone: flagState(at(o.copyDone, o.field)),
    writing: flagState(at(o.writing, o.field)),
    candidate: flagState(at(o.candidate, o.field)),
    failed: failedState,
    failReason,
    failDetail,
  };
}

/** Programs the trailer magic. */
export function writeTrailerMagic(area: FlashArea): void {
  const o = fieldOffsets(area.sectorSize, area.writeUnit);
  const data = new Uint8Array(alignUp(16, o.field)).fill(ERASED);
  data.set(TRAILER_MAGIC);
  area.program(trailerBase(area) + o.magic, data);
}

/** Programs one flag (0x01 padded with erased bytes). */
export function writeTrailerFlag(area: FlashArea, flag: TrailerFlag): void {
  const o = fieldOffsets(area.sectorSize, area.writeUnit);
  const data = new Uint8Array(o.field).fill(ERASED);
  data[0] = 0x01;
  area.program(trailerBase(area) + o[flag], data);
}

/**
 * Records a failure: the detail text first, then the mark with the PSA status that commits it.
 * The text is cut to 64 bytes (at a character boundary).
 */
export function writeTrailerFailure(area: FlashArea, reason: number, detail: string): void {
  const o = fieldOffsets(area.sectorSize, area.writeUnit);
  let text = new TextEncoder().encode(detail);
  while (text.length > FAIL_DETAIL_BYTES) {
    detail = detail.slice(0, -1);
    text = new TextEncoder().encode(detail);
  }
  if (text.length > 0) {
    const padded = concatBytes([
      text,
      new Uint8Array(alignUp(text.length, area.writeUnit) - text.length).fill(ERASED),
    ]);
    area.program(trailerBase(area) + o.failDetail, padded);
  }
  const mark = new Uint8Array(o.field).fill(ERASED);
  mark[0] = 0x01;
  viewOf(mark).setInt32(4, reason, true);
  area.program(trailerBase(area) + o.failed, mark);
}

/** Erases the trailer sector (if not blank). */
export function eraseTrailer(area: FlashArea): void {
  area.eraseSectorIfNeeded(area.sectorCount - 1);
}

/** Bytes of the image region of a slot (everything before the trailer sector). */
export function imageRegionSize(area: FlashArea): number {
  return (area.sectorCount - 1) * area.sectorSize;
}
