/** The raw-floor harness of `deno task bench:fleet` moves exactly the bytes it claims. */
import assert from "node:assert/strict";
import { measureFloor, medianRatios } from "../../bench/fleet_floor.ts";
import { blocksPerRequestFor } from "../../fleet/fleet_args.ts";

/** Five clients, each fetching 20 KiB in 4 KiB blocks through two Workers. */
const SMALL = { devices: 5, imageSize: 20 * 1024, blockSize: 4096, workers: 2 } as const;

Deno.test("fleet floor: every client fetches the whole image through aedes, in Workers", async () => {
  const result = await measureFloor(SMALL);
  // 20 KiB in 4 KiB blocks is 5 blocks per client, the last one whole (the floor sends full blocks).
  assert.equal(result.bytes, 5 * 5 * 4096);
  assert.ok(result.seconds > 0 && result.mbPerSecond > 0);
});

Deno.test("fleet floor: with the clients in their own process, each process's CPU is told", async () => {
  const result = await measureFloor({ ...SMALL, clients: "process" });
  assert.equal(result.bytes, 5 * 5 * 4096);
  // The broker (this process) and the clients' process, each on its own and together the run's.
  const { broker, clients, ...others } = result.cpuByProcess!;
  assert.deepEqual(others, {});
  assert.ok(broker! >= 0 && clients! > 0, JSON.stringify(result.cpuByProcess));
  assert.ok(Math.abs(broker! + clients! - result.cpuSeconds!) <= 0.1);
  assert.ok(result.peakRssBytes! > 0);
});

Deno.test("fleet floor: requests ask for as many blocks as the fleet's agents do", () => {
  assert.equal(blocksPerRequestFor(4096), 8);
  assert.equal(blocksPerRequestFor(256), 32);
  assert.equal(blocksPerRequestFor(65536), 1);
});

Deno.test("fleet benchmark: the ratios of several rounds are each their own median", () => {
  const r = (wall: number, cpu: number, memory: number) => ({ wall, cpu, memory });
  assert.deepEqual(medianRatios([r(2, 3, 4)]), r(2, 3, 4));
  // Each ratio on its own: the round with the median wall time need not have the median CPU.
  assert.deepEqual(medianRatios([r(3, 1, 5), r(1, 2, 9), r(2, 9, 1)]), r(2, 2, 5));
  assert.deepEqual(medianRatios([r(1, 2, 3), r(2, 3, 5)]), r(1.5, 2.5, 4));
});
