import assert from "node:assert/strict";
import fc from "fast-check";
import { FileService } from "../../broker/file_service.ts";
import { ManualClock } from "../../lib/clock.ts";

function service() {
  const clock = new ManualClock(1_000_000);
  const file = new Uint8Array(5000).map((_, i) => i % 251);
  const files = new FileService({
    secret: new Uint8Array(32).fill(7),
    clock,
    source: (key) => Promise.resolve(key === "fw.bin" ? file : null),
    baseUrl: "http://h",
  });
  return { clock, file, files };
}

const get = (files: FileService, url: string, range?: string) =>
  files.handle(new Request(url, range ? { headers: { range } } : {}));

Deno.test("FileService serves a pre-signed URL whole and by range", async () => {
  const { files, file } = service();
  const url = files.presign("fw.bin", 60);
  const whole = await get(files, url);
  assert.equal(whole.status, 200);
  assert.deepEqual(new Uint8Array(await whole.arrayBuffer()), file);
  const part = await get(files, url, "bytes=1024-2047");
  assert.equal(part.status, 206);
  assert.equal(part.headers.get("content-range"), "bytes 1024-2047/5000");
  assert.deepEqual(new Uint8Array(await part.arrayBuffer()), file.subarray(1024, 2048));
  const tail = await get(files, url, "bytes=4096-9999");
  assert.equal(
    (await tail.arrayBuffer()).byteLength,
    904,
    "a range past the end is clipped to the file",
  );
  const beyond = await get(files, url, "bytes=6000-6001");
  assert.equal(beyond.status, 416);
  await beyond.body?.cancel();
});

Deno.test("FileService refuses expired, tampered and foreign URLs with 403", async () => {
  const { files, clock } = service();
  const url = files.presign("fw.bin", 60);
  const tampered = url.replace(
    /X-Ota-Expires=(\d+)/,
    (_, t) => `X-Ota-Expires=${Number(t) + 100_000}`,
  );
  const other = url.replace("/files/fw.bin", "/files/other.bin");
  const badSignature = url.slice(0, -4) + "0000";
  for (
    const bad of [
      tampered,
      other,
      badSignature,
      "http://h/files/fw.bin",
      "http://h/files/../etc?X-Ota-Expires=1&X-Ota-Signature=x",
    ]
  ) {
    const response = await get(files, bad);
    assert.equal(response.status, 403, bad);
    await response.body?.cancel();
  }
  clock.advance(60_001);
  const expired = await get(files, url);
  assert.equal(expired.status, 403);
  assert.equal(await expired.text(), "Request has expired");
  assert.equal(files.refused, 6);
  assert.throws(() => files.presign("../x", 60), RangeError);
});

Deno.test("FileService: property: a tampered pre-signed URL or range never gets bytes it was not signed for, and never a 5xx", async () => {
  const { files, file } = service();
  const url = new URL(files.presign("fw.bin", 60));
  const signature = url.searchParams.get("X-Ota-Signature")!;
  const expires = url.searchParams.get("X-Ota-Expires")!;
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        key: fc.oneof(fc.constant("fw.bin"), fc.string({ maxLength: 40 })),
        expires: fc.oneof(fc.constant(expires), fc.string({ maxLength: 20 })),
        signature: fc.oneof(
          fc.constant(signature),
          fc.string({ maxLength: 70 }),
          fc.nat(63).map((i) =>
            signature.slice(0, i) + (signature[i] === "0" ? "1" : "0") + signature.slice(i + 1)
          ),
        ),
        range: fc.option(
          fc.oneof(
            fc.string({ maxLength: 30 }),
            fc.tuple(fc.nat(6000), fc.nat(6000)).map(([a, b]) => `bytes=${a}-${b}`),
          ),
        ),
      }),
      async (t) => {
        const tampered = `http://h/files/${encodeURIComponent(t.key)}?X-Ota-Expires=${
          encodeURIComponent(t.expires)
        }&X-Ota-Signature=${encodeURIComponent(t.signature)}`;
        const response = await get(files, tampered, t.range ?? undefined);
        assert.ok(response.status < 500, `${tampered} -> ${response.status}`);
        const genuine = t.key === "fw.bin" && t.expires === expires && t.signature === signature;
        if (!genuine) assert.equal(response.status, 403, tampered);
        if (response.status === 200) {
          assert.equal(response.headers.get("content-length"), String(file.length));
        }
      },
    ),
    { numRuns: 300 },
  );
});
