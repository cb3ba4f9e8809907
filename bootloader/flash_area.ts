/**
 * The flash-area API (MCUboot's `flash_area_*`): a named window onto the chip with offsets
 * relative to the area, and the device's partition map.
 *
 * @module
 */

import { FlashError, type NorFlash } from "./flash.ts";

/** Where an area sits on the chip. */
export interface AreaSpec {
  /** Name used in logs. */
  readonly name: string;
  /** First sector of the area. */
  readonly firstSector: number;
  /** Number of sectors. */
  readonly sectorCount: number;
}

/**
 * A reader that remembers what `decode` made of one sector of an area until that sector changes
 * (its {@linkcode FlashArea.sectorVersion} moves). Asking still needs power, as a read does.
 *
 * @example
 * ```ts ignore
 * const headerOf = sectorMemo<Header>();
 * headerOf(area, 0, () => parseHeader(area.read(0, 32))); // read and parsed
 * headerOf(area, 0, () => parseHeader(area.read(0, 32))); // the same, until sector 0 changes
 * ```
 */
export function sectorMemo<T>(): (area: FlashArea, sector: number, decode: () => T) => T {
  const last = new WeakMap<FlashArea, Map<number, { version: number; value: T }>>();
  return (area, sector, decode) => {
    const version = area.sectorVersion(sector);
    let bySector = last.get(area);
    if (!bySector) last.set(area, bySector = new Map());
    const known = bySector.get(sector);
    if (known?.version === version) return known.value;
    const value = decode();
    bySector.set(sector, { version, value });
    return value;
  };
}

/** What {@linkcode FlashArea.source} hands out: the first `size` bytes of an area. */
export interface AreaSource {
  readonly size: number;
  read(offset: number, length: number): Uint8Array;
  digest(length: number): Uint8Array;
}

/**
 * A reader that remembers what `derive` made of the first `size` bytes of an area until one of
 * the sectors it read changes: for results, such as a decoded image header, that depend on a few
 * sectors of a large area. One result is kept per area (the last size asked for).
 *
 * @example
 * ```ts ignore
 * const headerOf = readMemo<Header>();
 * headerOf(slot, slot.size, (source) => parseHeader(source)); // read and parsed
 * headerOf(slot, slot.size, (source) => parseHeader(source)); // the same, until a sector it read changes
 * ```
 */
export function readMemo<T>(): (
  area: FlashArea,
  size: number,
  derive: (source: AreaSource) => T,
) => T {
  const last = new WeakMap<
    FlashArea,
    { size: number; sectors: number[]; versions: number[]; value: T }
  >();
  return (area, size, derive) => {
    const known = last.get(area);
    if (known?.size === size && standing(area, known.sectors, known.versions)) return known.value;
    const read = new Set<number>();
    // A read that failed (no power) made the result say so: it is not the flash's to remember.
    let faulted = false;
    const noting = <R>(offset: number, length: number, work: () => R): R => {
      let result: R;
      try {
        result = work();
      } catch (error) {
        faulted = true;
        throw error;
      }
      const lastSector = Math.floor((offset + length - 1) / area.sectorSize);
      for (let sector = Math.floor(offset / area.sectorSize); sector <= lastSector; sector++) {
        read.add(sector);
      }
      return result;
    };
    const whole = area.source(size);
    const value = derive({
      size,
      read: (offset, length) => noting(offset, length, () => whole.read(offset, length)),
      digest: (length) => noting(0, length, () => whole.digest(length)),
    });
    const sectors = [...read];
    const versions = faulted ? null : versionsOf(area, sectors);
    if (versions) last.set(area, { size, sectors, versions, value });
    else last.delete(area);
    return value;
  };
}

/** The versions of `sectors`, or null when they cannot be read (no power). */
function versionsOf(area: FlashArea, sectors: readonly number[]): number[] | null {
  try {
    return sectors.map((sector) => area.sectorVersion(sector));
  } catch {
    return null;
  }
}

/** Whether every sector still has the version it had (false when that cannot be asked). */
function standing(area: FlashArea, sectors: readonly number[], versions: readonly number[]) {
  const now = versionsOf(area, sectors);
  return now !== null && now.every((version, i) => version === versions[i]);
}

/**
 * A window onto the flash chip; every offset is relative to the area and checked against it.
 *
 * @example
 * ```ts
 * import { NorFlash } from "./flash.ts";
 * import { FlashArea } from "./flash_area.ts";
 * const area = new FlashArea(new NorFlash({ sectorCount: 8 }), {
 *   name: "scratch",
 *   firstSector: 2,
 *   sectorCount: 1,
 * });
 * area.size; // 4096
 * ```
 */
