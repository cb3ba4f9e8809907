/**
 * A NOR flash chip: erase sets a whole sector to 0xFF, programming can only clear bits, and a
 * power cut can stop (and tear) any program or erase.
 *
 * Memory: an erased sector holds no buffer at all, and a sector whose last write unit has just
 * been programmed is interned in a process-wide pool, so a thousand devices holding the same
 * image share one copy of each sector (copy-on-write on the next program).
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";
import { isFilledWith } from "../lib/bytes.ts";
import { type Random, seededRandom } from "../lib/random.ts";
import { internSector, pooledTwin, sectorDigests } from "./sector_pool.ts";

/** The erased value of every byte. */
export const ERASED = 0xff;

/** Shape of the chip. */
export interface FlashGeometry {
  /** Bytes per erase sector. @default {4096} */
  readonly sectorSize: number;
  /** Program granularity: offsets and lengths must be multiples of it. @default {8} */
  readonly writeUnit: number;
  /** Number of sectors. */
  readonly sectorCount: number;
  /** Erases a sector survives; the next one fails. @default {10000} */
  readonly eraseCycleLimit: number;
}

/** Options for {@linkcode NorFlash}. */
export interface NorFlashOptions extends Partial<FlashGeometry> {
  /** Number of sectors (required). */
  readonly sectorCount: number;
  /**
   * Refuse any second program of a write unit that is not fully erased (MCUboot's simulator
   * does this). When false, a program may clear more bits of a unit but never set one.
   * @default {true}
   */
  readonly strict?: boolean;
  /** Seed of the generator that decides how a torn operation tears. @default {1} */
  readonly seed?: number;
  /**
   * Record which sectors change, so their contents can be handed over
   * ({@linkcode NorFlash.takeChanges}), such as to another thread that outlives the one running
   * the device. @default {false}
   */
  readonly trackChanges?: boolean;
}

/**
 * Sectors that changed: index, contents (null = erased) and erase count. Applied in order to a
 * chip that held the same contents before, they give the chip's state at the time they were taken.
 */
export type FlashChanges = readonly (readonly [
  sector: number,
  data: Uint8Array | null,
  wear: number,
])[];

/** Why a flash operation was refused. */
export type FlashErrorCode =
  | "out-of-range"
  | "misaligned"
  | "not-erased"
  | "bit-set"
  | "worn-out"
  | "powered-off"
  | "protected";

/**
 * How the flash controller guards a sector once provisioned: `read-only` refuses programs and
 * erases (boot ROM, root key, frozen code); `one-time-programmable` refuses erases only, so bits
 * can still be blown but never restored (the anti-rollback fuses).
 */
export type SectorProtection = "none" | "read-only" | "one-time-programmable";

/** A write the controller refused. */
export interface ProtectionRefusal {
  readonly operation: "program" | "erase";
  readonly sector: number;
  readonly protection: SectorProtection;
}

/** A refused flash operation; the chip is unchanged. */
export class FlashError extends Error {
  /** Machine-readable reason. */
  readonly code: FlashErrorCode;
  /** Builds the error. */
  constructor(code: FlashErrorCode, message: string) {
    super(message);
    this.name = "FlashError";
    this.code = code;
  }
}

/** Thrown by the flash operation at which power was cut; the device is now off. */
export class PowerCutError extends Error {
  /** 1-based index of the interrupted operation (programs and erases are counted). */
  readonly operation: number;
  /** Whether the interrupted operation was partly carried out. */
  readonly torn: boolean;
  /** Builds the error. */
  constructor(operation: number, torn: boolean) {
    super(`Power cut at flash operation ${operation}${torn ? " (torn)" : ""}`);
    this.name = "PowerCutError";
    this.operation = operation;
    this.torn = torn;
  }
}

/**
 * True when `error` is a power cut, which no layer above the flash may swallow.
 *
 * @example
 * ```ts
 * import { isPowerCut, PowerCutError } from "./flash.ts";
 * isPowerCut(new PowerCutError(3, false)); // true
 * ```
 */
export function isPowerCut(error: unknown): error is PowerCutError {
  return error instanceof PowerCutError;
}

