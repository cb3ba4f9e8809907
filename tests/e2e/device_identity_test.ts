/**
 * Device identity (#8): each device's key is generated inside its secure element and cannot be
 * read; the fleet CA certifies it at provisioning and the cloud registers the certificate for the
 * thing. The device logs in over TLS with tokens the element signs (mutual TLS stays for keys a
 * TLS stack may hold); re-provisioning replaces key and certificate and keeps the thing's jobs.
 * Real broker over TLS, real mqtt.js clients, real WebCrypto.
 */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { DeviceRuntime } from "../../agent/device_runtime.ts";
import { type Cloud, startCloud } from "../../broker/cloud.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { generateSigningKeys, issueCodeSigningCertificate } from "../../pki/certificate_issuer.ts";
import { pemEncode } from "../../protocol/signatures.ts";
import { provisionSecureElement } from "../../pki/provisioning.ts";
import { SecureElement } from "../../bootloader/secure_element.ts";
import { toBase64Url } from "../../lib/base64.ts";
import { AGENT_TEST_CONFIG } from "../helpers/agent_rig.ts";
import {
  brokerTls,
  clientIdentity,
  loginCode,
  NOW_VALIDITY,
  pem,
  testCa,
} from "../helpers/tls_pki.ts";
import { factoryDevice, releaseProfile, releaseRequest, smallLayout } from "../helpers/pki.ts";
import { waitUntil } from "../helpers/wait.ts";

const validity = NOW_VALIDITY;

/** A cloud with a TLS listener whose device CA is a fresh fleet CA. */
async function tlsWorld() {
  const ca = await testCa("Fleet CA");
  const caPem = pem(ca.certificate);
  const cloud = await startCloud({ tickMs: 100, tls: await brokerTls(ca) });
  /** Provisions `thing` with a fresh secure element; returns the element. */
  const provision = async (thing: string) => {
    if (!await cloud.store.getThing(thing)) await cloud.provisionThing(thing, crypto.randomUUID());
    const element = await SecureElement.generate();
    const der = await provisionSecureElement(element, thing, ca, validity);
    const registered = await cloud.registerDeviceCertificate(thing, der);
    assert.ok(registered.ok, registered.ok ? "" : registered.reason);
    return element;
  };
  return { cloud, ca, caPem, url: cloud.broker!.tlsUrl!, provision };
}

const login = loginCode;

async function nextJob(url: string, thing: string, options: Record<string, unknown>) {
  const client = await mqtt.connectAsync(url, {
    clientId: thing,
    username: thing,
    reconnectPeriod: 0,
    ...options,
  });
  try {
    const reply = new Promise<Record<string, unknown>>((resolve) =>
      client.on("message", (_t, p) => resolve(JSON.parse(p.toString())))
    );
    await client.subscribeAsync(`$aws/things/${thing}/jobs/$next/get/accepted`, { qos: 1 });
    await client.publishAsync(`$aws/things/${thing}/jobs/$next/get`, "{}", { qos: 1 });
    return ((await reply).execution as Record<string, unknown> | undefined)?.jobId;
  } finally {
    await client.endAsync();
  }
}

const refusedBecause = (cloud: Cloud, pattern: RegExp) =>
  assert.ok(cloud.refusals.some((line) => pattern.test(line)), cloud.refusals.join("\n"));

