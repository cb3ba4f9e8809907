import assert from "node:assert/strict";
import fc from "fast-check";
import { ERASED, FlashError, isPowerCut, NorFlash } from "../../bootloader/flash.ts";
import { pooledTwin } from "../../bootloader/sector_pool.ts";
import { bytesEqual } from "../../lib/bytes.ts";
import { createHash } from "node:crypto";

const unit = 8;

Deno.test("NorFlash starts erased, programs clear bits and erase restores 0xFF", () => {
  const flash = new NorFlash({ sectorCount: 2 });
  assert.deepEqual(flash.read(0, 4), new Uint8Array(4).fill(ERASED));
  flash.program(8, new Uint8Array(8).fill(0x5a));
  assert.deepEqual(flash.read(8, 8), new Uint8Array(8).fill(0x5a));
  flash.eraseSector(0);
  assert.deepEqual(flash.read(8, 8), new Uint8Array(8).fill(ERASED));
  assert.equal(flash.wear(0), 1);
  assert.equal(flash.wear(1), 0);
});

Deno.test("NorFlash refuses misaligned and out-of-range access instead of clipping", () => {
  const flash = new NorFlash({ sectorCount: 1 });
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (error) {
      assert.ok(error instanceof FlashError);
      return error.code;
    }
    return "no error";
  };
  assert.equal(code(() => flash.program(4, new Uint8Array(8))), "misaligned");
  assert.equal(code(() => flash.program(0, new Uint8Array(5))), "misaligned");
  assert.equal(code(() => flash.program(4096, new Uint8Array(8))), "out-of-range");
  assert.equal(code(() => flash.read(4090, 8)), "out-of-range");
  assert.equal(code(() => flash.read(-1, 1)), "out-of-range");
  assert.equal(code(() => flash.eraseSector(1)), "out-of-range");
  assert.equal(code(() => flash.erase(0, 100)), "misaligned");
  assert.equal(flash.stats.operations, 0, "refused operations change nothing");
});

Deno.test("NorFlash strict mode refuses a second program; relaxed mode refuses only 0->1 changes", () => {
  const strict = new NorFlash({ sectorCount: 1 });
  strict.program(0, new Uint8Array(8).fill(0xf0));
  assert.throws(() => strict.program(0, new Uint8Array(8).fill(0x00)), { code: "not-erased" });
  const relaxed = new NorFlash({ sectorCount: 1, strict: false });
  relaxed.program(0, new Uint8Array(8).fill(0xf0));
  relaxed.program(0, new Uint8Array(8).fill(0x30));
  assert.deepEqual(relaxed.read(0, 1), new Uint8Array([0x30]));
  assert.throws(() => relaxed.program(0, new Uint8Array(8).fill(0x31)), { code: "bit-set" });
});

Deno.test("NorFlash refuses to erase a sector past its erase-cycle limit", () => {
  const flash = new NorFlash({ sectorCount: 1, eraseCycleLimit: 3 });
  for (let i = 0; i < 3; i++) flash.eraseSector(0);
  assert.throws(() => flash.eraseSector(0), { code: "worn-out" });
});

Deno.test("NorFlash counts reads, programs, erases and operations", () => {
  const flash = new NorFlash({ sectorCount: 2 });
  flash.program(0, new Uint8Array(16));
  flash.read(0, 4);
  flash.eraseSector(1);
  assert.deepEqual(flash.stats, {
    reads: 1,
    bytesRead: 4,
    programs: 1,
    bytesProgrammed: 16,
    erases: 1,
    operations: 2,
    refused: 0,
  });
});

Deno.test("NorFlash: a clean power cut skips the operation and leaves the chip off", () => {
  const flash = new NorFlash({ sectorCount: 1 });
  flash.cutPowerAt({ atOperation: 2, torn: false });
  flash.program(0, new Uint8Array(8).fill(1));
  assert.throws(() => flash.program(8, new Uint8Array(8).fill(2)), isPowerCut);
  assert.throws(() => flash.read(0, 1), { code: "powered-off" });
  flash.powerOn();
  assert.deepEqual(
    flash.read(0, 16),
    new Uint8Array([...new Array(8).fill(1), ...new Array(8).fill(ERASED)]),
  );
});

