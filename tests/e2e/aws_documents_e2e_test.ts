/**
 * AWS's document shapes end to end: a device with its code-verification certificate updates
 * through jobs whose documents are written as AWS writes them (an absolute or bare `/` file path,
 * a certificate named `Code Verify Key` or `test.crt`, JSON null for the URL and auth scheme on
 * MQTT), over MQTT and HTTP, through the real cloud and a device in its own Worker. A device
 * without that certificate refuses the same document with the reason.
 */
import assert from "node:assert/strict";
import { certificateDer } from "../../protocol/certificates.ts";
import { CODE_VERIFY_KEY } from "../../protocol/job_document.ts";
import { OtaPalMainStatus } from "../../protocol/ota_pal_status.ts";
import { pemEncode } from "../../protocol/signatures.ts";
import { type DataProtocol, qualificationWorld, signedImage } from "../helpers/qualification.ts";
import { testPki } from "../helpers/pki.ts";

const SHAPES = [
  { filepath: "/", certfile: CODE_VERIFY_KEY },
  { filepath: "/test/demo", certfile: "test.crt" },
] as const;

async function codeVerifyCertificate(): Promise<readonly [string, string]> {
  const pki = await testPki();
  return [CODE_VERIFY_KEY, pemEncode("CERTIFICATE", certificateDer(pki.signer))];
}

for (const protocol of ["MQTT", "HTTP"] as DataProtocol[]) {
  Deno.test({
    name:
      `AWS documents (${protocol}): "/" and "/test/demo", "Code Verify Key" and "test.crt", nulls: the device updates`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const world = await qualificationWorld(protocol, {}, {
        deviceCertificates: [await codeVerifyCertificate()],
      });
      try {
        for (const [i, shape] of SHAPES.entries()) {
          const version = `1.${i + 1}.0`;
          const { image, signature } = await signedImage({ version, securityCounter: 2 + i });
          const jobId = await world.rawJob(`aws-${i}`, image, (entry) => ({
            ...entry,
            filepath: shape.filepath,
            certfile: shape.certfile,
            "sig-sha256-ecdsa": signature,
            // An MQTT-only document from CreateOTAUpdate carries these as null.
            ...(protocol === "MQTT" ? { update_data_url: null, auth_scheme: null } : {}),
          }));
          const execution = await world.ended(jobId, "SUCCEEDED");
          assert.equal(execution.statusDetails.reason, `accepted  v${version}`);
          const report = await world.device();
          assert.equal(report.telemetry.version, `${version}+0`);
          assert.equal(report.device.running?.trial, false);
        }
      } finally {
        await world.close();
      }
    },
  });
}

Deno.test({
  name:
    "AWS documents: a device without a code-verification certificate refuses 'test.crt' with the reason",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const world = await qualificationWorld("MQTT");
    try {
      const { image, signature } = await signedImage({ version: "1.1.0", securityCounter: 2 });
      const jobId = await world.rawJob("aws-unknown-cert", image, (entry) => ({
        ...entry,
        filepath: "/test/demo",
        certfile: "test.crt",
        "sig-sha256-ecdsa": signature,
      }));
      const execution = await world.ended(jobId, "FAILED");
      const main = (execution.statusDetails.reason ?? "").slice(0, 10);
      assert.equal(main, `0x${OtaPalMainStatus.BadSignerCert.toString(16).padStart(8, "0")}`);
      assert.match(execution.statusDetails.detail ?? "", /no signer certificate at 'test.crt'/);
      const report = await world.device();
      assert.equal(report.telemetry.version, "1.0.0+0");
    } finally {
      await world.close();
    }
  },
});
