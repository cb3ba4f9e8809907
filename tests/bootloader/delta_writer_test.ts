/**
 * Delta patches made by `npm:fossil-delta` applied by the device's streaming writer: any base and
 * target round-trip whatever the chunking of the patch and the size of the output buffer; a
 * corrupted patch never throws, never writes outside the slot or out of order, and whatever it
 * makes of a signed image fails the image's verification unless it is the image.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { createDelta } from "fossil-delta";
import { DeltaWriter } from "../../bootloader/delta_writer.ts";
import { DeltaChecksum, PatchDecoder } from "../../protocol/delta_patch.ts";
import { bytesSource } from "../../protocol/image_format.ts";
import { validateImage } from "../../bootloader/image_validate.ts";
import { bytesEqual } from "../../lib/bytes.ts";
import { factoryDevice, smallLayout, testImage, testPki } from "../helpers/pki.ts";
import { fileFor } from "../helpers/update.ts";
import { otaPalMain, OtaPalMainStatus } from "../../protocol/ota_pal_status.ts";

const WRITE_UNIT = 8;

/** A target made from `base` by edits a firmware release makes: changed, inserted, removed runs. */
const evolved = (base: Uint8Array) =>
  fc.array(
    fc.record({
      kind: fc.constantFrom("change", "insert", "remove"),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 300 }),
    }),
    { maxLength: 6 },
  ).map((edits) => {
    let target = base;
    for (const edit of edits) {
      const at = target.length === 0 ? 0 : edit.at % target.length;
      const before = target.subarray(0, at);
      if (edit.kind === "insert") {
        target = Uint8Array.from([...before, ...edit.bytes, ...target.subarray(at)]);
      } else if (edit.kind === "change") {
        const after = target.subarray(Math.min(target.length, at + edit.bytes.length));
        target = Uint8Array.from([...before, ...edit.bytes, ...after]);
      } else {
        target = Uint8Array.from([...before, ...target.subarray(at + edit.bytes.length)]);
      }
    }
    return target;
  });

/** A base and a target evolved from it. */
const baseAndTarget = fc.uint8Array({ minLength: 0, maxLength: 6000 }).chain((base) =>
  evolved(base).map((target) => ({ base, target }))
);

/** Applies `patch` pushed in `chunks`-sized pieces; records every write. */
function apply(
  base: Uint8Array,
  patch: Uint8Array,
  options: { chunk: number; bufferUnits: number; slot: number },
) {
  const staged = new Uint8Array(options.slot).fill(0xff);
  const writes: [number, number][] = [];
  const writer = new DeltaWriter({
    baseSize: base.length,
    maxTargetSize: options.slot,
    writeUnit: WRITE_UNIT,
    bufferSize: options.bufferUnits * WRITE_UNIT,
    readBase: (offset, length) => {
      assert.ok(offset >= 0 && offset + length <= base.length, `base read ${offset}+${length}`);
      return base.slice(offset, offset + length);
    },
    write: (offset, bytes) => {
      writes.push([offset, bytes.length]);
      staged.set(bytes, offset); // throws if out of the slot
      return null;
    },
  });
  let failure: string | null = null;
  for (let at = 0; at < patch.length && failure === null; at += options.chunk) {
    failure = writer.push(patch.subarray(at, at + options.chunk));
  }
  failure ??= writer.finish();
  return { failure, staged, writes, writer };
}

/** Writes are in order, back to back, each starting on a write unit. */
function assertWritesInOrder(writes: readonly [number, number][]): void {
  let next = 0;
  for (const [offset, length] of writes) {
    assert.equal(offset, next, "each write follows the last");
    assert.equal(offset % WRITE_UNIT, 0, "on a write unit");
    next = offset + length;
  }
}

Deno.test("delta: any base and evolved target round-trip through the streaming writer, however the patch is cut and buffered", () => {
  fc.assert(
    fc.property(
      baseAndTarget,
      fc.integer({ min: 1, max: 700 }),
      fc.integer({ min: 1, max: 80 }),
      ({ base, target }, chunk, bufferUnits) => {
        const patch = createDelta(base, target);
        const slot = target.length + 64;
        const { failure, staged, writes } = apply(base, patch, { chunk, bufferUnits, slot });
        assert.equal(failure, null);
        assert.ok(bytesEqual(staged.subarray(0, target.length), target));
        assert.ok(staged.subarray(target.length).every((b) => b === 0xff), "nothing past it");
        assertWritesInOrder(writes);
      },
    ),
  );
});

Deno.test("delta: the checksum is Fossil's (byte i weighted by 256^(3 - i mod 4)), fed in any pieces", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(200), (bytes, cut) => {
      const whole = new DeltaChecksum();
      whole.update(bytes);
      const pieces = new DeltaChecksum();
      pieces.update(bytes.subarray(0, cut));
      pieces.update(bytes.subarray(cut));
      let expected = 0;
      bytes.forEach((b, i) => expected = (expected + b * 256 ** (3 - (i % 4))) % 2 ** 32);
      assert.equal(whole.value, expected);
      assert.equal(pieces.value, expected);
    }),
  );
  // What fossil-delta wrote for "hello!" made from "hello world": "6\n6:hello!3NXbmh;".
  const sum = new DeltaChecksum();
  sum.update(new TextEncoder().encode("hello!"));
  assert.equal(sum.value, 0xd7866c6c);
});