/** Operation counters. */
export interface FlashStats {
  /** Read calls. */
  reads: number;
  /** Bytes read. */
  bytesRead: number;
  /** Program calls that changed the chip (or were cut). */
  programs: number;
  /** Bytes programmed. */
  bytesProgrammed: number;
  /** Sector erases (including cut ones). */
  erases: number;
  /** Programs + erases: the index a power cut counts in. */
  operations: number;
  /** Programs and erases the controller refused on protected sectors. */
  refused: number;
}

/** Refusals remembered for the boot log and reports. */
const REFUSALS_KEPT = 32;

/** When and how the next power cut happens. */
export interface PowerCutPlan {
  /** 1-based operation index (programs and erases since the plan was set) to interrupt. */
  readonly atOperation: number;
  /** Tear the operation (partial program / partial erase) instead of skipping it. */
  readonly torn: boolean;
}

/**
 * A NOR flash chip.
 *
 * @example
 * ```ts
 * import { NorFlash } from "./flash.ts";
 * const flash = new NorFlash({ sectorCount: 4 });
 * flash.program(0, new Uint8Array(8).fill(0x12));
 * flash.read(0, 2); // Uint8Array [0x12, 0x12]
 * flash.eraseSector(0);
 * flash.read(0, 1); // Uint8Array [0xff]
 * ```
 */
