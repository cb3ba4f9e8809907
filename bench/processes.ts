/**
 * Child Deno processes for the benchmarks: start a script, read its stdout line by line, and
 * sample the resident memory of a set of processes together (the figure that matters when a
 * broker and its fleet share one machine).
 *
 * @module
 */

/** A running child `deno run --allow-all` process. */
export interface DenoProcess {
  readonly pid: number;
  /** Resolves with the first stdout line that satisfies `match`. */
  line(match: (line: string) => boolean, what: string): Promise<string>;
  /** Every stdout line so far. */
  readonly stdout: readonly string[];
  /** The last stderr lines (for error messages). */
  readonly stderrTail: readonly string[];
  readonly status: Promise<Deno.CommandStatus>;
  kill(signal?: Deno.Signal): void;
}

/**
 * Starts `deno run --allow-all <script> ...args` with this process's Deno.
 *
 * @example
 * ```ts ignore
 * const broker = spawnDeno("broker/main.ts", ["--port", "0"]);
 * const ready = JSON.parse(await broker.line((l) => l.startsWith("{"), "the broker's address"));
 * ```
 */
export function spawnDeno(script: string, args: readonly string[]): DenoProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", script, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout: string[] = [];
  const stderrTail: string[] = [];
  const waiters = new Set<() => void>();
  const pump = async (stream: ReadableStream<Uint8Array>, into: string[], keep: number) => {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      into.push(...lines);
      if (into.length > keep) into.splice(0, into.length - keep);
      for (const wake of waiters) wake();
    }
    if (rest) into.push(rest);
    for (const wake of waiters) wake();
  };
  const drained = Promise.all([
    pump(child.stdout, stdout, Infinity),
    pump(child.stderr, stderrTail, 40),
  ]);
  const status = drained.then(() => child.status);
  let exited = false;
  void status.then(() => exited = true);
  return {
    pid: child.pid,
    stdout,
    stderrTail,
    status,
    kill: (signal = "SIGTERM") => {
      if (!exited) child.kill(signal);
    },
    line(match, what) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = stdout.find(match);
          if (found !== undefined) {
            waiters.delete(check);
            resolve(found);
          } else if (exited) {
            waiters.delete(check);
            reject(new Error(`${script} exited before ${what}: ${stderrTail.join("\n")}`));
          }
        };
        waiters.add(check);
        void status.then(check);
        check();
      });
    },
  };
}

/** Resident memory of a process now, in bytes (0 once it has gone). */
export function residentBytes(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kib = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
    return kib ? Number(kib) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * Samples the summed resident memory of `pids()` every `everyMs` until stopped.
 *
 * @example
 * ```ts ignore
 * const sampler = sampleResidentMemory(() => [broker.pid, fleet.pid]);
 * await fleet.status;
 * const peakBytes = sampler.stop();
 * ```
 */
export function sampleResidentMemory(
  pids: () => readonly number[],
  everyMs = 500,
): { stop(): number } {
  let peak = 0;
  const sample = () => {
    peak = Math.max(peak, pids().reduce((sum, pid) => sum + residentBytes(pid), 0));
  };
  const timer = setInterval(sample, everyMs);
  sample();
  return {
    stop() {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}

/** Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100;

/**
 * CPU seconds this process used (`self`) and its children that ended and were waited for used
 * (`children`, their own children included), from `/proc/self/stat`: exact for a child run to
 * its end, unlike sampling, which misses a process's last moments.
 *
 * @example
 * ```ts ignore
 * const before = cpuSeconds();
 * await spawnDeno("fleet/fleet.ts", ["--devices", "100"]).status;
 * const childSeconds = cpuSeconds().children - before.children;
 * ```
 */
export function cpuSeconds(): { self: number; children: number } {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
  // Fields 14-17 of stat(5): utime, stime, cutime, cstime (index 11-14 after the name).
  const [utime, stime, cutime, cstime] = fields.slice(11, 15) as [number, number, number, number];
  return {
    self: (utime + stime) / TICKS_PER_SECOND,
    children: (cutime + cstime) / TICKS_PER_SECOND,
  };
}

/**
 * Seconds to a tenth, as `/proc` counts CPU time (ticks of 10 ms) and the results keep it.
 *
 * @example
 * ```ts
 * import { tenths } from "./processes.ts";
 * tenths(12.3400001); // 12.3
 * ```
 */
export function tenths(seconds: number): number {
  return Math.round(seconds * 10) / 10;
}

/**
 * A child script's `--name` option as a positive integer; otherwise says why on one line and
 * exits with status 2 (the benchmark's child processes take their options from it).
 *
 * @example
 * ```ts ignore
 * const devices = positiveIntegerOption("devices", values.devices);
 * ```
 */
export function positiveIntegerOption(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`Invalid --${name}: expected a positive integer: current value is '${text}'`);
    Deno.exit(2);
  }
  return n;
}