export class FlashArea {
  /** Name used in logs. */
  readonly name: string;
  /** Absolute offset of the area on the chip. */
  readonly offset: number;
  /** Size in bytes. */
  readonly size: number;
  /** Erase sector size. */
  readonly sectorSize: number;
  /** Program granularity. */
  readonly writeUnit: number;
  /** Number of sectors. */
  readonly sectorCount: number;
  readonly #flash: NorFlash;
  readonly #firstSector: number;

  /** Opens `spec` on `flash`. */
  constructor(flash: NorFlash, spec: AreaSpec) {
    const { sectorSize, writeUnit, sectorCount } = flash.geometry;
    if (
      !Number.isInteger(spec.firstSector) || !Number.isInteger(spec.sectorCount) ||
      spec.firstSector < 0 || spec.sectorCount < 1 ||
      spec.firstSector + spec.sectorCount > sectorCount
    ) {
      throw new RangeError(
        `Cannot open flash area '${spec.name}': sectors ${spec.firstSector}..${
          spec.firstSector + spec.sectorCount - 1
        } are outside the chip's 0..${sectorCount - 1}`,
      );
    }
    this.#flash = flash;
    this.#firstSector = spec.firstSector;
    this.name = spec.name;
    this.sectorSize = sectorSize;
    this.writeUnit = writeUnit;
    this.sectorCount = spec.sectorCount;
    this.offset = spec.firstSector * sectorSize;
    this.size = spec.sectorCount * sectorSize;
  }

  /** Reads bytes at an area offset. */
  read(offset: number, length: number): Uint8Array {
    this.#check(offset, length, "read");
    return this.#flash.read(this.offset + offset, length);
  }

  /** See {@linkcode NorFlash.sectorVersion} (index within the area). */
  sectorVersion(index: number): number {
    this.#checkSector(index, "read");
    return this.#flash.sectorVersion(this.#firstSector + index);
  }

  /** SHA-256 of bytes at an area offset (see {@linkcode NorFlash.digest}). */
  digest(offset: number, length: number): Uint8Array {
    this.#check(offset, length, "read");
    return this.#flash.digest(this.offset + offset, length);
  }

  /**
   * The first `size` bytes of the area as a source for the image decoder and validator (which
   * hashes through `digest`, without copying the slot).
   */
  source(size: number = this.size): AreaSource {
    return {
      size,
      read: (offset, length) => this.read(offset, length),
      digest: (length) => this.digest(0, length),
    };
  }

  /** Programs bytes at an area offset (write-unit aligned). */
  program(offset: number, data: Uint8Array): void {
    this.#check(offset, data.length, "program");
    this.#flash.program(this.offset + offset, data);
  }

  /**
   * Copies sector `sourceSector` of `source` onto this area's sector `sector` in `chunkSize`
   * pieces (see {@linkcode NorFlash.copySector}); both areas must be on the same chip.
   */
  copySectorFrom(source: FlashArea, sourceSector: number, sector: number, chunkSize: number): void {
    if (source.#flash !== this.#flash) {
      throw new RangeError(`Cannot copy from '${source.name}' to '${this.name}': different chips`);
    }
    source.#checkSector(sourceSector, "copy");
    this.#checkSector(sector, "copy");
    this.#flash.copySector(
      source.#firstSector + sourceSector,
      this.#firstSector + sector,
      chunkSize,
    );
  }

  /** Erases one sector of the area (index within the area). */
  eraseSector(index: number): void {
    this.#checkSector(index, "erase");
    this.#flash.eraseSector(this.#firstSector + index);
  }

  /** Erases a sector unless a blank check shows it already erased (saves wear and time). */
  eraseSectorIfNeeded(index: number): void {
    if (!this.isErased(index * this.sectorSize, this.sectorSize)) this.eraseSector(index);
  }

  /** Blank check of a range. */
  isErased(offset: number, length: number): boolean {
    this.#check(offset, length, "blank-check");
    return this.#flash.isErased(this.offset + offset, length);
  }

  #checkSector(index: number, action: string): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.sectorCount) {
      throw new FlashError(
        "out-of-range",
        `Cannot ${action} sector ${index} of '${this.name}': it has sectors 0..${
          this.sectorCount - 1
        }`,
      );
    }
  }

  #check(offset: number, length: number, action: string): void {
    if (
      !Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 ||
      offset + length > this.size
    ) {
      throw new FlashError(
        "out-of-range",
        `Cannot ${action} ${length} bytes at ${offset} of '${this.name}': the area holds ${this.size} bytes`,
      );
    }
  }
}
