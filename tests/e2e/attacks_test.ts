/**
 * Attacks from the threat model (seed documents; TUF/Uptane catalogue in
 * ../shared/reference/rollout-services.md, section 5), each against the real cloud and a device
 * actor in its Worker, each a test that must fail for the attacker: the device keeps running a
 * trusted image it had, and the cloud's record says why. The data-plane attacks run over both
 * MQTT streams (the stream service's block filter plays the man in the middle) and HTTP (a proxy
 * the pre-signed URLs point at plays it).
 */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { decodeStreamBlock, encodeStreamBlock } from "../../protocol/stream_codec.ts";
import { sha256 } from "../../protocol/signatures.ts";
import { waitUntil, withDeadline } from "../helpers/wait.ts";
import {
  type DataProtocol,
  IMAGE_PAYLOAD,
  type QualificationWorld,
  qualificationWorld,
  signedImage,
} from "../helpers/qualification.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import {
  exportPrivateKeyPem,
  generateSigningKeys,
  issueCodeSigningCertificate,
} from "../../pki/certificate_issuer.ts";
import { pemEncode, signData } from "../../protocol/signatures.ts";
import { buildFirmware } from "../../bootloader/firmware.ts";
import { parseVersion } from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { toBase64 } from "../../lib/base64.ts";
import { toArrayBuffer } from "../../lib/bytes.ts";
import { testPki, VALIDITY } from "../helpers/pki.ts";

const BLOCK_SIZE = 1024;
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const LEAKED_CERT_PATH = "/certs/device_tls.pem";

async function attack(
  protocol: DataProtocol,
  run: (world: QualificationWorld) => Promise<void>,
  options: Parameters<typeof qualificationWorld>[2] = {},
): Promise<void> {
  const world = await qualificationWorld(protocol, {}, options);
  try {
    await run(world);
  } catch (error) {
    console.log(world.logs.join("\n"));
    throw error;
  } finally {
    await closers.get(world)?.close();
    closers.delete(world);
    await world.close();
  }
}

/**
 * A man in the middle on the device's HTTP path: the pre-signed URLs the cloud hands out point at
 * this proxy, which fetches the real bytes and lets `alter` answer instead (given the requested
 * byte range and the genuine response body).
 */
function httpMitm(
  world: QualificationWorld,
  alter: (
    range: { start: number; end: number },
    genuine: Uint8Array,
  ) => Uint8Array | ReadableStream<Uint8Array<ArrayBuffer>>,
): { close(): Promise<void> } {
  const upstream = world.cloud.files.baseUrl;
  const proxy = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const headers = new Headers();
    const range = req.headers.get("range");
    if (range) headers.set("range", range);
    const response = await fetch(`${upstream}${url.pathname}${url.search}`, { headers });
    const genuine = new Uint8Array(await response.arrayBuffer());
    const match = /^bytes=(\d+)-(\d+)$/.exec(range ?? "");
    if (response.status !== 206 || !match) return new Response(genuine, response);
    const headers206 = new Headers(response.headers);
    // The altered body may be longer (or endless): let the transfer encoding say where it ends.
    headers206.delete("content-length");
    const body = alter({ start: Number(match[1]), end: Number(match[2]) }, genuine);
    return new Response(body instanceof Uint8Array ? toArrayBuffer(body) : body, {
      status: 206,
      headers: headers206,
    });
  });
  world.cloud.files.baseUrl = `http://127.0.0.1:${proxy.addr.port}`;
  return { close: () => proxy.shutdown() };
}

/** The device is where it was: `version`, confirmed, counter `counter`, nothing staged. */
async function unharmed(world: QualificationWorld, version: string, counter: number) {
  const report = await world.device();
  assert.equal(report.telemetry.version, version);
  assert.equal(report.device.running?.trial, false);
  assert.equal(report.device.securityCounter, counter);
  assert.equal(
    report.device.updateState === "READY" || report.device.updateState === "UPDATED",
    true,
  );
  assert.ok(report.bootable);
}

