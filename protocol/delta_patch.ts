/**
 * Patches from one image to the next in the Fossil delta format, read as a stream: the cloud
 * makes them (`npm:fossil-delta`), a device applies one while it downloads, block by block, with
 * a few dozen bytes of parser state and no copy of the patch, the base or the target in RAM.
 *
 * The format (Fossil's `delta.c`): the target's size, then commands, then a checksum, every
 * number in base-64 digits (`0-9 A-Z _ a-z ~`, most significant first):
 *
 * ```text
 * SIZE "\n"  ( COUNT "@" OFFSET ","  |  COUNT ":" <COUNT bytes> )*  CHECKSUM ";"
 * ```
 *
 * A copy takes COUNT bytes of the base at OFFSET, an insert the COUNT bytes that follow; the
 * checksum is over the whole target ({@linkcode DeltaChecksum}). Copies and inserts both write
 * the target in order, which is what lets a device apply a patch as it arrives. Why this format:
 * it has exactly two commands, both streamable with bounded state, its maker is a maintained npm
 * package, and its patches of firmware with a few changed functions are a few per cent of the
 * image (docs/updates.md has the figures). The decoder is strict and total: a malformed patch, a
 * copy outside the base, a target larger than announced come back as a reason, never an
 * exception, and nothing is emitted past the announced size.
 *
 * @example
 * ```ts
 * import { PatchDecoder } from "./delta_patch.ts";
 * const base = new TextEncoder().encode("hello world");
 * const target: number[] = [];
 * const decoder = new PatchDecoder({ baseSize: base.length, maxTargetSize: 64 }, {
 *   copy: (offset, length) => target.push(...base.subarray(offset, offset + length)),
 *   insert: (bytes) => target.push(...bytes),
 * });
 * decoder.push(new TextEncoder().encode("6\n5@0,1:!"));
 * decoder.push(new TextEncoder().encode("3NXbmh;"));
 * decoder.finish(); // null: the patch is whole
 * new TextDecoder().decode(new Uint8Array(target)); // "hello!"
 * decoder.expectedChecksum.toString(16); // "d7866c6c", the DeltaChecksum of "hello!"
 * ```
 *
 * @module
 */

/** The base-64 digits of Fossil delta numbers, by value. */
const DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";
/** Digit value by character code (-1: not a digit). */
const DIGIT_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < DIGITS.length; i++) DIGIT_VALUE[DIGITS.charCodeAt(i)] = i;

/** Digits of the largest number a patch may hold (2^32 - 1 needs 6). */
const MAX_DIGITS = 6;

const NEWLINE = 0x0a;
const AT = 0x40;
const COMMA = 0x2c;
const COLON = 0x3a;
const SEMICOLON = 0x3b;

/**
 * The Fossil delta checksum of a target written in order: each byte added at its place in a
 * big-endian 32-bit word (byte i shifted left by 8 × (3 − i mod 4)), modulo 2^32.
 *
 * @example
 * ```ts
 * import { DeltaChecksum } from "./delta_patch.ts";
 * const sum = new DeltaChecksum();
 * sum.update(new Uint8Array([1, 2, 3, 4, 5]));
 * sum.value; // 0x06020304
 * ```
 */
export class DeltaChecksum {
  #sum = 0;
  #position = 0;

  /** Adds the next bytes of the target. */
  update(bytes: Uint8Array): void {
    let sum = this.#sum;
    let lane = this.#position & 3;
    for (let i = 0; i < bytes.length; i++) {
      sum = (sum + (bytes[i]! << (24 - 8 * lane))) | 0;
      lane = (lane + 1) & 3;
    }
    this.#sum = sum;
    this.#position += bytes.length;
  }

  /** The checksum of everything added (unsigned). */
  get value(): number {
    return this.#sum >>> 0;
  }
}

/** What the decoder asks of whoever builds the target, in target order. */
export interface PatchSink {
  /** The next `length` bytes of the target are the base's at `offset` (already bounds-checked). */
  copy(offset: number, length: number): void;
  /** The next bytes of the target (a view into the pushed chunk: use it before returning). */
  insert(bytes: Uint8Array): void;
}

/** Limits a patch is held to. */
export interface PatchLimits {
  /** Size of the base the copies read from. */
  readonly baseSize: number;
  /** The largest target accepted (the slot the target goes to). */
  readonly maxTargetSize: number;
}

type Phase =
  | "size" // digits of the target size, until "\n"
  | "count" // digits of a command's count, until "@", ":" or ";"
  | "offset" // digits of a copy's offset, until ","
  | "insert" // the bytes of an insert
  | "done" // after the checksum's ";"
  | "failed";

/**
 * Decodes a Fossil delta patch pushed in chunks of any size, calling the sink for each piece of
 * the target in order. Bad input fails the decoder for good, with one reason.
 */
export class PatchDecoder {
  readonly #limits: PatchLimits;
  readonly #sink: PatchSink;
  #phase: Phase = "size";
  #number = 0;
  #digits = 0;
  #count = 0;
  #targetSize = -1;
  #produced = 0;
  #insertLeft = 0;
  #expectedChecksum = -1;
  #consumed = 0;
  #failure: string | null = null;

