/**
 * The trust store: a device gains a code signer and loses a revoked one through a root-signed
 * update; a revoked signer's images are refused even with a valid signature (by the OTA PAL and
 * by the bootloader); the root itself rotates through an update signed under the old one; nothing
 * but the root can change it, and altered flash gives the factory trust back.
 */
import assert from "node:assert/strict";
import { Device } from "../../bootloader/device.ts";
import { loadTrust } from "../../bootloader/trust_store.ts";
import { isPowerCut } from "../../bootloader/flash.ts";
import { buildFirmware } from "../../bootloader/firmware.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { parseVersion } from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { signData } from "../../protocol/signatures.ts";
import { OtaImageState } from "../../protocol/ota_pal_status.ts";
import { signRootLink, signTrustUpdate, type TrustStoreBody } from "../../protocol/trust_update.ts";
import {
  createRootCertificate,
  generateSigningKeys,
  issueCodeSigningCertificate,
} from "../../pki/certificate_issuer.ts";
import { factoryDevice, testPki, VALIDITY } from "../helpers/pki.ts";
import { fileFor, installUpdate, plantCandidate } from "../helpers/update.ts";

const pki = await testPki();
const hashOf = async (certificate: typeof pki.signer) =>
  new Uint8Array(
    await crypto.subtle.digest("SHA-256", new Uint8Array(certificate.publicKey.rawData)),
  ).toHex();

// A second signer under the same root ("signer-b"), and a new root with its own signer.
const signerBKeys = await generateSigningKeys();
const signerB = await issueCodeSigningCertificate(
  pki.root,
  pki.rootKeys.privateKey,
  signerBKeys.publicKey,
  {
    subject: "CN=Signer B",
    ...VALIDITY,
  },
);
const root2Keys = await generateSigningKeys();
const root2 = await createRootCertificate(root2Keys, {
  subject: "CN=Test OTA Root 2",
  ...VALIDITY,
});
const signerCKeys = await generateSigningKeys();
const signerC = await issueCodeSigningCertificate(
  root2,
  root2Keys.privateKey,
  signerCKeys.publicKey,
  {
    subject: "CN=Signer C",
    ...VALIDITY,
  },
);

function image(
  version: string,
  counter: number,
  keys: CryptoKeyPair | { privateKey: CryptoKey },
  certificate: typeof pki.signer,
) {
  return signImage({
    payload: buildFirmware({ behavior: "ok", version }, 8 * 1024),
    version: parseVersion(version)!,
    securityCounter: counter,
  }, { privateKey: keys.privateKey, certificate });
}

const byRoot = (body: TrustStoreBody, key = pki.rootKeys.privateKey) =>
  signTrustUpdate(body, (bytes) => signData(key, bytes));

/** Installs `img` through the PAL with the job document naming `certFile`. */
async function install(
  device: Device,
  img: Uint8Array,
  keys: { privateKey: CryptoKey },
  certFile: string,
) {
  const file = {
    ...(await fileFor(img, await signData(keys.privateKey, img))),
    certFilePath: certFile,
  };
  const created = device.pal.createFileForRx(file);
  if (created !== 0) throw new Error(`create: ${device.pal.lastError}`);
  for (let at = 0; at < img.length; at += 1024) {
    device.pal.writeBlock(file, at, img.subarray(at, Math.min(img.length, at + 1024)));
  }
  const closed = await device.pal.closeFile(file);
  if (closed !== 0) throw new Error(`close: ${device.pal.lastError}`);
  if (device.pal.activateNewImage(file) !== 0) throw new Error(`activate: ${device.pal.lastError}`);
  await device.settle();
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
}

Deno.test("trust store: a root-signed update adds a signer by label; its images install; the device keeps it across reboots", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  const fromB = await image("1.1.0", 2, signerBKeys, signerB);
  await assert.rejects(
    () => install(device, fromB, signerBKeys, "signer-b"),
    /close: no signer certificate at 'signer-b'/,
  );
  const update = await byRoot({
    version: 1,
    signers: [{ label: "signer-b", certificate: certificateDer(signerB) }],
    revoked: [],
  });
  assert.deepEqual(await device.applyTrustUpdate(update), { ok: true });
  await device.reset("fresh start");
  await install(device, fromB, signerBKeys, "signer-b");
  assert.equal(device.running?.version, "1.1.0+0");
  await device.reset("after the update");
  assert.equal(device.running?.version, "1.1.0+0");
  assert.equal((await loadTrust(device.areas.trustStore, pki.root)).version, 1);
});

