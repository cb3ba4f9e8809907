/** The raw-floor harness of `deno task bench:fleet` moves exactly the bytes it claims. */
import assert from "node:assert/strict";
import { measureFloor } from "../../bench/fleet_floor.ts";
import { blocksPerRequestFor } from "../../fleet/fleet_args.ts";

Deno.test("fleet floor: every client fetches the whole image through aedes, in Workers", async () => {
  const result = await measureFloor({
    devices: 5,
    imageSize: 20 * 1024,
    blockSize: 4096,
    workers: 2,
  });
  // 20 KiB in 4 KiB blocks is 5 blocks per client, the last one whole (the floor sends full blocks).
  assert.equal(result.bytes, 5 * 5 * 4096);
  assert.ok(result.seconds > 0 && result.mbPerSecond > 0);
});

Deno.test("fleet floor: requests ask for as many blocks as the fleet's agents do", () => {
  assert.equal(blocksPerRequestFor(4096), 8);
  assert.equal(blocksPerRequestFor(256), 32);
  assert.equal(blocksPerRequestFor(65536), 1);
});
