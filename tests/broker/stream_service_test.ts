import assert from "node:assert/strict";
import fc from "fast-check";
import { decode, encode } from "cborg";
import { decodeStreamBlock, encodeGetStreamRequest } from "../../protocol/stream_codec.ts";
import { type Publisher, StreamService } from "../../broker/stream_service.ts";
import { sha256 } from "../../protocol/signatures.ts";

function service() {
  const sent: { topic: string; payload: Uint8Array }[] = [];
  const publisher: Publisher = {
    publish: (topic, payload) => {
      sent.push({
        topic,
        payload: typeof payload === "string" ? new TextEncoder().encode(payload) : payload,
      });
      return Promise.resolve();
    },
  };
  const streams = new StreamService(publisher);
  const file = new Uint8Array(10_000).map((_, i) => i * 31);
  streams.addStream("fw", new Map([[0, file]]));
  return { streams, sent, file };
}

const request = (overrides: Partial<Parameters<typeof encodeGetStreamRequest>[0]> = {}) =>
  encodeGetStreamRequest({
    clientToken: "rdy",
    fileId: 0,
    blockSize: 1024,
    offset: 0,
    numberOfBlocks: 4,
    bitmap: new Uint8Array([0xff, 0x03]),
    ...overrides,
  });

Deno.test("StreamService answers a GetStream request with the wanted blocks, each with its SHA-256", async () => {
  const { streams, sent, file } = service();
  await streams.handleRequest(
    "dev-1",
    "fw",
    request({ bitmap: new Uint8Array([0b1010_0101, 0x00]), numberOfBlocks: 8 }),
  );
  const blocks = sent.map((m) => decodeStreamBlock(m.payload)).map((b) => (b.ok ? b.value : null));
  assert.deepEqual(blocks.map((b) => b?.blockId), [0, 2, 5, 7]);
  assert.ok(sent.every((m) => m.topic === "$aws/things/dev-1/streams/fw/data/cbor"));
  const last = blocks[3]!;
  assert.deepEqual(last.payload, file.subarray(7 * 1024, 8 * 1024));
  assert.deepEqual(last.hash, sha256(last.payload));
});

Deno.test("StreamService honours offset and n, and sends the short last block", async () => {
  const { streams, sent, file } = service();
  await streams.handleRequest(
    "dev-1",
    "fw",
    request({ offset: 8, bitmap: new Uint8Array([0xff]), numberOfBlocks: 8 }),
  );
  const ids = sent.map((m) => decodeStreamBlock(m.payload)).map((
    b,
  ) => (b.ok ? b.value.blockId : -1));
  assert.deepEqual(ids, [8, 9], "the file has 10 blocks");
  const last = decodeStreamBlock(sent[1]!.payload);
  assert.ok(last.ok && last.value.payload.length === 10_000 - 9 * 1024);
  assert.deepEqual(last.ok && last.value.payload, file.subarray(9 * 1024));
});

Deno.test("StreamService encodes each block once and reuses it for every device", async () => {
  const { streams, sent } = service();
  for (let device = 0; device < 50; device++) {
    await streams.handleRequest(`dev-${device}`, "fw", request());
  }
  assert.equal(streams.stats.blocksSent, 200);
  assert.equal(streams.stats.blocksEncoded, 4);
  assert.equal(sent[0]!.payload, sent[4]!.payload, "the very same bytes");
});

Deno.test("StreamService refuses bad requests on rejected/cbor with the AWS codes", async () => {
  const cases: [Uint8Array, string, string][] = [
    [new Uint8Array([0xff, 0xfe]), "fw", "InvalidCbor"],
    [encode([1, 2]), "fw", "InvalidRequest"],
    [request({ blockSize: 128 }), "fw", "BlockSizeOutOfBounds"],
    [encode({ f: 0, l: 262144, o: 0, n: 1 }), "fw", "BlockSizeOutOfBounds"],
    [request({ offset: 50 }), "fw", "OffsetOutOfBounds"],
    [request({ numberOfBlocks: 200 }), "fw", "BlockCountLimitExceeded"],
    [request({ bitmap: new Uint8Array(12288) }), "fw", "BlockBitmapLimitExceeded"],
    [request({ fileId: 7 }), "fw", "ResourceNotFound"],
    [request(), "nope", "ResourceNotFound"],
  ];
  for (const [payload, stream, code] of cases) {
    const { streams, sent } = service();
    await streams.handleRequest("dev-1", stream, payload);
    assert.equal(sent.length, 1, code);
    assert.equal(sent[0]!.topic, `$aws/things/dev-1/streams/${stream}/rejected/cbor`);
    assert.equal((decode(sent[0]!.payload) as { o: string }).o, code);
  }
});

Deno.test("StreamService: property: arbitrary request bytes never throw and always get an answer", async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
      const { streams, sent } = service();
      await streams.handleRequest("dev-1", "fw", bytes);
      assert.ok(sent.length >= 1 || streams.stats.rejected === 0);
    }),
    { numRuns: 500 },
  );
});