Deno.test("trust store: a revoked signer's images are refused with a valid signature, by the PAL and by the bootloader; revoking the running firmware's signer is refused", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  const revokeA = {
    version: 1,
    signers: [{ label: "signer-b", certificate: certificateDer(signerB) }],
    revoked: [await hashOf(pki.signer)],
  };
  // The factory image is signed by A: the device refuses to revoke what it runs.
  const refused = await device.applyTrustUpdate(await byRoot(revokeA));
  assert.deepEqual(refused, {
    ok: false,
    reason: "the update revokes the key that signed the running firmware: update it first",
  });
  // Move to B's image first, then revoke A.
  await device.applyTrustUpdate(await byRoot({ ...revokeA, revoked: [] }));
  await install(device, await image("1.1.0", 2, signerBKeys, signerB), signerBKeys, "signer-b");
  assert.deepEqual(await device.applyTrustUpdate(await byRoot({ ...revokeA, version: 2 })), {
    ok: true,
  });
  const fromA = await image("1.2.0", 3, pki.signerKeys, pki.signer);
  await assert.rejects(() => installUpdate(device, fromA), /closeFile failed/);
  assert.equal(device.pal.lastError, "the signer's key is revoked");
  // Staged behind the update service's back: the bootloader refuses it too.
  const secondary = device.areas.secondary;
  for (let sector = 0; sector < secondary.sectorCount; sector++) {
    secondary.eraseSectorIfNeeded(sector);
  }
  plantCandidate(device, fromA);
  await device.reset("planted");
  assert.equal(device.running?.version, "1.1.0+0");
  assert.match(
    device.bootLogs.at(-1)!.join("\n"),
    /candidate refused and erased: image is signed by a revoked key/,
  );
});

Deno.test("trust store: only the root signs updates; an older version, a code signer's or an altered one are refused; altered flash is the factory trust", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  const body = {
    version: 3,
    signers: [{ label: "signer-b", certificate: certificateDer(signerB) }],
    revoked: [],
  };
  const bySigner = await device.applyTrustUpdate(await byRoot(body, pki.signerKeys.privateKey));
  assert.equal(
    bySigner.ok ? "" : bySigner.reason,
    "the trust update is not signed by the device's root",
  );
  assert.deepEqual(await device.applyTrustUpdate(await byRoot(body)), { ok: true });
  const older = await device.applyTrustUpdate(await byRoot({ ...body, version: 2 }));
  assert.equal(
    older.ok ? "" : older.reason,
    "trust update version 2 is not newer than the device's 3",
  );
  const garbage = await device.applyTrustUpdate(new TextEncoder().encode("{}"));
  assert.equal(garbage.ok, false);
  // A signer from another root cannot be added.
  const foreign = await device.applyTrustUpdate(
    await byRoot({
      version: 4,
      signers: [{ label: "c", certificate: certificateDer(signerC) }],
      revoked: [],
    }),
  );
  assert.match(foreign.ok ? "" : foreign.reason, /^signer 'c': /);
  // Flash altered under the store: its checks fail, and the device trusts what the factory gave.
  const area = device.areas.trustStore;
  for (let sector = 0; sector < area.sectorCount; sector++) {
    const bytes = area.read(sector * area.sectorSize + 64, 8);
    if (bytes.some((b) => b !== 0xff)) {
      area.program(sector * area.sectorSize + 2000, new Uint8Array(8).fill(0));
    }
  }
  const trust = await loadTrust(area, pki.root);
  assert.ok(trust.version === 0 || trust.version === 3, "never a forged trust");
});

/** The rotation to root 2: its link signed by the test root, the update (adding C) by root 2. */
async function rotationToRoot2(): Promise<Uint8Array> {
  return await signTrustUpdate({
    version: 1,
    signers: [{ label: "signer-c", certificate: certificateDer(signerC) }],
    revoked: [],
    rootLink: {
      certificate: certificateDer(root2),
      signature: await signRootLink(certificateDer(root2), pki.rootKeys.privateKey),
    },
  }, (bytes) => signData(root2Keys.privateKey, bytes));
}

Deno.test("trust store: the root rotates through an update signed under the old root; the new root's signers' images install and boot; the old root signs nothing more", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  const rotate = await rotationToRoot2();
  assert.deepEqual(await device.applyTrustUpdate(rotate), { ok: true });
  await install(device, await image("1.1.0", 2, signerCKeys, signerC), signerCKeys, "signer-c");
  await device.reset("boots under the new root");
  assert.equal(device.running?.version, "1.1.0+0");
  assert.equal(device.running?.trial, false);
  // The old root's signature no longer moves the store.
  const byOld = await device.applyTrustUpdate(
    await byRoot({ version: 2, signers: [], revoked: [] }),
  );
  assert.equal(byOld.ok ? "" : byOld.reason, "the trust update is not signed by the device's root");
  // A link the old root did not sign is refused.
  const otherKeys = await generateSigningKeys();
  const unlinked = await signTrustUpdate({
    version: 2,
    signers: [],
    revoked: [],
    rootLink: {
      certificate: certificateDer(root2),
      signature: await signRootLink(certificateDer(root2), otherKeys.privateKey),
    },
  }, (bytes) => signData(root2Keys.privateKey, bytes));
  const refused = await device.applyTrustUpdate(unlinked);
  assert.equal(
    refused.ok ? "" : refused.reason,
    "the new root is not signed by the device's current root",
  );
});

