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

import { decode, encode } from "cborg";

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

/** Outcome of a decode. */
export type Decoded<T> = { readonly ok: true; readonly value: T } | {
  readonly ok: false;
  readonly reason: string;
};

/** Largest CBOR message accepted (a 128 KiB block plus framing). */
export const MAX_STREAM_MESSAGE = 128 * 1024 + 512;

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

function decodeMap(bytes: Uint8Array): Decoded<Record<string, unknown>> {
  if (bytes.length === 0) return { ok: false, reason: "empty CBOR message" };
  if (bytes.length > MAX_STREAM_MESSAGE) {
    return { ok: false, reason: `CBOR message of ${bytes.length} bytes is too large` };
  }
  let value: unknown;
  try {
    value = decode(bytes, { useMaps: false, rejectDuplicateMapKeys: true, strict: true });
  } catch (error) {
    return { ok: false, reason: `invalid CBOR: ${(error as Error).message}` };
  }
  if (
    typeof value !== "object" || value === null || Array.isArray(value) ||
    value instanceof Uint8Array
  ) {
    return { ok: false, reason: "CBOR message is not a map" };
  }
  return { ok: true, value: value as Record<string, unknown> };
}

function uint(map: Record<string, unknown>, key: string, max: number): number | string {
  const value = map[key];
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    return `key '${key}' must be an integer 0..${max}`;
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
  const map = decodeMap(bytes);
  if (!map.ok) return map;
  const fileId = uint(map.value, "f", 255);
  const blockId = uint(map.value, "i", 0xffffffff);
  const blockSize = uint(map.value, "l", 131072);
  for (const field of [fileId, blockId, blockSize]) {
    if (typeof field === "string") return { ok: false, reason: field };
  }
  const payload = map.value.p;
  if (!(payload instanceof Uint8Array)) {
    return { ok: false, reason: "key 'p' must be a byte string" };
  }
  const hash = map.value.h;
  if (hash !== undefined && (!(hash instanceof Uint8Array) || hash.length !== 32)) {
    return { ok: false, reason: "key 'h' must be a 32-byte SHA-256" };
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
    return { ok: false, reason: "key 'c' must be a string of at most 64 bytes" };
  }
  const fileId = uint(m, "f", 255);
  const blockSize = uint(m, "l", 131072);
  const offset = m.o === undefined ? 0 : uint(m, "o", 98304);
  const numberOfBlocks = m.n === undefined ? 0 : uint(m, "n", 98304);
  for (const field of [fileId, blockSize, offset, numberOfBlocks]) {
    if (typeof field === "string") return { ok: false, reason: field };
  }
  if ((blockSize as number) < 256) return { ok: false, reason: "key 'l' must be at least 256" };
  const bitmap = m.b ?? new Uint8Array(0);
  if (!(bitmap instanceof Uint8Array) || bitmap.length >= 12288) {
    return { ok: false, reason: "key 'b' must be a byte string shorter than 12288 bytes" };
  }
  return {
    ok: true,
    value: {
      clientToken,
      fileId: fileId as number,
      blockSize: blockSize as number,
      offset: offset as number,
      numberOfBlocks: (numberOfBlocks as number) || Math.floor(131072 / (blockSize as number)),
      bitmap,
    },
  };
}
