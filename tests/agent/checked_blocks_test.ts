import assert from "node:assert/strict";
import fc from "fast-check";
import { blockMatchesHash } from "../../agent/checked_blocks.ts";
import { sha256 } from "../../protocol/signatures.ts";

Deno.test("checked blocks: the answer is always SHA-256's, whatever was checked before (fast-check prints the seed)", () => {
  // A small alphabet of blocks, so the same block and its near twins come back often.
  const base = fc.uint8Array({ minLength: 1, maxLength: 64 });
  const case_ = fc.record({
    payload: base,
    // Flip one byte of the payload, or of the hash, or neither.
    flipPayload: fc.option(fc.nat(), { nil: undefined }),
    flipHash: fc.option(fc.integer({ min: 0, max: 31 }), { nil: undefined }),
    // The block inside a bigger message, as the agent hands it over.
    offset: fc.integer({ min: 0, max: 7 }),
  });
  fc.assert(
    fc.property(fc.array(case_, { minLength: 1, maxLength: 30 }), (cases) => {
      for (const c of cases) {
        const hash = sha256(c.payload);
        if (c.flipHash !== undefined) hash[c.flipHash]! ^= 0x01;
        const message = new Uint8Array(c.payload.length + c.offset + 3);
        message.set(c.payload, c.offset);
        const payload = message.subarray(c.offset, c.offset + c.payload.length);
        if (c.flipPayload !== undefined) payload[c.flipPayload % payload.length]! ^= 0x80;
        const truth = sha256(payload).every((b, i) => b === hash[i]);
        assert.equal(blockMatchesHash(payload, hash), truth);
        // The message is reused by the transport: what was remembered is a copy.
        message.fill(0xa5);
        assert.equal(
          blockMatchesHash(payload, hash),
          sha256(payload).every((b, i) => b === hash[i]),
        );
      }
    }),
  );
});

Deno.test("checked blocks: a block checked once, then corrupted in one bit, fails; a hash not 32 bytes never matches", () => {
  const block = new Uint8Array(4096).map((_, i) => i * 31);
  const hash = sha256(block);
  assert.ok(blockMatchesHash(block, hash));
  assert.ok(blockMatchesHash(block.slice(), hash), "a second device's copy of the block passes");
  const corrupted = block.with(4000, block[4000]! ^ 0x10);
  assert.ok(!blockMatchesHash(corrupted, hash));
  assert.ok(!blockMatchesHash(block, hash.subarray(0, 31)));
  assert.ok(!blockMatchesHash(new Uint8Array(0), new Uint8Array(0)));
});

Deno.test("checked blocks: a block handed over as a Buffer view of a message the transport reuses is remembered as a copy", () => {
  const block = new Uint8Array(4096).map((_, i) => i * 13 + 5);
  const hash = sha256(block);
  const message = Buffer.alloc(4096 + 10);
  message.set(block, 10);
  assert.ok(blockMatchesHash(message.subarray(10), hash));
  message.fill(0); // the transport's next message
  const other = block.with(7, block[7]! ^ 1);
  assert.ok(!blockMatchesHash(other, hash), "a different block does not match the remembered one");
  assert.ok(blockMatchesHash(block.slice(), hash), "the remembered copy still matches the block");
  assert.ok(!blockMatchesHash(message.subarray(10), hash), "nor does the zeroed message");
});
