/**
 * Who gets which fault in a fleet run, decided by the seed alone (pure: the same options and
 * random source give the same plan), apart from carrying it out.
 *
 * @example
 * ```ts
 * import { planDeviceFaults } from "./fault_plan.ts";
 * import { seededRandom } from "../lib/random.ts";
 * const plan = planDeviceFaults(["dev-0", "dev-1"], {
 *   disconnectRate: 1, corruptRate: 0, powerCutRate: 0, imageSize: 65536, blockSize: 4096,
 * }, seededRandom(1));
 * plan.length; // 2: each device disconnects once
 * ```
 *
 * @module
 */

import type { Random } from "../lib/random.ts";
import type { ActorMessage } from "./device_actor.ts";

/** The rates and sizes a plan is drawn from. */
export interface FaultRates {
  /** Share of devices whose connection drops once, 0.2..2.2 s into the update. */
  readonly disconnectRate: number;
  /** Share of devices that receive 1..3 corrupted blocks. */
  readonly corruptRate: number;
  /** Share of devices whose power is cut at a drawn flash operation (half of the cuts torn). */
  readonly powerCutRate: number;
  readonly imageSize: number;
  readonly blockSize: number;
}

/** One fault: sent to `thing` after `delayMs` (0: at once). */
export interface PlannedFault {
  readonly thing: string;
  readonly delayMs: number;
  readonly message: ActorMessage;
}

/**
 * Draws the faults of one update for `things`, in the order the draws are made (the order the
 * fleet has always drawn them in, so a seed keeps meaning the same run).
 */
export function planDeviceFaults(
  things: readonly string[],
  rates: FaultRates,
  random: Random,
): PlannedFault[] {
  const plan: PlannedFault[] = [];
  for (const thing of things) {
    if (random.next() < rates.disconnectRate) {
      plan.push({ thing, delayMs: 200 + random.below(2000), message: { type: "disconnect" } });
    }
    if (random.next() < rates.corruptRate) {
      plan.push({
        thing,
        delayMs: 0,
        message: { type: "corrupt-blocks", count: 1 + random.below(3) },
      });
    }
    if (random.next() < rates.powerCutRate) {
      plan.push({
        thing,
        delayMs: 0,
        message: {
          type: "cut-power",
          atOperation: 1 + random.below(Math.ceil(rates.imageSize / rates.blockSize) + 40),
          torn: random.next() < 0.5,
        },
      });
    }
  }
  return plan;
}

/**
 * When injected Worker crashes strike: each at a drawn share (10..90%) of the fleet having ended
 * the first update, so some of the dead Worker's devices already run the new image and must come
 * back with it. Sorted, earliest first.
 */
export function planWorkerCrashes(count: number, random: Random): number[] {
  return Array.from({ length: count }, () => 0.1 + 0.8 * random.next()).sort((a, b) => a - b);
}
