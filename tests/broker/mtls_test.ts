/** Device identity by mutual TLS: a certificate from the fleet CA names the thing. */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { startCloud } from "../../broker/cloud.ts";
import { brokerTls, clientIdentity, loginCode, pem, testCa } from "../helpers/tls_pki.ts";

const identity = clientIdentity;
const ca = testCa;

Deno.test("mutual TLS: a fleet-CA certificate logs a device in as its thing; wrong id, unknown thing and foreign CA are refused", async () => {
  const fleet = await ca("Fleet CA");
  const cloud = await startCloud({ tls: await brokerTls(fleet) });
  const url = cloud.broker!.tlsUrl!;
  const caPem = pem(fleet.certificate);
  const code = (options: Record<string, unknown>) => loginCode(url, { ca: caPem, ...options });
  try {
    await cloud.provisionThing("dev-tls", "not-used-with-tls");
    await cloud.jobs.createJob({
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
