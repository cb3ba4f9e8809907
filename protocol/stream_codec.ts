/**
 * CBOR messages of AWS IoT MQTT-based file delivery (GetStream): the request the agent publishes
 * on `.../streams/<stream>/get/cbor` and the data block it receives on `.../data/cbor`. Decoding
 * is strict and total: anything malformed comes back with a reason.
 *
 * Extension: a data block may carry `h`, the SHA-256 of `p`. AWS does not send it (the agent then
 * relies on the file signature alone); our stream service does, so a block corrupted in transit is
 * dropped and re-requested instead of failing the whole file at close.
 *
 * @module
 */

import { decode, encode, Token, Tokenizer, Type } from "cborg";

/** A GetStream request. */
export interface GetStreamRequest {
  /** Client token (≤ 64 bytes). */
  readonly clientToken: string;
  /** Stream file id (0..255). */
  readonly fileId: number;
  /** Block size (256..131072). */
  readonly blockSize: number;
  /** Block offset of the bitmap's first bit. */
  readonly offset: number;
  /** Most blocks to return for this request. */
  readonly numberOfBlocks: number;
  /** Wanted blocks from `offset` (1 = wanted). */
  readonly bitmap: Uint8Array;
}

/** A data block. */
export interface StreamBlock {
  readonly fileId: number;
  readonly blockId: number;
  readonly blockSize: number;
  readonly payload: Uint8Array;
  /** SHA-256 of the payload, when the service sent it. */
  readonly hash: Uint8Array | null;
}

/** The error codes of a GetStream rejection (AWS's, on `.../rejected/cbor`). */
export type StreamErrorCode =
  | "InvalidCbor"
  | "InvalidRequest"
  | "BlockSizeOutOfBounds"
  | "OffsetOutOfBounds"
  | "BlockCountLimitExceeded"
  | "BlockBitmapLimitExceeded"
  | "ResourceNotFound";

/** A decode that failed: the code a service answers with, and a reason for people. */
export interface DecodeError {
  readonly ok: false;
  readonly code: StreamErrorCode;
  readonly reason: string;
}

/** Outcome of a decode. */
export type Decoded<T> = { readonly ok: true; readonly value: T } | DecodeError;

/** Smallest stream block size (AWS: 256 bytes). */
export const MIN_BLOCK_SIZE = 256;
/** Largest stream block size (AWS: 128 KiB). */
export const MAX_BLOCK_SIZE = 128 * 1024;

/** Largest CBOR message accepted (a 128 KiB block plus framing). */
export const MAX_STREAM_MESSAGE = MAX_BLOCK_SIZE + 512;

/**
 * The one rule for a block size, wherever one is chosen (agent, fleet, demo, requests): a power
 * of two from {@linkcode MIN_BLOCK_SIZE} to {@linkcode MAX_BLOCK_SIZE}. Null when `size` obeys
 * it, else what is wrong.
 *
 * @example
 * ```ts
 * import { blockSizeProblem } from "./stream_codec.ts";
 * blockSizeProblem(4096); // null
 * blockSizeProblem(1000); // "must be a power of two from 256 to 131072"
 * ```
 */
export function blockSizeProblem(size: number): string | null {
  const ok = Number.isInteger(size) && size >= MIN_BLOCK_SIZE && size <= MAX_BLOCK_SIZE &&
    (size & (size - 1)) === 0;
  return ok ? null : `must be a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE}`;
}

function failure(code: StreamErrorCode, reason: string): DecodeError {
  return { ok: false, code, reason };
}

/**
 * Encodes a GetStream request with the keys `c`, `f`, `l`, `o`, `n`, `b`.
 *
 * @example
 * ```ts
 * import { decodeGetStreamRequest, encodeGetStreamRequest } from "./stream_codec.ts";
 * const bytes = encodeGetStreamRequest({ clientToken: "rdy", fileId: 0, blockSize: 4096, offset: 0,
 *   numberOfBlocks: 8, bitmap: new Uint8Array([0xff]) });
 * decodeGetStreamRequest(bytes).ok; // true
 * ```
 */
