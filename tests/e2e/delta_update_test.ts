/**
 * Delta updates end to end, over MQTT and over HTTP: the cloud offers a patch from the image the
 * devices run; a device running that image fetches the patch, builds the new image from it in
 * its staging slot, boots and confirms it; a device running another image fetches the image
 * whole; a device given a broken patch falls back to the image in the same job.
 */
import assert from "node:assert/strict";
import { DeviceRuntime } from "../../agent/device_runtime.ts";
import { fetchHttpPort } from "../../agent/http_fetch.ts";
import { type Cloud, startCloud } from "../../broker/cloud.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import type { OtaUpdateRecord } from "../../broker/ota_updates.ts";
import { buildFirmware, evolveFirmware } from "../../bootloader/firmware.ts";
import { Device, flashFactoryImage } from "../../bootloader/device.ts";
import { createFlash } from "../../bootloader/layout.ts";
import { parseVersion } from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { bytesSource, decodeImage } from "../../protocol/image_format.ts";
import { sha256 } from "../../protocol/signatures.ts";
import { toHex } from "../../lib/bytes.ts";
import { systemClock } from "../../lib/clock.ts";
import { AGENT_TEST_CONFIG } from "../helpers/agent_rig.ts";
import { releaseProfile, SIGNER_CERT_PATH, smallLayout, testPki } from "../helpers/pki.ts";
import { waitUntil } from "../helpers/wait.ts";

const PAYLOAD = 64 * 1024;

/** The 1.0.0 image the devices run, signed once (its bytes are what the patch is made from). */
async function factoryRelease(version: string, payload: Uint8Array): Promise<Uint8Array> {
  const pki = await testPki();
  return await signImage({ payload, version: parseVersion(version)!, securityCounter: 1 }, {
    privateKey: pki.signerKeys.privateKey,
    certificate: pki.signer,
  });
}

async function world(protocol: "MQTT" | "HTTP") {
  const cloud = await startCloud({ tickMs: 100 });
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: "token-12345" }),
  );
  cloud.files.baseUrl = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  assert.ok((await cloud.otaUpdates.createSigningProfile(await releaseProfile())).ok);
  const pki = await testPki();
  const runtimes: DeviceRuntime[] = [];
  const logs = new Map<string, string[]>();
  const device = async (thing: string, image: Uint8Array, start = true) => {
    await cloud.provisionThing(thing, `secret-${thing}`);
    await cloud.jobs.addThingToGroup("fleet", thing);
    const layout = smallLayout(40);
    const flash = createFlash(layout, { seed: runtimes.length + 1 });
    flashFactoryImage(flash, layout, image);
    const lines: string[] = [];
    logs.set(thing, lines);
    const runtime = new DeviceRuntime({
      device: new Device({ layout, rom: pki.rom, clock: systemClock, flash }),
      thingName: thing,
      brokerUrl: cloud.url,
      agentConfig: { ...AGENT_TEST_CONFIG, preferredProtocol: protocol },
      http: fetchHttpPort,
      mqttOptions: { username: thing, password: `secret-${thing}` },
      log: (line) => lines.push(line),
    });
    runtimes.push(runtime);
    if (start) await runtime.start();
    return runtime;
  };
  return {
    cloud,
    device,
    logs,
    async close() {
      for (const r of runtimes) await r.stop();
      await server.shutdown();
      await cloud.close();
    },
  };
}

/** Creates the 1.1.0 update made from `v1` (the payload of `base`), offering a patch from `base`. */
async function update(
  cloud: Cloud,
  protocol: "MQTT" | "HTTP",
  v1: Uint8Array,
  base: Uint8Array,
): Promise<OtaUpdateRecord> {
  const created = await cloud.otaUpdates.createOtaUpdate({
    otaUpdateId: "delta-1-1-0",
    payload: evolveFirmware(v1, { behavior: "ok", version: "1.1.0" }).toBase64(),
    version: "1.1.0",
    securityCounter: 2,
    signingProfile: "release",
    certFile: SIGNER_CERT_PATH,
    targets: { groups: ["fleet"] },
    protocols: [protocol],
    delta: { bases: [base.toBase64()] },
  });
  assert.ok(created.ok, created.ok ? "" : created.reason);
  return created.value;
}

for (const protocol of ["MQTT", "HTTP"] as const) {
  Deno.test(`delta update over ${protocol}: the device on the base fetches the patch and boots the image it builds; another fetches the image whole`, async () => {
    const w = await world(protocol);
    try {
      const v1 = buildFirmware({ behavior: "ok", version: "1.0.0" }, PAYLOAD);
      const base = await factoryRelease("1.0.0", v1);
      const other = await factoryRelease(
        "1.0.0",
        buildFirmware({ behavior: "ok", version: "1.0.1" }, PAYLOAD),
      );
      const patched = await w.device("on-base", base);
      const whole = await w.device("elsewhere", other);
      const record = await update(w.cloud, protocol, v1, base);
      const patch = record.deltas![0]!;
      assert.ok(
        patch.fileSize < record.fileSize / 10,
        `patch ${patch.fileSize} of ${record.fileSize}`,
      );
      await waitUntil(
        async () => (await w.cloud.otaUpdates.describe(record.otaUpdateId))?.counts.SUCCEEDED === 2,
        "both devices to succeed",
      );
      await waitUntil(
        () =>
          [patched, whole].every((r) =>
            r.device.running?.version === "1.1.0+0" && !r.device.running.trial
          ),
        "both confirmed on 1.1.0",
      );
      // Both run exactly the image the cloud published, whichever way they got it.
      const published = decodeImage(bytesSource((await w.cloud.store.getFile(record.fileKey))!));
      assert.ok(published.ok);
      for (const r of [patched, whole]) {
        assert.equal(r.device.running?.imageSha256, toHex(published.image.sha256!));
      }
      // The device on the base took a few blocks, not a second image.
      const imageBlocks = Math.ceil(record.fileSize / AGENT_TEST_CONFIG.blockSize);
      const sent = protocol === "MQTT" ? w.cloud.streams.stats.blocksSent : w.cloud.files.served;
      assert.ok(
        sent < imageBlocks * 1.5,
        `${sent} blocks sent for two devices, image ${imageBlocks}`,
      );
      const onBase = w.logs.get("on-base")!;
      assert.ok(
        onBase.some((l) => l.includes(`fetching a ${patch.fileSize}-byte patch`)),
        onBase.join("\n"),
      );
      assert.ok(!w.logs.get("elsewhere")!.some((l) => l.includes("patch")));
    } finally {
      await w.close();
    }
  });
}