Deno.test("NorFlash: property: a torn program writes a prefix of whole units and one partial unit", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 32 }), fc.integer(), (units, seed) => {
      const flash = new NorFlash({ sectorCount: 1, seed });
      const data = new Uint8Array(units * unit).fill(0x00);
      flash.cutPowerAt({ atOperation: 1, torn: true });
      assert.throws(() => flash.program(0, data), isPowerCut);
      flash.powerOn();
      const after = flash.read(0, data.length);
      let whole = 0;
      while (
        whole < units && after.subarray(whole * unit, (whole + 1) * unit).every((b) => b === 0)
      ) whole++;
      assert.ok(whole < units, "a torn program never completes");
      for (let u = whole + 1; u < units; u++) {
        assert.ok(
          after.subarray(u * unit, (u + 1) * unit).every((b) => b === ERASED),
          `unit ${u} after the tear is untouched`,
        );
      }
    }),
  );
});

Deno.test("NorFlash: property: a torn erase only sets bits (old | noise), never clears one", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 4096, maxLength: 4096 }),
      fc.integer(),
      (content, seed) => {
        const flash = new NorFlash({ sectorCount: 1, seed });
        flash.program(0, content);
        flash.cutPowerAt({ atOperation: 1, torn: true });
        assert.throws(() => flash.eraseSector(0), isPowerCut);
        flash.powerOn();
        const after = flash.read(0, 4096);
        for (let i = 0; i < 4096; i++) {
          assert.equal(
            after[i]! & content[i]!,
            content[i]!,
            `byte ${i} lost a 1 bit`,
          );
        }
        assert.equal(flash.wear(0), 1, "an interrupted erase still wears the sector");
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("NorFlash: property: random operations agree with a byte-array model", () => {
  const sectorSize = 256;
  const sectors = 4;
  const op = fc.oneof(
    fc.record({
      kind: fc.constant("program" as const),
      unitIndex: fc.integer({ min: 0, max: (sectorSize * sectors) / unit - 1 }),
      units: fc.integer({ min: 1, max: 8 }),
      value: fc.integer({ min: 0, max: 255 }),
    }),
    fc.record({
      kind: fc.constant("erase" as const),
      sector: fc.integer({ min: 0, max: sectors - 1 }),
    }),
  );
  fc.assert(
    fc.property(fc.boolean(), fc.array(op, { maxLength: 60 }), (strict, ops) => {
      const flash = new NorFlash({ sectorCount: sectors, sectorSize, strict });
      const model = new Uint8Array(sectorSize * sectors).fill(ERASED);
      for (const o of ops) {
        if (o.kind === "erase") {
          flash.eraseSector(o.sector);
          model.fill(ERASED, o.sector * sectorSize, (o.sector + 1) * sectorSize);
          continue;
        }
        const offset = o.unitIndex * unit;
        const length = Math.min(o.units * unit, model.length - offset);
        const data = new Uint8Array(length).fill(o.value);
        const target = model.subarray(offset, offset + length);
        const expectError = strict
          ? target.some((b) => b !== ERASED)
          : target.some((b) => (o.value & ~b & 0xff) !== 0);
        if (expectError) {
          assert.throws(() => flash.program(offset, data), FlashError);
        } else {
          flash.program(offset, data);
          for (let i = 0; i < length; i++) target[i] = target[i]! & o.value;
        }
      }
      assert.deepEqual(flash.read(0, model.length), model);
    }),
  );
});

Deno.test("NorFlash shares identical sector contents between chips, copy-on-write", () => {
  const content = new Uint8Array(4096).map((_, i) => i * 7);
  const a = new NorFlash({ sectorCount: 4 });
  const b = new NorFlash({ sectorCount: 4 });
  a.program(4096, content);
  b.program(4096, content);
  assert.ok(a.sharesSectorWith(1, b), "identical fully written sectors are one buffer");
  assert.equal(a.memoryUsage().erasedSectors, 3, "erased sectors hold no buffer");
  const c = a.clone();
  assert.ok(c.sharesSectorWith(1, a));
  c.eraseSector(1);
  c.program(4096, new Uint8Array(8).fill(1));
  assert.deepEqual(
    a.read(4096, 8),
    content.subarray(0, 8),
    "a write to the clone never reaches the original",
  );
  assert.deepEqual(b.read(4096, 8), content.subarray(0, 8));
  assert.equal(c.memoryUsage().privateBytes, 4096);
});

Deno.test("NorFlash: property: taken changes rebuild the chip as it was when they were taken", () => {
  const sectorSize = 256;
  const sectors = 4;
  const size = sectorSize * sectors;
  const op = fc.oneof(
    fc.record({
      kind: fc.constant("program" as const),
      unitIndex: fc.integer({ min: 0, max: size / unit - 1 }),
      units: fc.integer({ min: 1, max: 40 }),
      value: fc.integer({ min: 0, max: 255 }),
    }),
    fc.record({ kind: fc.constant("erase" as const), sector: fc.nat(sectors - 1) }),
    fc.record({ kind: fc.constant("torn-cut" as const), after: fc.integer({ min: 1, max: 3 }) }),
    fc.record({ kind: fc.constant("take" as const) }),
  );
  fc.assert(
    fc.property(fc.integer(), fc.array(op, { maxLength: 50 }), (seed, ops) => {
      const chip = new NorFlash({
        sectorCount: sectors,
        sectorSize,
        strict: false,
        seed,
        trackChanges: true,
      });
      const mirror = new NorFlash({ sectorCount: sectors, sectorSize });
      let taken = chip.read(0, size);
      const wearOf = (flash: NorFlash) => Array.from({ length: sectors }, (_, s) => flash.wear(s));
      let takenWear = wearOf(chip);
      for (const o of ops) {
        chip.powerOn();
        try {
          if (o.kind === "program") {
            const offset = o.unitIndex * unit;
            chip.program(offset, new Uint8Array(Math.min(o.units * unit, size - offset)));
          } else if (o.kind === "erase") {
            chip.eraseSector(o.sector);
          } else if (o.kind === "torn-cut") {
            chip.cutPowerAt({ atOperation: o.after, torn: true });
          } else {
            mirror.applyChanges(chip.takeChanges());
            taken = chip.read(0, size);
            takenWear = wearOf(chip);
          }
        } catch (error) {
          if (!(error instanceof FlashError) && !isPowerCut(error)) throw error;
        }
        // What the mirror holds never moves with the chip's later writes.
        assert.deepEqual(mirror.read(0, size), taken);
        assert.deepEqual(wearOf(mirror), takenWear);
      }
    }),
  );
});

Deno.test("NorFlash tracking changes hands out each changed sector once, frozen", () => {
  const chip = new NorFlash({ sectorCount: 2, trackChanges: true });
  chip.program(8, new Uint8Array(8).fill(0x11));
  const [change, ...more] = chip.takeChanges();
  assert.ok(change);
  assert.deepEqual(more, []);
  assert.equal(change[0], 0);
  assert.deepEqual(chip.takeChanges(), [], "nothing changed since");
  chip.program(16, new Uint8Array(8).fill(0x22));
  assert.equal(change[1]?.[16], ERASED, "a frozen sector is copied before the next program");
  assert.throws(
    () => new NorFlash({ sectorCount: 2 }).applyChanges([[0, new Uint8Array(3), 0]]),
    /holds 3 bytes, not 4096/,
  );
});

Deno.test("NorFlash protection: read-only refuses programs and erases, one-time-programmable refuses erases; refusals are counted, remembered, never lowered and survive a clone", () => {
  const flash = new NorFlash({ sectorCount: 4, sectorSize: 256 });
  flash.program(0, new Uint8Array(8).fill(0x5a));
  flash.protect(0, 1, "read-only");
  flash.protect(3, 1, "one-time-programmable");
  const refused = (work: () => void) =>
    assert.throws(
      work,
      (error: unknown) => error instanceof FlashError && error.code === "protected",
    );
  refused(() => flash.program(8, new Uint8Array(8)));
  refused(() => flash.eraseSector(0));
  refused(() => flash.erase(0, 512));
  refused(() => flash.eraseSector(3));
  // One-time-programmable bits can still be blown (the security counter rises).
  flash.program(3 * 256, new Uint8Array(8));
  assert.deepEqual(flash.read(3 * 256, 8), new Uint8Array(8));
  assert.deepEqual(flash.read(0, 8), new Uint8Array(8).fill(0x5a), "the frozen sector is intact");
  assert.equal(flash.stats.refused, 4);
  assert.equal(flash.stats.operations, 2, "a refused write is not an operation a power cut counts");
  assert.deepEqual(flash.refusals.map((r) => `${r.operation} ${r.sector} ${r.protection}`), [
    "program 0 read-only",
    "erase 0 read-only",
    "erase 0 read-only",
    "erase 3 one-time-programmable",
  ]);
  refused(() => flash.protect(0, 1, "none"));
  refused(() => flash.protect(0, 1, "one-time-programmable"));
  flash.protect(3, 1, "read-only");
  const copy = flash.clone();
  assert.equal(copy.protection(0), "read-only");
  assert.equal(copy.protection(1), "none");
  refused(() => copy.eraseSector(3));
  copy.eraseSector(1);
});

Deno.test("NorFlash: property: a sector copy shares the buffer yet reads, counts and erases as the chunked copy does", () => {
  const chunkSize = 1024;
  const chunks = fc.array(
    fc.option(fc.uint8Array({ minLength: chunkSize, maxLength: chunkSize })),
    {
      minLength: 4,
      maxLength: 4,
    },
  );
  fc.assert(
    fc.property(chunks, (content) => {
      const build = () => {
        const chip = new NorFlash({ sectorCount: 3 });
        content.forEach((chunk, i) => {
          if (chunk) chip.program(i * chunkSize, chunk);
        });
        return chip;
      };
      const shared = build();
      const chunked = build();
      // An armed cut (far away) leaves only the chunk-by-chunk path.
      chunked.cutPowerAt({ atOperation: 1_000_000, torn: false });
      const before = shared.stats;
      shared.copySector(0, 1, chunkSize);
      chunked.copySector(0, 1, chunkSize);
      assert.deepEqual(shared.stats, chunked.stats);
      const programmed = content.filter((c) => c && c.some((b) => b !== ERASED)).length;
      assert.equal(shared.stats.operations - before.operations, programmed);
      assert.deepEqual(shared.read(4096, 4096), chunked.read(4096, 4096));
      assert.deepEqual(shared.read(4096, 4096), shared.read(0, 4096));
      assert.equal(shared.sharesSectorWith(1, shared, 0), programmed > 0);
      // Copy-on-write: changing the source leaves the copy as it was.
      const copy = shared.read(4096, 4096);
      shared.eraseSector(0);
      assert.deepEqual(shared.read(4096, 4096), copy);
      assert.ok(shared.isErased(0, 4096));
    }),
  );
});

Deno.test("NorFlash: a sector copy struck by a power cut stops at the same operation as a chunked copy", () => {
  const chip = new NorFlash({ sectorCount: 2 });
  chip.program(0, new Uint8Array(4096).fill(0x5a));
  chip.cutPowerAt({ atOperation: 3, torn: false });
  assert.throws(() => chip.copySector(0, 1, 1024), (error: unknown) => isPowerCut(error));
  chip.powerOn();
  assert.deepEqual(chip.read(4096, 2048), new Uint8Array(2048).fill(0x5a), "two chunks made it");
  assert.ok(chip.isErased(4096 + 2048, 2048), "the cut third chunk and the fourth did not");
});

Deno.test("NorFlash: a sector copy refuses a chunk size that does not divide a sector", () => {
  const chip = new NorFlash({ sectorCount: 2 });
  assert.throws(() => chip.copySector(0, 1, 1000), RangeError);
  assert.throws(() => chip.copySector(0, 2, 1024), FlashError);
});

Deno.test("NorFlash: property: digest() is the SHA-256 of read(), and a sector whose version stands reads the same, on every chip however its sectors are shared, torn or rewritten", () => {
  const sectorSize = 256;
  const sectorCount = 6;
  // Few distinct contents, so whole-sector programs hit the pool and chips share buffers.
  const contents = [0x00, 0x5a, 0xa5].map((v) => new Uint8Array(sectorSize).fill(v));
  const op = fc.oneof(
    fc.record({
      kind: fc.constant("whole" as const),
      chip: fc.nat(3),
      sector: fc.nat(sectorCount - 1),
      content: fc.nat(contents.length - 1),
    }),
    fc.record({
      kind: fc.constant("part" as const),
      chip: fc.nat(3),
      unitIndex: fc.nat(sectorCount * sectorSize / unit - 2),
      value: fc.nat(255),
    }),
    fc.record({
      kind: fc.constant("erase" as const),
      chip: fc.nat(3),
      sector: fc.nat(sectorCount - 1),
    }),
    fc.record({
      kind: fc.constant("copy" as const),
      chip: fc.nat(3),
      from: fc.nat(sectorCount - 1),
      to: fc.nat(sectorCount - 1),
    }),
    fc.record({ kind: fc.constant("clone" as const), from: fc.nat(3), to: fc.nat(3) }),
    fc.record({
      kind: fc.constant("torn" as const),
      chip: fc.nat(3),
      sector: fc.nat(sectorCount - 1),
      content: fc.nat(contents.length - 1),
    }),
  );
  const range = fc.record({
    offset: fc.nat(sectorCount * sectorSize - 1),
    length: fc.nat(4 * sectorSize),
  });
  fc.assert(
    fc.property(
      fc.array(op, { maxLength: 40 }),
      fc.array(range, { minLength: 1, maxLength: 6 }),
      (ops, ranges) => {
        const chips = Array.from(
          { length: 4 },
          () => new NorFlash({ sectorCount, sectorSize, strict: false }),
        );
        const attempt = (work: () => void) => {
          try {
            work();
          } catch (error) {
            if (!(error instanceof FlashError) && !isPowerCut(error)) throw error;
          }
        };
        for (const o of ops) {
          if (o.kind === "clone") {
            chips[o.to] = chips[o.from]!.clone();
            continue;
          }
          const chip = chips[o.chip]!;
          // What was read from a sector stays true while its version stands (trailer caches).
          const before = Array.from({ length: sectorCount }, (_, sector) => ({
            version: chip.sectorVersion(sector),
            bytes: chip.read(sector * sectorSize, sectorSize),
          }));
          if (o.kind === "whole") {
            attempt(() => chip.program(o.sector * sectorSize, contents[o.content]!));
          }
          if (o.kind === "part") {
            attempt(() => chip.program(o.unitIndex * unit, new Uint8Array(2 * unit).fill(o.value)));
          }
          if (o.kind === "erase") attempt(() => chip.eraseSector(o.sector));
          if (o.kind === "copy" && o.from !== o.to) {
            attempt(() => {
              chip.eraseSector(o.to);
              chip.copySector(o.from, o.to, sectorSize / 4);
            });
          }
          if (o.kind === "torn") {
            chip.cutPowerAt({ atOperation: 1, torn: true });
            attempt(() => chip.program(o.sector * sectorSize, contents[o.content]!));
            chip.cancelPowerCut(); // a refused program leaves the cut armed
            chip.powerOn();
          }
          before.forEach(({ version, bytes }, sector) => {
            if (chip.sectorVersion(sector) === version) {
              assert.deepEqual(chip.read(sector * sectorSize, sectorSize), bytes);
            }
          });
          for (const c of chips) {
            for (const r of ranges) {
              const length = Math.min(r.length, sectorCount * sectorSize - r.offset);
              const expected = new Uint8Array(
                createHash("sha256").update(c.read(r.offset, length)).digest(),
              );
              assert.deepEqual(c.digest(r.offset, length), expected);
            }
          }
        }
      },
    ),
  );
});

Deno.test("sector pool: a sector's bytes at an unaligned offset find the pooled twin of the same content", () => {
  const content = new Uint8Array(4096).map((_, i) => (i * 7 + 3) & 0xff);
  const first = new NorFlash({ sectorCount: 2, trackChanges: true });
  first.program(0, content);
  // A block inside a larger message, as the agent hands it over: offset 1, not a word boundary.
  const message = new Uint8Array(4096 + 5);
  message.set(content, 1);
  const unaligned = message.subarray(1, 4097);
  assert.notEqual(unaligned.byteOffset % 4, 0);
  // The pool knows it as it is: no aligned copy needed to find it (nor made to be written).
  const twin = pooledTwin(unaligned);
  assert.ok(twin !== null && bytesEqual(twin, content), "the unaligned view finds its twin");
  const second = new NorFlash({ sectorCount: 2, trackChanges: true });
  second.program(4096, unaligned);
  assert.deepEqual(second.read(4096, 4096), content);
  // Taken from the pool: the second chip's sector is the first chip's buffer, shared.
  assert.ok(
    second.sharesSectorWith(1, first, 0),
    "the unaligned program adopted the pooled buffer",
  );
  // A different content with the same sampled words is still told apart byte by byte.
  const other = content.slice();
  other[1001] = other[1001]! ^ 0xff; // in word 250, which the key does not sample
  const third = new NorFlash({ sectorCount: 1, trackChanges: true });
  third.program(0, other);
  assert.equal(third.read(1001, 1)[0], other[1001]);
  assert.ok(!third.sharesSectorWith(0, first, 0));
});

Deno.test("NorFlash.isErased says what reading the range says, within a sector or across several (fast-check prints the seed)", () => {
  const sectorSize = 256;
  const sectors = 4;
  const size = sectorSize * sectors;
  const write = fc.record({
    unit: fc.integer({ min: 0, max: size / 8 - 1 }),
    byte: fc.integer({ min: 0, max: 254 }),
  });
  const range = fc.record({
    offset: fc.integer({ min: 0, max: size - 1 }),
    length: fc.integer({ min: 0, max: size }),
  });
  fc.assert(
    fc.property(
      fc.array(write, { maxLength: 12 }),
      fc.array(range, { minLength: 1, maxLength: 20 }),
      (writes, ranges) => {
        const chip = new NorFlash({ sectorCount: sectors, sectorSize, strict: false });
        for (const w of writes) {
          try {
            chip.program(w.unit * 8, new Uint8Array(8).fill(w.byte));
          } catch (error) {
            // A second program of a unit that would set a bit is refused: the chip is unchanged.
            if (!(error instanceof FlashError)) throw error;
          }
        }
        // Random ranges, and ranges that end or start right at a written unit's edge.
        const edges = writes.flatMap((w) => [
          { offset: Math.max(0, w.unit * 8 - 5), length: 6 },
          { offset: Math.max(0, w.unit * 8 - 5), length: 5 },
          { offset: w.unit * 8 + 7, length: 9 },
          { offset: w.unit * 8 + 8, length: 9 },
        ]);
        for (const r of [...ranges, ...edges]) {
          const length = Math.min(r.length, size - r.offset);
          const read = chip.read(r.offset, length);
          assert.equal(
            chip.isErased(r.offset, length),
            read.every((b) => b === ERASED),
            JSON.stringify(r),
          );
        }
      },
    ),
  );
});