export function encodeGetStreamRequest(request: GetStreamRequest): Uint8Array {
  return encode({
    c: request.clientToken,
    f: request.fileId,
    l: request.blockSize,
    o: request.offset,
    n: request.numberOfBlocks,
    b: request.bitmap,
  });
}

/**
 * Encodes a data block with the keys `f`, `i`, `l`, `p` (and `h` when given).
 *
 * @example
 * ```ts
 * import { decodeStreamBlock, encodeStreamBlock } from "./stream_codec.ts";
 * const bytes = encodeStreamBlock({ fileId: 0, blockId: 2, blockSize: 4, payload: new Uint8Array(4), hash: null });
 * decodeStreamBlock(bytes).ok; // true
 * ```
 */
export function encodeStreamBlock(block: StreamBlock): Uint8Array {
  const map: Record<string, unknown> = {
    f: block.fileId,
    i: block.blockId,
    l: block.blockSize,
    p: block.payload,
  };
  if (block.hash) map.h = block.hash;
  return encode(map);
}

/** Bytes of the CBOR length argument after a major-type byte with this minor (24..26). */
const LENGTH_BYTES: Readonly<Record<number, number>> = { 24: 1, 25: 2, 26: 4 };
/** The least length each argument size may carry in strict (preferred) encoding. */
const LEAST_LENGTH: Readonly<Record<number, number>> = { 24: 24, 25: 0x100, 26: 0x10000 };

/**
 * cborg's tokenizer, except that a definite-length byte string comes out as a view of the
 * message rather than a copy. Every block of every device was copied (a new ArrayBuffer, 10 µs
 * with its garbage collection in a fleet Worker) only to be hashed and programmed into flash,
 * which copies it anyway. Anything else, and any byte string cborg would refuse (short data, a
 * length in more bytes than needed), goes to cborg's own path with its own errors.
 */
class ViewingTokenizer extends Tokenizer {
  override next(): Token {
    const data = this.data;
    const at = this._pos;
    const head = data[at]!;
    if (head >>> 5 === 2) {
      const length = preferredArgument(data, at);
      const start = at + headSize(head);
      if (length >= 0 && start + length <= data.length) {
        this._pos = start + length;
        return new Token(Type.bytes, data.subarray(start, start + length), start - at + length);
      }
    }
    return super.next();
  }
}

/**
 * The argument of the CBOR head at `at` (the minor itself, or the 1, 2 or 4 bytes after it), or
 * -1 when the head is cut short, takes 8 bytes, or is not in preferred (shortest) encoding: what
 * both of this module's own readers leave to cborg.
 */
function preferredArgument(data: Uint8Array, at: number): number {
  const minor = data[at]! & 31;
  if (minor < 24) return minor;
  const size = LENGTH_BYTES[minor];
  if (size === undefined || at + 1 + size > data.length) return -1;
  let value = 0;
  for (let i = 1; i <= size; i++) value = value * 256 + data[at + i]!;
  return value >= LEAST_LENGTH[minor]! ? value : -1;
}

/** Bytes of a CBOR head whose argument {@linkcode preferredArgument} read. */
function headSize(head: number): number {
  const minor = head & 31;
  return minor < 24 ? 1 : 1 + LENGTH_BYTES[minor]!;
}

/**
 * Whole, cborg's defaults included: decode() fills in its defaults for itself, but a tokenizer
 * handed to it reads only what it was constructed with.
 */
const DECODE_OPTIONS = {
  useMaps: false,
  rejectDuplicateMapKeys: true,
  strict: true,
  allowIndefinite: true,
  allowUndefined: true,
  allowBigInt: true,
} as const;

