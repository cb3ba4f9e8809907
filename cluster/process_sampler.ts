/**
 * Memory and CPU of a process and everything it started (broker nodes, fleet shards, Redis,
 * PostgreSQL and its backends), read from Linux's `/proc` at an interval: the peak of the
 * processes' resident memory taken together, and each process's CPU time as last seen. Resident
 * memory counts a page each process shares (PostgreSQL's shared buffers in every backend, the
 * runtime's code in every Deno process) once per process; the proportional set size (PSS) splits
 * it between them and is what the processes really take together, but costs the kernel a walk of
 * each process's page tables (about 12 ms for a Deno process of 2 GiB), so it is read every tenth
 * sample. Sampling
 * misses what happens between two looks (a peak shorter than the interval, the CPU of a process's
 * last moments): the figures are lower bounds at the interval's resolution.
 *
 * @example
 * ```ts ignore
 * const sampler = new ProcessTreeSampler();
 * sampler.start(500);
 * // ... start children, run ...
 * const usage = await sampler.stop();
 * console.log(usage.peakRssBytes, usage.processes);
 * ```
 *
 * @module
 */

/** One process as sampled. */
export interface SampledProcess {
  readonly pid: number;
  /**
   * What it is: `broker` or `fleet` for this project's Deno processes (by the script they run),
   * else its command name (`redis-server`, `postgres`, `deno`...).
   */
  readonly name: string;
  /** CPU seconds (user + system) when last seen. */
  readonly cpuSeconds: number;
  readonly peakRssBytes: number;
}

/** What the processes used. */
export interface TreeUsage {
  /** The largest resident memory of all the processes together at one sample. */
  readonly peakRssBytes: number;
  /** The largest proportional set size of all the processes together (shared pages split). */
  readonly peakPssBytes: number;
  /** CPU seconds of every process seen, together. */
  readonly cpuSeconds: number;
  readonly processes: readonly SampledProcess[];
  readonly samples: number;
}

/** Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100;
const PAGE_BYTES = 4096;
/** Samples between two reads of the processes' proportional set sizes. */
const PSS_EVERY = 10;

/** Samples the process tree under `root` (this process by default). */
export class ProcessTreeSampler {
  readonly #root: number;
  readonly #seen = new Map<number, { name: string; ticks: number; peakRss: number }>();
  #peak = 0;
  #peakPss = 0;
  #samples = 0;
  #timer: ReturnType<typeof setInterval> | null = null;

  constructor(root = Deno.pid) {
    this.#root = root;
  }

  /** Samples now and then every `intervalMs`. */
  start(intervalMs = 500): void {
    this.sample();
    this.#timer = setInterval(() => this.sample(), intervalMs);
  }

  /** Takes one sample of the tree. */
  sample(): void {
    const parents = new Map<number, number>();
    const stats = new Map<number, { ticks: number; rss: number; name: string }>();
    for (const entry of safeReadDir("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      const stat = readStat(pid);
      if (!stat) continue;
      parents.set(pid, stat.ppid);
      stats.set(pid, stat);
    }
    const inTree = (pid: number): boolean => {
      for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
        if (p === this.#root) return true;
        p = parents.get(p) ?? 0;
      }
      return false;
    };
    let total = 0;
    let proportional = 0;
    const withPss = this.#samples % PSS_EVERY === 0;
    for (const [pid, stat] of stats) {
      if (!inTree(pid)) continue;
      total += stat.rss;
      if (withPss) proportional += readPss(pid) ?? stat.rss;
      const known = this.#seen.get(pid);
      this.#seen.set(pid, {
        name: known?.name ?? roleOf(pid, stat.name),
        ticks: Math.max(known?.ticks ?? 0, stat.ticks),
        peakRss: Math.max(known?.peakRss ?? 0, stat.rss),
      });
    }
    this.#peak = Math.max(this.#peak, total);
    if (withPss) this.#peakPss = Math.max(this.#peakPss, proportional);
    this.#samples++;
  }

  /** Stops sampling (after a last sample) and says what was seen. */
  stop(): TreeUsage {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    this.sample();
    return this.usage();
  }

  /** What was seen so far. */
  usage(): TreeUsage {
    const processes = [...this.#seen].map(([pid, p]) => ({
      pid,
      name: p.name,
      cpuSeconds: p.ticks / TICKS_PER_SECOND,
      peakRssBytes: p.peakRss,
    }));
    return {
      peakRssBytes: this.#peak,
      peakPssBytes: this.#peakPss,
      cpuSeconds: processes.reduce((sum, p) => sum + p.cpuSeconds, 0),
      processes,
      samples: this.#samples,
    };
  }
}

/** `broker` or `fleet` for a Deno process running that script, else `name`. */
function roleOf(pid: number, name: string): string {
  try {
    const command = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    if (command.includes("broker/main.ts")) return "broker";
    if (command.includes("fleet/fleet.ts")) return "fleet";
  } catch {
    // gone meanwhile
  }
  return name;
}

function safeReadDir(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((entry) => entry.name);
  } catch {
    return [];
  }
}

/** Parent, CPU ticks, resident bytes and name of a process, or null if it is gone. */
function readStat(pid: number): { ppid: number; ticks: number; rss: number; name: string } | null {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The name is in parentheses and may hold spaces: fields are counted after its last ')'.
    const close = text.lastIndexOf(")");
    const name = text.slice(text.indexOf("(") + 1, close);
    const fields = text.slice(close + 2).split(" ");
    // After the name: state(0) ppid(1) ... utime(11) stime(12) ... rss(21) in pages.
    return {
      ppid: Number(fields[1]),
      ticks: Number(fields[11]) + Number(fields[12]),
      rss: Number(fields[21]) * PAGE_BYTES,
      name,
    };
  } catch {
    return null;
  }
}

/** A process's proportional set size in bytes, or null if it is gone or unreadable. */
function readPss(pid: number): number | null {
  try {
    const kib = /^Pss:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`))?.[1];
    return kib === undefined ? null : Number(kib) * 1024;
  } catch {
    return null;
  }
}
