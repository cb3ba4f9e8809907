import assert from "node:assert/strict";
import { FileService } from "../../broker/file_service.ts";
import { ManualClock } from "../../lib/clock.ts";

function service() {
  const clock = new ManualClock(1_000_000);
  const file = new Uint8Array(5000).map((_, i) => i % 251);
  const files = new FileService({
    secret: new Uint8Array(32).fill(7),
    clock,
    source: (key) => (key === "fw.bin" ? file : null),
    baseUrl: "http://h",
  });
  return { clock, file, files };
}

const get = (files: FileService, url: string, range?: string) =>
  files.handle(new Request(url, range ? { headers: { range } } : {}));

Deno.test("FileService serves a pre-signed URL whole and by range", async () => {
  const { files, file } = service();
  const url = files.presign("fw.bin", 60);
  const whole = get(files, url);
  assert.equal(whole.status, 200);
  assert.deepEqual(new Uint8Array(await whole.arrayBuffer()), file);
  const part = get(files, url, "bytes=1024-2047");
  assert.equal(part.status, 206);
  assert.equal(part.headers.get("content-range"), "bytes 1024-2047/5000");
  assert.deepEqual(new Uint8Array(await part.arrayBuffer()), file.subarray(1024, 2048));
  const tail = get(files, url, "bytes=4096-9999");
  assert.equal(
    (await tail.arrayBuffer()).byteLength,
    904,
    "a range past the end is clipped to the file",
  );
  const beyond = get(files, url, "bytes=6000-6001");
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
    const response = get(files, bad);
    assert.equal(response.status, 403, bad);
    await response.body?.cancel();
  }
  clock.advance(60_001);
  const expired = get(files, url);
  assert.equal(expired.status, 403);
  assert.equal(await expired.text(), "Request has expired");
  assert.equal(files.refused, 6);
  assert.throws(() => files.presign("../x", 60), RangeError);
});
