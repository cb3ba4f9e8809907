/**
 * Power lost at the worst moments of the commit: the cloud has recorded SUCCEEDED and the device
 * has not yet confirmed its trial image (so the boot ROM reverts it). Whichever order an agent
 * commits in leaves such a window (AWS commits first and can end FAILED on a running image, #506;
 * this agent reports first); what matters is that the device and the cloud agree once it is back.
 */
import assert from "node:assert/strict";
import { bytesSource, decodeImage } from "../../protocol/image_format.ts";
import { toHex } from "../../lib/bytes.ts";
import {
  inProcessDevice,
  losePowerWithReport,
  qualificationCloud,
  qualificationWorld,
  withInProcessDevice,
} from "../helpers/qualification.ts";
import { settledTelemetry } from "../../fleet/device_actor.ts";
import { waitUntil } from "../helpers/wait.ts";

/** The execution state an `update/accepted` reply carries (what the cloud recorded). */
function acceptedState(
  payload: Uint8Array,
): { status?: string; statusDetails?: Record<string, string> } | undefined {
  try {
    return JSON.parse(new TextDecoder().decode(payload)).executionState;
  } catch {
    return undefined;
  }
}

Deno.test("power loss after the cloud recorded SUCCEEDED, before the trial image was confirmed: the device installs the image again and confirms it", async () => {
  const side = await qualificationCloud("MQTT");
  let jobId = "";
  let cut = false;
  const rig = await inProcessDevice(side, (topic, payload) => {
    // The acknowledgement of SUCCEEDED is on its way: the power goes before the device hears it.
    if (
      !cut && topic.endsWith(`/jobs/${jobId}/update/accepted`) &&
      acceptedState(payload)?.status === "SUCCEEDED"
    ) {
      cut = true;
      queueMicrotask(() => rig.device.powerOff());
      return null;
    }
    return payload;
  });
  await withInProcessDevice(side, rig, async () => {
    await rig.runtime.start();
    jobId = await side.update("worst-moment", { version: "1.1.0", securityCounter: 2 });
    await waitUntil(() => cut && rig.device.state === "off", "the power to go at the worst moment");
    assert.equal(
      (await side.execution(jobId))?.status,
      "SUCCEEDED",
      "the cloud has the update as done",
    );

    await rig.runtime.start();
    await waitUntil(
      () => rig.settled() && rig.device.running?.version === "1.1.0+0",
      "the device to run 1.1.0 confirmed again",
      60_000,
    );
    assert.ok(
      rig.logs.some((line) => line.includes("reverted before it was confirmed")),
      "it booted the reverted 1.0.0 first and noticed",
    );
    assert.ok(rig.logs.some((line) => line.includes("SUCCEEDED had landed: confirming")));
    const published = decodeImage(bytesSource(await side.published(jobId)));
    assert.ok(published.ok);
    assert.equal(rig.device.running?.imageSha256, toHex(published.image.sha256!));
    assert.equal(rig.device.report().securityCounter, 2);
    assert.ok(await rig.bootable());
    const execution = (await side.execution(jobId))!;
    assert.equal(execution.status, "SUCCEEDED");
    assert.equal(execution.statusDetails.reason, "accepted  v1.1.0", "nothing was reported twice");
  });
});

