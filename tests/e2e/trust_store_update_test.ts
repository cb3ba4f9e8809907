/**
 * Signing keys rotated and revoked over the air: trust-store updates (job file type 2) made by
 * `deno task image trust-update`, shipped with `ota create --file-type 2`, applied by a device
 * through the real broker, job and stream services: a new signer's release then installs; a
 * revocation refused while the device runs the revoked signer's firmware, applied once it does
 * not; the revoked signer's release refused after it, its signature valid or not.
 */
import assert from "node:assert/strict";
import {
  executionEnded,
  type InProcessDevice,
  inProcessDevice,
  type QualificationCloud,
  qualificationCloud,
  withInProcessDevice,
} from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPki, VALIDITY } from "../helpers/pki.ts";
import { runImageCli } from "../../tools/image_cli.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { pemEncode, signData } from "../../protocol/signatures.ts";
import { parseVersion } from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { buildFirmware } from "../../bootloader/firmware.ts";
import { toBase64 } from "../../lib/base64.ts";
import {
  exportPrivateKeyPem,
  generateSigningKeys,
  issueCodeSigningCertificate,
} from "../../pki/certificate_issuer.ts";
import { loadTrust } from "../../bootloader/trust_store.ts";

const pki = await testPki();
const signerBKeys = await generateSigningKeys();
const signerB = await issueCodeSigningCertificate(
  pki.root,
  pki.rootKeys.privateKey,
  signerBKeys.publicKey,
  { subject: "CN=Signer B", ...VALIDITY },
);

