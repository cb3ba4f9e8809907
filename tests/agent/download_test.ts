/** The pure parts of a download: protocol choice, file order, block checks, the resume record. */
import assert from "node:assert/strict";
import {
  checkBlock,
  nextFileIndex,
  openFile,
  resumeRecordOf,
  resumes,
  versionRefusal,
} from "../../agent/download.ts";
import type { OtaFileSpec, OtaJob } from "../../protocol/job_document.ts";
import { encodeStreamBlock } from "../../protocol/stream_codec.ts";
import { sha256 } from "../../protocol/signatures.ts";

function file(fileId: number, fileType: number, url: string | null = null): OtaFileSpec {
  return {
    filePath: `f${fileId}`,
    fileSize: 10_000,
    fileId,
    certFile: "signer.pem",
    signature: new Uint8Array([1, 2, 3]),
    fileType,
    updateDataUrl: url,
    authScheme: null,
    attributes: null,
    deltas: [],
  };
}

function job(
  files: OtaFileSpec[],
  protocols: ("MQTT" | "HTTP")[],
  streamName: string | null,
): OtaJob {
  return {
    jobId: "j1",
    versionNumber: 1,
    executionStatus: "QUEUED",
    statusDetails: {},
    selfTest: null,
    protocols,
    streamName,
    files,
    minimumRate: null,
    metadata: null,
  };
}

const OPTIONS = { blockSize: 4096, preferredProtocol: "MQTT" as const, httpAvailable: true };

Deno.test("nextFileIndex(): data files first in job order, firmware last", () => {
  const j = job([file(0, 0), file(1, 7), file(2, 9)], ["MQTT"], "s");
  const order: number[] = [];
  for (let i = nextFileIndex(j, -1); i !== null; i = nextFileIndex(j, i)) order.push(i);
  assert.deepEqual(order, [1, 2, 0]);
});

Deno.test("openFile(): the preferred protocol when usable, the other otherwise, else none", () => {
  assert.equal(
    openFile(job([file(0, 0, "http://x")], ["MQTT", "HTTP"], "s"), 0, OPTIONS).protocol,
    "MQTT",
  );
  assert.equal(
    openFile(job([file(0, 0, "http://x")], ["MQTT", "HTTP"], null), 0, OPTIONS).protocol,
    "HTTP",
  );
  assert.equal(
    openFile(job([file(0, 0, "http://x")], ["HTTP"], null), 0, { ...OPTIONS, httpAvailable: false })
      .protocol,
    null,
  );
  const opened = openFile(job([file(0, 0)], ["MQTT"], "s"), 0, OPTIONS);
  assert.equal(opened.blockCount, 3);
  assert.equal(opened.bitmap.remaining, 3);
});

Deno.test("checkBlock(): a good block passes; wrong file, size, hash, id and length are refused", () => {
  const active = openFile(job([file(0, 0)], ["MQTT"], "s"), 0, OPTIONS);
  const payload = new Uint8Array(4096).fill(7);
  const block = (over: Partial<Parameters<typeof encodeStreamBlock>[0]> = {}) => ({
    cbor: encodeStreamBlock({
      fileId: 0,
      blockId: 0,
      blockSize: 4096,
      payload,
      hash: sha256(payload),
      ...over,
    }),
  });
  assert.equal(checkBlock(active, block(), 4096).ok, true);
  const reason = (input: ReturnType<typeof block> | { blockId: number; payload: Uint8Array }) => {
    const result = checkBlock(active, input, 4096);
    return result.ok ? "" : result.reason;
  };
  assert.match(reason(block({ fileId: 1 })), /file id 1, expected 0/);
  assert.match(reason(block({ blockSize: 1024 })), /block size 1024, expected 4096/);
  assert.match(reason(block({ hash: new Uint8Array(32) })), /fails its SHA-256 check/);
  assert.match(reason(block({ blockId: 3 })), /past the file's 3 blocks/);
  assert.match(reason({ blockId: 2, payload }), /has 4096 bytes, expected 1808/);
  assert.equal(
    checkBlock(active, { blockId: 2, payload: payload.subarray(0, 1808) }, 4096).ok,
    true,
  );
});

Deno.test("resumes(): a record resumes only the very download it was made for", () => {
  const active = openFile(job([file(0, 0)], ["MQTT"], "s"), 0, OPTIONS);
  const record = resumeRecordOf(active, 4096);
  assert.equal(resumes(record, active, 4096), true);
  assert.equal(resumes(record, active, 1024), false);
  assert.equal(resumes({ ...record, jobId: "j2" }, active, 4096), false);
  assert.equal(resumes({ ...record, signature: "AAAA" }, active, 4096), false);
});

Deno.test("versionRefusal(): the first block of the running version is refused as the same version, an older one as a downgrade", async () => {
  const { testImage } = await import("../helpers/pki.ts");
  const running = { major: 1, minor: 1, revision: 0, build: 0 };
  const same = await testImage({ version: "1.1.0", payloadSize: 1024 });
  const older = await testImage({ version: "1.0.9", payloadSize: 1024 });
  const newer = await testImage({ version: "1.2.0", payloadSize: 1024 });
  assert.deepEqual(versionRefusal(same.subarray(0, 1024), running), {
    reason: "rejected: 0x00000010",
    detail: "image 1.1.0 is the version already running",
  });
  assert.equal(versionRefusal(older.subarray(0, 1024), running)?.reason, "rejected: 0x0000000f");
  assert.equal(versionRefusal(newer.subarray(0, 1024), running), null);
  assert.equal(
    versionRefusal(new Uint8Array(1024).fill(0xff), running),
    null,
    "not an image header",
  );
});
