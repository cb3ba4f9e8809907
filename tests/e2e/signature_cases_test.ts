/**
 * Fixed cases of a signature that must be checked, through a real device's agent: an image whose
 * SHA-256 TLV is right but whose ECDSA signature bytes were altered (with a valid detached
 * signature over those bytes, so only the image's own signature is wrong), and an image signed by
 * a key the device does not trust. Each is refused with its reason; the device stays on 1.0.0.
 * (The bootloader's refusal of the same two images: tests/bootloader/bootloader_test.ts.)
 */
import assert from "node:assert/strict";
import { toBase64 } from "../../lib/base64.ts";
import { signData } from "../../protocol/signatures.ts";
import { OtaPalMainStatus } from "../../protocol/ota_pal_status.ts";
import { qualificationWorld, signedImage } from "../helpers/qualification.ts";
import { testPki, withAlteredSignature } from "../helpers/pki.ts";

const hex8 = (n: number) => `0x${n.toString(16).padStart(8, "0")}`;

Deno.test({
  name:
    "signatures (agent): an image whose ECDSA signature bytes were altered, its hash right, is refused with the reason",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const world = await qualificationWorld("MQTT");
    try {
      const pki = await testPki();
      const { image } = await signedImage({ version: "1.1.0", securityCounter: 2 });
      const altered = withAlteredSignature(image);
      // The detached signature covers the altered bytes: the PAL's first check passes.
      const detached = toBase64(await signData(pki.signerKeys.privateKey, altered));
      const jobId = await world.rawJob("altered-signature", altered, (entry) => ({
        ...entry,
        "sig-sha256-ecdsa": detached,
      }));
      const execution = await world.ended(jobId, "FAILED");
      assert.match(
        execution.statusDetails.reason ?? "",
        new RegExp(`^${hex8(OtaPalMainStatus.SignatureCheckFailed)}:`),
      );
      assert.match(execution.statusDetails.detail ?? "", /signature does not verify/);
      const report = await world.device();
      assert.equal(report.telemetry.version, "1.0.0+0");
      assert.equal(report.device.updateState, "READY");
    } finally {
      await world.close();
    }
  },
});

Deno.test({
  name:
    "signatures (agent): an image signed by a key the device does not trust is refused with the reason",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const world = await qualificationWorld("MQTT");
    try {
      const { image, signature } = await signedImage({
        version: "1.1.0",
        securityCounter: 2,
        signer: "rogue",
      });
      const jobId = await world.rawJob("untrusted-key", image, (entry) => ({
        ...entry,
        "sig-sha256-ecdsa": signature,
      }));
      const execution = await world.ended(jobId, "FAILED");
      assert.match(
        execution.statusDetails.reason ?? "",
        new RegExp(`^${hex8(OtaPalMainStatus.SignatureCheckFailed)}:`),
      );
      assert.match(execution.statusDetails.detail ?? "", /signature/);
      const report = await world.device();
      assert.equal(report.telemetry.version, "1.0.0+0");
    } finally {
      await world.close();
    }
  },
});
