/**
 * The anti-rollback security counter in one-time-programmable fuses: each increment blows one
 * more write unit, and nothing in the device can erase them, so the counter only ever rises.
 * The value is the number of leading units that are no longer erased (a unit torn by a power
 * cut counts as blown: the counter may then rise less far than asked, never fall).
 *
 * @module
 */

import type { FlashArea } from "./flash_area.ts";

/**
 * A one-way counter over a fuse area. It exposes no erase.
 *
 * @example
 * ```ts
 * import { NorFlash } from "./flash.ts";
 * import { FlashArea } from "./flash_area.ts";
 * import { SecurityCounter } from "./security_counter.ts";
 * const fuses = new SecurityCounter(
 *   new FlashArea(new NorFlash({ sectorCount: 1 }), { name: "fuses", firstSector: 0, sectorCount: 1 }),
 * );
 * fuses.raiseTo(3);
 * fuses.read(); // 3
 * ```
 */
export class SecurityCounter {
  readonly #area: FlashArea;
  /** Wraps the fuse area. */
  constructor(area: FlashArea) {
    this.#area = area;
  }

  /** Highest value the fuses can hold. */
  get capacity(): number {
    return this.#area.size / this.#area.writeUnit;
  }

  /** Current value. */
  read(): number {
    // Unit by unit with blank checks: every boot and install asks, and the value is small, so a
    // copy of the whole fuse area (a sector) each time was mostly garbage.
    const unit = this.#area.writeUnit;
    let value = 0;
    while (value < this.capacity && !this.#area.isErased(value * unit, unit)) value++;
    return value;
  }

  /** Raises the counter to `value`; lower values are ignored (the fuses only go up). */
  raiseTo(value: number): void {
    if (!Number.isInteger(value) || value < 0 || value > this.capacity) {
      throw new RangeError(
        `Cannot raise the security counter: value must be 0..${this.capacity}: current value is ${value}`,
      );
    }
    const current = this.read();
    if (value <= current) return;
    const unit = this.#area.writeUnit;
    this.#area.program(current * unit, new Uint8Array((value - current) * unit).fill(0));
  }
}
