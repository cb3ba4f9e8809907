/**
 * Job messages as AWS IoT emits them (tests/corpus/aws_job_messages.json: the AWS OTA agent's
 * own test documents and the document CreateOTAUpdate makes), byte for byte: every one is a job
 * the device takes, with the file named as the device names it.
 */
import assert from "node:assert/strict";
import { CODE_VERIFY_KEY, parseJobMessage } from "../../protocol/job_document.ts";

const corpus = JSON.parse(
  await Deno.readTextFile(new URL("../corpus/aws_job_messages.json", import.meta.url)),
) as { messages: { name: string; source: string; text: string }[] };

const limits = { maxFirmwareSize: 512 * 1024 };

Deno.test("AWS job messages: the corpus holds the agent's test documents and CreateOTAUpdate's", () => {
  assert.ok(corpus.messages.length >= 6);
  assert.ok(corpus.messages.some((m) => m.text.includes('"filepath":"/test/demo"')));
  assert.ok(corpus.messages.some((m) => m.text.includes('"update_data_url":null')));
  assert.ok(corpus.messages.some((m) => m.text.includes('"certfile":"Code Verify Key"')));
});

for (const entry of corpus.messages) {
  Deno.test(`AWS job messages: accepted: ${entry.name}`, () => {
    const result = parseJobMessage(new TextEncoder().encode(entry.text), limits);
    assert.equal(result.kind, "job", JSON.stringify(result));
    if (result.kind !== "job") return;
    const raw = JSON.parse(entry.text).execution.jobDocument.afr_ota.files[0];
    const spec = result.job.files[0]!;
    assert.equal(spec.fileSize, raw.filesize);
    assert.equal(spec.fileId, raw.fileid);
    assert.equal(spec.signature.length > 60, true);
    // The path names the file; the device decides where it goes.
    assert.ok(!spec.filePath.startsWith("/") && spec.filePath.length > 0, spec.filePath);
    assert.equal(spec.certFile, raw.certfile ?? null);
    if (raw.certfile === "Code Verify Key") assert.equal(spec.certFile, CODE_VERIFY_KEY);
  });
}
