import assert from "node:assert/strict";
import fc from "fast-check";
import { decode, encode } from "cborg";
import { BlockBitmap } from "../../agent/bitmap.ts";
import {
  blockFields,
  decodeCbor,
  decodeGetStreamRequest,
  decodeStreamBlock,
  encodeGetStreamRequest,
  encodeStreamBlock,
} from "../../protocol/stream_codec.ts";
import { classifyTopic, thingTopics } from "../../protocol/topics.ts";

Deno.test("GetStream request round-trips with the AWS keys c, f, l, o, n, b", () => {
  const request = {
    clientToken: "rdy",
    fileId: 3,
    blockSize: 4096,
    offset: 0,
    numberOfBlocks: 8,
    bitmap: new Uint8Array([0xff, 0x01]),
  };
  const bytes = encodeGetStreamRequest(request);
  const decoded = decodeGetStreamRequest(bytes);
  assert.ok(decoded.ok);
  assert.deepEqual(decoded.value, request);
  assert.deepEqual(Object.keys(decode(bytes) as Record<string, unknown>).sort(), [
    "b",
    "c",
    "f",
    "l",
    "n",
    "o",
  ]);
});

Deno.test("data blocks decode strictly and carry the optional SHA-256 extension", () => {
  const block = {
    fileId: 0,
    blockId: 7,
    blockSize: 256,
    payload: new Uint8Array(256).fill(3),
    hash: new Uint8Array(32).fill(9),
  };
  const decoded = decodeStreamBlock(encodeStreamBlock(block));
  assert.ok(decoded.ok);
  assert.deepEqual(decoded.value, block);
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(), /empty/],
    [new Uint8Array([0xff, 0x00]), /invalid CBOR/],
    [encode([1, 2]), /not a map/],
    [encode({ f: 0, i: 1, l: 256 }), /'p' must be a byte string/],
    [encode({ f: -1, i: 1, l: 256, p: new Uint8Array(1) }), /'f' must be an integer/],
    [encode({ f: 0, i: 1.5, l: 256, p: new Uint8Array(1) }), /'i' must be an integer/],
    [encode({ f: 0, i: 1, l: 256, p: "text" }), /'p' must be a byte string/],
    [
      encode({ f: 0, i: 1, l: 256, p: new Uint8Array(1), h: new Uint8Array(3) }),
      /'h' must be a 32-byte/,
    ],
  ];
  for (const [bytes, reason] of cases) {
    const result = decodeStreamBlock(bytes);
    assert.ok(!result.ok);
    assert.match(result.reason, reason);
  }
});

Deno.test("stream codecs: property: arbitrary bytes never throw", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const a = decodeStreamBlock(bytes);
      const b = decodeGetStreamRequest(bytes);
      if (!a.ok) assert.ok(a.reason.length > 0);
      if (!b.ok) assert.ok(b.reason.length > 0);
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(
      fc.dictionary(
        fc.constantFrom("f", "i", "l", "p", "h", "c", "o", "n", "b", "x"),
        fc.oneof(fc.integer(), fc.string(), fc.uint8Array({ maxLength: 40 }), fc.constant(null)),
      ),
      (map) => {
        const bytes = encode(map);
        decodeStreamBlock(bytes);
        decodeGetStreamRequest(bytes);
      },
    ),
    { numRuns: 1000 },
  );
});

/** cborg's own strict decode, or the message it throws. */
function cborgDecode(bytes: Uint8Array): { value: unknown } | { error: string } {
  try {
    return { value: decode(bytes, { useMaps: false, rejectDuplicateMapKeys: true, strict: true }) };
  } catch (error) {
    return { error: (error as Error).message };
  }
}

function viewingDecode(bytes: Uint8Array): { value: unknown } | { error: string } {
  try {
    return { value: decodeCbor(bytes) };
  } catch (error) {
    return { error: (error as Error).message };
  }
}

