/**
 * The OTA-update manager end to end: a signing profile signs a payload, the manager creates the
 * stream, the job document and the job, and real agents download over MQTT or over pre-signed
 * HTTP URLs served by the file service.
 */
import { toBase64 } from "../../lib/base64.ts";
import { buildFirmware } from "../../bootloader/firmware.ts";
import { type ImageDependency, ImageId, parseVersion } from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import assert from "node:assert/strict";
import { cloudDevice } from "../helpers/cloud_device.ts";
import { DeviceRuntime } from "../../agent/device_runtime.ts";
import { fetchHttpPort } from "../../agent/http_fetch.ts";
import { type Cloud, startCloud } from "../../broker/cloud.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { exportPrivateKeyPem } from "../../pki/certificate_issuer.ts";
import { pemEncode, signData } from "../../protocol/signatures.ts";
import { AGENT_TEST_CONFIG } from "../helpers/agent_rig.ts";
import {
  releaseProfile,
  releaseRequest,
  secondStageImage,
  SIGNER_CERT_PATH,
  testImage,
  testPki,
} from "../helpers/pki.ts";
import { waitUntil } from "../helpers/wait.ts";
import { OPENSSL } from "../helpers/openssl.ts";
import { prometheusText } from "../../broker/metrics.ts";

async function world(devices: number) {
  const cloud = await startCloud({ tickMs: 100 });
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: "token-12345" }),
  );
  cloud.files.baseUrl = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  const runtimes: DeviceRuntime[] = [];
  for (let i = 0; i < devices; i++) {
    const thing = `dev-${i}`;
    await cloud.provisionThing(thing, `secret-${thing}`);
    await cloud.jobs.addThingToGroup("fleet", thing);
    runtimes.push(
      await cloudDevice({
        seed: i + 1,
        thingName: thing,
        brokerUrl: cloud.url,
        agentConfig: { ...AGENT_TEST_CONFIG, preferredProtocol: "HTTP" },
        http: fetchHttpPort,
        mqttOptions: { username: thing, password: `secret-${thing}` },
      }),
    );
  }
  await Promise.all(runtimes.map((r) => r.start()));
  return {
    cloud,
    runtimes,
    async close() {
      for (const r of runtimes) await r.stop();
      await server.shutdown();
      await cloud.close();
    },
  };
}

async function profile(cloud: Cloud) {
  return await cloud.otaUpdates.createSigningProfile(await releaseProfile());
}

async function confirmed(w: Awaited<ReturnType<typeof world>>, otaUpdateId: string) {
  await waitUntil(
    async () => (await w.cloud.otaUpdates.describe(otaUpdateId))?.status === "COMPLETED",
    `${otaUpdateId} to complete`,
  );
  await waitUntil(
    () =>
      w.runtimes.every((r) => r.device.running?.version === "1.1.0+0" && !r.device.running.trial),
    "confirmation",
  );
  assert.equal(
    (await w.cloud.otaUpdates.describe(otaUpdateId))!.counts.SUCCEEDED,
    w.runtimes.length,
  );
}

Deno.test("OTA update over HTTP: a signing profile signs the payload and devices fetch it with fresh pre-signed URLs", async () => {
  const w = await world(2);
  try {
    assert.ok((await profile(w.cloud)).ok);
    const created = await w.cloud.otaUpdates.createOtaUpdate({
      ...releaseRequest(),
      otaUpdateId: "v1-1-0",
      protocols: ["HTTP"],
      presignedUrlExpirySeconds: 300,
    });
    assert.ok(created.ok, !created.ok ? created.reason : "");
    const document = (await w.cloud.store.getJob(created.value.jobId))!.spec.document as {
      afr_ota: { files: { update_data_url: string }[] };
    };
    assert.match(
      document.afr_ota.files[0]!.update_data_url,
      /^\$\{ota:presigned-url:ota-v1-1-0\.bin:300\}$/,
      "stored as a placeholder",
    );
    await confirmed(w, "v1-1-0");
    assert.equal(w.cloud.files.refused, 0);
  } finally {
    await w.close();
  }
});