for (const protocol of ["MQTT", "HTTP"] as const) {
  Deno.test(`delta update over ${protocol}: a patch that builds a wrong image is given up for the image, in the same job, which succeeds`, async () => {
    const w = await world(protocol);
    try {
      const v1 = buildFirmware({ behavior: "ok", version: "1.0.0" }, PAYLOAD);
      const base = await factoryRelease("1.0.0", v1);
      const runtime = await w.device("on-base", base, false);
      const record = await update(w.cloud, protocol, v1, base);
      // The patch as served is wrong in one byte (a bad cloud, or a bad patch maker).
      const offer = record.deltas![0]!;
      const bad = Uint8Array.from((await w.cloud.store.getFile(offer.fileKey))!);
      bad[bad.length - 20]! ^= 0x01;
      await w.cloud.store.putFile(offer.fileKey, bad);
      const image = (await w.cloud.store.getFile(record.fileKey))!;
      w.cloud.streams.addStream(record.streamId, new Map([[0, image], [offer.fileId, bad]]));
      await runtime.start();
      await waitUntil(
        async () => (await w.cloud.otaUpdates.describe(record.otaUpdateId))?.counts.SUCCEEDED === 1,
        "the job to succeed",
      );
      await waitUntil(
        () => runtime.device.running?.version === "1.1.0+0" && !runtime.device.running.trial,
        "confirmed on 1.1.0",
      );
      const lines = w.logs.get("on-base")!;
      assert.ok(
        lines.some((l) => /the patch cannot be used \(.*\): fetching the image/.test(l)),
        lines.join("\n"),
      );
      const execution = await w.cloud.store.getExecution(record.jobId, "on-base");
      assert.equal(execution?.status, "SUCCEEDED");
      assert.equal(execution?.executionNumber, 1, "one execution: the fallback is not a retry");
    } finally {
      await w.close();
    }
  });
}

Deno.test("delta updates in a row (1.0 -> 1.1 -> 1.2): each device gets the patch from the image it runs, a device that missed 1.1 the one from 1.0", async () => {
  const w = await world("MQTT");
  try {
    const v10 = buildFirmware({ behavior: "ok", version: "1.0.0" }, PAYLOAD);
    const factory = await factoryRelease("1.0.0", v10);
    const early = await w.device("early", factory);
    const missed = await w.device("missed", factory);
    const v11 = evolveFirmware(v10, { behavior: "ok", version: "1.1.0" });
    const v12 = evolveFirmware(v11, { behavior: "ok", version: "1.2.0" });
    const release = async (id: string, payload: Uint8Array, version: string, things: string[]) => {
      const created = await w.cloud.otaUpdates.createOtaUpdate({
        otaUpdateId: id,
        payload: payload.toBase64(),
        version,
        securityCounter: 2,
        signingProfile: "release",
        certFile: SIGNER_CERT_PATH,
        targets: { things },
        delta: { bases: [factory.toBase64()], shipped: true },
      });
      assert.ok(created.ok, created.ok ? "" : created.reason);
      await waitUntil(
        async () => (await w.cloud.otaUpdates.describe(id))?.counts.SUCCEEDED === things.length,
        `${id} to succeed`,
      );
      return created.value;
    };
    const first = await release("u11", v11, "1.1.0", ["early"]);
    await waitUntil(
      () => early.device.running?.version === "1.1.0+0" && !early.device.running.trial,
      "early on 1.1.0",
    );
    const second = await release("u12", v12, "1.2.0", ["early", "missed"]);
    await waitUntil(
      () =>
        [early, missed].every((r) =>
          r.device.running?.version === "1.2.0+0" && !r.device.running.trial
        ),
      "both on 1.2.0",
    );
    // 1.2.0 offers patches from the factory image and from 1.1.0; each device took its own.
    const image11 = (await w.cloud.store.getFile(first.fileKey))!;
    const offers = second.deltas!;
    assert.deepEqual(offers.map((d) => d.baseSha256), [
      sha256(factory).toHex(),
      sha256(image11).toHex(),
    ]);
    const took = (thing: string) =>
      w.logs.get(thing)!.filter((l) => l.includes("-byte patch from the running image"));
    assert.equal(took("early").length, 2, "1.1.0 then 1.2.0 by patch");
    assert.match(took("early")[1]!, new RegExp(`fetching a ${offers[1]!.fileSize}-byte patch`));
    assert.equal(took("missed").length, 1);
    assert.match(took("missed")[0]!, new RegExp(`fetching a ${offers[0]!.fileSize}-byte patch`));
  } finally {
    await w.close();
  }
});
