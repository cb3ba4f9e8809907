/**
 * Simulated firmware: a payload starting with a small behaviour manifest, so faults that come
 * from the image itself (crash on boot, no network, failed self-test, hang) travel through the
 * real signing and boot path.
 *
 * Layout: 8-byte magic `OTASIMFW`, u16 little-endian JSON length, the JSON manifest, then
 * filler bytes derived from the manifest (so different builds differ).
 *
 * @module
 */

import { concatBytes, viewOf } from "../lib/bytes.ts";
import { seededRandom } from "../lib/random.ts";

/** How a simulated image behaves when it runs. */
export const BEHAVIORS = ["ok", "crash-on-boot", "no-network", "fail-self-test", "hang"] as const;
/** One of {@linkcode BEHAVIORS}. */
export type Behavior = typeof BEHAVIORS[number];

/** The manifest at the start of a simulated payload. */
export interface FirmwareManifest {
  /** What the image does when it runs. */
  readonly behavior: Behavior;
  /** Version string the firmware reports about itself. */
  readonly version: string;
}

const MAGIC = new TextEncoder().encode("OTASIMFW");
const MAX_MANIFEST_BYTES = 1024;

/**
 * Builds a payload of exactly `size` bytes (at least the manifest's size).
 *
 * @example
 * ```ts
 * import { buildFirmware, readManifest } from "./firmware.ts";
 * const payload = buildFirmware({ behavior: "hang", version: "1.1.0" }, 4096);
 * readManifest(payload).manifest.behavior; // "hang"
 * ```
 */
export function buildFirmware(manifest: FirmwareManifest, size: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(manifest));
  const head = new Uint8Array(MAGIC.length + 2);
  head.set(MAGIC);
  viewOf(head).setUint16(MAGIC.length, json.length, true);
  const needed = head.length + json.length;
  if (!Number.isInteger(size) || size < needed) {
    throw new RangeError(
      `Cannot build firmware: 'size' must be at least ${needed} bytes: current value is ${size}`,
    );
  }
  const filler = new Uint8Array(size - needed);
  let seed = 0;
  for (const b of json) seed = (Math.imul(seed, 31) + b) >>> 0;
  const random = seededRandom(seed);
  for (let i = 0; i < filler.length; i++) filler[i] = random.byte();
  return concatBytes([head, json, filler]);
}

/**
 * The next release of a payload, built the way real firmware changes between versions: its
 * manifest (the version string) is new, `functions` "functions" (runs of 64..256 bytes, 3 by
 * default) are rewritten and a block of `insertedBytes` (1 KiB by default) is inserted, what
 * follows shifting along (the end drops off, so the size stays). Every other byte is the
 * previous payload's: what delta updates are for. Deterministic in the manifest.
 *
 * @example
 * ```ts
 * import { buildFirmware, evolveFirmware, readManifest } from "./firmware.ts";
 * const v1 = buildFirmware({ behavior: "ok", version: "1.0.0" }, 16_384);
 * const v2 = evolveFirmware(v1, { behavior: "ok", version: "1.1.0" });
 * readManifest(v2).manifest.version; // "1.1.0"
 * v2.length === v1.length; // true
 * ```
 */
export function evolveFirmware(
  previous: Uint8Array,
  manifest: FirmwareManifest,
  changes: { readonly functions?: number; readonly insertedBytes?: number } = {},
): Uint8Array {
  const functions = changes.functions ?? 3;
  const inserted = changes.insertedBytes ?? 1024;
  const old = readManifest(previous);
  const oldHead = old.source === "manifest"
    ? MAGIC.length + 2 + viewOf(previous).getUint16(MAGIC.length, true)
    : 0;
  const next = buildFirmware(manifest, previous.length);
  const head = MAGIC.length + 2 + viewOf(next).getUint16(MAGIC.length, true);
  const room = previous.length - head;
  const body = new Uint8Array(room);
  body.set(previous.subarray(oldHead, oldHead + room));
  if (room < 4 * (inserted + 256)) return concatBytes([next.subarray(0, head), body]);
  let seed = 0;
  for (const b of next.subarray(0, head)) seed = (Math.imul(seed, 31) + b) >>> 0;
  const random = seededRandom(seed);
  // A block inserted: what follows moves along, the end drops off.
  if (inserted > 0) {
    const insertAt = Math.floor(random.next() * (room - inserted));
    body.copyWithin(insertAt + inserted, insertAt, room - inserted);
    for (let i = 0; i < inserted; i++) body[insertAt + i] = random.byte();
  }
  // Functions rewritten in place.
  for (let f = 0; f < functions; f++) {
    const length = 64 + Math.floor(random.next() * 193);
    const at = Math.floor(random.next() * (room - length));
    for (let i = 0; i < length; i++) body[at + i] = random.byte();
  }
  return concatBytes([next.subarray(0, head), body]);
}

/** What a device concludes from a payload. */
export interface ManifestReading {
  /** The behaviour to simulate. */
  readonly manifest: FirmwareManifest;
  /** Where it came from: a manifest, none (plain payload: ok), or a broken one. */
  readonly source: "manifest" | "none" | "malformed";
  /** Why a manifest was malformed. */
  readonly reason?: string;
}

/**
 * Reads the manifest; a payload without one behaves as `ok`, and a broken manifest (garbage
 * code, as far as the device can tell) crashes on boot.
 *
 * @example
 * ```ts
 * import { readManifest } from "./firmware.ts";
 * readManifest(new Uint8Array(16)).source; // "none"
 * ```
 */
export function readManifest(payload: Uint8Array): ManifestReading {
  const none: ManifestReading = {
    manifest: { behavior: "ok", version: "unknown" },
    source: "none",
  };
  if (payload.length < MAGIC.length + 2) return none;
  for (let i = 0; i < MAGIC.length; i++) if (payload[i] !== MAGIC[i]) return none;
  const broken = (reason: string): ManifestReading => ({
    manifest: { behavior: "crash-on-boot", version: "unknown" },
    source: "malformed",
    reason,
  });
  const length = viewOf(payload).getUint16(MAGIC.length, true);
  if (length > MAX_MANIFEST_BYTES || MAGIC.length + 2 + length > payload.length) {
    return broken(`manifest length ${length} is out of bounds`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(
      payload.subarray(MAGIC.length + 2, MAGIC.length + 2 + length),
    ));
  } catch (error) {
    return broken(`manifest is not JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null) return broken("manifest is not an object");
  const { behavior, version } = parsed as Record<string, unknown>;
  if (typeof behavior !== "string" || !(BEHAVIORS as readonly string[]).includes(behavior)) {
    return broken(`unknown behavior ${JSON.stringify(behavior)}`);
  }
  if (typeof version !== "string") return broken("manifest version is not a string");
  return { manifest: { behavior: behavior as Behavior, version }, source: "manifest" };
}