/** The update to 1.1.0 went through as if the extra data had never come; the device dropped it. */
async function updatedAsIfNothingCame(world: QualificationWorld, jobId: string, dropped: string) {
  const execution = await world.ended(jobId, "SUCCEEDED");
  assert.equal(execution.statusDetails.reason, "accepted  v1.1.0");
  await unharmed(world, "1.1.0+0", 2);
  assert.ok(world.logs.some((line) => /block dropped/.test(line)), dropped);
}

/** Rewrites stream blocks on their way to the device, keeping each block's own hash consistent. */
function tamperBlocks(
  world: QualificationWorld,
  change: (blockId: number, payload: Uint8Array) => Uint8Array | null,
) {
  world.cloud.streams.blockFilter = (_thing, blockId, message) => {
    const block = decodeStreamBlock(message);
    if (!block.ok) return message;
    const payload = change(blockId, block.value.payload);
    if (!payload) return message;
    return encodeStreamBlock({ ...block.value, payload, hash: sha256(payload) });
  };
}

/**
 * Rewrites image bytes on their way to the device, block by block (`change` returns the new
 * payload or null for "leave it"): over MQTT in the stream service, keeping each block's own hash
 * consistent; over HTTP in a proxy.
 */
function tamper(
  world: QualificationWorld,
  change: (blockId: number, payload: Uint8Array) => Uint8Array | null,
): void {
  if (world.protocol === "MQTT") {
    tamperBlocks(world, change);
    return;
  }
  const proxy = httpMitm(
    world,
    (range, genuine) => change(range.start / BLOCK_SIZE, genuine) ?? genuine,
  );
  closers.set(world, proxy);
}

/** Proxies to shut down with their world. */
const closers = new Map<QualificationWorld, { close(): Promise<void> }>();

