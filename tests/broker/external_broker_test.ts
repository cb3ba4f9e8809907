/** The same cloud services as clients of mosquitto instead of the embedded aedes. */
import { toBase64 } from "../../lib/base64.ts";
import assert from "node:assert/strict";
import { cloudDevice } from "../helpers/cloud_device.ts";
import { DeviceRuntime } from "../../agent/device_runtime.ts";
import { startCloud } from "../../broker/cloud.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { pemEncode, signData } from "../../protocol/signatures.ts";
import { MOSQUITTO, startMosquitto } from "../helpers/mosquitto.ts";
import { SIGNER_CERT_PATH, testImage, testPki } from "../helpers/pki.ts";
import { waitUntil } from "../helpers/wait.ts";

Deno.test({
  name:
    "external broker: jobs and streams run as clients of mosquitto and two devices update through it",
  ignore: MOSQUITTO.ignore,
}, async () => {
  const mosquitto = await startMosquitto();
  const cloud = await startCloud({ external: mosquitto.url, tickMs: 100 });
  const runtimes: DeviceRuntime[] = [];
  try {
    assert.equal(cloud.broker, null);
    for (let i = 0; i < 2; i++) {
      const thing = `ext-${i}`;
      await cloud.jobs.addThingToGroup("fleet", thing);
      runtimes.push(
        await cloudDevice({ seed: i + 7, thingName: thing, brokerUrl: mosquitto.url }),
      );
    }
    await Promise.all(runtimes.map((r) => r.start()));
    const pki = await testPki();
    const image = await testImage({ version: "1.1.0", securityCounter: 2, payloadSize: 16 * 1024 });
    const created = await cloud.otaUpdates.createOtaUpdate({
      otaUpdateId: "ext",
      image: toBase64(image),
      signature: toBase64(await signData(pki.signerKeys.privateKey, image)),
      certificatePem: pemEncode("CERTIFICATE", certificateDer(pki.signer)),
      rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
      certFile: SIGNER_CERT_PATH,
      targets: { groups: ["fleet"] },
    });
    assert.ok(created.ok, !created.ok ? created.reason : "");
    await waitUntil(
      async () => (await cloud.otaUpdates.describe("ext"))?.status === "COMPLETED",
      "the update to complete",
    );
    assert.equal((await cloud.otaUpdates.describe("ext"))!.counts.SUCCEEDED, 2);
    await waitUntil(
      () =>
        runtimes.every((r) => r.device.running?.version === "1.1.0+0" && !r.device.running.trial),
      "confirmation",
    );
  } finally {
    for (const r of runtimes) await r.stop();
    await cloud.close();
    await mosquitto.stop();
  }
});
