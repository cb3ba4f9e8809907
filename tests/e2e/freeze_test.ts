/**
 * Freeze and replay (the TUF/Uptane catalogue): the cloud signs each job document's issue time
 * and expiry; a device refuses a document past its expiry at its trusted time (its clock, never
 * below the newest issue time it accepted), one whose metadata does not verify or names another
 * job, and, when it requires fresh documents, one without metadata. Real broker and services,
 * the device in-process.
 */
import assert from "node:assert/strict";
import {
  executionEnded,
  type InProcessDevice,
  inProcessDevice,
  type QualificationCloud,
  qualificationCloud,
  signedImage,
  withInProcessDevice,
} from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";
import { parseJobMetadata } from "../../protocol/job_metadata.ts";
import type { AgentConfig } from "../../agent/agent_config.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { pemEncode } from "../../protocol/signatures.ts";
import { testPki } from "../helpers/pki.ts";
import { toBase64 } from "../../lib/base64.ts";

const HOUR = 3_600_000;
const ended = executionEnded;

async function world(
  body: (side: QualificationCloud, rig: InProcessDevice) => Promise<void>,
  agentConfig: Partial<AgentConfig> = {},
) {
  const side = await qualificationCloud("MQTT");
  const rig = await inProcessDevice(side, undefined, { agentConfig });
  await withInProcessDevice(side, rig, async () => {
    await rig.runtime.start();
    await body(side, rig);
  });
}

async function updateWithTtl(side: QualificationCloud, id: string, version: string, ttl: number) {
  const created = await side.cloud.otaUpdates.createOtaUpdate({
    otaUpdateId: id,
    payload: toBase64(new Uint8Array(4096)),
    version,
    securityCounter: 2,
    signingProfile: "release",
    certFile: "/certs/ota_signer.pem",
    targets: { things: [side.thing] },
    protocols: ["MQTT"],
    documentTtlSeconds: ttl,
  });
  if (!created.ok) throw new Error(created.reason);
  return created.value.jobId;
}

Deno.test("freeze: every document the cloud signs carries its issue time and expiry, under the profile's signer", async () => {
  const side = await qualificationCloud("MQTT");
  try {
    const jobId = await updateWithTtl(side, "ttl", "1.1.0", 3600);
    const document = (await side.cloud.store.getJob(jobId))!.spec.document as {
      afr_ota: { signedMetadata: unknown };
    };
    const metadata = parseJobMetadata(document.afr_ota.signedMetadata);
    assert.ok(metadata.ok);
    assert.equal(metadata.value.body.jobId, jobId);
    assert.equal(metadata.value.body.expires - metadata.value.body.issued, 3600 * 1000);
    const refused = await side.cloud.otaUpdates.createOtaUpdate({
      otaUpdateId: "ttl-bad",
      payload: toBase64(new Uint8Array(16)),
      version: "1.1.0",
      securityCounter: 2,
      signingProfile: "release",
      certFile: "/certs/ota_signer.pem",
      targets: { things: [side.thing] },
      documentTtlSeconds: 10,
    });
    assert.deepEqual(refused, {
      ok: false,
      reason: "documentTtlSeconds must be an integer 60..31536000",
    });
  } finally {
    await side.close();
  }
});

Deno.test("freeze: a document past its expiry (issued two hours ago, valid one) is REJECTED as stale, nothing downloaded", async () => {
  await world(async (side, rig) => {
    side.clock.advance(-2 * HOUR);
    const jobId = await updateWithTtl(side, "stale", "1.1.0", 3600);
    side.clock.advance(2 * HOUR);
    await waitUntil(ended(side, jobId), "the stale job to be refused", 60_000);
    const execution = (await side.execution(jobId))!;
    assert.equal(execution.status, "REJECTED");
    assert.match(
      String(execution.statusDetails.detail),
      /job document expired at .*: stale or replayed/,
    );
    assert.equal(rig.device.running?.version, "1.0.0+0");
    assert.equal(rig.device.fwu.state, 0, "nothing was staged");
  });
});