  constructor(limits: PatchLimits, sink: PatchSink) {
    this.#limits = limits;
    this.#sink = sink;
  }

  /** The target's size as the patch announces it (-1 until its first line is read). */
  get targetSize(): number {
    return this.#targetSize;
  }

  /** Target bytes emitted so far. */
  get produced(): number {
    return this.#produced;
  }

  /** Patch bytes read so far. */
  get consumed(): number {
    return this.#consumed;
  }

  /** Whether the patch's final ";" was read (and everything checked). */
  get done(): boolean {
    return this.#phase === "done";
  }

  /**
   * The target's checksum as the patch states it ({@linkcode DeltaChecksum}; -1 until the end):
   * the builder compares it with what it wrote.
   */
  get expectedChecksum(): number {
    return this.#expectedChecksum;
  }

  /** Why the patch was refused, if it was. */
  get failure(): string | null {
    return this.#failure;
  }

  /**
   * Reads the next bytes of the patch. Returns null, or the reason the patch is refused (the
   * same reason from then on; the sink may have been given part of the target before).
   */
  push(chunk: Uint8Array): string | null {
    if (this.#failure !== null) return this.#failure;
    let i = 0;
    while (i < chunk.length) {
      if (this.#phase === "insert") {
        const take = Math.min(this.#insertLeft, chunk.length - i);
        this.#sink.insert(chunk.subarray(i, i + take));
        this.#produced += take;
        this.#insertLeft -= take;
        i += take;
        if (this.#insertLeft === 0) this.#phase = "count";
        continue;
      }
      if (this.#phase === "done") {
        this.#consumed += i;
        return this.#fail(`${chunk.length - i} bytes after the patch's end`);
      }
      const byte = chunk[i++]!;
      const digit = byte < 128 ? DIGIT_VALUE[byte]! : -1;
      if (digit >= 0) {
        if (++this.#digits > MAX_DIGITS) {
          this.#consumed += i;
          return this.#fail(`a number of more than ${MAX_DIGITS} digits at byte ${this.#consumed}`);
        }
        this.#number = this.#number * 64 + digit;
        continue;
      }
      const reason = this.#onDelimiter(byte);
      if (reason !== null) {
        this.#consumed += i;
        return this.#fail(reason);
      }
    }
    this.#consumed += chunk.length;
    return null;
  }

  /**
   * After the last byte: null when the patch ended with its checksum and made exactly the target
   * it announced, else why not.
   */
  finish(): string | null {
    if (this.#failure !== null) return this.#failure;
    if (this.#phase !== "done") {
      return this.#fail(`the patch ends early (${this.#produced} target bytes made)`);
    }
    return null;
  }

  /** A number ended at `byte`: what it was for, and what comes next. */
  #onDelimiter(byte: number): string | null {
    const value = this.#number;
    const hadDigits = this.#digits > 0;
    this.#number = 0;
    this.#digits = 0;
    const at = this.#consumed;
    switch (this.#phase) {
      case "size":
        if (byte !== NEWLINE || !hadDigits) return "the patch does not start with the target size";
        if (value > this.#limits.maxTargetSize) {
          return `target of ${value} bytes, more than the ${this.#limits.maxTargetSize} allowed`;
        }
        this.#targetSize = value;
        this.#phase = "count";
        return null;
      case "count":
        if (!hadDigits) return `a command without a count near byte ${at}`;
        if (byte === SEMICOLON) return this.#end(value);
        if (this.#produced + value > this.#targetSize) {
          return `a command of ${value} bytes goes past the ${this.#targetSize}-byte target`;
        }
        if (byte === AT) {
          this.#count = value;
          this.#phase = "offset";
          return null;
        }
        if (byte === COLON) {
          this.#insertLeft = value;
          this.#phase = value === 0 ? "count" : "insert";
          return null;
        }
        return `unknown command '${String.fromCharCode(byte)}' near byte ${at}`;
      case "offset": {
        if (byte !== COMMA || !hadDigits) return `a copy without its offset near byte ${at}`;
        const count = this.#count;
        if (value + count > this.#limits.baseSize) {
          return `a copy of ${count} bytes at ${value} reads past the ${this.#limits.baseSize}-byte base`;
        }
        this.#sink.copy(value, count);
        this.#produced += count;
        this.#phase = "count";
        return null;
      }
      default:
        return `unexpected byte near ${at}`;
    }
  }

  #end(checksum: number): string | null {
    if (this.#produced !== this.#targetSize) {
      return `the patch made ${this.#produced} bytes of the ${this.#targetSize} announced`;
    }
    this.#expectedChecksum = checksum >>> 0;
    this.#phase = "done";
    return null;
  }

  #fail(reason: string): string {
    this.#phase = "failed";
    this.#failure = `invalid patch: ${reason}`;
    return this.#failure;
  }
}