for (const protocol of ["MQTT", "HTTP"] as const) {
  Deno.test(`attack (${protocol}): a man in the middle alters the image in transit: the signature check refuses it`, () =>
    attack(protocol, async (world) => {
      tamper(world, (blockId, payload) => {
        if (blockId !== 3) return null;
        const altered = payload.slice();
        altered[100]! ^= 0x01;
        return altered;
      });
      const jobId = await world.update("mitm", { version: "1.1.0", securityCounter: 2 });
      const execution = await world.ended(jobId, "FAILED");
      assert.match(execution.statusDetails.reason ?? "", /^0x000000e3:/, "SignatureCheckFailed");
      await unharmed(world, "1.0.0+0", 1);
    }));

  Deno.test(`attack (${protocol}): blocks of two validly signed images mixed into one download: refused`, () =>
    attack(protocol, async (world) => {
      const other = (await signedImage({ version: "1.2.0", securityCounter: 3 })).image;
      tamper(
        world,
        (blockId) =>
          blockId % 2 === 1 ? other.slice(blockId * BLOCK_SIZE, (blockId + 1) * BLOCK_SIZE) : null,
      );
      const jobId = await world.update("mixed", { version: "1.1.0", securityCounter: 2 });
      const execution = await world.ended(jobId, "FAILED");
      assert.match(execution.statusDetails.reason ?? "", /^0x000000e3:/);
      await unharmed(world, "1.0.0+0", 1);
    }));

  Deno.test(`attack (${protocol}): an older release, validly signed, replayed as a new job after an update: refused as a downgrade`, () =>
    attack(protocol, async (world) => {
      const first = await world.update("current", { version: "1.1.0", securityCounter: 2 });
      await world.ended(first, "SUCCEEDED");
      // The 1.0.0 release the device shipped with, signed by the trusted signer, sent again.
      const replay = await world.update("replayed", { version: "1.0.0", securityCounter: 1 });
      const execution = await world.ended(replay, "REJECTED");
      assert.equal(execution.statusDetails.reason, "rejected: 0x0000000f", "DowngradeNotAllowed");
      await unharmed(world, "1.1.0+0", 2);
    }));

  Deno.test(`attack (${protocol}): a validly signed image built for another board: refused before anything is installed, with the reason`, () =>
    attack(protocol, async (world) => {
      const jobId = await world.update("other-board", {
        version: "1.1.0",
        securityCounter: 2,
        hardwareId: "other-board",
      });
      const execution = await world.ended(jobId, "FAILED");
      assert.match(
        String(execution.statusDetails.detail),
        /built for hardware other-board, this device is ota-fleet-board/,
      );
      await unharmed(world, "1.0.0+0", 1);
      // The same release built for this board installs.
      const right = await world.update("this-board", {
        version: "1.1.0",
        securityCounter: 2,
        hardwareId: "ota-fleet-board",
      });
      await world.ended(right, "SUCCEEDED");
    }));

  Deno.test(`attack (${protocol}): an image signed with a key of the trusted CA whose certificate lacks the code-signing EKU (a leaked TLS key): refused by the device and by the cloud`, async () => {
    const pki = await testPki();
    // The device stores a certificate from its own CA that is not a code signer (its TLS server
    // certificate, say): an attacker who has that key names it as the job's certfile.
    const leakedKeys = await generateSigningKeys();
    const leaked = await issueCodeSigningCertificate(
      pki.root,
      pki.rootKeys.privateKey,
      leakedKeys.publicKey,
      { subject: "CN=Device TLS", ...VALIDITY, extendedKeyUsages: [SERVER_AUTH] },
    );
    const leakedPem = pemEncode("CERTIFICATE", certificateDer(leaked));
    await attack(protocol, async (world) => {
      const image = await signImage(
        {
          payload: buildFirmware({ behavior: "ok", version: "6.6.6" }, IMAGE_PAYLOAD),
          version: parseVersion("6.6.6")!,
          securityCounter: 7,
        },
        { privateKey: leakedKeys.privateKey, certificate: leaked },
      );
      const signature = toBase64(await signData(leakedKeys.privateKey, image));
      const jobId = await world.rawJob("leaked-key", image, (entry) => ({
        ...entry,
        certfile: LEAKED_CERT_PATH,
        "sig-sha256-ecdsa": signature,
      }));
      const execution = await world.ended(jobId, "FAILED");
      assert.match(execution.statusDetails.reason ?? "", /^0x000000e7:/, "BadSignerCert");
      assert.ok(
        world.logs.some((line) => line.includes("lacks ExtendedKeyUsage codeSigning")),
        "the device says why",
      );
      await unharmed(world, "1.0.0+0", 1);
      // The cloud will not sign with it either.
      const profile = await world.cloud.otaUpdates.createSigningProfile({
        name: "leaked",
        rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
        certificatePem: leakedPem,
        privateKeyPem: await exportPrivateKeyPem(leakedKeys.privateKey),
      });
      assert.equal(profile.ok, false);
      assert.match(profile.ok ? "" : profile.reason, /lacks ExtendedKeyUsage codeSigning/);
    }, { deviceCertificates: [[LEAKED_CERT_PATH, leakedPem]] });
  });
}

Deno.test("attack (HTTP): slow retrieval: a path that trickles the image in below the job's rate floor is abandoned with the reason; the device keeps its image", () =>
  attack("HTTP", async (world) => {
    // The attacker sends every byte, in order, just too slowly: 64 bytes every 40 ms.
    const trickle = (genuine: Uint8Array) => {
      let at = 0;
      return new ReadableStream<Uint8Array<ArrayBuffer>>({
        async pull(controller) {
          if (at >= genuine.length) return controller.close();
          await new Promise((resolve) => setTimeout(resolve, 40));
          controller.enqueue(genuine.slice(at, at + 64));
          at += 64;
        },
      });
    };
    closers.set(world, httpMitm(world, (_range, genuine) => trickle(genuine)));
    const jobId = await world.update("trickled", {
      version: "1.1.0",
      securityCounter: 2,
      minimumRate: { bytesPerSecond: 20_000, windowSeconds: 2 },
    });
    const execution = await world.ended(jobId, "FAILED");
    assert.match(
      String(execution.statusDetails.detail),
      /^download too slow: \d+ B\/s over the last \d+ s, below the job's floor of 20000 B\/s$/,
    );
    await unharmed(world, "1.0.0+0", 1);
  }));