/**
 * Strict CBOR decoding as cborg does it (maps as objects, duplicate keys and non-preferred
 * encodings refused, throwing what cborg throws), except that byte strings are views of `bytes`:
 * keep one past the message only as a copy.
 *
 * @example
 * ```ts
 * import { decodeCbor } from "./stream_codec.ts";
 * decodeCbor(new Uint8Array([0xa1, 0x61, 0x70, 0x42, 1, 2])); // { p: Uint8Array [1, 2] }
 * ```
 */
export function decodeCbor(bytes: Uint8Array): unknown {
  // A plain view: cborg's tokenizer indexes it byte by byte, faster than through a Buffer.
  const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  return decode(view, { ...DECODE_OPTIONS, tokenizer: new ViewingTokenizer(view, DECODE_OPTIONS) });
}

/**
 * The fields of a data block in the shape every stream service sends, read without a CBOR
 * library: a map of at most five entries whose keys are the one-letter texts `f`, `i`, `l`, `p`,
 * `h` (each once) and whose values are unsigned integers or byte strings of up to four length
 * bytes, in preferred encoding, ending exactly at the message's end. Null for anything else, which
 * {@linkcode decodeCbor} then decodes (and refuses) as it always does: what this returns is what
 * it would, byte strings included as views (a property test holds them together). Every device
 * decodes every block: cborg's tokens and key strings were most of a block's decoding cost.
 *
 * @example
 * ```ts
 * import { blockFields, encodeStreamBlock } from "./stream_codec.ts";
 * blockFields(encodeStreamBlock({ fileId: 1, blockId: 2, blockSize: 256, payload: new Uint8Array(3), hash: null }));
 * // { f: 1, i: 2, l: 256, p: Uint8Array(3) }
 * ```
 */
export function blockFields(message: Uint8Array): Record<string, number | Uint8Array> | null {
  // A plain view, as decodeCbor makes: a Buffer's subarray would be a Buffer (whose slice() is
  // no copy).
  const bytes = new Uint8Array(message.buffer, message.byteOffset, message.length);
  const head = bytes[0];
  if (head === undefined || head >>> 5 !== 5) return null;
  const entries = head & 31;
  if (entries > 5) return null;
  const fields: Record<string, number | Uint8Array> = {};
  let at = 1;
  for (let entry = 0; entry < entries; entry++) {
    // A key: the text string of one byte, one of the five.
    if (bytes[at] !== 0x61) return null;
    const key = KEY_NAMES[bytes[at + 1]!];
    if (key === undefined || key in fields) return null;
    at += 2;
    const item = bytes[at];
    if (item === undefined) return null;
    const major = item >>> 5;
    if (major !== 0 && major !== 2) return null;
    const argument = preferredArgument(bytes, at);
    if (argument < 0) return null;
    at += headSize(item);
    if (major === 0) {
      fields[key] = argument;
      continue;
    }
    if (at + argument > bytes.length) return null;
    fields[key] = bytes.subarray(at, at + argument);
    at += argument;
  }
  return at === bytes.length ? fields : null;
}

/** The keys a data block has, by their one byte. */
const KEY_NAMES: Readonly<Record<number, string>> = {
  0x66: "f",
  0x69: "i",
  0x6c: "l",
  0x70: "p",
  0x68: "h",
};

function decodeMap(bytes: Uint8Array): Decoded<Record<string, unknown>> {
  if (bytes.length === 0) return failure("InvalidCbor", "empty CBOR message");
  if (bytes.length > MAX_STREAM_MESSAGE) {
    return failure("InvalidRequest", `CBOR message of ${bytes.length} bytes is too large`);
  }
  let value: unknown;
  try {
    value = decodeCbor(bytes);
  } catch (error) {
    return failure("InvalidCbor", `invalid CBOR: ${(error as Error).message}`);
  }
  if (
    typeof value !== "object" || value === null || Array.isArray(value) ||
    value instanceof Uint8Array
  ) {
    return failure("InvalidRequest", "CBOR message is not a map");
  }
  return { ok: true, value: value as Record<string, unknown> };
}

