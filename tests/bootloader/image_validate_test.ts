import assert from "node:assert/strict";
import fc from "fast-check";
import { FlashError, NorFlash } from "../../bootloader/flash.ts";
import { FlashArea } from "../../bootloader/flash_area.ts";
import { decodeImage } from "../../protocol/image_format.ts";
import { decodeAreaImage, validateAreaImage } from "../../bootloader/image_validate.ts";
import { alignUp } from "../../lib/bytes.ts";
import { testImage, testPki } from "../helpers/pki.ts";

const SECTOR = 4096;
const SECTORS = 6;
const SIZE = (SECTORS - 1) * SECTOR;

/** `bytes` padded with erased bytes to the flash's 8-byte write unit. */
function padded(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(alignUp(bytes.length, 8)).fill(0xff);
  out.set(bytes);
  return out;
}

async function slotWithImage(version: string) {
  const image = await testImage({ version, payloadSize: 2 * SECTOR + 100 });
  const flash = new NorFlash({ sectorCount: SECTORS + 1, strict: false });
  const slot = new FlashArea(flash, { name: "slot", firstSector: 1, sectorCount: SECTORS });
  slot.program(0, padded(image));
  return { image, flash, slot };
}

Deno.test("decodeAreaImage decodes again only once a sector the image was read from changed", async () => {
  const { image, slot } = await slotWithImage("1.2.3");
  const first = decodeAreaImage(slot, SIZE);
  assert.ok(first.ok);
  assert.equal(first.image.header.version.minor, 2);
  // The image ends in sector 2: sector 4 changing leaves what was decoded standing.
  slot.program(4 * SECTOR, new Uint8Array(16));
  assert.equal(decodeAreaImage(slot, SIZE), first);
  // Zeroing its last bytes (a TLV, in sector 2) changes what decoding finds, and the memo follows.
  // (The signature's length varies, so the image's; the write unit stays 8 bytes.)
  slot.program(Math.floor((image.length - 8) / 8) * 8, new Uint8Array(8));
  const damaged = decodeAreaImage(slot, SIZE);
  assert.notDeepEqual(damaged, first);
  assert.deepEqual(damaged, decodeImage(slot.source(SIZE)));
  // Another size is another question.
  assert.deepEqual(decodeAreaImage(slot, SECTOR), decodeImage(slot.source(SECTOR)));
});

Deno.test("decodeAreaImage: property: after any programs and erases it answers what decoding the flash answers", async () => {
  const { image, slot } = await slotWithImage("2.0.0");
  const pristine = slot.read(0, SIZE);
  const op = fc.oneof(
    fc.record({
      kind: fc.constant("program" as const),
      unit: fc.nat(SIZE / 8 - 1),
      value: fc.nat(255),
    }),
    fc.record({ kind: fc.constant("erase" as const), sector: fc.nat(SECTORS - 2) }),
    fc.record({ kind: fc.constant("restore" as const) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
      for (let sector = 0; sector < SECTORS - 1; sector++) slot.eraseSector(sector);
      slot.program(0, padded(image));
      for (const o of ops) {
        try {
          if (o.kind === "program") slot.program(o.unit * 8, new Uint8Array(8).fill(o.value));
          if (o.kind === "erase") slot.eraseSector(o.sector);
          if (o.kind === "restore") {
            for (let sector = 0; sector < SECTORS - 1; sector++) slot.eraseSector(sector);
            slot.program(0, pristine);
          }
        } catch (error) {
          if (!(error instanceof FlashError)) throw error;
        }
        assert.deepEqual(decodeAreaImage(slot, SIZE), decodeImage(slot.source(SIZE)));
      }
    }),
  );
});

Deno.test("validateAreaImage checks the hash every time, even when the decoded header stands", async () => {
  const pki = await testPki();
  const { slot } = await slotWithImage("1.0.0");
  assert.equal((await validateAreaImage(slot, SIZE, { root: pki.root })).ok, true);
  // A payload byte in sector 1 changes: header and TLVs (sectors 0 and 2) are as they were.
  slot.program(SECTOR + 64, new Uint8Array(8));
  const result = await validateAreaImage(slot, SIZE, { root: pki.root });
  assert.equal(result.ok, false);
  assert.match(!result.ok ? result.reason : "", /hash does not match/);
});

Deno.test("decodeAreaImage without power says it cannot read, and does not remember it", async () => {
  const { flash, slot } = await slotWithImage("1.0.1");
  assert.ok(decodeAreaImage(slot, SIZE).ok);
  flash.powerOff();
  const unpowered = decodeAreaImage(slot, SIZE);
  assert.equal(unpowered.ok, false);
  assert.match(!unpowered.ok ? unpowered.reason : "", /cannot read image/);
  flash.powerOn();
  const powered = decodeAreaImage(slot, SIZE);
  assert.ok(powered.ok, "decoded again once the flash answers");
  // A first decode without power is not kept either.
  const other = await slotWithImage("1.0.2");
  other.flash.powerOff();
  assert.equal(decodeAreaImage(other.slot, SIZE).ok, false);
  other.flash.powerOn();
  assert.ok(decodeAreaImage(other.slot, SIZE).ok);
});