Deno.test("OTA update over MQTT from an image signed elsewhere; a bad external signature is refused", async () => {
  const w = await world(2);
  try {
    const pki = await testPki();
    const image = await testImage({ version: "1.1.0", securityCounter: 2, payloadSize: 16 * 1024 });
    const signature = await signData(pki.signerKeys.privateKey, image);
    const certificatePem = pemEncode("CERTIFICATE", certificateDer(pki.signer));
    const tampered = signature.slice();
    tampered[tampered.length - 1]! ^= 1;
    const refused = await w.cloud.otaUpdates.createOtaUpdate({
      otaUpdateId: "bad",
      image: toBase64(image),
      signature: toBase64(tampered),
      certificatePem,
      rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
      certFile: SIGNER_CERT_PATH,
      targets: { groups: ["fleet"] },
    });
    assert.ok(!refused.ok && /does not verify/.test(refused.reason));
    const created = await w.cloud.otaUpdates.createOtaUpdate({
      otaUpdateId: "ext",
      image: toBase64(image),
      signature: toBase64(signature),
      certificatePem,
      rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
      certFile: SIGNER_CERT_PATH,
      targets: { groups: ["fleet"] },
      protocols: ["MQTT"],
    });
    assert.ok(created.ok, !created.ok ? created.reason : "");
    await confirmed(w, "ext");
    // The agents' counters reach the cloud with the devices' reports, and its metrics.
    await waitUntil(
      () =>
        w.runtimes.every(async (r) => {
          const agent = (await w.cloud.shadows.get(r.thingName))?.reported.agent as
            | Record<string, number>
            | undefined;
          return (agent?.packetsProcessed ?? 0) > 0;
        }),
      "the agents' statistics in the devices' shadows",
    );
    for (const r of w.runtimes) {
      const agent = (await w.cloud.shadows.get(r.thingName))!.reported.agent as Record<
        string,
        number
      >;
      assert.deepEqual(agent, r.agentStatistics());
      assert.ok(agent.packetsReceived! >= agent.packetsProcessed!);
    }
    const processed = /^ota_agent_packets_total\{kind="processed"\} (\d+)$/m.exec(
      await prometheusText(w.cloud),
    );
    assert.ok(Number(processed?.[1]) > 0, "summed in /metrics");
  } finally {
    await w.close();
  }
});

Deno.test("signing profiles refuse a key that does not match, or a certificate from another root", async () => {
  const w = await world(0);
  try {
    const pki = await testPki();
    const base = {
      name: "p",
      rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
      certificatePem: pemEncode("CERTIFICATE", certificateDer(pki.signer)),
      privateKeyPem: await exportPrivateKeyPem(pki.rogueKeys.privateKey),
    };
    const wrongKey = await w.cloud.otaUpdates.createSigningProfile(base);
    assert.ok(!wrongKey.ok && /does not belong/.test(wrongKey.reason));
    const wrongRoot = await w.cloud.otaUpdates.createSigningProfile({
      ...base,
      certificatePem: pemEncode("CERTIFICATE", certificateDer(pki.rogue)),
    });
    assert.ok(!wrongRoot.ok && /trusted root/.test(wrongRoot.reason));
  } finally {
    await w.close();
  }
});

Deno.test("OTA update with a second stage: firmware signed elsewhere must depend on it; the cloud refuses it otherwise, before any device downloads", async () => {
  const w = await world(0);
  // A target that never connects: the update only has to be created.
  await w.cloud.provisionThing("idle", "secret-idle");
  await w.cloud.jobs.addThingToGroup("fleet", "idle");
  try {
    const pki = await testPki();
    const stageImage = await secondStageImage("2.1.0");
    // The second stage as the external signer ships it: signed like the firmware.
    const stageFile = {
      fileType: 1,
      filePath: "stage2.img",
      data: toBase64(stageImage),
      signature: toBase64(await signData(pki.signerKeys.privateKey, stageImage)),
    };
    const external = async (image: Uint8Array) => ({
      otaUpdateId: `ext-${Math.random().toString(36).slice(2)}`,
      image: toBase64(image),
      signature: toBase64(await signData(pki.signerKeys.privateKey, image)),
      certificatePem: pemEncode("CERTIFICATE", certificateDer(pki.signer)),
      rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
      certFile: SIGNER_CERT_PATH,
      targets: { groups: ["fleet"] },
    });
    const signedWith = (dependencies: ImageDependency[]) =>
      signImage({
        payload: buildFirmware({ behavior: "ok", version: "1.1.0" }, 4096),
        version: parseVersion("1.1.0")!,
        securityCounter: 2,
        dependencies,
      }, { privateKey: pki.signerKeys.privateKey, certificate: pki.signer });
    const needs = (v: string) => [{ imageId: ImageId.SECOND_STAGE, minVersion: parseVersion(v)! }];
    for (
      const [dependencies, reason] of [
        [[], /must depend on the second stage it comes with \(2\.1\.0\+0\): it declares no/],
        [
          needs("2.2.0"),
          /must depend on the second stage it comes with \(2\.1\.0\+0\): it needs 2\.2\.0/,
        ],
      ] as const
    ) {
      const image = await signedWith([...dependencies]);
      const refused = await w.cloud.otaUpdates.createOtaUpdate({
        ...await external(image),
        extraFiles: [stageFile],
      });
      assert.ok(!refused.ok && reason.test(refused.reason), JSON.stringify(refused));
    }
    const image = await signedWith(needs("2.1.0"));
    const created = await w.cloud.otaUpdates.createOtaUpdate({
      ...await external(image),
      extraFiles: [stageFile],
    });
    assert.ok(created.ok, !created.ok ? created.reason : "");
    assert.deepEqual(created.value.extraFiles?.map((f) => f.fileType), [1]);
  } finally {
    await w.close();
  }
});