/** A trust-store update made by the image CLI, as an operator makes one. */
async function trustUpdate(version: number, more: string[]): Promise<Uint8Array> {
  const dir = await Deno.makeTempDir({ prefix: "ota-trust-" });
  try {
    await Deno.writeTextFile(`${dir}/root.key`, await exportPrivateKeyPem(pki.rootKeys.privateKey));
    await Deno.writeTextFile(`${dir}/root.pem`, pemEncode("CERTIFICATE", certificateDer(pki.root)));
    await Deno.writeTextFile(`${dir}/b.pem`, pemEncode("CERTIFICATE", certificateDer(signerB)));
    await Deno.writeTextFile(`${dir}/a.pem`, pemEncode("CERTIFICATE", certificateDer(pki.signer)));
    const err: string[] = [];
    const code = await runImageCli(
      [
        "trust-update",
        ...["--root-key", `${dir}/root.key`, "--root-cert", `${dir}/root.pem`],
        ...["--store-version", String(version), "--out", `${dir}/update.json`],
        ...more.map((arg) => arg.replace("DIR", dir)),
      ],
      () => {},
      (line) => err.push(line),
    );
    assert.equal(code, 0, err.join("\n"));
    return await Deno.readFile(`${dir}/update.json`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function shipTrustUpdate(side: QualificationCloud, id: string, update: Uint8Array) {
  const created = await side.cloud.otaUpdates.createOtaUpdate({
    otaUpdateId: id,
    payload: toBase64(update),
    fileType: 2,
    signingProfile: "release",
    certFile: "/certs/ota_signer.pem",
    targets: { things: [side.thing] },
    protocols: [side.protocol],
  });
  if (!created.ok) throw new Error(created.reason);
  return created.value.jobId;
}

/** A release signed elsewhere, by `keys`/`certificate`, its job naming `certFile`. */
async function shipRelease(
  side: QualificationCloud,
  id: string,
  version: string,
  counter: number,
  signer: { keys: { privateKey: CryptoKey }; certificate: typeof pki.signer; certFile: string },
) {
  const image = await signImage({
    payload: buildFirmware({ behavior: "ok", version }, 16 * 1024),
    version: parseVersion(version)!,
    securityCounter: counter,
  }, { privateKey: signer.keys.privateKey, certificate: signer.certificate });
  const created = await side.cloud.otaUpdates.createOtaUpdate({
    otaUpdateId: id,
    image: toBase64(image),
    signature: toBase64(await signData(signer.keys.privateKey, image)),
    certificatePem: pemEncode("CERTIFICATE", certificateDer(signer.certificate)),
    rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
    certFile: signer.certFile,
    targets: { things: [side.thing] },
    protocols: [side.protocol],
  });
  if (!created.ok) throw new Error(created.reason);
  return created.value.jobId;
}

async function world(body: (side: QualificationCloud, rig: InProcessDevice) => Promise<void>) {
  const side = await qualificationCloud("MQTT");
  const rig = await inProcessDevice(side);
  await withInProcessDevice(side, rig, async () => {
    await rig.runtime.start();
    await body(side, rig);
  });
}

const ended = executionEnded;

Deno.test("trust store over the air: a new signer is added, its release installs; the old signer is revoked once the device runs the new one, and its release is then refused", async () => {
  await world(async (side, rig) => {
    const b = { keys: signerBKeys, certificate: signerB, certFile: "signer-b" };
    const a = { keys: pki.signerKeys, certificate: pki.signer, certFile: "/certs/ota_signer.pem" };
    // Before: the device does not know signer B.
    const early = await shipRelease(side, "b-too-early", "1.1.0", 2, b);
    await waitUntil(ended(side, early), "the first release to end", 60_000);
    assert.match(
      JSON.stringify((await side.execution(early))?.statusDetails),
      /no signer certificate at 'signer-b'/,
    );

    const add = await shipTrustUpdate(
      side,
      "trust-1",
      await trustUpdate(1, ["--signer", "signer-b=DIR/b.pem"]),
    );
    await waitUntil(ended(side, add), "the trust update to end", 60_000);
    assert.equal((await side.execution(add))?.status, "SUCCEEDED");
    assert.equal((await loadTrust(rig.device.areas.trustStore, pki.root)).version, 1);

    // Revoking A while the device runs A's firmware: refused, with why.
    const tooSoon = await shipTrustUpdate(
      side,
      "trust-2-early",
      await trustUpdate(2, ["--signer", "signer-b=DIR/b.pem", "--revoke", "DIR/a.pem"]),
    );
    await waitUntil(ended(side, tooSoon), "the early revocation to end", 60_000);
    const refused = (await side.execution(tooSoon))!;
    assert.equal(refused.status, "REJECTED");
    assert.match(String(refused.statusDetails.detail), /revokes the key that signed the running/);

    const fromB = await shipRelease(side, "from-b", "1.1.0", 2, b);
    await waitUntil(ended(side, fromB), "B's release to end", 60_000);
    assert.equal((await side.execution(fromB))?.status, "SUCCEEDED");
    assert.equal(rig.device.running?.version, "1.1.0+0");

    const revoke = await shipTrustUpdate(
      side,
      "trust-2",
      await trustUpdate(2, ["--signer", "signer-b=DIR/b.pem", "--revoke", "DIR/a.pem"]),
    );
    await waitUntil(ended(side, revoke), "the revocation to end", 60_000);
    assert.equal((await side.execution(revoke))?.status, "SUCCEEDED");

    // A's next release: a valid signature from a revoked key.
    const fromA = await shipRelease(side, "from-a", "1.2.0", 3, a);
    await waitUntil(ended(side, fromA), "A's release to end", 60_000);
    const execution = (await side.execution(fromA))!;
    assert.notEqual(execution.status, "SUCCEEDED");
    assert.match(JSON.stringify(execution.statusDetails), /the signer's key is revoked/);
    await rig.device.reset("after the refusal");
    assert.equal(rig.device.running?.version, "1.1.0+0");
  });
});

Deno.test("trust store over the air: the cloud refuses a file type 2 payload that is not a trust-store update", async () => {
  const side = await qualificationCloud("MQTT");
  try {
    const refused = await side.cloud.otaUpdates.createOtaUpdate({
      otaUpdateId: "not-a-store",
      payload: toBase64(new TextEncoder().encode('{"hello":1}')),
      fileType: 2,
      signingProfile: "release",
      certFile: "/certs/ota_signer.pem",
      targets: { things: [side.thing] },
    });
    assert.deepEqual(refused, {
      ok: false,
      reason: "payload: trust update needs body and signature, base64",
    });
  } finally {
    await side.close();
  }
});
