/**
 * The device's side of a delta update: a patch ({@linkcode PatchDecoder}) applied as it arrives,
 * reading the base from the running image's slot and writing the target into the staging slot,
 * in order, through one output buffer. RAM: that buffer (512 bytes by default, a multiple of the
 * flash write unit) and the decoder's few numbers; neither the patch, the base nor the target is
 * ever held whole. What is written is checked like any image afterwards (signature, then the
 * bootloader's own validation), so a wrong or malicious patch can only make an image that fails.
 *
 * @example
 * ```ts
 * import { DeltaWriter } from "./delta_writer.ts";
 * const base = new TextEncoder().encode("hello world");
 * const staged = new Uint8Array(16).fill(0xff);
 * const writer = new DeltaWriter({
 *   baseSize: base.length,
 *   maxTargetSize: staged.length,
 *   writeUnit: 8,
 *   readBase: (offset, length) => base.slice(offset, offset + length),
 *   write: (offset, bytes) => (staged.set(bytes, offset), null),
 * });
 * writer.push(new TextEncoder().encode("6\n5@0,1:!3NXbmh;"));
 * writer.finish(); // null: "hello!" is in `staged`, its size and checksum as the patch says
 * ```
 *
 * @module
 */

import { DeltaChecksum, PatchDecoder } from "../protocol/delta_patch.ts";

/** Where a patch reads from and writes to. */
export interface DeltaWriterOptions {
  /** Bytes of the base (the running image, as the patch was made against). */
  readonly baseSize: number;
  /** The largest target accepted (the staging slot's room for an image). */
  readonly maxTargetSize: number;
  /** The flash write unit: every write starts on one and is a whole number of them. */
  readonly writeUnit: number;
  /** Output buffer size (a multiple of `writeUnit`). @default {512} */
  readonly bufferSize?: number;
  /** Bytes of the base at `offset` (never past `baseSize`). */
  readBase(offset: number, length: number): Uint8Array;
  /**
   * Writes target bytes at `offset` (a multiple of the write unit; the last write may end
   * short of one). `bytes` is a view of the writer's buffer, reused once this returns. Returns
   * null, or why the write failed.
   */
  write(offset: number, bytes: Uint8Array): string | null;
}

/** Default output buffer: 64 write units of 8 bytes. */
const DEFAULT_BUFFER = 512;

/** Applies one patch, pushed in order, into the staging slot. */
export class DeltaWriter {
  readonly #options: DeltaWriterOptions;
  readonly #decoder: PatchDecoder;
  readonly #buffer: Uint8Array;
  readonly #checksum = new DeltaChecksum();
  /** Target offset of the buffer's first byte. */
  #flushedTo = 0;
  #filled = 0;
  #writeFailure: string | null = null;

  constructor(options: DeltaWriterOptions) {
    const size = options.bufferSize ?? DEFAULT_BUFFER;
    if (size <= 0 || size % options.writeUnit !== 0) {
      throw new RangeError(`a ${size}-byte buffer is not whole ${options.writeUnit}-byte units`);
    }
    this.#options = options;
    this.#buffer = new Uint8Array(size);
    this.#decoder = new PatchDecoder(options, {
      copy: (offset, length) => this.#copy(offset, length),
      insert: (bytes) => this.#append(bytes),
    });
  }

  /** Patch bytes applied so far. */
  get consumed(): number {
    return this.#decoder.consumed;
  }

  /** The target's size as the patch announces it (-1 before its first line). */
  get targetSize(): number {
    return this.#decoder.targetSize;
  }

  /** Applies the next patch bytes. Returns null, or why the patch cannot be applied. */
  push(patch: Uint8Array): string | null {
    const failure = this.#decoder.push(patch);
    return this.#writeFailure ?? failure;
  }

  /**
   * After the patch's last byte: writes what is buffered and checks that the patch was whole and
   * the target's checksum is the patch's. Returns null, or why not.
   */
  finish(): string | null {
    const failure = this.#decoder.finish();
    if (failure !== null) return failure;
    this.#flush();
    if (this.#writeFailure !== null) return this.#writeFailure;
    const expected = this.#decoder.expectedChecksum;
    if (this.#checksum.value !== expected) {
      return `invalid patch: the target's checksum is ${this.#checksum.value.toString(16)}, ` +
        `the patch says ${expected.toString(16)}`;
    }
    return null;
  }

  #copy(offset: number, length: number): void {
    let at = offset;
    const end = offset + length;
    while (at < end && this.#writeFailure === null) {
      const take = Math.min(end - at, this.#buffer.length - this.#filled);
      this.#buffer.set(this.#options.readBase(at, take), this.#filled);
      this.#filled += take;
      at += take;
      if (this.#filled === this.#buffer.length) this.#flush();
    }
  }

  #append(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.length && this.#writeFailure === null) {
      const take = Math.min(bytes.length - at, this.#buffer.length - this.#filled);
      this.#buffer.set(bytes.subarray(at, at + take), this.#filled);
      this.#filled += take;
      at += take;
      if (this.#filled === this.#buffer.length) this.#flush();
    }
  }

  #flush(): void {
    if (this.#filled === 0 || this.#writeFailure !== null) return;
    const bytes = this.#buffer.subarray(0, this.#filled);
    this.#checksum.update(bytes);
    const failure = this.#options.write(this.#flushedTo, bytes);
    if (failure !== null) {
      this.#writeFailure = `writing the target at ${this.#flushedTo}: ${failure}`;
      return;
    }
    this.#flushedTo += this.#filled;
    this.#filled = 0;
  }
}