Deno.test("trust store: after a root rotation a two-stage device still boots what the old root's signers signed, until their keys are revoked", async () => {
  const { device } = await factoryDevice({ twoStage: true });
  await device.powerOn();
  const rotate = await rotationToRoot2();
  assert.deepEqual(await device.applyTrustUpdate(rotate), { ok: true });
  await device.reset("second stage and firmware signed under the old root");
  assert.equal(device.state, "running");
  assert.equal(device.secondStage?.version, "2.0.0+0");
  assert.equal(device.running?.version, "1.0.0+0");
  // An old-root signer's release still installs...
  await installUpdate(device, await image("1.1.0", 2, pki.signerKeys, pki.signer));
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
  // ...and the new root's signer's too.
  await install(device, await image("1.2.0", 3, signerCKeys, signerC), signerCKeys, "signer-c");
  assert.equal(device.running?.version, "1.2.0+0");
});

Deno.test("trust store: a record written straight to flash with an update the root did not sign is not trusted", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  const forged = await byRoot(
    { version: 9, signers: [], revoked: [await hashOf(pki.signer)] },
    pki.signerKeys.privateKey,
  );
  const { AgentStateStore } = await import("../../bootloader/agent_store.ts");
  const record = new Uint8Array(4 + forged.length);
  new DataView(record.buffer).setUint16(2, forged.length, true);
  record.set(forged, 4);
  new AgentStateStore(device.areas.trustStore).save(record);
  assert.equal((await loadTrust(device.areas.trustStore, pki.root)).version, 0);
  await device.reset("with a forged store");
  assert.equal(device.running?.version, "1.0.0+0", "the revocation it claims is not applied");
});

Deno.test("trust store: power cut at every flash operation of an update: the old trust or the new, never another", async () => {
  const { device: probe } = await factoryDevice();
  await probe.powerOn();
  const update = await byRoot({
    version: 1,
    signers: [{ label: "signer-b", certificate: certificateDer(signerB) }],
    revoked: [],
  });
  const factory = probe.flash.clone({ seed: 1 });
  const before = probe.flash.stats.operations;
  await probe.applyTrustUpdate(update);
  const total = probe.flash.stats.operations - before;
  assert.ok(total >= 2, `an update takes flash operations, took ${total}`);
  for (let cutAt = 1; cutAt <= total; cutAt++) {
    for (const torn of [false, true]) {
      const device = new Device({
        layout: probe.layout,
        rom: pki.rom,
        flash: factory.clone({ seed: cutAt }),
      });
      await device.powerOn();
      device.cutPowerAt({ atOperation: cutAt, torn });
      await assert.rejects(() => device.applyTrustUpdate(update), isPowerCut);
      await device.powerOn();
      const version = (await loadTrust(device.areas.trustStore, pki.root)).version;
      assert.ok(
        version === 0 || version === 1,
        `cut at ${cutAt}${torn ? " (torn)" : ""}: ${version}`,
      );
    }
  }
});

Deno.test("trust store: a rotation to a root whose key is not P-256 is refused with a reason, never a throw", async () => {
  await import("reflect-metadata");
  const x509 = await import("@peculiar/x509");
  const { device } = await factoryDevice();
  await device.powerOn();
  const algorithm = { name: "ECDSA", namedCurve: "P-384", hash: "SHA-384" };
  const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]);
  const p384 = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "0a",
    name: "CN=P-384 root",
    ...VALIDITY,
    signingAlgorithm: algorithm,
    keys,
  });
  const der = new Uint8Array(p384.rawData);
  const update = await signTrustUpdate({
    version: 1,
    signers: [],
    revoked: [],
    rootLink: { certificate: der, signature: await signRootLink(der, pki.rootKeys.privateKey) },
  }, (bytes) => signData(pki.rootKeys.privateKey, bytes));
  const refused = await device.applyTrustUpdate(update);
  assert.equal(
    refused.ok ? "" : refused.reason,
    "the trust update is not signed by the device's root",
  );
  assert.equal((await loadTrust(device.areas.trustStore, pki.root)).version, 0);
});