Deno.test("delta: a corrupted patch never throws nor writes outside the slot or out of order; what it makes of a signed image fails verification unless it is the image", async () => {
  const pki = await testPki();
  const base = await testImage({ version: "1.0.0", payloadSize: 3000 });
  const target = await testImage({ version: "1.1.0", payloadSize: 3000 });
  const patch = createDelta(base, target);
  const verify = async (bytes: Uint8Array) =>
    (await validateImage(bytesSource(bytes), { root: pki.root, at: new Date() })).ok;
  assert.ok(await verify(target), "the image itself verifies");
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        // flipped bytes
        fc.array(
          fc.record({ at: fc.nat(patch.length - 1), xor: fc.integer({ min: 1, max: 255 }) }),
          {
            minLength: 1,
            maxLength: 4,
          },
        ).map((flips) => {
          const bad = Uint8Array.from(patch);
          for (const f of flips) bad[f.at]! ^= f.xor;
          return bad;
        }),
        // cut short
        fc.nat(patch.length - 1).map((n) => patch.slice(0, n)),
        // garbage, or garbage spliced in
        fc.uint8Array({ maxLength: 400 }),
        fc.tuple(fc.nat(patch.length), fc.uint8Array({ minLength: 1, maxLength: 40 })).map((
          [at, junk],
        ) => Uint8Array.from([...patch.subarray(0, at), ...junk, ...patch.subarray(at)])),
      ),
      fc.integer({ min: 1, max: 500 }),
      async (bad, chunk) => {
        const slot = target.length + 256;
        const { failure, staged, writes, writer } = apply(base, bad, {
          chunk,
          bufferUnits: 16,
          slot,
        });
        assertWritesInOrder(writes);
        if (failure !== null) {
          assert.match(failure, /^(invalid patch: |writing the target)/);
          return;
        }
        const made = staged.subarray(0, writer.targetSize);
        if (!bytesEqual(made, target)) {
          assert.equal(await verify(made), false, "a wrong target must not verify");
        }
      },
    ),
  );
});

Deno.test("delta: patch errors are one line each and name what is wrong", () => {
  const base = new TextEncoder().encode("hello world");
  const reasons = (text: string, maxTargetSize = 64) => {
    const decoder = new PatchDecoder({ baseSize: base.length, maxTargetSize }, {
      copy: () => {},
      insert: () => {},
    });
    return decoder.push(new TextEncoder().encode(text)) ?? decoder.finish();
  };
  assert.equal(reasons("6\n5@0,1:!3NXbmh;"), null);
  assert.match(reasons("")!, /ends early/);
  assert.match(reasons("!")!, /does not start with the target size/);
  assert.match(reasons("Z\n", 10)!, /target of 35 bytes, more than the 10 allowed/);
  assert.match(reasons("6\n5@7,")!, /a copy of 5 bytes at 7 reads past the 11-byte base/);
  assert.match(reasons("6\n7:")!, /command of 7 bytes goes past the 6-byte target/);
  assert.match(reasons("6\n5!")!, /unknown command '!'/);
  assert.match(reasons("6\n5@0,1:!3NXbmh;x")!, /1 bytes after the patch's end/);
  assert.match(reasons("6\n5@0,0;")!, /made 5 bytes of the 6 announced/);
  assert.match(reasons("6\n1234567@")!, /more than 6 digits/);
  assert.match(reasons("6\n@0,")!, /a command without a count/);
  for (const text of ["!", "6\n5@7,", "6\n5!"]) assert.doesNotMatch(reasons(text)!, /\n/);
});

Deno.test("delta: a wrong checksum is refused at the end, after the target was written", () => {
  const base = new TextEncoder().encode("hello world");
  const { failure } = apply(base, new TextEncoder().encode("6\n5@0,1:!3NXbmi;"), {
    chunk: 4,
    bufferUnits: 1,
    slot: 16,
  });
  assert.match(failure!, /checksum is d7866c6c, the patch says d7866c6d/);
});

Deno.test("OTA PAL: a patch's blocks are bounded by the patch, not the file: a patch larger than its image applies; a block past the patch or out of turn is refused", async () => {
  const { device } = await factoryDevice({ layout: smallLayout(24) });
  await device.powerOn();
  const image = await testImage({ version: "1.1.0", securityCounter: 2, payloadSize: 4096 });
  // From nothing: the whole image inserted, so the patch is a little larger than the image.
  const patch = new Uint8Array(createDelta(new Uint8Array(0), image));
  assert.ok(patch.length > image.length);
  const file = { ...await fileFor(image), patch: { size: patch.length } };
  assert.equal(device.pal.createFileForRx(file), 0);
  const tail = patch.length - 16;
  assert.equal(device.pal.writeBlock(file, 16, patch.subarray(16, 32)), -1);
  assert.match(device.pal.lastError ?? "", /patch block at 16 out of order: 0 bytes applied/);
  assert.equal(device.pal.writeBlock(file, 0, patch.subarray(0, tail)), tail);
  assert.equal(device.pal.writeBlock(file, tail, new Uint8Array(17)), -1);
  assert.match(device.pal.lastError ?? "", new RegExp(`outside the ${patch.length}-byte patch`));
  assert.equal(
    device.pal.writeBlock(file, tail, patch.subarray(tail)),
    16,
    "past the image's size",
  );
  assert.equal(otaPalMain(await device.pal.closeFile(file)), OtaPalMainStatus.Success);
  assert.equal(device.pal.activateNewImage(file), 0);
  await device.settle();
  assert.equal(device.running?.version, "1.1.0+0");
});