export class NorFlash {
  /** The chip's shape. */
  readonly geometry: FlashGeometry;
  /** Strict single-program mode. */
  readonly strict: boolean;
  #sectors: (Uint8Array | null)[];
  /** Sector buffers that may be referenced by other chips or the pool: copy before writing. */
  #shared: Uint8Array;
  #wear: Uint32Array;
  #versions: Uint32Array;
  #protection: SectorProtection[];
  readonly #refusals: ProtectionRefusal[] = [];
  #stats: FlashStats = {
    reads: 0,
    bytesRead: 0,
    programs: 0,
    bytesProgrammed: 0,
    erases: 0,
    operations: 0,
    refused: 0,
  };
  #cut: PowerCutPlan | null = null;
  #operationsSincePlan = 0;
  #poweredOn = true;
  #random: Random;
  /** Sectors changed since the last {@linkcode NorFlash.takeChanges}; null when not tracked. */
  #changed: Uint8Array | null;
  #changedCount = 0;
  /** Told when a power cut strikes an operation (the device uses it to lose its RAM). */
  onPowerCut: (() => void) | null = null;

  /** Creates an erased chip. */
  constructor(options: NorFlashOptions) {
    const geometry: FlashGeometry = {
      sectorSize: options.sectorSize ?? 4096,
      writeUnit: options.writeUnit ?? 8,
      sectorCount: options.sectorCount,
      eraseCycleLimit: options.eraseCycleLimit ?? 10_000,
    };
    validateGeometry(geometry);
    this.geometry = geometry;
    this.strict = options.strict ?? true;
    this.#sectors = new Array(geometry.sectorCount).fill(null);
    this.#shared = new Uint8Array(geometry.sectorCount);
    this.#wear = new Uint32Array(geometry.sectorCount);
    this.#versions = new Uint32Array(geometry.sectorCount);
    this.#protection = new Array(geometry.sectorCount).fill("none");
    this.#random = seededRandom(options.seed ?? 1);
    this.#changed = options.trackChanges ? new Uint8Array(geometry.sectorCount) : null;
  }

  /** Total bytes. */
  get size(): number {
    return this.geometry.sectorSize * this.geometry.sectorCount;
  }

  /** A snapshot of the counters. */
  get stats(): Readonly<FlashStats> {
    return { ...this.#stats };
  }

  /**
   * Programs and erases so far (refused ones excluded): a state derived from the contents
   * (trailers, update state) is still valid while this number has not moved.
   */
  get generation(): number {
    return this.#stats.operations;
  }

  /**
   * A number that changes whenever sector `sector`'s contents may have (program, erase, copy,
   * applied change, torn write): what was read from it stays true while it does not move. Needs
   * power, as a read does.
   */
  sectorVersion(sector: number): number {
    this.#checkPower();
    this.#checkSector(sector);
    return this.#versions[sector]!;
  }

  /**
   * Guards `count` sectors from `firstSector` (the provisioning step that freezes them).
   * Protection only ever tightens: nothing, the boot ROM included, can lift it again.
   *
   * @example
   * ```ts
   * import { NorFlash } from "./flash.ts";
   * const chip = new NorFlash({ sectorCount: 4 });
   * chip.protect(3, 1, "one-time-programmable");
   * chip.protection(3); // "one-time-programmable"
   * ```
   */
  protect(firstSector: number, count: number, protection: SectorProtection): void {
    const rank = { "none": 0, "one-time-programmable": 1, "read-only": 2 } as const;
    for (let s = firstSector; s < firstSector + count; s++) {
      this.#checkSector(s);
      if (rank[protection] < rank[this.#protection[s]!]) {
        throw new FlashError(
          "protected",
          `Cannot lower the protection of sector ${s} from ${this.#protection[s]} to ${protection}`,
        );
      }
    }
    // Clones share the array until one of them changes it (provisioning, before any clone).
    this.#protection = [...this.#protection];
    for (let s = firstSector; s < firstSector + count; s++) this.#protection[s] = protection;
  }

  /** How a sector is guarded. */
  protection(sector: number): SectorProtection {
    this.#checkSector(sector);
    return this.#protection[sector]!;
  }

  /** The latest refused writes (at most 32), oldest first. */
  get refusals(): readonly ProtectionRefusal[] {
    return [...this.#refusals];
  }

  #refuse(operation: "program" | "erase", sector: number): FlashError {
    const protection = this.#protection[sector]!;
    this.#stats.refused++;
    this.#refusals.push({ operation, sector, protection });
    if (this.#refusals.length > REFUSALS_KEPT) this.#refusals.shift();
    return new FlashError(
      "protected",
      `Cannot ${operation} sector ${sector}: it is ${protection} (refused by the flash controller)`,
    );
  }

  /** Erase count of one sector. */
  wear(sector: number): number {
    this.#checkSector(sector);
    return this.#wear[sector]!;
  }

  /** Whether the chip has power. */
  get poweredOn(): boolean {
    return this.#poweredOn;
  }

  /**
   * Arms a power cut: the `atOperation`-th program or erase from now is interrupted (torn
   * or not carried out at all), throws {@linkcode PowerCutError}, and the chip stays off until
   * {@linkcode NorFlash.powerOn}.
   */
  cutPowerAt(plan: PowerCutPlan): void {
    if (!Number.isInteger(plan.atOperation) || plan.atOperation < 1) {
      throw new RangeError(
        `Cannot arm a power cut: 'atOperation' must be a positive integer: current value is ${plan.atOperation}`,
      );
    }
    this.#cut = plan;
    this.#operationsSincePlan = 0;
  }

  /** Disarms a pending power cut. */
  cancelPowerCut(): void {
    this.#cut = null;
  }

  /** Cuts power now, between operations. An armed cut stays armed: it counts across resets. */
  powerOff(): void {
    this.#poweredOn = false;
  }

  /** Restores power. Contents are what the flash held when power went. */
  powerOn(): void {
    this.#poweredOn = true;
  }

  /** Reads `length` bytes at `offset` into a new array. */
  read(offset: number, length: number): Uint8Array {
    this.#countRead(offset, length);
    const out = new Uint8Array(length);
    this.#forEachSectorSpan(offset, length, (sector, within, from, to) => {
      out.set(this.#piece(sector, within, to - from), from);
    });
    return out;
  }

  #countRead(offset: number, length: number): void {
    this.#checkPower();
    this.#checkRange(offset, length, "read");
    this.#stats.reads++;
    this.#stats.bytesRead += length;
  }

  /**
   * SHA-256 of a range (counts as a read). The same bytes as hashing {@linkcode NorFlash.read},
   * computed once per process for runs of sectors no chip can change any more.
   */
  digest(offset: number, length: number): Uint8Array {
    this.#countRead(offset, length);
    const { sectorSize } = this.geometry;
    // The hash being computed (once the trie has no state for what was read so far), the trie's
    // state for the longest run matched, and that run's node.
    const run: { live: Hash | null; matched: Hash | null; node: number } = {
      live: null,
      matched: null,
      node: 0,
    };
    const liveHash = () => run.live ??= run.matched ? run.matched.copy() : createHash("sha256");
    let memoizing = offset % sectorSize === 0;
    this.#forEachSectorSpan(offset, length, (sector, within, from, to) => {
      const stored = this.#sectors[sector] ?? null;
      memoizing &&= to - from === sectorSize && (stored === null || this.#shared[sector] === 1);
      if (!memoizing) {
        liveHash().update(this.#piece(sector, within, to - from));
        return;
      }
      const known = sectorDigests.lookup(run.node, stored);
      if (known && !run.live) {
        // A run every device shares: its state is known, its bytes need not even be viewed.
        run.matched = known.state;
        run.node = known.node;
        return;
      }
      const live = liveHash();
      live.update(this.#piece(sector, within, to - from));
      run.node = sectorDigests.remember(run.node, stored, live.copy());
    });
    const final = run.live ?? run.matched?.copy() ?? createHash("sha256");
    return new Uint8Array(final.digest());
  }

  #erased: Uint8Array | null = null;

  #erasedSector(): Uint8Array {
    this.#erased ??= new Uint8Array(this.geometry.sectorSize).fill(ERASED);
    return this.#erased;
  }

  /** True when the range reads as erased (a blank check; counts as a read). */
  isErased(offset: number, length: number): boolean {
    this.#checkPower();
    this.#checkRange(offset, length, "blank-check");
    this.#stats.reads++;
    const { sectorSize } = this.geometry;
    const start = offset % sectorSize;
    if (start + length <= sectorSize) {
      // Inside one sector (a swap asks this of every sector it writes): no closure to make.
      const stored = this.#sectors[(offset - start) / sectorSize];
      return !stored || isFilledWith(stored, ERASED, start, start + length);
    }
    let erased = true;
    this.#forEachSectorSpan(offset, length, (sector, within, from, to) => {
      const stored = this.#sectors[sector];
      erased = !stored || isFilledWith(stored, ERASED, within, within + to - from);
      return erased;
    });
    return erased;
  }

  /**
   * Programs `data` at `offset`. Offset and length must be write-unit aligned. Bits can only
   * go from 1 to 0; in strict mode every target unit must be fully erased.
   */
  program(offset: number, data: Uint8Array): void {
    this.#checkPower();
    this.#checkRange(offset, data.length, "program");
    const { writeUnit, sectorSize } = this.geometry;
    if (offset % writeUnit !== 0 || data.length % writeUnit !== 0) {
      throw new FlashError(
        "misaligned",
        `Cannot program ${data.length} bytes at 0x${
          offset.toString(16)
        }: offset and length must be multiples of the ${writeUnit}-byte write unit`,
      );
    }
    if (data.length === 0) return;
    for (let s = Math.floor(offset / sectorSize); s * sectorSize < offset + data.length; s++) {
      if (this.#protection[s] === "read-only") throw this.#refuse("program", s);
    }
    this.#checkProgrammable(offset, data);
    const cut = this.#countOperation();
    this.#stats.programs++;
    const whole = offset % sectorSize === 0 && data.length === sectorSize;
    const same = !cut && whole && !this.#sectors[offset / sectorSize] ? pooledTwin(data) : null;
    if (same) {
      // A whole erased sector programmed with bytes the pool holds (every device of a fleet
      // receiving the same image) takes the pooled buffer: no copy to make and collect.
      this.#adopt(offset / sectorSize, same);
      this.#stats.bytesProgrammed += data.length;
      return;
    }
    if (cut) {
      if (!cut.torn) throw this.#powerCut(false);
      const units = this.#random.below(data.length / writeUnit);
      const at = units * writeUnit;
      this.#programBytes(offset, data.subarray(0, at), null);
      this.#stats.bytesProgrammed += at;
      // The unit being programmed when power went has a random subset of its 0 bits written.
      this.#programBytes(offset + at, data.subarray(at, at + writeUnit), this.#random);
      throw this.#powerCut(true);
    }
    this.#programBytes(offset, data, null);
    this.#stats.bytesProgrammed += data.length;
    const end = offset + data.length;
    if (end % sectorSize === 0) this.#internSector(end / sectorSize - 1);
  }

  /** Erases one sector to 0xFF. */
  eraseSector(sector: number): void {
    this.#checkPower();
    this.#checkSector(sector);
    if (this.#protection[sector] !== "none") throw this.#refuse("erase", sector);
    if (this.#wear[sector]! >= this.geometry.eraseCycleLimit) {
      throw new FlashError(
        "worn-out",
        `Cannot erase sector ${sector}: it is worn out after ${this.#wear[sector]} erase cycles`,
      );
    }
    const cut = this.#countOperation();
    this.#stats.erases++;
    if (cut && !cut.torn) throw this.#powerCut(false);
    this.#wear[sector]!++;
    this.#versions[sector]!++;
    this.#markChanged(sector);
    if (cut) {
      // A torn erase pushes some bits towards 1: bytes end up erased, unchanged or in between.
      const old = this.#sectors[sector];
      if (old) {
        const torn = this.#newSector(old);
        const progress = this.#random.next();
        for (let i = 0; i < torn.length; i++) {
          torn[i] = this.#random.next() < progress
            ? ERASED
            : torn[i]! | (this.#random.byte() & this.#random.byte());
        }
        this.#sectors[sector] = torn;
        this.#shared[sector] = 0;
      }
      throw this.#powerCut(true);
    }
    this.#sectors[sector] = null;
    this.#shared[sector] = 0;
  }

  /**
   * Copies sector `from` onto sector `to` as a bootloader would: `chunkSize` bytes at a time, read
   * then programmed, chunks that read as erased skipped. Reads, programs and operations count as
   * in that loop, and an armed power cut strikes the same operation. When nothing can interrupt
   * the copy (no cut armed, target erased and unprotected) the target takes the source's buffer
   * copy-on-write instead of bytes: the same contents without copying them, which is most of
   * what a swap costs the simulator.
   *
   * @example
   * ```ts
   * import { NorFlash } from "./flash.ts";
   * const chip = new NorFlash({ sectorCount: 2 });
   * chip.program(0, new Uint8Array(8).fill(0x12));
   * chip.copySector(0, 1, 1024);
   * chip.read(4096, 2); // Uint8Array [0x12, 0x12]
   * ```
   */
  copySector(from: number, to: number, chunkSize: number): void {
    this.#checkSector(from);
    this.#checkSector(to);
    const { sectorSize } = this.geometry;
    if (chunkSize <= 0 || sectorSize % chunkSize !== 0) {
      throw new RangeError(`Cannot copy by ${chunkSize}-byte chunks: not a divisor of a sector`);
    }
    const source = this.#sectors[from];
    const shareable = this.#poweredOn && this.#cut === null && this.#sectors[to] === null &&
      this.#protection[to] === "none" && from !== to;
    if (!shareable) {
      for (let at = 0; at < sectorSize; at += chunkSize) {
        const chunk = this.read(from * sectorSize + at, chunkSize);
        if (!isFilledWith(chunk, ERASED)) this.program(to * sectorSize + at, chunk);
      }
      return;
    }
    let programmed = 0;
    if (source) {
      for (let at = 0; at < sectorSize; at += chunkSize) {
        if (!isFilledWith(source, ERASED, at, at + chunkSize)) programmed++;
      }
    }
    this.#stats.reads += sectorSize / chunkSize;
    this.#stats.bytesRead += sectorSize;
    this.#stats.programs += programmed;
    this.#stats.operations += programmed;
    this.#stats.bytesProgrammed += programmed * chunkSize;
    if (programmed === 0) return; // all erased: nothing was programmed, the target stays erased
    this.#shared[from] = 1;
    this.#adopt(to, source!);
  }

  /** Makes `buffer`, which others may hold too (copy-on-write), the contents of `sector`. */
  #adopt(sector: number, buffer: Uint8Array): void {
    this.#sectors[sector] = buffer;
    this.#shared[sector] = 1;
    this.#versions[sector]!++;
    this.#markChanged(sector);
  }

  /** Erases every sector that overlaps `[offset, offset + length)`; both must be sector aligned. */
  erase(offset: number, length: number): void {
    this.#checkRange(offset, length, "erase");
    const { sectorSize } = this.geometry;
    if (offset % sectorSize !== 0 || length % sectorSize !== 0) {
      throw new FlashError(
        "misaligned",
        `Cannot erase ${length} bytes at 0x${
          offset.toString(16)
        }: erase must cover whole ${sectorSize}-byte sectors`,
      );
    }
    for (let s = offset / sectorSize; s < (offset + length) / sectorSize; s++) this.eraseSector(s);
  }

  /**
   * A new chip with the same contents and wear, sharing every sector buffer copy-on-write.
   * Counters and power-cut plans are not copied.
   */
  clone(options: { seed?: number; trackChanges?: boolean } = {}): NorFlash {
    const copy = new NorFlash({
      ...this.geometry,
      strict: this.strict,
      seed: options.seed ?? 1,
      trackChanges: options.trackChanges ?? false,
    });
    copy.#sectors = [...this.#sectors];
    copy.#wear = this.#wear.slice();
    copy.#protection = this.#protection;
    for (let s = 0; s < this.#sectors.length; s++) {
      if (this.#sectors[s]) this.#shared[s] = copy.#shared[s] = 1;
    }
    return copy;
  }

  /**
   * The sectors that changed since the last call (only with `trackChanges`). The buffers handed
   * out are frozen: the chip copies a sector before programming it again, so what the caller
   * holds stays the chip's state at this instant (a consistent cut, like a clean power loss).
   *
   * @example
   * ```ts
   * import { NorFlash } from "./flash.ts";
   * const chip = new NorFlash({ sectorCount: 2, trackChanges: true });
   * chip.program(0, new Uint8Array(8));
   * const mirror = new NorFlash({ sectorCount: 2 });
   * mirror.applyChanges(chip.takeChanges());
   * mirror.read(0, 1); // Uint8Array [0]
   * ```
   */
  takeChanges(): FlashChanges {
    if (!this.#changed || this.#changedCount === 0) return [];
    const changes: [number, Uint8Array | null, number][] = [];
    for (let sector = 0; sector < this.#changed.length; sector++) {
      if (this.#changed[sector] === 0) continue;
      const data = this.#sectors[sector] ?? null;
      if (data) this.#shared[sector] = 1;
      changes.push([sector, data, this.#wear[sector]!]);
    }
    this.#changed.fill(0);
    this.#changedCount = 0;
    return changes;
  }

  /**
   * Replaces sectors with changes taken from a chip of the same geometry. The buffers stay
   * shared with whoever else holds them (copy-on-write).
   */
  applyChanges(changes: FlashChanges): void {
    const { sectorSize } = this.geometry;
    for (const [sector, data, wear] of changes) {
      this.#checkSector(sector);
      if (data && data.length !== sectorSize) {
        throw new RangeError(
          `Cannot apply a change to sector ${sector}: it holds ${data.length} bytes, not ${sectorSize}`,
        );
      }
      this.#sectors[sector] = data;
      this.#shared[sector] = data === null ? 0 : 1;
      this.#wear[sector] = wear;
      this.#versions[sector]!++;
    }
  }

  /** Memory held by this chip: private sector buffers and buffers it shares with others. */
  memoryUsage(): { privateBytes: number; sharedBytes: number; erasedSectors: number } {
    let privateBytes = 0;
    let sharedBytes = 0;
    let erasedSectors = 0;
    for (let s = 0; s < this.#sectors.length; s++) {
      const data = this.#sectors[s];
      if (!data) erasedSectors++;
      else if (this.#shared[s]) sharedBytes += data.length;
      else privateBytes += data.length;
    }
    return { privateBytes, sharedBytes, erasedSectors };
  }

  /** True when sector `a` of this chip and sector `b` of `other` are the same buffer. */
  sharesSectorWith(sector: number, other: NorFlash, otherSector = sector): boolean {
    const mine = this.#sectors[sector];
    return mine !== null && mine !== undefined && mine === other.#sectors[otherSector];
  }

  #countOperation(): PowerCutPlan | null {
    this.#stats.operations++;
    if (!this.#cut) return null;
    this.#operationsSincePlan++;
    if (this.#operationsSincePlan < this.#cut.atOperation) return null;
    const plan = this.#cut;
    this.#cut = null;
    this.#poweredOn = false;
    return plan;
  }

  #powerCut(torn: boolean): PowerCutError {
    const error = new PowerCutError(this.#operationsSincePlan, torn);
    this.onPowerCut?.();
    return error;
  }

  /**
   * Walks `[offset, offset + length)` sector by sector, handing each piece's sector index, the
   * index within the sector of its first byte and its range in the caller's data. Working on
   * ranges rather than per-unit subarrays matters: a swap programs a whole image 1 KiB at a time.
   * Stops early when `visit` returns false.
   */
  #forEachSectorSpan(
    offset: number,
    length: number,
    visit: (sector: number, within: number, from: number, to: number) => boolean | void,
  ): void {
    const { sectorSize } = this.geometry;
    for (let from = 0; from < length;) {
      const at = offset + from;
      const within = at % sectorSize;
      const to = Math.min(length, from + sectorSize - within);
      if (visit((at - within) / sectorSize, within, from, to) === false) return;
      from = to;
    }
  }

  /** The bytes of a sector's piece: a view of its buffer, or of an erased one. */
  #piece(sector: number, within: number, length: number): Uint8Array {
    const stored = this.#sectors[sector];
    return stored
      ? stored.subarray(within, within + length)
      : this.#erasedSector().subarray(0, length);
  }

  #checkProgrammable(offset: number, next: Uint8Array): void {
    this.#forEachSpanOf(offset, next, null, this.#checkProgrammableSpan);
  }

  /** Clears the 0 bits of `data` at `offset`; with `tear`, only a random subset of them. */
  #programBytes(offset: number, data: Uint8Array, tear: Random | null): void {
    this.#forEachSpanOf(offset, data, tear, this.#programSpan);
  }

  /**
   * {@linkcode NorFlash.#forEachSectorSpan} for the two per-program walks, with a method in place
   * of a closure: a swap programs 195 step records a device, each inside one sector, and the two
   * closures per program were a tenth of a fleet's allocations.
   */
  #forEachSpanOf(
    offset: number,
    data: Uint8Array,
    tear: Random | null,
    span: SpanVisit,
  ): void {
    const { sectorSize } = this.geometry;
    for (let from = 0; from < data.length;) {
      const at = offset + from;
      const within = at % sectorSize;
      const to = Math.min(data.length, from + sectorSize - within);
      span.call(this, offset, data, tear, (at - within) / sectorSize, within, from, to);
      from = to;
    }
  }

  /** Checks that `next[from..to)` may be programmed into sector `sector` from byte `within`. */
  #checkProgrammableSpan(
    offset: number,
    next: Uint8Array,
    _tear: Random | null,
    sector: number,
    within: number,
    from: number,
    to: number,
  ): void {
    const current = this.#sectors[sector];
    if (!current) return;
    // The common case, a blank target, checked a word at a time; the loop finds the culprit.
    if (isFilledWith(current, ERASED, within, within + to - from)) return;
    const { writeUnit } = this.geometry;
    for (let i = from, c = within; i < to; i++, c++) {
      const old = current[c]!;
      if (this.strict && old !== ERASED) {
        throw new FlashError(
          "not-erased",
          `Cannot program the write unit at 0x${
            (offset + i - (i % writeUnit)).toString(16)
          }: it was already programmed and strict mode refuses a second program`,
        );
      }
      if ((next[i]! & ~old & 0xff) !== 0) {
        throw new FlashError(
          "bit-set",
          `Cannot program 0x${(offset + i).toString(16)}: 0x${old.toString(16)} -> 0x${
            next[i]!.toString(16)
          } needs a 0->1 change, which only an erase can make`,
        );
      }
    }
  }

  /** Programs `data[from..to)` into sector `sector` from byte `within`. */
  #programSpan(
    _offset: number,
    data: Uint8Array,
    tear: Random | null,
    sector: number,
    within: number,
    from: number,
    to: number,
  ): void {
    const blank = this.#sectors[sector] === null;
    const buffer = this.#writableSector(sector);
    this.#versions[sector]!++;
    if (!tear && (blank || this.strict)) {
      // Onto erased bytes (strict mode checked them all), programming is a copy.
      buffer.set(from === 0 && to === data.length ? data : data.subarray(from, to), within);
      return;
    }
    for (let i = from, b = within; i < to; i++, b++) {
      const clear = tear ? (~data[i]! & tear.byte()) & 0xff : ~data[i]! & 0xff;
      buffer[b] = buffer[b]! & ~clear & 0xff;
    }
  }

  /** The sector's own buffer, materialized from erased or copied from a shared one. */
  #writableSector(sector: number): Uint8Array {
    let buffer = this.#sectors[sector];
    if (!buffer) {
      buffer = this.#newSector(null);
    } else if (this.#shared[sector]) {
      buffer = this.#newSector(buffer);
    } else {
      return buffer;
    }
    this.#sectors[sector] = buffer;
    this.#shared[sector] = 0;
    this.#markChanged(sector);
    return buffer;
  }

  /** A private sector buffer: a copy of `from`, or erased. */
  #newSector(from: Uint8Array | null): Uint8Array {
    const { sectorSize } = this.geometry;
    const buffer = new Uint8Array(sectorSize);
    if (from) buffer.set(from);
    else buffer.fill(ERASED);
    return buffer;
  }

  #internSector(sector: number): void {
    const data = this.#sectors[sector];
    if (!data || this.#shared[sector]) return;
    const pooled = internSector(data);
    this.#sectors[sector] = pooled;
    this.#shared[sector] = 1;
    if (pooled !== data) this.#markChanged(sector);
  }

  #markChanged(sector: number): void {
    if (!this.#changed || this.#changed[sector] === 1) return;
    this.#changed[sector] = 1;
    this.#changedCount++;
  }

  #checkPower(): void {
    if (!this.#poweredOn) {
      throw new FlashError("powered-off", "Cannot access the flash: the device has no power");
    }
  }

  #checkSector(sector: number): void {
    if (!Number.isInteger(sector) || sector < 0 || sector >= this.geometry.sectorCount) {
      throw new FlashError(
        "out-of-range",
        `Cannot use sector ${sector}: the chip has sectors 0..${this.geometry.sectorCount - 1}`,
      );
    }
  }

  #checkRange(offset: number, length: number, action: string): void {
    if (
      !Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 ||
      offset + length > this.size
    ) {
      throw new FlashError(
        "out-of-range",
        `Cannot ${action} ${length} bytes at ${offset}: the chip holds ${this.size} bytes`,
      );
    }
  }
}

/** One sector's piece of a program: `data[from..to)` (at chip `offset`) into `sector` from `within`. */
type SpanVisit = (
  this: NorFlash,
  ...piece: [
    offset: number,
    data: Uint8Array,
    tear: Random | null,
    sector: number,
    within: number,
    from: number,
    to: number,
  ]
) => void;

function validateGeometry(g: FlashGeometry): void {
  const positive = (name: string, value: number) => {
    if (!Number.isInteger(value) || value <= 0) {
      throw new RangeError(
        `Cannot create flash: '${name}' must be a positive integer: current value is ${value}`,
      );
    }
  };
  positive("sectorSize", g.sectorSize);
  positive("writeUnit", g.writeUnit);
  positive("sectorCount", g.sectorCount);
  positive("eraseCycleLimit", g.eraseCycleLimit);
  if ((g.writeUnit & (g.writeUnit - 1)) !== 0 || g.sectorSize % g.writeUnit !== 0) {
    throw new RangeError(
      `Cannot create flash: 'writeUnit' must be a power of two dividing the sector size: current value is ${g.writeUnit}`,
    );
  }
}