Deno.test("attack (HTTP): a server that answers a range with an endless body: the device reads one byte past the range, drops the block and fetches it again", () =>
  attack("HTTP", async (world) => {
    let endless = 0;
    const proxy = httpMitm(world, (range, genuine) => {
      if (range.start !== 2 * BLOCK_SIZE || endless > 0) return genuine;
      endless++;
      return new ReadableStream<Uint8Array<ArrayBuffer>>({
        pull(controller) {
          controller.enqueue(new Uint8Array(16 * 1024).fill(0x42));
        },
      });
    });
    closers.set(world, proxy);
    const jobId = await world.update("endless-http", { version: "1.1.0", securityCounter: 2 });
    await updatedAsIfNothingCame(world, jobId, "the endless block was dropped");
    assert.equal(endless, 1);
  }));

Deno.test("attack (MQTT): a stream that goes on past the declared size (endless data) changes nothing", () =>
  attack("MQTT", async (world) => {
    // Blocks the device never asked for, far beyond the file, pushed onto its data topic.
    const jobId = await world.update("endless", { version: "1.1.0", securityCounter: 2 });
    const stream = `$aws/things/${world.thing}/streams/${jobId}/data/cbor`;
    // While the device listens on its stream, i.e. once its download is under way.
    await waitUntil(() => world.cloud.streams.stats.blocksSent >= 2, "the download to start");
    const junk = new Uint8Array(1024).fill(0x42);
    const broker = world.cloud.broker!.broker;
    for (let blockId = 10_000; blockId < 10_064; blockId++) {
      const payload = encodeStreamBlock({
        fileId: 0,
        blockId,
        blockSize: 1024,
        payload: junk,
        hash: sha256(junk),
      });
      await withDeadline(
        new Promise<void>((resolve) =>
          broker.publish(
            {
              cmd: "publish",
              topic: stream,
              payload: Buffer.from(payload),
              qos: 0,
              retain: false,
              dup: false,
            },
            () => resolve(),
          )
        ),
        `the broker to publish extra block ${blockId}`,
        10_000,
      );
    }
    await updatedAsIfNothingCame(world, jobId, "the device saw the extra blocks and dropped them");
  }));

Deno.test("attack: another device publishes status for this device's job: it is disconnected and the execution is untouched", () =>
  attack("MQTT", async (world) => {
    await world.cloud.provisionThing("mallory", "mallory-secret");
    const jobId = await world.update("target", { version: "1.1.0", securityCounter: 2 });
    const mallory = await mqtt.connectAsync(world.cloud.url, {
      clientId: "mallory",
      username: "mallory",
      password: "mallory-secret",
      reconnectPeriod: 0,
    });
    const closed = new Promise<void>((resolve) => mallory.once("close", () => resolve()));
    mallory.publish(
      `$aws/things/${world.thing}/jobs/${jobId}/update`,
      JSON.stringify({ status: "FAILED", statusDetails: { reason: "forged" } }),
      { qos: 0 },
    );
    await withDeadline(
      closed,
      "the broker to disconnect the device that published for another",
      10_000,
    );
    await mallory.endAsync(true);
    const execution = await world.ended(jobId, "SUCCEEDED");
    assert.equal(
      execution.statusDetails.reason,
      "accepted  v1.1.0",
      "the forged status never landed",
    );
    const history = await world.cloud.store.history({ jobId, thing: world.thing });
    assert.ok(!history.some((e) => JSON.stringify(e).includes("forged")));
    await unharmed(world, "1.1.0+0", 2);
  }));
