/**
 * How many device connections a process can hold: each TCP connection is an open file at each end,
 * and a process may keep only so many files open (`ulimit -n`; 20,000 on the project machines, not
 * raisable). A fleet past that does not fail loudly by itself: the accept queue fills, the last
 * devices' connections time out, and the run hangs at its end. So the fleet plans its processes
 * from these figures before it starts.
 *
 * @example
 * ```ts
 * import { connectionCapacity } from "./open_files.ts";
 *
 * const capacity = connectionCapacity(20_000);
 * capacity.bothEnds; // 9436: devices one process can hold with its broker embedded
 * capacity.oneEnd; // 18872: devices a broker node or a fleet process alone can hold
 * ```
 *
 * @module
 */

/**
 * Files a process keeps besides connections (stdio, listeners, Workers, SQLite, reports), and a
 * share kept free for devices between two connections (a rebooted device's new connection is up
 * before the broker has closed its old one).
 */
const RESERVED_FILES = 128;
const SPARE_SHARE = 0.05;

/** The devices a process can serve within `limit` open files. */
export interface ConnectionCapacity {
  /** Holding both ends of each connection (devices and an embedded broker in one process). */
  readonly bothEnds: number;
  /** Holding one end (a broker node, or a fleet process joined to a broker elsewhere). */
  readonly oneEnd: number;
}

/** What `limit` open files allow (see {@linkcode ConnectionCapacity}). */
export function connectionCapacity(limit: number): ConnectionCapacity {
  const usable = Math.max(0, Math.floor(limit * (1 - SPARE_SHARE)) - RESERVED_FILES);
  return { bothEnds: Math.floor(usable / 2), oneEnd: usable };
}

/**
 * The most files this process may keep open (the soft `RLIMIT_NOFILE`, read from
 * `/proc/self/limits`), or null where that cannot be read (not Linux, no read permission) or there
 * is no limit.
 */
export function openFileLimit(): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/limits");
  } catch {
    return null;
  }
  const match = /^Max open files\s+(\d+)/m.exec(text);
  return match ? Number(match[1]) : null;
}
