/**
 * A small seeded pseudo-random generator, so fault plans and torn flash operations replay
 * exactly from a seed.
 *
 * @module
 */

/** A deterministic source of random numbers. */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [0, maxExclusive). */
  below(maxExclusive: number): number;
  /** A random byte. */
  byte(): number;
}

/**
 * Creates a seeded generator (mulberry32: tiny, fast, good enough for fault injection, not
 * for keys).
 *
 * @example
 * ```ts
 * import { seededRandom } from "./random.ts";
 * const a = seededRandom(42).below(100);
 * const b = seededRandom(42).below(100);
 * a === b; // true
 * ```
 */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    below: (maxExclusive) => Math.floor(next() * maxExclusive),
    byte: () => Math.floor(next() * 256),
  };
}
