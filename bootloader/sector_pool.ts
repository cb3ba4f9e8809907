/**
 * What chips share across a process: a pool of sector contents (every device holding the same
 * image shares one buffer per sector, copied before any write) and the SHA-256 states of runs of
 * such sectors, so a thousand devices hash the same image once. Both are process-wide and hold
 * their entries weakly or within a bound; a chip (`flash.ts`) uses them, nothing else does.
 *
 * @module
 */

import type { Hash } from "node:crypto";
import { bytesEqual } from "../lib/bytes.ts";

/** Process-wide pool of interned sector contents, keyed by a content hash. */
const sectorPool = new Map<string, WeakRef<Uint8Array>>();
const poolCleanup = new FinalizationRegistry<string>((key) => {
  const ref = sectorPool.get(key);
  if (ref && ref.deref() === undefined) sectorPool.delete(key);
});

function contentKey(bytes: Uint8Array): string {
  // Two independent 32-bit FNV-1a variants over 32-bit words (sector buffers are whole,
  // aligned ArrayBuffers): every word of the first and last 256 bytes (headers, trailers), one
  // in eight in between (image data differs everywhere). A hit is still confirmed byte by byte;
  // sampling made the key of a 4 KiB sector, computed for every whole-sector program, 5x cheaper.
  let a = 0x811c9dc5;
  let b = 0x01000193;
  const count = bytes.length >>> 2;
  // A view at an unaligned offset (a block inside its MQTT message) is read a word at a time
  // from its bytes, little-endian as the typed array reads an aligned one here, so both give one
  // key for one content: it used to be widened byte by byte into a new array, which cost a copy
  // and never matched the pooled sector.
  const words = bytes.byteOffset % 4 === 0
    ? new Int32Array(bytes.buffer, bytes.byteOffset, count)
    : null;
  const edge = 64;
  for (let i = 0; i < count; i += i < edge || i >= count - edge ? 1 : 8) {
    const word = words
      ? words[i]!
      : bytes[4 * i]! | bytes[4 * i + 1]! << 8 | bytes[4 * i + 2]! << 16 | bytes[4 * i + 3]! << 24;
    a = Math.imul(a ^ word, 0x01000193);
    b = Math.imul(b ^ word, 0x5bd1e995) ^ (b >>> 13);
  }
  // The bytes past the last whole word (none in a sector) go in one by one.
  for (let i = count * 4; i < bytes.length; i++) a = Math.imul(a ^ bytes[i]!, 0x01000193);
  return `${bytes.length}:${(a >>> 0).toString(36)}:${(b >>> 0).toString(36)}`;
}

/** The pool's entry for `bytes`: its key, what the pool holds there, and whether that is `bytes`. */
function poolEntry(bytes: Uint8Array) {
  const key = contentKey(bytes);
  const held = sectorPool.get(key)?.deref();
  return { key, held, same: held && bytesEqual(held, bytes) ? held : null };
}

/**
 * The pooled buffer with the same content as `bytes`, or `bytes` itself, which the pool then
 * holds (weakly) for the next chip that programs the same sector.
 */
export function internSector(bytes: Uint8Array): Uint8Array {
  const { key, held, same } = poolEntry(bytes);
  if (same) return same;
  if (!held) {
    sectorPool.set(key, new WeakRef(bytes));
    poolCleanup.register(bytes, key);
  }
  return bytes;
}

/**
 * SHA-256 states after runs of whole sectors whose buffers can no longer change (shared ones are
 * copied before any write, erased ones have none), as a trie keyed by buffer identity: a node
 * is `<parent node>:<buffer id>`. A thousand devices holding the same image in the same pooled
 * buffers hash it once; a device with one different sector branches off there and hashes the
 * rest itself. Process-wide, cleared when it grows past its bound.
 */
export const sectorDigests: {
  /** The state after the run ending at `node` followed by `buffer`, if known. */
  lookup(
    node: number,
    buffer: Uint8Array | null,
  ): { readonly node: number; readonly state: Hash } | undefined;
  /** Remembers `state` after the run `node` + `buffer`; returns the new run's node. */
  remember(node: number, buffer: Uint8Array | null, state: Hash): number;
} = {
  lookup: (node, buffer) => digestTrie.get(`${node}:${bufferId(buffer)}`),
  remember(node, buffer, state) {
    if (digestTrie.size >= DIGEST_TRIE_LIMIT) digestTrie.clear();
    const next = nextTrieNode++;
    digestTrie.set(`${node}:${bufferId(buffer)}`, { node: next, state });
    return next;
  },
};

const digestTrie = new Map<string, { readonly node: number; readonly state: Hash }>();
const DIGEST_TRIE_LIMIT = 50_000;
const bufferIds = new WeakMap<Uint8Array, number>();
let nextBufferId = 1;
let nextTrieNode = 1;

function bufferId(buffer: Uint8Array | null): number {
  if (!buffer) return 0;
  let id = bufferIds.get(buffer);
  if (id === undefined) {
    id = nextBufferId++;
    bufferIds.set(buffer, id);
  }
  return id;
}

/** The pooled buffer holding exactly the bytes of `bytes`, if there is one. */
export function pooledTwin(bytes: Uint8Array): Uint8Array | null {
  return poolEntry(bytes).same;
}
