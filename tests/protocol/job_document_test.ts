import assert from "node:assert/strict";
import fc from "fast-check";
import { buildOtaDocument, parseJobMessage } from "../../protocol/job_document.ts";
import { explainReason } from "../../protocol/job_status.ts";

const limits = { maxFirmwareSize: 64 * 1024 };
// A DER ECDSA signature (the one in AWS's own test documents): 70 bytes, well formed.
const SIG =
  "MEQCIF2QDvww1G/kpRGZ8FYvQrok1bSZvXjXefRk7sqNcyPTAiB4dvGt8fozIY5NC0vUDJ2MY42ZERYEcrbwA4n6q7vrBg==";

function file(overrides: Record<string, unknown> = {}) {
  return {
    filepath: "firmware.bin",
    filesize: 10240,
    fileid: 0,
    certfile: "/certs/ota_signer.pem",
    "sig-sha256-ecdsa": SIG,
    ...overrides,
  };
}
function message(ota: Record<string, unknown>, execution: Record<string, unknown> = {}) {
  return new TextEncoder().encode(JSON.stringify({
    clientToken: "0:dev",
    timestamp: 1,
    execution: {
      jobId: "AFR_OTA-job1",
      status: "QUEUED",
      versionNumber: 1,
      jobDocument: { afr_ota: ota },
      ...execution,
    },
  }));
}
const valid = { protocols: ["MQTT"], streamname: "AFR_OTA-stream", files: [file()] };
const BASE = "ab".repeat(32);
function delta(overrides: Record<string, unknown> = {}) {
  return { base_sha256: BASE, fileid: 1, filesize: 700, ...overrides };
}

Deno.test("parseJobMessage() reads the AWS example document", () => {
  const result = parseJobMessage(
    message(valid, { statusDetails: { self_test: "ready", updatedBy: "0x01000000" } }),
    limits,
  );
  assert.equal(result.kind, "job");
  if (result.kind !== "job") return;
  const { job } = result;
  assert.equal(job.jobId, "AFR_OTA-job1");
  assert.equal(job.versionNumber, 1);
  assert.equal(job.selfTest, "ready");
  assert.deepEqual(job.protocols, ["MQTT"]);
  assert.equal(job.streamName, "AFR_OTA-stream");
  assert.equal(job.files[0]!.fileSize, 10240);
  assert.equal(job.files[0]!.signature.length, 70);
  assert.equal(job.files[0]!.fileType, 0);
});

Deno.test("parseJobMessage() takes HTTP jobs and several files", () => {
  const result = parseJobMessage(
    message({
      protocols: ["HTTP"],
      files: [
        file({
          fileid: 1,
          fileType: 3,
          filepath: "config/app.json",
          filesize: 100,
          update_data_url: "https://s3.example/cfg?X-Amz-Expires=60",
          auth_scheme: "aws.s3.presigned",
        }),
        file({ update_data_url: "https://s3.example/fw?X-Amz-Expires=60" }),
      ],
    }),
    limits,
  );
  assert.equal(result.kind, "job");
  if (result.kind === "job") assert.equal(result.job.files.length, 2);
});

Deno.test("parseJobMessage() treats a message without an execution as no job, not an error", () => {
  assert.deepEqual(
    parseJobMessage(new TextEncoder().encode('{"clientToken":"x","timestamp":5}'), limits),
    { kind: "no-job" },
  );
});

