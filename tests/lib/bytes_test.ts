/** The byte helpers' word-at-a-time and native paths agree with the plain definitions. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { bytesEqual, isFilledWith, toHex } from "../../lib/bytes.ts";

/** A window into a larger buffer, so offsets and lengths hit every alignment. */
const window = fc.record({
  // Past 512 bytes, where bytesEqual compares natively.
  bytes: fc.uint8Array({ minLength: 0, maxLength: 1200 }),
  start: fc.nat(8),
  trim: fc.nat(8),
}).map(({ bytes, start, trim }) =>
  bytes.subarray(Math.min(start, bytes.length), Math.max(start, bytes.length - trim))
);

Deno.test("bytesEqual: property: same answer as comparing byte by byte, at any alignment", () => {
  fc.assert(
    fc.property(window, fc.nat(8), fc.option(fc.nat(1199)), (a, shift, flip) => {
      const host = new Uint8Array(a.length + shift);
      host.set(a, shift);
      const b = host.subarray(shift);
      if (flip !== null && flip < b.length) b[flip]! ^= 1 << (flip % 8);
      const naive = a.length === b.length && a.every((v, i) => v === b[i]);
      assert.equal(bytesEqual(a, b), naive);
    }),
  );
});

Deno.test("isFilledWith: property: same answer as checking byte by byte, at any alignment", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 255 }),
      fc.nat(300),
      fc.nat(8),
      fc.option(fc.nat(299)),
      fc.integer({ min: -1, max: 256 }),
      (value, length, offset, poke, probe) => {
        const host = new Uint8Array(length + offset).fill(value);
        const bytes = host.subarray(offset);
        if (poke !== null && poke < bytes.length) bytes[poke] = (value + 1) & 0xff;
        assert.equal(isFilledWith(bytes, value), bytes.every((v) => v === value));
        assert.equal(isFilledWith(bytes, probe), bytes.every((v) => v === probe));
      },
    ),
  );
});

Deno.test("isFilledWith: property: a range answers as the subarray of that range", () => {
  fc.assert(
    fc.property(
      window,
      fc.integer({ min: 0, max: 255 }),
      fc.nat(300),
      fc.nat(300),
      fc.option(fc.nat(299)),
      (bytes, value, a, b, poke) => {
        bytes.fill(value);
        if (poke !== null && poke < bytes.length) bytes[poke] = (value + 1) & 0xff;
        const start = Math.min(a, b, bytes.length);
        const end = Math.min(Math.max(a, b), bytes.length);
        assert.equal(
          isFilledWith(bytes, value, start, end),
          bytes.subarray(start, end).every((v) => v === value),
        );
      },
    ),
  );
});

Deno.test("toHex: property: two lower-case digits per byte, in order", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      assert.equal(toHex(bytes), [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(""));
    }),
  );
});
