/** Device identity by mutual TLS: a certificate from the fleet CA names the thing. */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { startCloud } from "../../broker/cloud.ts";
import {
  certificateDer,
  createRootCertificate,
  exportPrivateKeyPem,
  generateSigningKeys,
  issueTlsCertificate,
  pemEncode,
} from "../../bootloader/codesign.ts";

const validity = {
  notBefore: new Date(Date.now() - 60_000),
  notAfter: new Date(Date.now() + 86_400_000),
};
const pem = (cert: Parameters<typeof certificateDer>[0]) =>
  pemEncode("CERTIFICATE", certificateDer(cert));

async function ca(name: string) {
  const keys = await generateSigningKeys();
  const cert = await createRootCertificate(keys, { subject: `CN=${name}`, ...validity });
  return { keys, cert };
}

async function identity(issuer: Awaited<ReturnType<typeof ca>>, thing: string) {
  const keys = await generateSigningKeys();
  const cert = await issueTlsCertificate(issuer.cert, issuer.keys.privateKey, keys.publicKey, {
    kind: "client",
    subject: `CN=${thing}`,
    ...validity,
  });
  return { key: await exportPrivateKeyPem(keys.privateKey), cert: pem(cert) };
}

Deno.test("mutual TLS: a fleet-CA certificate logs a device in as its thing; wrong id, unknown thing and foreign CA are refused", async () => {
  const fleet = await ca("Fleet CA");
  const serverKeys = await generateSigningKeys();
  const serverCert = await issueTlsCertificate(
    fleet.cert,
    fleet.keys.privateKey,
    serverKeys.publicKey,
    { kind: "server", subject: "CN=broker", ipAddresses: ["127.0.0.1"], ...validity },
  );
  const cloud = await startCloud({
    tls: {
      key: await exportPrivateKeyPem(serverKeys.privateKey),
      cert: pem(serverCert),
      ca: pem(fleet.cert),
    },
  });
  const url = cloud.broker!.tlsUrl!;
  const caPem = pem(fleet.cert);
  /** 0 when connected; the CONNACK code when refused; "closed" when the TLS layer hung up first. */
  const code = (options: Record<string, unknown>) =>
    new Promise<number | string>((resolve) => {
      const client = mqtt.connect(url, {
        ca: caPem,
        reconnectPeriod: 0,
        connectTimeout: 5000,
        ...options,
      });
      const finish = (result: number | string) => {
        // mqtt.js leaves its CONNACK timer running when TLS hangs up before a CONNACK.
        clearTimeout((client as unknown as { connackTimer?: number }).connackTimer);
        client.removeAllListeners();
        client.on("error", () => {});
        client.end(true, () => resolve(result));
      };
      client.once("connect", () => finish(0));
      client.once("error", (error) => finish((error as { code?: number }).code ?? error.message));
      client.once("close", () => finish("closed"));
    });
  try {
    cloud.provisionThing("dev-tls", "not-used-with-tls");
    cloud.jobs.createJob({
      jobId: "job-tls",
      document: { afr_ota: {} },
      targets: { things: ["dev-tls"] },
    });
    const mine = await identity(fleet, "dev-tls");
    const client = await mqtt.connectAsync(url, {
      clientId: "dev-tls",
      key: mine.key,
      cert: mine.cert,
      ca: caPem,
      reconnectPeriod: 0,
    });
    const reply = new Promise<Record<string, unknown>>((resolve) =>
      client.on("message", (_t, p) => resolve(JSON.parse(p.toString())))
    );
    await client.subscribeAsync("$aws/things/dev-tls/jobs/$next/get/accepted", { qos: 1 });
    await client.publishAsync("$aws/things/dev-tls/jobs/$next/get", "{}", { qos: 1 });
    assert.equal(((await reply).execution as Record<string, unknown>).jobId, "job-tls");
    await client.endAsync();
    assert.equal(
      await code({ clientId: "dev-other", key: mine.key, cert: mine.cert }),
      5,
      "a certificate only names its own thing",
    );
    const stranger = await identity(fleet, "dev-unknown");
    assert.equal(
      await code({ clientId: "dev-unknown", key: stranger.key, cert: stranger.cert }),
      5,
      "unknown thing",
    );
    const foreign = await identity(await ca("Other CA"), "dev-tls");
    assert.notEqual(
      await code({ clientId: "dev-tls", key: foreign.key, cert: foreign.cert }),
      0,
      "a certificate from another CA fails the handshake",
    );
    assert.notEqual(await code({ clientId: "dev-tls" }), 0, "no certificate at all");
    assert.ok(
      cloud.refusals.some((r) => /certificate for 'dev-tls' used by client 'dev-other'/.test(r)),
    );
  } finally {
    await cloud.close();
  }
});