const corpus: [string, Uint8Array, "FAILED" | "REJECTED" | "none", RegExp][] = [
  ["not JSON", new TextEncoder().encode("{nope"), "FAILED", /not JSON/],
  ["not UTF-8", new Uint8Array([0xff, 0xfe]), "FAILED", /UTF-8/],
  ["array", new TextEncoder().encode("[1,2]"), "FAILED", /not a JSON object/],
  [
    "missing jobId",
    new TextEncoder().encode('{"execution":{"jobDocument":{}}}'),
    "FAILED",
    /jobId/,
  ],
  ["bad jobId", message(valid, { jobId: "a/b" }), "FAILED", /jobId/],
  [
    "no afr_ota",
    message(valid, { jobDocument: { custom: true } }),
    "REJECTED",
    /not an afr_ota job/,
  ],
  ["protocols not array", message({ ...valid, protocols: "MQTT" }), "FAILED", /protocols/],
  [
    "unsupported protocol",
    message({ ...valid, protocols: ["COAP"] }),
    "REJECTED",
    /no supported data protocol/,
  ],
  [
    "files missing",
    message({ protocols: ["MQTT"], streamname: "s" }),
    "FAILED",
    /files must be an array/,
  ],
  [
    "filesize as string",
    message({ ...valid, files: [file({ filesize: "10240" })] }),
    "FAILED",
    /filesize must be an integer/,
  ],
  ["zero size", message({ ...valid, files: [file({ filesize: 0 })] }), "FAILED", /filesize is 0/],
  [
    "too large",
    message({ ...valid, files: [file({ filesize: 64 * 1024 + 1 })] }),
    "REJECTED",
    /exceed the device/,
  ],
  [
    "path traversal",
    message({ ...valid, files: [file({ filepath: "../../etc/shadow" })] }),
    "REJECTED",
    /allowed names/,
  ],
  [
    "path traversal after the leading slash",
    message({ ...valid, files: [file({ filepath: "/../boot/rom.bin" })] }),
    "REJECTED",
    /allowed names/,
  ],
  [
    "a signature only as long as a DER one",
    message({
      ...valid,
      files: [file({
        "sig-sha256-ecdsa": btoa(String.fromCharCode(0x30, 0x44, ...new Array(68).fill(1))),
      })],
    }),
    "FAILED",
    /not a DER ECDSA signature/,
  ],
  [
    "empty certfile",
    message({ ...valid, files: [file({ certfile: "" })] }),
    "FAILED",
    /certfile must name a certificate/,
  ],
  [
    "control characters in certfile",
    message({ ...valid, files: [file({ certfile: "signer\u0000.pem" })] }),
    "FAILED",
    /certfile must name a certificate/,
  ],
  [
    "RSA signature",
    message({
      ...valid,
      files: [{ ...file(), "sig-sha256-ecdsa": undefined, "sig-sha256-rsa": SIG }],
    }),
    "REJECTED",
    /unsupported signature algorithm/,
  ],
  [
    "two signatures",
    message({ ...valid, files: [file({ "sig-sha1-rsa": SIG })] }),
    "FAILED",
    /exactly one signature/,
  ],
  [
    "bad base64",
    message({ ...valid, files: [file({ "sig-sha256-ecdsa": "!!notbase64" })] }),
    "FAILED",
    /base64/,
  ],
  [
    "two firmware files",
    message({ ...valid, files: [file(), file({ fileid: 1 })] }),
    "REJECTED",
    /at most one firmware/,
  ],
  [
    "duplicate file ids",
    message({ ...valid, files: [file(), file({ fileType: 2, filesize: 10 })] }),
    "FAILED",
    /duplicate fileid/,
  ],
  [
    "no way to fetch",
    message({ protocols: ["HTTP"], files: [file()] }),
    "FAILED",
    /neither over MQTT/,
  ],
  [
    "statusDetails not strings",
    message(valid, { statusDetails: { n: 1 } }),
    "FAILED",
    /statusDetails/,
  ],
  [
    "oversized document",
    message({ ...valid, pad: "x".repeat(33 * 1024) }),
    "REJECTED",
    /exceeds 32768/,
  ],
  [
    "bad url",
    message({ protocols: ["HTTP"], files: [file({ update_data_url: "ftp://x" })] }),
    "FAILED",
    /http\(s\) URL/,
  ],
  [
    "deltas not an array",
    message({ ...valid, files: [file({ deltas: {} })] }),
    "FAILED",
    /files\[0\]\.deltas must be an array of at most 8 patches/,
  ],
  [
    "patch base not a SHA-256",
    message({ ...valid, files: [file({ deltas: [delta({ base_sha256: "abc" })] })] }),
    "FAILED",
    /deltas\[0\]\.base_sha256 must be 64 lowercase hex digits/,
  ],
  [
    "patch larger than the slot",
    message({ ...valid, files: [file({ deltas: [delta({ filesize: 64 * 1024 + 1 })] })] }),
    "FAILED",
    /deltas\[0\]\.filesize must be an integer 0\.\.65536/,
  ],
  [
    "patch with the file's own id",
    message({ ...valid, files: [file({ deltas: [delta({ fileid: 0 })] })] }),
    "FAILED",
    /duplicate fileid values \(patches included\)/,
  ],
  [
    "patch offered for a data file",
    message({ ...valid, files: [file({ fileType: 2, deltas: [delta()] })] }),
    "FAILED",
    /only a firmware file \(fileType 0\) may offer patches/,
  ],
  [
    "rate floor that is not an object",
    message({ ...valid, minimumRate: 5 }),
    "FAILED",
    /afr_ota\.minimumRate must be an object/,
  ],
  [
    "rate floor of zero",
    message({ ...valid, minimumRate: { bytesPerSecond: 0, windowSeconds: 10 } }),
    "FAILED",
    /bytesPerSecond and windowSeconds must be at least 1/,
  ],
  [
    "rate floor window too long",
    message({ ...valid, minimumRate: { bytesPerSecond: 10, windowSeconds: 3601 } }),
    "FAILED",
    /afr_ota\.minimumRate\.windowSeconds must be an integer 0\.\.3600/,
  ],
];
for (const [name, bytes, status, detail] of corpus) {
  Deno.test(`parseJobMessage() refuses a malformed document: ${name}`, () => {
    // The corpus's executions are QUEUED, from where a device may decline (REJECTED) but not
    // fail; the same document in an execution already IN_PROGRESS gets the status of the table.
    let json: { execution?: { status?: string } } | null = null;
    try {
      json = JSON.parse(new TextDecoder().decode(bytes));
    } catch { /* not JSON: nothing to be queued */ }
    const cases: [Uint8Array, string][] = [[bytes, status]];
    if (json?.execution?.status === "QUEUED") {
      cases[0] = [bytes, "REJECTED"];
      json.execution.status = "IN_PROGRESS";
      cases.push([new TextEncoder().encode(JSON.stringify(json)), status]);
    }
    for (const [message, expected] of cases) {
      const result = parseJobMessage(message, limits);
      assert.equal(result.kind, "invalid");
      if (result.kind !== "invalid") return;
      assert.equal(result.status, expected);
      assert.match(result.detail, detail);
      assert.match(result.reason, /^0x[0-9a-f]{8}: 0x[0-9a-f]{8}$/);
    }
  });
}

