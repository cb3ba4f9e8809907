/**
 * The agent's persistent area: two sectors written alternately, each record committed by a
 * header (sequence number, length, SHA-256 of the payload) programmed after the payload. A power
 * cut at any point leaves the previous record readable and never a half-valid one.
 *
 * @module
 */

import { alignUp, bytesEqual, concatBytes, viewOf } from "../lib/bytes.ts";
import { sha256 } from "../protocol/signatures.ts";
import { ERASED } from "./flash.ts";
import { type FlashArea, sectorMemo } from "./flash_area.ts";

const MAGIC = new TextEncoder().encode("OTAAGST1");
const HEADER_BYTES = 48; // magic 8, sequence 4, length 4, sha256 32

const recordOf = sectorMemo<StoredRecord | null>();

interface StoredRecord {
  readonly sector: number;
  readonly sequence: number;
  readonly payload: Uint8Array;
}

/**
 * A/B record store for the agent's resume state (job id, file, received-block bitmap).
 *
 * @example
 * ```ts
 * import { NorFlash } from "./flash.ts";
 * import { FlashArea } from "./flash_area.ts";
 * import { AgentStateStore } from "./agent_store.ts";
 * const area = new FlashArea(new NorFlash({ sectorCount: 2 }), { name: "agent", firstSector: 0, sectorCount: 2 });
 * const store = new AgentStateStore(area);
 * store.save(new TextEncoder().encode("job-42"));
 * new TextDecoder().decode(store.load()!); // "job-42"
 * ```
 */
export class AgentStateStore {
  readonly #area: FlashArea;
  readonly #headerSize: number;

  /** Wraps a two-sector area. */
  constructor(area: FlashArea) {
    if (area.sectorCount < 2) {
      throw new RangeError(
        `Cannot open the agent store: it needs 2 sectors, '${area.name}' has ${area.sectorCount}`,
      );
    }
    this.#area = area;
    this.#headerSize = alignUp(HEADER_BYTES, area.writeUnit);
  }

  /** Largest payload a record holds. */
  get capacity(): number {
    return this.#area.sectorSize - this.#headerSize;
  }

  /** The latest committed payload, or null when none was ever saved. */
  load(): Uint8Array | null {
    return this.#latest()?.payload.slice() ?? null;
  }

  /** Commits `payload` as the new latest record. */
  save(payload: Uint8Array): void {
    if (payload.length > this.capacity) {
      throw new RangeError(
        `Cannot save agent state: ${payload.length} bytes exceed the ${this.capacity}-byte record`,
      );
    }
    const latest = this.#latest();
    const sector = latest ? 1 - latest.sector : 0;
    const base = sector * this.#area.sectorSize;
    this.#area.eraseSectorIfNeeded(sector);
    if (payload.length > 0) {
      const padded = new Uint8Array(alignUp(payload.length, this.#area.writeUnit)).fill(ERASED);
      padded.set(payload);
      this.#area.program(base + this.#headerSize, padded);
    }
    const header = new Uint8Array(this.#headerSize).fill(ERASED);
    header.set(MAGIC);
    viewOf(header).setUint32(8, ((latest?.sequence ?? 0) + 1) >>> 0, true);
    viewOf(header).setUint32(12, payload.length, true);
    header.set(sha256(payload), 16);
    this.#area.program(base, header);
  }

  #latest(): StoredRecord | null {
    let best: StoredRecord | null = null;
    for (const sector of [0, 1]) {
      const record = this.#read(sector);
      if (record && (!best || record.sequence > best.sequence)) best = record;
    }
    return best;
  }

  #read(sector: number): StoredRecord | null {
    // The agent saves every few blocks and each save looks for the latest record first: what a
    // sector held is read and hashed again only once it changed.
    return recordOf(this.#area, sector, () => this.#decode(sector));
  }

  #decode(sector: number): StoredRecord | null {
    const base = sector * this.#area.sectorSize;
    const header = this.#area.read(base, HEADER_BYTES);
    if (!bytesEqual(header.subarray(0, 8), MAGIC)) return null;
    const view = viewOf(header);
    const length = view.getUint32(12, true);
    if (length > this.capacity) return null;
    const payload = this.#area.read(base + this.#headerSize, length);
    if (!bytesEqual(sha256(payload), header.subarray(16, 48))) return null;
    return { sector, sequence: view.getUint32(8, true), payload: concatBytes([payload]) };
  }
}
