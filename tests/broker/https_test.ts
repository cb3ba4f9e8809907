/**
 * Every channel under TLS: a broker started with a TLS key and certificate serves its operator
 * API, dashboard, pre-signed file links and MQTT over WebSocket as HTTPS/wss, MQTT as mqtts on
 * its address, and plain MQTT on loopback only; the agent's HTTPS port fetches only over HTTPS
 * from a server its fleet CA vouches for by the name it dialled.
 */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { freePort, startBrokerProcess } from "../../cluster/broker_process.ts";
import { httpsPort } from "../../agent/http_fetch.ts";
import {
  createRootCertificate,
  exportPrivateKeyPem,
  generateSigningKeys,
  issueTlsCertificate,
} from "../../pki/certificate_issuer.ts";
import { NOW_VALIDITY, pem, testCa } from "../helpers/tls_pki.ts";
import { factoryDevice, releaseProfile, releaseRequest, smallLayout } from "../helpers/pki.ts";
import { OPENSSL } from "../helpers/openssl.ts";
import { DeviceRuntime } from "../../agent/device_runtime.ts";
import { AGENT_TEST_CONFIG } from "../helpers/agent_rig.ts";
import { waitUntil } from "../helpers/wait.ts";

const TOKEN = "https-test-token";
/** A second loopback address: what "another interface" is on a machine with one. */
const HOST = "127.0.0.2";

async function serverIdentity(ca: Awaited<ReturnType<typeof testCa>>, ips: string[]) {
  const keys = await generateSigningKeys();
  const cert = await issueTlsCertificate(ca.certificate, ca.privateKey, keys.publicKey, {
    kind: "server",
    subject: "CN=ota-broker",
    ipAddresses: ips,
    ...NOW_VALIDITY,
  });
  return { key: await exportPrivateKeyPem(keys.privateKey), cert: pem(cert) };
}

async function refused(work: () => Promise<unknown>): Promise<boolean> {
  try {
    await work();
    return false;
  } catch {
    return true;
  }
}

Deno.test("TLS everywhere: API, dashboard, file links and wss over HTTPS, mqtts on the address, plain MQTT on loopback only", async () => {
  const ca = await testCa("Fleet CA");
  const identity = await serverIdentity(ca, ["127.0.0.1", HOST]);
  const dir = await Deno.makeTempDir({ prefix: "ota-https-" });
  await Deno.writeTextFile(`${dir}/key.pem`, identity.key);
  await Deno.writeTextFile(`${dir}/cert.pem`, identity.cert);
  const client = Deno.createHttpClient({ caCerts: [pem(ca.certificate)] });
  const broker = await startBrokerProcess({
    dataDir: `${dir}/data`,
    mqttPort: await freePort(),
    httpPort: await freePort(),
    token: TOKEN,
    serviceSecret: "https-service-secret",
    extraArgs: [
      ...["--host", HOST, "--tls-port", String(await freePort())],
      ...["--tls-key", `${dir}/key.pem`, "--tls-cert", `${dir}/cert.pem`],
    ],
  });
  try {
    assert.match(broker.api, new RegExp(`^https://${HOST.replaceAll(".", "\\.")}:\\d+/api$`));
    const call = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${broker.api}${path}`, {
        client,
        method,
        headers: { authorization: `Bearer ${TOKEN}` },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: response.status, body: await response.json() };
    };
    assert.deepEqual((await call("GET", "/whoami")).body, {
      name: "bootstrap-admin",
      role: "admin",
    });
    const dashboard = await fetch(broker.api.replace(/\/api$/, "/dashboard/"), { client });
    assert.equal(dashboard.status, 200);
    await dashboard.body?.cancel();
    // Plain HTTP on the same port, or a client that does not trust the fleet CA: no answer.
    assert.ok(
      await refused(() => fetch(broker.api.replace("https://", "http://") + "/whoami")),
      "plain HTTP",
    );
    assert.ok(await refused(() => fetch(`${broker.api}/whoami`)), "an unknown CA");

    // Pre-signed file links are HTTPS too.
    assert.equal((await call("POST", "/signing-profiles", await releaseProfile())).status, 201);
    await call("PUT", "/things/dev-1", { secret: "secret-dev-1-x" });
    const created = await call("POST", "/ota-updates", {
      ...releaseRequest({ things: ["dev-1"] }),
      otaUpdateId: "over-https",
      protocols: ["HTTP"],
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));

    // Devices: mqtts and wss on the address; plain MQTT only on loopback.
    const mqttPort = Number(new URL(broker.mqtt).port);
    const tlsPort = Number(new URL(String(broker.ready.mqtts)).port);
    assert.equal(new URL(String(broker.ready.mqtts)).hostname, HOST);
    const login = { clientId: "dev-1", username: "dev-1", password: "secret-dev-1-x" };
    const overTls = await mqtt.connectAsync(`mqtts://${HOST}:${tlsPort}`, {
      ...login,
      ca: pem(ca.certificate),
      reconnectPeriod: 0,
    });
    await overTls.endAsync();
    const overWss = await mqtt.connectAsync(
      broker.api.replace("https://", "wss://").replace(/\/api$/, "/mqtt"),
      { ...login, ca: pem(ca.certificate), reconnectPeriod: 0 } as mqtt.IClientOptions,
    );
    await overWss.endAsync();
    const local = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, {
      ...login,
      reconnectPeriod: 0,
    });
    await local.endAsync();
    assert.ok(
      await refused(() =>
        mqtt.connectAsync(`mqtt://${HOST}:${mqttPort}`, {
          ...login,
          reconnectPeriod: 0,
          connectTimeout: 2000,
        })
      ),
      "plain MQTT is not on the address",
    );
  } finally {
    client.close();
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("agent HTTPS port: fetches from a server the fleet CA names; refuses an impostor's self-signed or wrongly named certificate and plain HTTP", async () => {
  const ca = await testCa("Fleet CA");
  const genuine = await serverIdentity(ca, ["127.0.0.1"]);
  const wrongName = await serverIdentity(ca, ["127.0.0.9"]);
  const selfKeys = await generateSigningKeys();
  const selfSigned = {
    key: await exportPrivateKeyPem(selfKeys.privateKey),
    cert: pem(await createRootCertificate(selfKeys, { subject: "CN=127.0.0.1", ...NOW_VALIDITY })),
  };
  const body = new Uint8Array(4096).map((_, i) => i & 0xff);
  const serve = (identity: { key: string; cert: string }) =>
    Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {}, ...identity },
      (request) => {
        const range = /bytes=(\d+)-(\d+)/.exec(request.headers.get("range") ?? "");
        const [start, end] = range ? [Number(range[1]), Number(range[2])] : [0, body.length - 1];
        return new Response(body.slice(start, end + 1), { status: 206 });
      },
    );
  const port = httpsPort(pem(ca.certificate));
  const servers = [serve(genuine), serve(wrongName), serve(selfSigned)];
  try {
    const url = (i: number) => `https://127.0.0.1:${(servers[i]!.addr as Deno.NetAddr).port}/f`;
    const got = await port.getRange(url(0), 0, 1023);
    assert.equal(got.status, 206);
    assert.deepEqual(got.body, body.slice(0, 1024));
    assert.ok(await refused(() => port.getRange(url(1), 0, 1023)), "a name it was not issued for");
    assert.ok(await refused(() => port.getRange(url(2), 0, 1023)), "self-signed");
    await assert.rejects(
      () => port.getRange(url(0).replace("https://", "http://"), 0, 1023),
      /refused to fetch over plain HTTP/,
    );
  } finally {
    port.close();
    for (const server of servers) await server.shutdown();
  }
});