Deno.test("parseJobMessage(): property: any JSON value in, a typed result out, no throw", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      const result = parseJobMessage(new TextEncoder().encode(JSON.stringify(value)), limits);
      assert.ok(["no-job", "job", "invalid"].includes(result.kind));
    }),
    { numRuns: 1000 },
  );
  const anyFile = fc.dictionary(
    fc.constantFrom(
      "filepath",
      "filesize",
      "fileid",
      "certfile",
      "sig-sha256-ecdsa",
      "fileType",
      "attr",
      "update_data_url",
    ),
    fc.jsonValue(),
  );
  fc.assert(
    fc.property(
      fc.record({
        protocols: fc.jsonValue(),
        streamname: fc.jsonValue(),
        files: fc.array(anyFile),
      }),
      (ota) => {
        const result = parseJobMessage(message(ota), limits);
        if (result.kind === "invalid") {
          assert.equal(
            result.jobId,
            "AFR_OTA-job1",
            "a named job is reported against its id",
          );
        }
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("parseJobMessage() refuses a key given twice, even when the last one is valid", () => {
  const good = JSON.stringify(message(valid).length > 0 ? SIG : "");
  // A garbage signature first, then a valid one: JSON.parse would keep the valid one.
  const text = new TextDecoder().decode(message(valid)).replace(
    `"sig-sha256-ecdsa":${good}`,
    `"sig-sha256-ecdsa":"AAAA","sig-sha256-ecdsa":${good}`,
  );
  assert.ok(text.includes('"AAAA"'), "the duplicate is in the message");
  const result = parseJobMessage(new TextEncoder().encode(text), limits);
  assert.equal(result.kind, "invalid");
  if (result.kind !== "invalid") return;
  assert.equal(result.jobId, "AFR_OTA-job1");
  assert.match(result.detail, /key 'sig-sha256-ecdsa' appears twice/);
});

Deno.test("parseJobMessage() maps an absolute or missing file path to the device's own name", () => {
  const named = (filepath: unknown, extra: Record<string, unknown> = {}) => {
    const result = parseJobMessage(
      message({ ...valid, files: [file({ filepath, ...extra })] }),
      limits,
    );
    assert.equal(result.kind, "job", JSON.stringify(result));
    return result.kind === "job" ? result.job.files[0]!.filePath : "";
  };
  assert.equal(named("/test/demo"), "test/demo");
  assert.equal(named("/"), "firmware.bin");
  assert.equal(named(null), "firmware.bin");
  assert.equal(named(undefined), "firmware.bin");
  assert.equal(named(null, { fileType: 7, fileid: 3 }), "file-3.bin");
});

Deno.test("parseJobMessage(): JSON null is absent for optional fields; no certfile means the device's own", () => {
  const result = parseJobMessage(
    message({
      ...valid,
      files: [
        file({
          certfile: null,
          update_data_url: null,
          auth_scheme: null,
          attr: null,
          fileType: null,
        }),
      ],
    }, { statusDetails: null, versionNumber: null }),
    limits,
  );
  assert.equal(result.kind, "job", JSON.stringify(result));
  if (result.kind !== "job") return;
  const spec = result.job.files[0]!;
  assert.equal(spec.certFile, null);
  assert.equal(spec.updateDataUrl, null);
  assert.equal(spec.authScheme, null);
  assert.equal(spec.fileType, 0);
  assert.equal(result.job.versionNumber, null);
});

Deno.test("explainReason(): the status reasons read as words; unknown ones come back as they are", () => {
  assert.equal(explainReason("rejected: 0x00000010"), "rejected: same firmware version");
  assert.equal(explainReason("rejected: 0x0000000f"), "rejected: downgrade not allowed");
  assert.equal(explainReason("0x000000e3: 0x00000095"), "signature check failed (0x95)");
  assert.equal(explainReason("0x000000e7: 0x00000000"), "bad signer cert");
  assert.equal(explainReason("0x0000000c: 0x00000004"), "job parser error: non conforming job doc");
  assert.equal(explainReason("0x0000000e: 0x00000000"), "momentum abort");
  assert.equal(explainReason("accepted  v1.1.0"), "accepted");
  assert.equal(explainReason("timed out"), "timed out");
  assert.equal(explainReason("rejected: 0x000000aa"), "rejected: 0x000000aa");
});

Deno.test("parseJobMessage() reads a firmware file's patch offers; buildOtaDocument() writes what it reads", () => {
  const signature = Uint8Array.fromBase64(SIG);
  const built = buildOtaDocument({
    protocols: ["MQTT", "HTTP"],
    streamName: "AFR_OTA-stream",
    files: [{
      filePath: "firmware.bin",
      fileSize: 10240,
      fileId: 0,
      certFile: "/certs/ota_signer.pem",
      signature,
      deltas: [
        { baseSha256: Uint8Array.fromHex(BASE), fileId: 1, fileSize: 700 },
        {
          baseSha256: new Uint8Array(32).fill(0xcd),
          fileId: 2,
          fileSize: 900,
          updateDataUrl: "https://files.example/p2",
        },
      ],
    }],
  });
  const result = parseJobMessage(message(built.afr_ota), limits);
  assert.equal(result.kind, "job");
  if (result.kind !== "job") return;
  assert.deepEqual(result.job.files[0]!.deltas, [
    { baseSha256: Uint8Array.fromHex(BASE), fileId: 1, fileSize: 700, updateDataUrl: null },
    {
      baseSha256: new Uint8Array(32).fill(0xcd),
      fileId: 2,
      fileSize: 900,
      updateDataUrl: "https://files.example/p2",
    },
  ]);
  // A document without offers (every AWS document) has none.
  const plain = parseJobMessage(message(valid), limits);
  assert.ok(plain.kind === "job" && plain.job.files[0]!.deltas.length === 0);
});

Deno.test("buildOtaDocument() and parseJobMessage(): a rate floor goes in afr_ota.minimumRate and back; none is null", () => {
  const document = buildOtaDocument({
    protocols: ["MQTT"],
    streamName: "s1",
    files: [{
      filePath: "firmware.bin",
      fileSize: 1024,
      fileId: 0,
      certFile: "c",
      signature: new Uint8Array(70),
    }],
    minimumRate: { bytesPerSecond: 2048, windowSeconds: 30 },
  });
  assert.deepEqual(document.afr_ota.minimumRate, { bytesPerSecond: 2048, windowSeconds: 30 });
  const parsed = parseJobMessage(
    message({ ...valid, minimumRate: document.afr_ota.minimumRate }),
    limits,
  );
  assert.equal(parsed.kind, "job");
  if (parsed.kind !== "job") return;
  assert.deepEqual(parsed.job.minimumRate, { bytesPerSecond: 2048, windowSeconds: 30 });
  const without = parseJobMessage(message(valid), limits);
  assert.ok(without.kind === "job" && without.job.minimumRate === null);
});
