/**
 * Small byte helpers shared by the codecs: little-endian access, hex, comparison.
 *
 * @module
 */

import { Buffer } from "node:buffer";

/**
 * Concatenates byte arrays into one new array.
 *
 * @example
 * ```ts
 * import { concatBytes } from "./bytes.ts";
 * concatBytes([new Uint8Array([1]), new Uint8Array([2, 3])]); // Uint8Array [1, 2, 3]
 * ```
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * True when both arrays hold the same bytes.
 *
 * @example
 * ```ts
 * import { bytesEqual } from "./bytes.ts";
 * bytesEqual(new Uint8Array([1]), new Uint8Array([1])); // true
 * ```
 */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  // Flash sectors are compared whole (the shared-contents pool): memcmp is 5x a JS loop there.
  if (a.length >= NATIVE_COMPARE) return Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Below this many bytes wrapping the array in a Buffer costs more than the loop it spares. */
const NATIVE_COMPARE = 512;

/** Below this many bytes a word view costs more than it saves. */
const WORDWISE = 64;

/**
 * Lower-case hex of the bytes.
 *
 * @example
 * ```ts
 * import { toHex } from "./bytes.ts";
 * toHex(new Uint8Array([0xde, 0xad])); // "dead"
 * ```
 */
export function toHex(bytes: Uint8Array): string {
  // Native (Uint8Array.prototype.toHex): one flat string, 6x a JS loop over a 32-byte digest.
  // Cache keys are hex of digests and signatures, several per boot and block.
  return bytes.toHex();
}

/**
 * True when every byte of `bytes[start..end)` (all of it by default) equals `value` (0xFF for
 * erased NOR flash).
 *
 * @example
 * ```ts
 * import { isFilledWith } from "./bytes.ts";
 * isFilledWith(new Uint8Array([0xff, 0xff]), 0xff); // true
 * isFilledWith(new Uint8Array([0x00, 0xff]), 0xff, 1); // true
 * ```
 */
export function isFilledWith(
  bytes: Uint8Array,
  value: number,
  start = 0,
  end: number = bytes.length,
): boolean {
  // Most ranges asked about hold data, which shows at once: no word view made for them.
  if (start < end && (bytes[start] !== value || bytes[end - 1] !== value)) return false;
  let i = start;
  const length = end - start;
  if (length >= WORDWISE && (bytes.byteOffset + start) % 4 === 0 && value === (value & 0xff)) {
    // The flash model asks of ranges of one sector buffer thousands of times per swap: one word
    // view of the buffer per call, not a subarray and a view.
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset + start, length >>> 2);
    const word = ((value & 0xff) * 0x01010101) >>> 0;
    for (let w = 0; w < words.length; w++) if (words[w] !== word) return false;
    i = start + words.length * 4;
  }
  for (; i < end; i++) if (bytes[i] !== value) return false;
  return true;
}

/**
 * A DataView over exactly the bytes of `bytes` (which may be a window into a larger buffer).
 *
 * @example
 * ```ts
 * import { viewOf } from "./bytes.ts";
 * viewOf(new Uint8Array([1, 0])).getUint16(0, true); // 1
 * ```
 */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Copies `bytes` into a fresh ArrayBuffer-backed array, as WebCrypto wants.
 *
 * @example
 * ```ts
 * import { toArrayBuffer } from "./bytes.ts";
 * toArrayBuffer(new Uint8Array([1])).byteLength; // 1
 * ```
 */
export function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return copy.buffer;
}

/**
 * Rounds `value` up to a multiple of `unit`.
 *
 * @example
 * ```ts
 * import { alignUp } from "./bytes.ts";
 * alignUp(9, 8); // 16
 * ```
 */
export function alignUp(value: number, unit: number): number {
  return Math.ceil(value / unit) * unit;
}