Deno.test({
  name:
    "TLS with certificates openssl made: the broker serves mqtts and HTTPS with them; a device updates over mqtts and HTTPS file links, checking both against the openssl CA",
  ignore: OPENSSL.ignore,
}, async () => {
  const { openssl, opensslDir } = await import("../helpers/openssl.ts");
  const dir = await opensslDir();
  let api: Deno.HttpClient | null = null;
  let broker: Awaited<ReturnType<typeof startBrokerProcess>> | null = null;
  let runtime: DeviceRuntime | null = null;
  try {
    // An openssl CA and a server certificate for 127.0.0.1 it issued.
    await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
    await openssl(dir, [
      ...["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=openssl fleet CA"],
      ...["-days", "2", "-out", "ca.pem"],
    ]);
    await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.key"]);
    // PKCS#8, as the broker reads keys.
    await openssl(dir, ["pkcs8", "-topk8", "-nocrypt", "-in", "ec.key", "-out", "server.key"]);
    await openssl(dir, [
      ...["req", "-new", "-key", "server.key", "-subj", "/CN=ota-broker", "-out", "server.csr"],
    ]);
    await dir.write(
      "san.ext",
      "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    );
    await openssl(dir, [
      ...["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"],
      ...["-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem"],
    ]);
    const caPem = await dir.readText("ca.pem");
    broker = await startBrokerProcess({
      dataDir: `${dir.path}/data`,
      mqttPort: await freePort(),
      httpPort: await freePort(),
      token: TOKEN,
      serviceSecret: "https-service-secret",
      extraArgs: [
        ...["--tls-port", String(await freePort())],
        ...["--tls-key", `${dir.path}/server.key`, "--tls-cert", `${dir.path}/server.pem`],
      ],
    });
    api = Deno.createHttpClient({ caCerts: [caPem] });
    const call = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${broker!.api}${path}`, {
        client: api!,
        method,
        headers: { authorization: `Bearer ${TOKEN}` },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: response.status, body: await response.json() };
    };
    assert.equal((await call("POST", "/signing-profiles", await releaseProfile())).status, 201);
    assert.equal((await call("PUT", "/things/dev-1", { secret: "secret-dev-1-x" })).status, 201);
    const { device } = await factoryDevice({
      layout: smallLayout(24),
      systemTime: true,
      factory: { version: "1.0.0", securityCounter: 1 },
    });
    const https = httpsPort(caPem);
    runtime = new DeviceRuntime({
      device,
      thingName: "dev-1",
      brokerUrl: String(broker.ready.mqtts),
      agentConfig: { ...AGENT_TEST_CONFIG, preferredProtocol: "HTTP" },
      mqttOptions: {
        username: "dev-1",
        password: "secret-dev-1-x",
        ca: caPem,
        reconnectPeriod: 100,
      },
      http: https,
    });
    await runtime.start();
    const created = await call("POST", "/ota-updates", {
      ...releaseRequest({ things: ["dev-1"] }),
      otaUpdateId: "over-openssl-tls",
      protocols: ["HTTP"],
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await waitUntil(
      () => device.running?.version === "1.1.0+0" && device.running.trial === false,
      "the update over mqtts and HTTPS",
      60_000,
    );
    const execution = await call("GET", `/jobs/${created.body.jobId}/executions`);
    assert.equal(JSON.stringify(execution.body).includes("SUCCEEDED"), true);
    await runtime.stop();
    runtime = null;
    https.close();
  } finally {
    await runtime?.stop();
    api?.close();
    await broker?.stop();
    await dir.dispose();
  }
});
