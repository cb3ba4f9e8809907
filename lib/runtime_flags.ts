/**
 * The V8 flag the processes of a clustered run start with (its broker nodes and fleet processes,
 * `deno task fleet --brokers/--processes` and `bench:cluster`), where memory is what runs out
 * first: V8 lets a heap grow by a factor of up to 4 of what survived its last collection, chosen
 * from how fast it collects, so a process of thousands of devices sat on about a third more memory
 * than it needed. Growing by half at most, measured with interleaved runs of the 10,000-device
 * benchmark (two each; broker, fleet and both floors under the flag): peak RSS 35% lower (fleet
 * 2.27-2.30 GiB against 3.43-3.62), CPU 10-18% higher, wall time 20-30% longer. One process with
 * its cloud embedded keeps V8's default: there time is what a user waits for.
 *
 * @example
 * ```ts ignore
 * new Deno.Command(Deno.execPath(), { args: ["run", V8_FLAGS, "--allow-all", "broker/main.ts"] });
 * ```
 *
 * @module
 */

/** `deno run`'s flag for V8 (see the module's documentation for why). */
export const V8_FLAGS = "--v8-flags=--heap-growing-percent=50";