/** A byte-string head with `length` in `argumentBytes` bytes (0 = in the head itself). */
function byteStringHead(length: number, argumentBytes: 0 | 1 | 2 | 4): number[] {
  if (argumentBytes === 0) return [0x40 | length];
  const minor = { 1: 24, 2: 25, 4: 26 }[argumentBytes];
  const out = [0x40 | minor];
  for (let i = argumentBytes - 1; i >= 0; i--) out.push(Math.floor(length / 256 ** i) % 256);
  return out;
}

Deno.test("decodeCbor: property: decodes what cborg decodes, refuses what it refuses, byte strings as views", () => {
  const lengths = fc.oneof(
    fc.constantFrom(0, 1, 23, 24, 25, 255, 256, 257, 4096, 65535, 65536),
    fc.nat(70_000),
  );
  fc.assert(
    fc.property(
      lengths,
      fc.constantFrom(0 as const, 1 as const, 2 as const, 4 as const),
      fc.integer({ min: -3, max: 3 }),
      fc.boolean(),
      (length, argumentBytes, shortBy, inMap) => {
        if (argumentBytes === 0 && length > 23) return;
        if (argumentBytes > 0 && length >= 256 ** argumentBytes) return;
        // Preferred or not, whole, short or with bytes to spare, alone or as a map value.
        const body = Array.from({ length: Math.max(0, length + shortBy) }, (_, i) => i % 251);
        const string = [...byteStringHead(length, argumentBytes), ...body];
        const bytes = new Uint8Array(inMap ? [0xa1, 0x61, 0x70, ...string] : string);
        assert.deepEqual(viewingDecode(bytes), cborgDecode(bytes));
        const decoded = viewingDecode(bytes);
        const value = "value" in decoded
          ? (inMap ? (decoded.value as { p: Uint8Array }).p : decoded.value)
          : null;
        if (value instanceof Uint8Array) assert.equal(value.buffer, bytes.buffer);
      },
    ),
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      assert.deepEqual(viewingDecode(bytes), cborgDecode(bytes));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("BlockBitmap uses the AWS layout: bit i%8 of byte i/8, 1 = needed, unused high bits 0", () => {
  const bitmap = new BlockBitmap(20);
  assert.deepEqual(bitmap.toBytes(), new Uint8Array([0xff, 0xff, 0x0f]));
  for (const i of [0, 1, 2, 8, 19]) assert.equal(bitmap.markReceived(i), true);
  assert.equal(bitmap.markReceived(19), false, "a duplicate is not counted twice");
  assert.equal(bitmap.markReceived(20), false, "out of range");
  assert.equal(bitmap.remaining, 15);
  assert.deepEqual(bitmap.toBytes(), new Uint8Array([0xf8, 0xfe, 0x07]));
  assert.deepEqual(bitmap.neededBlocks(3), [3, 4, 5]);
  const restored = BlockBitmap.fromBytes(bitmap.toBytes(), 20)!;
  assert.equal(restored.remaining, 15);
  assert.equal(
    BlockBitmap.fromBytes(new Uint8Array([0xff, 0xff, 0xff]), 20),
    null,
    "bits past the last block",
  );
  assert.equal(BlockBitmap.fromBytes(new Uint8Array([0xff]), 20), null, "wrong length");
});

Deno.test("BlockBitmap: property: remaining always equals the needed blocks", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 300 }),
      fc.array(fc.integer({ min: -2, max: 310 })),
      (count, marks) => {
        const bitmap = new BlockBitmap(count);
        const received = new Set<number>();
        for (const i of marks) {
          const was = bitmap.markReceived(i);
          assert.equal(was, i >= 0 && i < count && !received.has(i));
          if (i >= 0 && i < count) received.add(i);
        }
        assert.equal(bitmap.remaining, count - received.size);
        assert.equal(bitmap.neededBlocks().length, bitmap.remaining);
        assert.equal(BlockBitmap.fromBytes(bitmap.toBytes(), count)?.remaining, bitmap.remaining);
      },
    ),
  );
});

