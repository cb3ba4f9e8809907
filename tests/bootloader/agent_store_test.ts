import assert from "node:assert/strict";
import fc from "fast-check";
import { AgentStateStore } from "../../bootloader/agent_store.ts";
import { FlashArea } from "../../bootloader/flash_area.ts";
import { isPowerCut, NorFlash } from "../../bootloader/flash.ts";
import { bytesEqual } from "../../lib/bytes.ts";

function store(flash = new NorFlash({ sectorCount: 2 })) {
  return new AgentStateStore(
    new FlashArea(flash, { name: "agent", firstSector: 0, sectorCount: 2 }),
  );
}

Deno.test("AgentStateStore.load() returns null on a blank area and the latest saved record after", () => {
  const s = store();
  assert.equal(s.load(), null);
  s.save(new Uint8Array([1, 2, 3]));
  s.save(new Uint8Array([4]));
  s.save(new Uint8Array(0));
  assert.deepEqual(s.load(), new Uint8Array(0));
  s.save(new Uint8Array([9, 9]));
  assert.deepEqual(s.load(), new Uint8Array([9, 9]));
});

Deno.test("AgentStateStore.save() refuses a payload larger than a record", () => {
  const s = store();
  assert.throws(() => s.save(new Uint8Array(s.capacity + 1)), RangeError);
});

Deno.test("AgentStateStore: a power cut at any operation of a save leaves the old or the new record", () => {
  for (const torn of [false, true]) {
    for (let cutAt = 1; cutAt <= 3; cutAt++) {
      const flash = new NorFlash({ sectorCount: 2, seed: cutAt });
      const s = store(flash);
      s.save(new Uint8Array([1, 1, 1]));
      s.save(new Uint8Array([2, 2, 2]));
      flash.cutPowerAt({ atOperation: cutAt, torn });
      assert.throws(() => s.save(new Uint8Array(3000).fill(3)), isPowerCut);
      flash.powerOn();
      const loaded = s.load();
      assert.ok(loaded, `cut ${cutAt}${torn ? " torn" : ""}: a record must survive`);
      assert.ok(
        bytesEqual(loaded, new Uint8Array([2, 2, 2])) ||
          bytesEqual(loaded, new Uint8Array(3000).fill(3)),
        `cut ${cutAt}${torn ? " torn" : ""}: loaded neither the old nor the new record`,
      );
    }
  }
});

Deno.test("AgentStateStore: property: after random saves and cuts the latest committed record is loaded", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          payload: fc.uint8Array({ maxLength: 300 }),
          cutAt: fc.option(fc.integer({ min: 1, max: 3 })),
          torn: fc.boolean(),
        }),
        { maxLength: 12 },
      ),
      fc.integer(),
      (steps, seed) => {
        const flash = new NorFlash({ sectorCount: 2, sectorSize: 512, seed });
        const s = new AgentStateStore(
          new FlashArea(flash, { name: "agent", firstSector: 0, sectorCount: 2 }),
        );
        let committed: Uint8Array | null = null;
        for (const step of steps) {
          if (step.cutAt !== null) flash.cutPowerAt({ atOperation: step.cutAt, torn: step.torn });
          try {
            s.save(step.payload);
            committed = step.payload;
            flash.cancelPowerCut();
          } catch (error) {
            if (!isPowerCut(error)) throw error;
            flash.powerOn();
            const loaded = s.load();
            // A cut save may or may not have committed; either way nothing else may appear.
            if (loaded && !bytesEqual(loaded, step.payload)) assert.deepEqual(loaded, committed);
            if (loaded && bytesEqual(loaded, step.payload)) committed = step.payload;
            if (!loaded) assert.equal(committed, null);
          }
        }
        const final = s.load();
        if (committed === null) assert.equal(final, null);
        else assert.deepEqual(final, committed);
      },
    ),
    { numRuns: 200 },
  );
});