Deno.test("a Worker crash after the cloud recorded SUCCEEDED, before the device heard it: the fleet does not count the device settled until it runs the update confirmed", async () => {
  const world = await qualificationWorld("MQTT");
  const broker = world.cloud.broker!.broker;
  let jobId = "";
  let crashed = false;
  let offline = false;
  // The acknowledgement of SUCCEEDED is dropped and the device's Worker dies instead: its flash
  // holds the reported-success intent and an unconfirmed trial image, which the boot reverts.
  broker.authorizeForward = ((original) =>
  // deno-lint-ignore no-explicit-any
  (client: any, packet: any) => {
    if (
      !crashed && client?.id === world.thing &&
      packet.topic === `$aws/things/${world.thing}/jobs/${jobId}/update/accepted` &&
      acceptedState(packet.payload)?.status === "SUCCEEDED"
    ) {
      crashed = offline = true;
      world.fleet.crashWorker(0);
      return null;
    }
    return original(client, packet);
  })(broker.authorizeForward);
  // While offline the reverted device cannot start installing again: it stays on 1.0.0, at rest,
  // its logins refused (and it must keep trying: mqtt.js gives up after a refused CONNACK).
  let refused = 0;
  broker.authenticate = ((original) =>
  // deno-lint-ignore no-explicit-any
  (client: any, username: any, password: any, done: any) => {
    if (offline) {
      refused++;
      return done(new Error("offline for the test"), false);
    }
    return original(client, username, password, done);
  })(broker.authenticate);
  try {
    jobId = await world.update("crash-before-ack", { version: "1.1.0", securityCounter: 2 });
    await waitUntil(
      () =>
        world.fleet.workerRestarts === 1 &&
        world.fleet.telemetry.get(world.thing)?.state === "running",
      "the device to boot again after its Worker died",
    );
    const reverted = world.fleet.telemetry.get(world.thing)!;
    assert.equal((await world.execution(jobId))?.status, "SUCCEEDED");
    assert.deepEqual(
      [reverted.version, reverted.trial, reverted.updateState, reverted.unconfirmedSuccess],
      ["1.0.0+0", false, "FAILED", true],
      "back on the old image (the trial reverted), with the reported success unconfirmed",
    );
    assert.equal(settledTelemetry(reverted), false, "not settled: its update is not done");
    await waitUntil(() => refused >= 2, "the device to be refused twice and keep trying");
    offline = false;
    await world.settled();
    const settled = world.fleet.telemetry.get(world.thing)!;
    assert.equal(settled.version, "1.1.0+0");
    assert.equal(settled.unconfirmedSuccess, false);
    const report = await world.device();
    assert.ok(report.bootable);
    assert.equal(report.device.securityCounter, 2);
    assert.ok(world.logs.some((line) => line.includes("reverted before it was confirmed")));
  } finally {
    await world.close();
  }
});

Deno.test("power loss after SUCCEEDED was sent but before the cloud recorded it: the image reverts and the cloud says FAILED", async () => {
  const side = await qualificationCloud("MQTT");
  const rig = await inProcessDevice(side);
  let jobId = "";
  await withInProcessDevice(side, rig, async () => {
    await rig.runtime.start();
    // The cloud never hears SUCCEEDED: the power goes as the report leaves.
    const cut = losePowerWithReport(side, rig, () => jobId, "SUCCEEDED");
    jobId = await side.update("lost-report", { version: "1.1.0", securityCounter: 2 });
    await waitUntil(() => cut() && rig.device.state === "off", "the power to go with the report");
    await rig.runtime.start();
    await waitUntil(
      async () => (await side.execution(jobId))?.status === "FAILED",
      "the job to fail",
      60_000,
    );
    await waitUntil(rig.settled, "the device to settle");
    assert.equal(rig.device.running?.version, "1.0.0+0");
    assert.equal(rig.device.report().securityCounter, 1);
    assert.ok(await rig.bootable());
  });
});

Deno.test("power loss tearing the install request: the image never ran, so the device downloads it again in the same execution and the job SUCCEEDS", async () => {
  const side = await qualificationCloud("MQTT");
  let jobId = "";
  let armed = false;
  const rig = await inProcessDevice(side, (topic, payload) => {
    // The cloud acknowledged self_test "ready": the next flash write is the install request.
    if (
      !armed && topic.endsWith(`/jobs/${jobId}/update/accepted`) &&
      acceptedState(payload)?.statusDetails?.self_test === "ready"
    ) {
      armed = true;
      rig.device.cutPowerAt({ atOperation: 1, torn: true });
    }
    return payload;
  });
  await withInProcessDevice(side, rig, async () => {
    await rig.runtime.start();
    jobId = await side.update("torn-install", { version: "1.1.0", securityCounter: 2 });
    await waitUntil(() => armed && rig.device.state === "off", "the power to go with the request");
    await rig.runtime.start();
    await waitUntil(
      async () => (await side.execution(jobId))?.status === "SUCCEEDED" && rig.settled(),
      "the update to succeed after all",
      60_000,
    );
    assert.ok(
      rig.logs.some((line) => line.includes("torn by a power cut before the image ran")),
      rig.logs.join("\n"),
    );
    assert.equal(rig.device.running?.version, "1.1.0+0");
    assert.equal(rig.device.running?.trial, false);
    assert.equal((await side.execution(jobId))?.executionNumber, 1, "no retry was needed");
    assert.ok(await rig.bootable());
  });
});
