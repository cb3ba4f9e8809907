/**
 * The cloud's patches: an OTA update asked for deltas offers one per base it was given (and,
 * with `shipped`, per firmware it shipped before), in the job document and the stream, each of
 * which rebuilds the new image from its base; bad requests are refused in one line.
 */
import assert from "node:assert/strict";
import { applyDelta } from "fossil-delta";
import { startCloud } from "../../broker/cloud.ts";
import { renderPresignedUrls } from "../../broker/ota_updates.ts";
import { makeDeltaOffers, MAX_PATCH_SHARE } from "../../broker/delta_offers.ts";
import { buildFirmware, evolveFirmware } from "../../bootloader/firmware.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { parseVersion } from "../../protocol/image_format.ts";
import { sha256 } from "../../protocol/signatures.ts";
import { parseJobMessage } from "../../protocol/job_document.ts";
import { releaseProfile, testPki } from "../helpers/pki.ts";

const SIZE = 64 * 1024;

/** Signed releases whose payloads evolve from one another, as real firmware does. */
async function releases(versions: readonly string[]): Promise<Uint8Array[]> {
  const pki = await testPki();
  const out: Uint8Array[] = [];
  let payload = buildFirmware({ behavior: "ok", version: versions[0]! }, SIZE);
  for (const [i, version] of versions.entries()) {
    if (i > 0) payload = evolveFirmware(payload, { behavior: "ok", version });
    out.push(
      await signImage({ payload, version: parseVersion(version)!, securityCounter: 1 }, {
        privateKey: pki.signerKeys.privateKey,
        certificate: pki.signer,
      }),
    );
  }
  return out;
}

Deno.test("makeDeltaOffers: a realistic release patches to a few per cent; duplicates, the target itself and unrelated bases are not offered", async () => {
  const [v1, v2] = await releases(["1.0.0", "1.1.0"]);
  const unrelated = buildFirmware({ behavior: "ok", version: "9.9.9" }, SIZE);
  const offers = makeDeltaOffers(v2!, [v1!, v1!, v2!, unrelated]);
  assert.equal(offers.length, 1, "v1 once; v2 is the target; the unrelated one patches badly");
  assert.deepEqual(offers[0]!.baseSha256, sha256(v1!));
  const patch = offers[0]!.patch;
  assert.ok(patch.length < v2!.length * 0.05, `patch of ${patch.length} bytes`);
  assert.ok(MAX_PATCH_SHARE < 1);
  assert.deepEqual(new Uint8Array(applyDelta(v1!, patch)), v2);
});

Deno.test("OTA update with delta: the job document and the stream offer a patch per base, each rebuilding the image; shipped images become bases", async () => {
  const cloud = await startCloud();
  try {
    const profile = await releaseProfile();
    assert.ok((await cloud.otaUpdates.createSigningProfile(profile)).ok);
    await cloud.provisionThing("t1", "secret-t1");
    const [v1] = await releases(["1.0.0"]);
    const v2Payload = evolveFirmware(
      buildFirmware({ behavior: "ok", version: "1.0.0" }, SIZE),
      { behavior: "ok", version: "1.1.0" },
    );
    const request = (id: string, payload: Uint8Array, version: string, delta: object) => ({
      otaUpdateId: id,
      payload: payload.toBase64(),
      version,
      securityCounter: 1,
      signingProfile: profile.name,
      certFile: "/certs/ota_signer.pem",
      targets: { things: ["t1"] },
      protocols: ["MQTT", "HTTP"] as ("MQTT" | "HTTP")[],
      delta,
    });
    const first = await cloud.otaUpdates.createOtaUpdate(
      request("u11", v2Payload, "1.1.0", { bases: [v1!.toBase64()] }),
    );
    assert.ok(first.ok, first.ok ? "" : first.reason);
    const record = first.value;
    assert.equal(record.deltas?.length, 1);
    assert.equal(record.deltas![0]!.baseSha256, sha256(v1!).toHex());
    const image = (await cloud.store.getFile(record.fileKey))!;
    const patch = (await cloud.store.getFile(record.deltas![0]!.fileKey))!;
    assert.deepEqual(new Uint8Array(applyDelta(v1!, patch)), image);
    // What a device reads: the offer, with its stream file id and its own pre-signed URL.
    const job = (await cloud.store.getJob(record.jobId))!;
    const presigned: string[] = [];
    const document = renderPresignedUrls(job.spec.document, (key) => {
      presigned.push(key);
      return `https://files.example/${key}`;
    });
    assert.deepEqual(presigned, [record.fileKey, record.deltas![0]!.fileKey]);
    const parsed = parseJobMessage(
      new TextEncoder().encode(JSON.stringify({
        execution: { jobId: record.jobId, status: "QUEUED", jobDocument: document },
      })),
      { maxFirmwareSize: 1 << 20 },
    );
    assert.equal(parsed.kind, "job");
    if (parsed.kind !== "job") return;
    const offer = parsed.job.files[0]!.deltas[0]!;
    assert.deepEqual(offer.baseSha256, sha256(v1!));
    assert.equal(offer.fileId, 1);
    assert.equal(offer.fileSize, patch.length);
    assert.match(
      offer.updateDataUrl!,
      /^https:\/\/files\.example\/ota-u11-from-[0-9a-f]{16}\.patch$/,
    );
    const streams = await cloud.store.listStreams();
    assert.deepEqual(streams.find((s) => s.streamId === record.streamId)?.files, {
      0: record.fileKey,
      1: record.deltas![0]!.fileKey,
    });
    // The next release: 1.1.0 was shipped, so it is a base; 1.0.0 is given again.
    const v3Payload = evolveFirmware(v2Payload, { behavior: "ok", version: "1.2.0" });
    const second = await cloud.otaUpdates.createOtaUpdate(
      request("u12", v3Payload, "1.2.0", { bases: [v1!.toBase64()], shipped: true }),
    );
    assert.ok(second.ok, second.ok ? "" : second.reason);
    assert.deepEqual(
      second.value.deltas!.map((d) => d.baseSha256),
      [sha256(v1!).toHex(), sha256(image).toHex()],
    );
  } finally {
    await cloud.close();
  }
});

Deno.test("OTA update with delta: a base that is not an image, too many bases or a patched data file are refused in one line", async () => {
  const cloud = await startCloud();
  try {
    const profile = await releaseProfile();
    assert.ok((await cloud.otaUpdates.createSigningProfile(profile)).ok);
    const attempt = (delta: unknown, fileType = 0) =>
      cloud.otaUpdates.createOtaUpdate({
        otaUpdateId: "bad",
        payload: new Uint8Array(1024).toBase64(),
        version: "1.1.0",
        securityCounter: 1,
        signingProfile: profile.name,
        certFile: "/certs/ota_signer.pem",
        targets: { things: ["t1"] },
        fileType,
        delta: delta as never,
      });
    const reasons = [
      await attempt({ bases: ["not base64!"] }),
      await attempt({ bases: [new Uint8Array(100).toBase64()] }),
      await attempt({ bases: Array(9).fill("") }),
      await attempt({ shipped: true }, 3),
      await attempt("yes"),
    ].map((r) => r.ok ? "created" : r.reason);
    assert.deepEqual(reasons, [
      "delta.bases[0] is not a base64 image",
      "delta.bases[0] is not a base64 image",
      "delta.bases must be at most 8 images",
      "delta: only firmware (fileType 0) is patched",
      "delta must be an object: { bases?, shipped? }",
    ]);
    assert.equal(await cloud.store.getRecord("ota-update", "bad"), null, "nothing was created");
  } finally {
    await cloud.close();
  }
});