Deno.test("secure element: its key cannot be read; a token it signs logs the device in over TLS; replayed, stale, forged and borrowed tokens are refused", async () => {
  const world = await tlsWorld();
  const { cloud, url, caPem } = world;
  try {
    const element = await world.provision("dev-se");
    assert.equal(element.privateKeyExtractable, false, "the key never leaves the element");
    assert.deepEqual(Object.keys(element), ["publicKey"], "only the public half shows");
    assert.equal(element.publicKey.type, "public");
    await cloud.jobs.createJob({
      jobId: "job-se",
      document: { afr_ota: {} },
      targets: { things: ["dev-se"] },
    });
    const token = await element.loginToken("dev-se", Date.now(), "127.0.0.1");
    assert.equal(await nextJob(url, "dev-se", { password: token, ca: caPem }), "job-se");

    const base = { clientId: "dev-se", username: "dev-se", ca: caPem };
    assert.equal(await login(url, { ...base, password: token }), 4, "a token is good once");
    refusedBecause(cloud, /token replayed/);

    const stale = await element.loginToken("dev-se", Date.now() - 10 * 60_000, "127.0.0.1");
    assert.equal(await login(url, { ...base, password: stale }), 4);
    refusedBecause(cloud, /s off the broker's clock/);

    const intruder = await SecureElement.generate();
    const forgedAt = String(Date.now() + 1);
    const forgedSignature = await intruder.sign(
      new TextEncoder().encode(`se2|dev-se|${forgedAt}|127.0.0.1`),
    );
    const forged = ["se2", toBase64Url(element.certificate!), forgedAt]
      .concat(toBase64Url(new TextEncoder().encode("127.0.0.1")), toBase64Url(forgedSignature))
      .join(".");
    assert.equal(await login(url, { ...base, password: forged }), 4);
    refusedBecause(cloud, /token signature does not verify/);

    // Another device's genuine token does not log in as this one, nor this one's as the other.
    const other = await world.provision("dev-other");
    const borrowed = await other.loginToken("dev-other", Date.now(), "127.0.0.1");
    assert.equal(await login(url, { ...base, password: borrowed }), 4);
    refusedBecause(cloud, /not the certificate registered for 'dev-se'/);
    assert.equal(await login(url, { ...base, password: "se2.garbage" }), 4);
    refusedBecause(cloud, /not a login token/);
    // A token the device made for another server (a relaying impostor's) does not log in here.
    const relayed = await element.loginToken("dev-se", Date.now() + 2, "impostor.example.net");
    assert.equal(await login(url, { ...base, password: relayed }), 4);
    refusedBecause(cloud, /token is for server 'impostor\.example\.net', not this one/);
    // Nor an old-style token that names no server at all.
    const oldAt = String(Date.now() + 3);
    const oldStyle = [
      "se1",
      toBase64Url(element.certificate!),
      oldAt,
      toBase64Url(await element.sign(new TextEncoder().encode(`se1|dev-se|${oldAt}`))),
    ].join(".");
    assert.equal(await login(url, { ...base, password: oldStyle }), 4);
    refusedBecause(cloud, /login token names no server \(se1\): refused/);
  } finally {
    await cloud.close();
  }
});

Deno.test("device certificates: only a fleet-CA clientAuth certificate naming the thing is registered", async () => {
  const world = await tlsWorld();
  try {
    await world.cloud.provisionThing("dev-1", "secret-1");
    const element = await SecureElement.generate();
    const misnamed = await provisionSecureElement(element, "dev-2", world.ca, validity);
    assert.deepEqual(await world.cloud.registerDeviceCertificate("dev-1", misnamed), {
      ok: false,
      reason: "the certificate names 'dev-2', not 'dev-1'",
    });
    assert.deepEqual(await world.cloud.registerDeviceCertificate("dev-9", misnamed), {
      ok: false,
      reason: "unknown thing 'dev-9'",
    });
    const otherCa = await testCa("Other");
    const foreign = await provisionSecureElement(
      await SecureElement.generate(),
      "dev-1",
      otherCa,
      validity,
    );
    const refusedForeign = await world.cloud.registerDeviceCertificate("dev-1", foreign);
    assert.ok(!refusedForeign.ok && /not the trusted root/.test(refusedForeign.reason));
    const signer = await issueCodeSigningCertificate(
      world.ca.certificate,
      world.ca.privateKey,
      (await generateSigningKeys()).publicKey,
      { subject: "CN=dev-1", ...validity },
    );
    const refusedSigner = await world.cloud.registerDeviceCertificate(
      "dev-1",
      certificateDer(signer),
    );
    assert.ok(!refusedSigner.ok && /lacks ExtendedKeyUsage clientAuth/.test(refusedSigner.reason));
    assert.equal(
      (await world.cloud.registerDeviceCertificate("dev-1", "not a certificate")).ok,
      false,
    );

    // The same through the operator API, behind the operator token.
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      operatorApi(world.cloud, { token: "operator-token" }),
    );
    try {
      const api = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/api/things`;
      const put = (thing: string, body: unknown, token = "operator-token") =>
        fetch(`${api}/${thing}/certificate`, {
          method: "PUT",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      const good = pemEncode(
        "CERTIFICATE",
        await provisionSecureElement(await SecureElement.generate(), "dev-1", world.ca, validity),
      );
      const statuses = [];
      for (
        const response of [
          await put("dev-1", { certificatePem: good }, "wrong-token"),
          await put("dev-1", { certificatePem: 42 }),
          await put("dev-1", { certificatePem: pemEncode("CERTIFICATE", misnamed) }),
          await put("dev-9", { certificatePem: good }),
          await put("dev-1", { certificatePem: good }),
        ]
      ) {
        statuses.push(response.status);
        await response.body?.cancel();
      }
      assert.deepEqual(statuses, [401, 400, 400, 404, 200]);
      const registered = await (await fetch(`${api}/dev-1/certificate`, {
        headers: { authorization: "Bearer operator-token" },
      })).json();
      assert.equal(registered.subject, "CN=dev-1");
    } finally {
      await server.shutdown();
    }
  } finally {
    await world.cloud.close();
  }
});

Deno.test("re-provisioning: a new key and certificate for the same thing; the old ones stop logging in (token or mutual TLS) and the jobs stay", async () => {
  const world = await tlsWorld();
  const { cloud, url, caPem } = world;
  try {
    const first = await world.provision("dev-rp");
    await cloud.jobs.createJob({
      jobId: "job-rp",
      document: { afr_ota: {} },
      targets: { things: ["dev-rp"] },
    });
    const second = await world.provision("dev-rp");
    const base = { clientId: "dev-rp", username: "dev-rp", ca: caPem };
    const old = await first.loginToken("dev-rp", Date.now(), "127.0.0.1");
    assert.equal(await login(url, { ...base, password: old }), 4, "the replaced element");
    refusedBecause(cloud, /not the certificate registered for 'dev-rp'/);
    const fresh = await second.loginToken("dev-rp", Date.now(), "127.0.0.1");
    assert.equal(await nextJob(url, "dev-rp", { password: fresh, ca: caPem }), "job-rp");

    // Mutual TLS for a key a TLS stack holds: the registered certificate only.
    const tlsKey = async () => {
      const identity = await clientIdentity(world.ca, "dev-rp");
      assert.ok((await cloud.registerDeviceCertificate("dev-rp", identity.der)).ok);
      return { key: identity.key, cert: identity.cert };
    };
    const mtlsOld = await tlsKey();
    assert.equal(await login(url, { clientId: "dev-rp", ca: caPem, ...mtlsOld }), 0);
    const mtlsNew = await tlsKey();
    assert.equal(await login(url, { clientId: "dev-rp", ca: caPem, ...mtlsOld }), 5);
    refusedBecause(cloud, /'dev-rp' presented a certificate no longer registered/);
    assert.equal(await nextJob(url, "dev-rp", { ca: caPem, ...mtlsNew }), "job-rp");
  } finally {
    await cloud.close();
  }
});

Deno.test("a device whose identity lives in its secure element updates over TLS, and logs in again with a fresh token after losing its connection", async () => {
  const world = await tlsWorld();
  const { cloud, caPem } = world;
  const { device } = await factoryDevice({
    layout: smallLayout(24),
    systemTime: true,
    factory: { version: "1.0.0", securityCounter: 1 },
  });
  device.secureElement = await world.provision("dev-ota");
  const runtime = new DeviceRuntime({
    device,
    thingName: "dev-ota",
    brokerUrl: world.url,
    agentConfig: AGENT_TEST_CONFIG,
    mqttOptions: { ca: caPem, reconnectPeriod: 100 },
    login: "secure-element",
  });
  try {
    await runtime.start();
    await waitUntil(() => runtime.client?.connected === true, "the token login");
    let logins = 0;
    runtime.client!.on("connect", () => logins++);
    runtime.dropConnection();
    await waitUntil(() => logins === 1, "a login with a fresh token after the drop");
    const profile = await cloud.otaUpdates.createSigningProfile(await releaseProfile());
    assert.ok(profile.ok);
    const created = await cloud.otaUpdates.createOtaUpdate({
      ...releaseRequest({ things: ["dev-ota"] }),
      otaUpdateId: "se-update",
    });
    assert.ok(created.ok);
    await waitUntil(
      async () =>
        (await cloud.store.getExecution(created.value.jobId, "dev-ota"))?.status === "SUCCEEDED",
      "the update over the token-authenticated connection",
      60_000,
    );
    await waitUntil(
      () => device.running?.version === "1.1.0+0" && device.running.trial === false,
      "the confirmed image",
    );
    assert.deepEqual(cloud.refusals, [], "every login, before and after the reboot, was accepted");
  } finally {
    await runtime.stop();
    await cloud.close();
  }
});

Deno.test("a device refuses an impostor broker whose certificate is self-signed, from another CA or for another name: no byte of MQTT (so no CONNECT, no login token, no job status) reaches it", async () => {
  const world = await tlsWorld();
  const { caPem } = world;
  const { createServer } = await import("node:tls");
  const { exportPrivateKeyPem, issueTlsCertificate, createRootCertificate } = await import(
    "../../pki/certificate_issuer.ts"
  );
  // Three impostors: a self-signed certificate, one from another CA, and one from the fleet CA
  // itself but for another name than the one the device dials.
  const selfKeys = await generateSigningKeys();
  const otherCa = await testCa("Other CA");
  const wrongNameKeys = await generateSigningKeys();
  const otherKeys = await generateSigningKeys();
  const identities = [
    {
      key: await exportPrivateKeyPem(selfKeys.privateKey),
      cert: pem(await createRootCertificate(selfKeys, { subject: "CN=127.0.0.1", ...validity })),
    },
    {
      key: await exportPrivateKeyPem(otherKeys.privateKey),
      cert: pem(
        await issueTlsCertificate(otherCa.certificate, otherCa.privateKey, otherKeys.publicKey, {
          kind: "server",
          subject: "CN=broker",
          ipAddresses: ["127.0.0.1"],
          ...validity,
        }),
      ),
    },
    {
      key: await exportPrivateKeyPem(wrongNameKeys.privateKey),
      cert: pem(
        await issueTlsCertificate(
          world.ca.certificate,
          world.ca.privateKey,
          wrongNameKeys.publicKey,
          {
            kind: "server",
            subject: "CN=broker",
            ipAddresses: ["127.0.0.9"],
            ...validity,
          },
        ),
      ),
    },
  ];
  const received: number[] = [];
  const sockets = new Set<import("node:net").Socket>();
  const impostors = await Promise.all(
    identities.map((identity, i) =>
      new Promise<import("node:tls").Server>((resolve) => {
        received[i] = 0;
        const server = createServer(identity, (socket) => {
          sockets.add(socket);
          socket.on("data", (bytes: Uint8Array) => (received[i]! += bytes.length));
          socket.on("close", () => sockets.delete(socket));
        });
        server.on("tlsClientError", () => {});
        server.listen({ port: 0, host: "127.0.0.1" }, () => resolve(server));
      })
    ),
  );
  const element = await world.provision("dev-wary");
  const runtimes: DeviceRuntime[] = [];
  try {
    for (const [i, impostor] of impostors.entries()) {
      const { device } = await factoryDevice({ layout: smallLayout(24), systemTime: true });
      device.secureElement = element;
      const log: string[] = [];
      const runtime = new DeviceRuntime({
        device,
        thingName: "dev-wary",
        brokerUrl: `mqtts://127.0.0.1:${(impostor.address() as { port: number }).port}`,
        agentConfig: AGENT_TEST_CONFIG,
        mqttOptions: { ca: caPem, reconnectPeriod: 50 },
        login: "secure-element",
        log: (line) => log.push(line),
      });
      runtimes.push(runtime);
      await runtime.start();
      // The device tries, and its TLS check fails, more than once.
      await waitUntil(
        () => log.filter((line) => /connection closed|error/i.test(line)).length >= 2,
        `impostor ${i} to be refused`,
      );
      assert.equal(received[i], 0, `impostor ${i} received no byte of MQTT`);
      assert.equal(runtime.client?.connected ?? false, false);
      await runtime.stop();
    }
  } finally {
    for (const runtime of runtimes) await runtime.stop();
    for (const socket of sockets) socket.destroy();
    for (const impostor of impostors) await new Promise((resolve) => impostor.close(resolve));
    await world.cloud.close();
  }
});