Deno.test("topics: builders and classification of the Jobs and stream topics", () => {
  const topics = thingTopics("dev-9");
  assert.equal(topics.nextGet, "$aws/things/dev-9/jobs/$next/get");
  assert.equal(topics.streamGet("s1"), "$aws/things/dev-9/streams/s1/get/cbor");
  assert.deepEqual(classifyTopic("dev-9", "$aws/things/dev-9/jobs/notify-next"), {
    kind: "notify-next",
  });
  assert.deepEqual(classifyTopic("dev-9", "$aws/things/dev-9/jobs/$next/get/accepted"), {
    kind: "next-get-accepted",
  });
  assert.deepEqual(classifyTopic("dev-9", "$aws/things/dev-9/jobs/$next/get/rejected"), {
    kind: "next-get-rejected",
  });
  assert.deepEqual(classifyTopic("dev-9", "$aws/things/dev-9/jobs/j/update/rejected"), {
    kind: "update-rejected",
    jobId: "j",
  });
  assert.deepEqual(classifyTopic("dev-9", "$aws/things/dev-9/streams/s1/data/cbor"), {
    kind: "stream-data",
    stream: "s1",
  });
  assert.deepEqual(classifyTopic("dev-9", "$aws/things/dev-10/jobs/notify-next"), {
    kind: "other",
  });
  assert.deepEqual(classifyTopic("dev-9", "$aws/things/dev-9/jobs/$next/update/accepted"), {
    kind: "other",
  });
});

Deno.test("stream block fast path: whatever it reads is what strict CBOR decoding reads; blocks as services send them take it (fast-check prints the seed)", () => {
  const key = fc.constantFrom("f", "i", "l", "p", "h", "x", "ff");
  const value = fc.oneof(
    fc.nat(),
    fc.integer({ min: 0, max: 2 ** 32 + 5 }),
    fc.integer({ min: -300, max: -1 }),
    fc.uint8Array({ maxLength: 300 }),
    fc.string({ maxLength: 3 }),
    fc.constant(null),
  );
  const mutation = fc.option(
    fc.record({ at: fc.nat(), to: fc.integer({ min: 0, max: 255 }), cut: fc.boolean() }),
    { nil: undefined },
  );
  fc.assert(
    fc.property(fc.dictionary(key, value, { maxKeys: 6 }), mutation, (map, change) => {
      let bytes: Uint8Array = encode(map);
      if (change) {
        const at = change.at % bytes.length;
        bytes = change.cut ? bytes.subarray(0, at) : bytes.with(at, change.to);
      }
      // Inside a Buffer, as a message arrives.
      const message = Buffer.alloc(bytes.length + 4);
      message.set(bytes, 2);
      const view = message.subarray(2, 2 + bytes.length);
      const fast = blockFields(view);
      if (fast === null) return;
      assert.deepEqual(fast, decodeCbor(view));
      for (const field of Object.values(fast)) {
        if (field instanceof Uint8Array) assert.ok(!Buffer.isBuffer(field), "plain views");
      }
    }),
  );
  fc.assert(
    fc.property(
      fc.record({
        fileId: fc.integer({ min: 0, max: 255 }),
        blockId: fc.integer({ min: 0, max: 0xffffffff }),
        blockSize: fc.constantFrom(256, 1024, 4096, 131072),
        payload: fc.uint8Array({ maxLength: 600 }),
        hash: fc.option(fc.uint8Array({ minLength: 32, maxLength: 32 }), { nil: null }),
      }),
      (block) => {
        const bytes = encodeStreamBlock(block);
        assert.ok(blockFields(bytes) !== null, "the fast path reads what we send");
        assert.deepEqual(decodeStreamBlock(bytes), { ok: true, value: { ...block } });
      },
    ),
  );
});