function uint(
  map: Record<string, unknown>,
  key: string,
  max: number,
  code: StreamErrorCode = "InvalidRequest",
): number | DecodeError {
  const value = map[key];
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    return failure(code, `key '${key}' must be an integer 0..${max}`);
  }
  return value;
}

/**
 * Decodes a data block.
 *
 * @example
 * ```ts
 * import { decodeStreamBlock } from "./stream_codec.ts";
 * decodeStreamBlock(new Uint8Array([0xff])).ok; // false
 * ```
 */
export function decodeStreamBlock(bytes: Uint8Array): Decoded<StreamBlock> {
  const fields = bytes.length <= MAX_STREAM_MESSAGE ? blockFields(bytes) : null;
  const map = fields ? { ok: true as const, value: fields } : decodeMap(bytes);
  if (!map.ok) return map;
  const fileId = uint(map.value, "f", 255);
  const blockId = uint(map.value, "i", 0xffffffff);
  const blockSize = uint(map.value, "l", MAX_BLOCK_SIZE, "BlockSizeOutOfBounds");
  for (const field of [fileId, blockId, blockSize]) {
    if (typeof field !== "number") return field;
  }
  const payload = map.value.p;
  if (!(payload instanceof Uint8Array)) {
    return failure("InvalidRequest", "key 'p' must be a byte string");
  }
  const hash = map.value.h;
  if (hash !== undefined && (!(hash instanceof Uint8Array) || hash.length !== 32)) {
    return failure("InvalidRequest", "key 'h' must be a 32-byte SHA-256");
  }
  return {
    ok: true,
    value: {
      fileId: fileId as number,
      blockId: blockId as number,
      blockSize: blockSize as number,
      payload,
      hash: hash instanceof Uint8Array ? hash : null,
    },
  };
}

/**
 * Decodes a GetStream request (what the stream service reads).
 *
 * @example
 * ```ts
 * import { decodeGetStreamRequest } from "./stream_codec.ts";
 * decodeGetStreamRequest(new Uint8Array([0xa0])).ok; // false: keys missing
 * ```
 */
export function decodeGetStreamRequest(bytes: Uint8Array): Decoded<GetStreamRequest> {
  const map = decodeMap(bytes);
  if (!map.ok) return map;
  const m = map.value;
  const clientToken = m.c ?? "";
  if (typeof clientToken !== "string" || new TextEncoder().encode(clientToken).length > 64) {
    return failure("InvalidRequest", "key 'c' must be a string of at most 64 bytes");
  }
  const fileId = uint(m, "f", 255);
  const blockSize = uint(m, "l", MAX_BLOCK_SIZE, "BlockSizeOutOfBounds");
  const offset = m.o === undefined ? 0 : uint(m, "o", 98304, "OffsetOutOfBounds");
  const numberOfBlocks = m.n === undefined ? 0 : uint(m, "n", 98304, "BlockCountLimitExceeded");
  for (const field of [fileId, blockSize, offset, numberOfBlocks]) {
    if (typeof field !== "number") return field;
  }
  const sizeProblem = blockSizeProblem(blockSize as number);
  if (sizeProblem !== null) return failure("BlockSizeOutOfBounds", `key 'l' ${sizeProblem}`);
  const bitmap = m.b ?? new Uint8Array(0);
  if (!(bitmap instanceof Uint8Array) || bitmap.length >= 12288) {
    return failure(
      "BlockBitmapLimitExceeded",
      "key 'b' must be a byte string shorter than 12288 bytes",
    );
  }
  return {
    ok: true,
    value: {
      clientToken,
      fileId: fileId as number,
      blockSize: blockSize as number,
      offset: offset as number,
      numberOfBlocks: (numberOfBlocks as number) ||
        Math.floor(MAX_BLOCK_SIZE / (blockSize as number)),
      bitmap,
    },
  };
}
