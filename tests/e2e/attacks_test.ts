/**
 * Attacks from the threat model (seed documents; TUF/Uptane catalogue in
 * ../shared/reference/rollout-services.md, section 5), each against the real cloud and a device
 * actor in its Worker, each a test that must fail for the attacker: the device keeps running a
 * trusted image it had, and the cloud's record says why.
 */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { decodeStreamBlock, encodeStreamBlock } from "../../agent/stream_codec.ts";
import { sha256 } from "../../bootloader/codesign.ts";
import { waitUntil } from "../helpers/wait.ts";
import {
  type QualificationWorld,
  qualificationWorld,
  signedImage,
} from "../helpers/qualification.ts";

async function attack(run: (world: QualificationWorld) => Promise<void>): Promise<void> {
  const world = await qualificationWorld("MQTT");
  try {
    await run(world);
  } catch (error) {
    console.log(world.logs.join("\n"));
    throw error;
  } finally {
    await world.close();
  }
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

Deno.test("attack: a man in the middle alters the image in transit (re-hashing every block it touches): the signature check refuses it", () =>
  attack(async (world) => {
    tamperBlocks(world, (blockId, payload) => {
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

Deno.test("attack: blocks of two validly signed images mixed into one download: refused", () =>
  attack(async (world) => {
    const other = (await signedImage({ version: "1.2.0", securityCounter: 3 })).image;
    const blockSize = 1024;
    tamperBlocks(
      world,
      (blockId) =>
        blockId % 2 === 1 ? other.slice(blockId * blockSize, (blockId + 1) * blockSize) : null,
    );
    const jobId = await world.update("mixed", { version: "1.1.0", securityCounter: 2 });
    const execution = await world.ended(jobId, "FAILED");
    assert.match(execution.statusDetails.reason ?? "", /^0x000000e3:/);
    await unharmed(world, "1.0.0+0", 1);
  }));

Deno.test("attack: an older release, validly signed, replayed as a new job after an update: refused as a downgrade", () =>
  attack(async (world) => {
    const first = await world.update("current", { version: "1.1.0", securityCounter: 2 });
    await world.ended(first, "SUCCEEDED");
    // The 1.0.0 release the device shipped with, signed by the trusted signer, sent again.
    const replay = await world.update("replayed", { version: "1.0.0", securityCounter: 1 });
    const execution = await world.ended(replay, "REJECTED");
    assert.equal(execution.statusDetails.reason, "rejected: 0x0000000f", "DowngradeNotAllowed");
    await unharmed(world, "1.1.0+0", 2);
  }));

Deno.test("attack: a stream that goes on past the declared size (endless data) changes nothing", () =>
  attack(async (world) => {
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
      await new Promise<void>((resolve) =>
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
      );
    }
    const execution = await world.ended(jobId, "SUCCEEDED");
    assert.equal(execution.statusDetails.reason, "accepted  v1.1.0");
    await unharmed(world, "1.1.0+0", 2);
    assert.ok(
      world.logs.some((line) => /block dropped/.test(line)),
      "the device saw the extra blocks and dropped them",
    );
  }));

Deno.test("attack: another device publishes status for this device's job: it is disconnected and the execution is untouched", () =>
  attack(async (world) => {
    world.cloud.provisionThing("mallory", "mallory-secret");
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
    await closed;
    await mallory.endAsync(true);
    const execution = await world.ended(jobId, "SUCCEEDED");
    assert.equal(
      execution.statusDetails.reason,
      "accepted  v1.1.0",
      "the forged status never landed",
    );
    const history = world.cloud.store.history({ jobId, thing: world.thing });
    assert.ok(!history.some((e) => JSON.stringify(e).includes("forged")));
    await unharmed(world, "1.1.0+0", 2);
  }));
