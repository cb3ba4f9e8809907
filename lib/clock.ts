/**
 * Time as a port: everything that waits (watchdogs, certificate validity, later the agent's
 * timers and rollout rates) reads an injected clock, so tests run in fake time and simulations
 * at any time scale.
 *
 * @module
 */

/** Handle of a scheduled timer. */
export type TimerId = number;

/** The clock interface every time-dependent part takes. */
export interface Clock {
  /** Milliseconds since the epoch, in this clock's time. */
  now(): number;
  /** Calls `callback` after `ms` of this clock's time. */
  setTimer(ms: number, callback: () => void): TimerId;
  /** Cancels a timer; unknown ids are ignored. */
  clearTimer(id: TimerId): void;
}

/**
 * The real clock.
 *
 * @example
 * ```ts
 * import { systemClock } from "./clock.ts";
 * systemClock.now() > 0; // true
 * ```
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  // Deno returns a number; node typings (pulled in by node: imports) claim a Timeout object.
  setTimer: (ms, callback) => setTimeout(callback, ms) as unknown as TimerId,
  clearTimer: (id) => clearTimeout(id as unknown as Parameters<typeof clearTimeout>[0]),
};

/**
 * A clock that only moves when told to: `advance(ms)` fires due timers in time order.
 *
 * @example
 * ```ts
 * import { ManualClock } from "./clock.ts";
 * const clock = new ManualClock(0);
 * let fired = false;
 * clock.setTimer(100, () => fired = true);
 * clock.advance(100);
 * fired; // true
 * ```
 */
export class ManualClock implements Clock {
  #now: number;
  #nextId = 1;
  #timers = new Map<TimerId, { due: number; callback: () => void }>();

  /** Starts the clock at `startMs`. */
  constructor(startMs = Date.UTC(2026, 0, 1)) {
    this.#now = startMs;
  }

  /** Current fake time. */
  now(): number {
    return this.#now;
  }

  /** Schedules `callback` at now + ms. */
  setTimer(ms: number, callback: () => void): TimerId {
    const id = this.#nextId++;
    this.#timers.set(id, { due: this.#now + Math.max(0, ms), callback });
    return id;
  }

  /** Cancels a timer. */
  clearTimer(id: TimerId): void {
    this.#timers.delete(id);
  }

  /** Number of timers still pending. */
  get pendingTimers(): number {
    return this.#timers.size;
  }

  /** Moves time forward by `ms`, firing every timer that falls due, earliest first. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      let nextId: TimerId | undefined;
      let nextDue = Infinity;
      for (const [id, timer] of this.#timers) {
        if (timer.due <= target && timer.due < nextDue) {
          nextDue = timer.due;
          nextId = id;
        }
      }
      if (nextId === undefined) break;
      const timer = this.#timers.get(nextId)!;
      this.#timers.delete(nextId);
      this.#now = timer.due;
      timer.callback();
    }
    this.#now = target;
  }
}

/** How many times faster than real time `clock` runs: a {@linkcode ScaledClock}'s scale, else 1. */
export function clockScale(clock: Clock): number {
  return clock instanceof ScaledClock ? clock.scale : 1;
}

/**
 * Real time sped up (or slowed down) by `scale`: a minute of this clock passes in 60/scale real
 * seconds, so a 1000-per-minute rollout or a 30-minute timeout runs in seconds in a simulation.
 * It reads real time at its `origin` (default: when it is made) and runs `scale` times faster from
 * there, so clocks made at different moments with the same origin (the nodes of a cluster, a
 * restarted broker) read the same time.
 *
 * @example
 * ```ts
 * import { ScaledClock } from "./clock.ts";
 * const clock = new ScaledClock(60); // one simulated minute per real second
 * clock.now() > 0; // true
 * const node = new ScaledClock(60, { origin: Date.now() - 1_000 }); // a second ago
 * node.now() - Date.now() >= 59_000; // true
 * ```
 */
export class ScaledClock implements Clock {
  readonly scale: number;
  /** The real time (epoch milliseconds) at which this clock reads real time. */
  readonly origin: number;

  /** `scale` > 0. */
  constructor(scale: number, options: { readonly origin?: number } = {}) {
    if (!(scale > 0) || !Number.isFinite(scale)) {
      throw new RangeError(
        `Cannot create a scaled clock: 'scale' must be a positive number: current value is ${scale}`,
      );
    }
    this.scale = scale;
    this.origin = options.origin ?? Date.now();
  }

  /** Simulated now. */
  now(): number {
    return this.origin + (Date.now() - this.origin) * this.scale;
  }

  /** Fires after `ms` of simulated time. */
  setTimer(ms: number, callback: () => void): TimerId {
    return systemClock.setTimer(Math.max(0, ms / this.scale), callback);
  }

  /** Cancels a timer. */
  clearTimer(id: TimerId): void {
    systemClock.clearTimer(id);
  }
}