Deno.test("freeze: trusted time never goes back: after a document issued ten days ahead, one that expires before that is stale whatever the device's clock says", async () => {
  await world(async (side, rig) => {
    side.clock.advance(10 * 24 * HOUR);
    const ahead = await updateWithTtl(side, "ahead", "1.1.0", 3600);
    await waitUntil(ended(side, ahead), "the first update to end", 60_000);
    assert.equal((await side.execution(ahead))?.status, "SUCCEEDED");
    side.clock.advance(-10 * 24 * HOUR);
    const behind = await updateWithTtl(side, "behind", "1.2.0", 24 * 3600);
    await waitUntil(ended(side, behind), "the second update to end", 60_000);
    const execution = (await side.execution(behind))!;
    assert.equal(execution.status, "REJECTED");
    assert.match(String(execution.statusDetails.detail), /stale or replayed/);
    assert.equal(rig.device.running?.version, "1.1.0+0");
  });
});

Deno.test("freeze: metadata that does not verify, or names another job, is REJECTED", async () => {
  await world(async (side) => {
    const jobId = await updateWithTtl(side, "genuine", "1.1.0", 3600);
    await waitUntil(ended(side, jobId), "the genuine update to end", 60_000);
    const genuine = (await side.cloud.store.getJob(jobId))!.spec.document as {
      afr_ota: Record<string, unknown> & { signedMetadata: { body: string; signature: string } };
    };
    // Someone with the broker's ear reuses the genuine metadata for a job of their own...
    const copied = await side.cloud.jobs.createJob({
      jobId: "copied",
      document: genuine,
      targets: { things: [side.thing] },
    });
    assert.ok(copied.ok);
    await waitUntil(ended(side, "copied"), "the copied job to end", 60_000);
    const execution = (await side.execution("copied"))!;
    assert.equal(execution.status, "REJECTED");
    assert.match(
      String(execution.statusDetails.detail),
      /names job 'AFR_OTA-genuine', not 'copied'/,
    );
    // ...or alters the metadata (a later expiry) and keeps the signature.
    const body = JSON.parse(atob(genuine.afr_ota.signedMetadata.body));
    const forged = await side.cloud.jobs.createJob({
      jobId: "AFR_OTA-genuine-again",
      document: {
        afr_ota: {
          ...genuine.afr_ota,
          signedMetadata: {
            body: btoa(JSON.stringify({ ...body, jobId: "AFR_OTA-genuine-again" })),
            signature: genuine.afr_ota.signedMetadata.signature,
          },
        },
      },
      targets: { things: [side.thing] },
    });
    assert.ok(forged.ok);
    await waitUntil(ended(side, "AFR_OTA-genuine-again"), "the forged job to end", 60_000);
    const refused = (await side.execution("AFR_OTA-genuine-again"))!;
    assert.equal(refused.status, "REJECTED");
    assert.match(String(refused.statusDetails.detail), /^job document metadata: .*does not verify/);
  });
});

Deno.test("freeze: a device that requires fresh documents REJECTS one without signed metadata", async () => {
  await world(async (side) => {
    const pki = await testPki();
    const { image, signature } = await signedImage({ version: "1.1.0", securityCounter: 2 });
    const created = await side.cloud.otaUpdates.createOtaUpdate({
      otaUpdateId: "external",
      image: toBase64(image),
      signature,
      certificatePem: pemEncode("CERTIFICATE", certificateDer(pki.signer)),
      rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
      certFile: "/certs/ota_signer.pem",
      targets: { things: [side.thing] },
    });
    assert.ok(created.ok);
    await waitUntil(ended(side, created.value.jobId), "the job to be refused", 60_000);
    const execution = (await side.execution(created.value.jobId))!;
    assert.equal(execution.status, "REJECTED");
    assert.match(String(execution.statusDetails.detail), /without signed metadata/);
  }, { requireFreshDocuments: true });
});