Deno.test({
  name:
    "OTA update from a file signed with openssl (key and detached DER signature made by openssl)",
  ignore: OPENSSL.ignore,
}, async () => {
  const { openssl, opensslDir } = await import("../helpers/openssl.ts");
  const w = await world(0);
  // A target that never connects: the update only has to be created.
  await w.cloud.provisionThing("idle", "secret-idle");
  await w.cloud.jobs.addThingToGroup("fleet", "idle");
  const dir = await opensslDir();
  try {
    const pki = await testPki();
    const image = await testImage({ version: "1.1.0", securityCounter: 2 });
    await dir.write("signer.key", await exportPrivateKeyPem(pki.signerKeys.privateKey));
    await dir.write("image.bin", image);
    await openssl(dir, [
      "dgst",
      "-sha256",
      "-sign",
      "signer.key",
      "-out",
      "image.sig",
      "image.bin",
    ]);
    const created = await w.cloud.otaUpdates.createOtaUpdate({
      otaUpdateId: "openssl",
      image: toBase64(image),
      signature: toBase64(await dir.read("image.sig")),
      certificatePem: pemEncode("CERTIFICATE", certificateDer(pki.signer)),
      rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
      certFile: SIGNER_CERT_PATH,
      targets: { groups: ["fleet"] },
    });
    assert.ok(created.ok, !created.ok ? created.reason : "");
  } finally {
    await dir.dispose();
    await w.close();
  }
});

Deno.test("OTA update with extra files: a data file travels with the firmware, signed like it, over HTTP and MQTT; bad entries are refused", async () => {
  const w = await world(2);
  try {
    assert.ok((await profile(w.cloud)).ok);
    const config = new TextEncoder().encode(JSON.stringify({ sampleRate: 50, region: "eu" }));
    const base = releaseRequest();
    for (
      const [extraFiles, reason] of [
        [[{ fileType: 0, filePath: "x", data: toBase64(config) }], /fileType must be 1\.\.255/],
        [
          [{ fileType: 1, filePath: "stage2.img", data: toBase64(config) }],
          /a second-stage bootloader must be a signed image/,
        ],
        [[{ fileType: 3, filePath: "../../etc/x y", data: toBase64(config) }], /filePath must/],
        [[{ fileType: 3, filePath: "c.json", data: "" }], /data must be base64 of 1\.\.65536/],
        [
          [{ fileType: 3, filePath: "c.json", data: toBase64(config), signature: "AAAA" }],
          /the signing profile signs/,
        ],
      ] as const
    ) {
      const refused = await w.cloud.otaUpdates.createOtaUpdate({
        ...base,
        otaUpdateId: "refused",
        extraFiles,
      });
      assert.ok(!refused.ok && reason.test(refused.reason), JSON.stringify(refused));
    }
    const created = await w.cloud.otaUpdates.createOtaUpdate({
      ...base,
      otaUpdateId: "with-config",
      protocols: ["HTTP", "MQTT"],
      extraFiles: [{ fileType: 3, filePath: "config/app.json", data: toBase64(config) }],
    });
    assert.ok(created.ok, !created.ok ? created.reason : "");
    assert.deepEqual(created.value.extraFiles?.map((f) => [f.fileId, f.fileType, f.fileSize]), [
      [1, 3, config.length],
    ]);
    const document = (await w.cloud.store.getJob(created.value.jobId))!.spec.document as {
      afr_ota: { files: { filepath: string; fileid: number; fileType?: number }[] };
    };
    assert.deepEqual(
      document.afr_ota.files.map((f) => [f.filepath, f.fileid, f.fileType ?? 0]),
      [["firmware.bin", 0, 0], ["config/app.json", 1, 3]],
    );
    await confirmed(w, "with-config");
    for (const r of w.runtimes) {
      const delivered = r.events.find((e) => e.type === "UpdateComplete" && e.data !== null);
      assert.ok(delivered && delivered.type === "UpdateComplete", r.thingName);
      assert.equal(delivered.file.filePath, "config/app.json");
      assert.deepEqual(delivered.data, config);
    }
  } finally {
    await w.close();
  }
});
