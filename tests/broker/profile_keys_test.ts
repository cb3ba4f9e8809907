/**
 * Signing-profile private keys are never stored or returned in clear: sealed under the broker's
 * profile key, opened only as non-extractable keys; a restarted broker with the same key signs
 * with them, one with another key says why it cannot.
 */
import assert from "node:assert/strict";
import { ProfileKeyVault } from "../../broker/profile_keys.ts";
import { startCloud } from "../../broker/cloud.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import { freePort, startBrokerProcess } from "../../cluster/broker_process.ts";
import { exportPrivateKeyPem } from "../../pki/certificate_issuer.ts";
import { releaseProfile, releaseRequest, testPki } from "../helpers/pki.ts";
import { sha256, signData, verifySignature } from "../../protocol/signatures.ts";
import { checkCodeSigner } from "../../protocol/certificates.ts";

async function pkcs8(): Promise<Uint8Array<ArrayBuffer>> {
  const pki = await testPki();
  const exportable = await crypto.subtle.exportKey("pkcs8", pki.signerKeys.privateKey);
  return new Uint8Array(exportable);
}

Deno.test("profile keys: sealed and opened with the same secret and name; the opened key signs and cannot be exported", async () => {
  const vault = await ProfileKeyVault.fromSecret("a secret of sixteen+ characters");
  const sealed = await vault.seal("release", await pkcs8());
  assert.equal(sealed.alg, "A256GCM");
  const key = await vault.open("release", sealed);
  assert.ok(key);
  assert.equal(key.extractable, false);
  await assert.rejects(() => crypto.subtle.exportKey("pkcs8", key));
  const pki = await testPki();
  const message = new TextEncoder().encode("signed by the opened key");
  const signature = await signData(key, message);
  const { codeSignerVerifier } = await verifierOf(pki.signer);
  assert.ok(await verifySignature(codeSignerVerifier, message, sha256(message), signature));
});

async function verifierOf(certificate: Awaited<ReturnType<typeof testPki>>["signer"]) {
  const pki = await testPki();
  const checked = await checkCodeSigner(certificate, pki.root, { at: new Date() });
  if (!checked.ok) throw new Error(checked.reason);
  return { codeSignerVerifier: checked.value.verifier };
}

Deno.test("profile keys: another profile's name, another secret, an altered seal or a process's own key do not open it", async () => {
  const vault = await ProfileKeyVault.fromSecret("a secret of sixteen+ characters");
  const sealed = await vault.seal("release", await pkcs8());
  assert.equal(await vault.open("other", sealed), null, "bound to its profile's name");
  const other = await ProfileKeyVault.fromSecret("another secret, also long enough");
  assert.equal(await other.open("release", sealed), null);
  const data = Uint8Array.fromBase64(sealed.data);
  data[5]! ^= 1;
  assert.equal(await vault.open("release", { ...sealed, data: data.toBase64() }), null);
  assert.equal(await vault.open("release", { ...sealed, iv: "AAAA" }), null);
  assert.equal(await (await ProfileKeyVault.ephemeral()).open("release", sealed), null);
  await assert.rejects(() => ProfileKeyVault.fromSecret("short"), /at least 16 characters/);
});

Deno.test("signing profiles: the store holds the key sealed, never the PEM; the API returns no key; a record from before sealing is sealed at its first use", async () => {
  const cloud = await startCloud({ profileKey: "cloud profile key for this test" });
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: "profile-key-token" }),
  );
  try {
    await cloud.provisionThing("idle", "secret-idle");
    await cloud.jobs.addThingToGroup("fleet", "idle");
    const profile = await releaseProfile();
    assert.ok((await cloud.otaUpdates.createSigningProfile(profile)).ok);
    const stored = JSON.stringify(await cloud.store.getRecord("signing-profile", "release"));
    assert.doesNotMatch(stored, /PRIVATE KEY/);
    assert.ok(!stored.includes(profile.privateKeyPem.split("\n")[1]!), "no line of the PEM");
    assert.match(stored, /"sealedKey":\{"alg":"A256GCM"/);
    const listed = await (await fetch(
      `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/api/signing-profiles`,
      { headers: { authorization: "Bearer profile-key-token" } },
    )).text();
    assert.doesNotMatch(listed, /PRIVATE KEY|sealedKey|privateKey/);
    const created = await cloud.otaUpdates.createOtaUpdate({
      ...releaseRequest(),
      otaUpdateId: "sealed",
      protocols: ["MQTT"],
    });
    assert.ok(created.ok, !created.ok ? created.reason : "");

    // A record as brokers stored it before keys were sealed.
    const pki = await testPki();
    await cloud.store.putRecord("signing-profile", "legacy", {
      ...profile,
      name: "legacy",
      privateKeyPem: await exportPrivateKeyPem(pki.signerKeys.privateKey),
    });
    const legacy = await cloud.otaUpdates.createOtaUpdate({
      ...releaseRequest(),
      otaUpdateId: "legacy-signed",
      signingProfile: "legacy",
      protocols: ["MQTT"],
    });
    assert.ok(legacy.ok, !legacy.ok ? legacy.reason : "");
    const migrated = JSON.stringify(await cloud.store.getRecord("signing-profile", "legacy"));
    assert.doesNotMatch(migrated, /PRIVATE KEY/);
    assert.match(migrated, /"sealedKey"/);
  } finally {
    await server.shutdown();
    await cloud.close();
  }
});

Deno.test("signing profiles across restarts: the same profile key signs with them; another says why it cannot", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ota-profile-key-" });
  const token = "profile-restart-token";
  const start = async (profileKey: string) =>
    await startBrokerProcess({
      dataDir,
      mqttPort: await freePort(),
      httpPort: await freePort(),
      token,
      serviceSecret: "service-secret-profile-test",
      profileKey,
    });
  const call = async (api: string, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}` },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: response.status, body: await response.json() };
  };
  let broker = await start("the first profile key, long enough");
  try {
    assert.equal(
      (await call(broker.api, "POST", "/signing-profiles", await releaseProfile())).status,
      201,
    );
    await call(broker.api, "PUT", "/things/dev-1", { secret: "secret-dev-1-x" });
    await broker.stop();
    broker = await start("the first profile key, long enough");
    const again = await call(broker.api, "POST", "/ota-updates", {
      ...releaseRequest({ things: ["dev-1"] }),
      otaUpdateId: "after-restart",
      protocols: ["MQTT"],
    });
    assert.equal(again.status, 201, JSON.stringify(again.body));
    await broker.stop();
    broker = await start("a different profile key, long enough");
    const refused = await call(broker.api, "POST", "/ota-updates", {
      ...releaseRequest({ things: ["dev-1"] }),
      otaUpdateId: "other-key",
      protocols: ["MQTT"],
    });
    assert.equal(refused.status, 400);
    assert.match(
      JSON.stringify(refused.body),
      /signing profile 'release': its key does not open with this broker's profile key/,
    );
  } finally {
    await broker.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
