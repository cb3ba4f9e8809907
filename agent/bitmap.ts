/**
 * The block bitmap of the AWS OTA agent and the MQTT stream service: bit `i % 8` of byte
 * `i >> 3` stands for block `i`, and 1 means "still needed" (like erased flash). Unused high bits
 * of the last byte are 0.
 *
 * @module
 */

/**
 * Which blocks of a file are still needed.
 *
 * @example
 * ```ts
 * import { BlockBitmap } from "./bitmap.ts";
 * const bitmap = new BlockBitmap(10);
 * bitmap.markReceived(3);
 * bitmap.remaining; // 9
 * bitmap.toBytes(); // Uint8Array [0xf7, 0x03]
 * ```
 */
export class BlockBitmap {
  /** Number of blocks in the file. */
  readonly blockCount: number;
  readonly #bits: Uint8Array;
  #remaining: number;

  /** All blocks needed. */
  constructor(blockCount: number) {
    if (!Number.isInteger(blockCount) || blockCount < 1) {
      throw new RangeError(
        `Cannot create a bitmap: 'blockCount' must be a positive integer: current value is ${blockCount}`,
      );
    }
    this.blockCount = blockCount;
    this.#bits = new Uint8Array(Math.ceil(blockCount / 8)).fill(0xff);
    const unused = this.#bits.length * 8 - blockCount;
    if (unused > 0) this.#bits[this.#bits.length - 1] = 0xff >> unused;
    this.#remaining = blockCount;
  }

  /**
   * Restores a bitmap saved with {@linkcode BlockBitmap.toBytes}; null when the bytes do not fit
   * `blockCount` (wrong length, or bits set past the last block).
   */
  static fromBytes(bytes: Uint8Array, blockCount: number): BlockBitmap | null {
    if (
      !Number.isInteger(blockCount) || blockCount < 1 || bytes.length !== Math.ceil(blockCount / 8)
    ) return null;
    const unused = bytes.length * 8 - blockCount;
    if (unused > 0 && (bytes[bytes.length - 1]! >> (8 - unused)) !== 0) return null;
    const bitmap = new BlockBitmap(blockCount);
    bitmap.#bits.set(bytes);
    let remaining = 0;
    for (const byte of bytes) for (let b = byte; b; b &= b - 1) remaining++;
    bitmap.#remaining = remaining;
    return bitmap;
  }

  /** Blocks still needed. */
  get remaining(): number {
    return this.#remaining;
  }

  /** Whether block `index` is still needed (false for out-of-range indices). */
  needs(index: number): boolean {
    if (!Number.isInteger(index) || index < 0 || index >= this.blockCount) return false;
    return (this.#bits[index >> 3]! & (1 << (index & 7))) !== 0;
  }

  /** Marks a block received; returns false when it was not needed (duplicate or out of range). */
  markReceived(index: number): boolean {
    if (!this.needs(index)) return false;
    this.#bits[index >> 3]! &= ~(1 << (index & 7));
    this.#remaining--;
    return true;
  }

  /** The first `limit` needed block indices, in order. */
  neededBlocks(limit = Infinity): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.blockCount && out.length < limit; i++) if (this.needs(i)) out.push(i);
    return out;
  }

  /** A copy of the bitmap bytes. */
  toBytes(): Uint8Array {
    return this.#bits.slice();
  }
}
