/** The actor runtime: mailbox order, a throwing actor restarted alone, a crashed Worker's devices back. */
import assert from "node:assert/strict";
import { startCloud } from "../../broker/cloud.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { pemEncode } from "../../protocol/signatures.ts";
import {
  type ActorEnvironment,
  brokersFor,
  DeviceActor,
  factoryChip,
  noFaults,
} from "../../fleet/device_actor.ts";
import { FleetSupervisor } from "../../fleet/supervisor.ts";
import { systemClock } from "../../lib/clock.ts";
import { seededRandom } from "../../lib/random.ts";
import { AGENT_TEST_CONFIG } from "../helpers/agent_rig.ts";
import { SIGNER_CERT_PATH, smallLayout, testImage, testPki } from "../helpers/pki.ts";
import { waitUntil } from "../helpers/wait.ts";

Deno.test("device actors: messages are handled in order, and a throwing actor is power-cycled without disturbing its neighbour", async () => {
  const cloud = await startCloud();
  const pki = await testPki();
  const layout = smallLayout(24);
  const environment: ActorEnvironment = {
    layout,
    rom: pki.rom,
    factory: factoryChip(layout, await testImage({ version: "1.0.0" })),
    brokerUrls: [cloud.url],
    clock: systemClock,
    agentConfig: AGENT_TEST_CONFIG,
    random: seededRandom(1),
    log: () => {},
  };
  await cloud.provisionThing("a-1", "secret-a-1");
  await cloud.provisionThing("a-2", "secret-a-2");
  const first = new DeviceActor({ thing: "a-1", secret: "secret-a-1", seed: 1 }, environment);
  const second = new DeviceActor({ thing: "a-2", secret: "secret-a-2", seed: 2 }, environment);
  try {
    first.send({ type: "power-on" });
    second.send({ type: "power-on" });
    await first.idle();
    await second.idle();
    assert.ok(
      first.device.flash.sharesSectorWith(0, second.device.flash),
      "both devices share the factory image copy-on-write",
    );
    const neighbourBoots = second.device.bootLogs.length;
    // In order: a disconnect, then a crash (the actor's own bug), then a corruption order.
    first.send({ type: "disconnect" });
    first.send({ type: "throw", message: "bug in the simulated application" });
    first.send({ type: "corrupt-blocks", count: 2 });
    await first.idle();
    assert.deepEqual({ ...first.faults }, { ...noFaults(), disconnects: 1, crashes: 1 });
    assert.equal(first.device.state, "off", "the crash took the power");
    await first.watchdog();
    await first.idle();
    assert.equal(first.device.state, "running", "the device came back");
    assert.equal(second.device.bootLogs.length, neighbourBoots, "the neighbour never noticed");
    assert.equal(second.device.state, "running");
    assert.ok(await first.bootable());
  } finally {
    await first.stop();
    await second.stop();
    await cloud.close();
  }
});

/** An embedded cloud and a supervisor of 2 Workers running `things`, provisioned on it. */
async function supervisedFleet(things: readonly string[], telemetryMs: number) {
  const cloud = await startCloud();
  const pki = await testPki();
  const devices = things.map((thing, i) => ({ thing, secret: `secret-${thing}`, seed: i }));
  for (const d of devices) await cloud.provisionThing(d.thing, d.secret);
  const fleet = new FleetSupervisor({
    workers: 2,
    init: {
      slotSectors: 24,
      rootCertificateDer: certificateDer(pki.root),
      certificates: [[SIGNER_CERT_PATH, pemEncode("CERTIFICATE", certificateDer(pki.signer))]],
      factoryImage: await testImage({ version: "1.0.0" }),
      brokerUrls: [cloud.url],
      timeScale: 1,
      agentConfig: AGENT_TEST_CONFIG,
      seed: 1,
      telemetryMs,
    },
  });
  await fleet.start(devices);
  return {
    fleet,
    async close() {
      await fleet.stop();
      await cloud.close();
    },
  };
}

Deno.test("fleet supervisor: a crashed Worker is detected and its devices come back", async () => {
  const { fleet, close } = await supervisedFleet(["w-1", "w-2", "w-3", "w-4"], 50);
  try {
    const running = () => [...fleet.telemetry.values()].filter((t) => t.state === "running").length;
    await waitUntil(() => running() === 4, "four devices running");
    // Workers send only news, and a dead Worker's devices are forgotten until they report again.
    fleet.crashWorker(0);
    await waitUntil(
      () => fleet.workerRestarts === 1 && running() === 4,
      "the crashed Worker's devices to come back",
    );
    const report = await fleet.report();
    assert.equal(report.length, 4);
    assert.ok(report.every((d) => d.bootable && d.telemetry.version === "1.0.0+0"));
    // The same, added up in the Workers; a device with its slots wiped counts as bricked.
    fleet.send("w-3", { type: "wipe-slots" });
    await waitUntil(
      () => fleet.telemetry.get("w-3")?.state === "recovery",
      "the wiped device in recovery mode",
    );
    const summary = await fleet.summary("1.0.0+0");
    assert.equal(summary.devices, 4);
    assert.equal(summary.bricked, 1);
    assert.deepEqual(summary.runningVersion, { "1.0.0+0": 3, none: 1 });
    assert.equal(summary.faults.wipes, 1);
    assert.ok(summary.wire.packetsSent > 0);
    // Only the devices whose update is not over, at most as many as asked per Worker.
    assert.equal((await fleet.report({ incompleteAtMost: 1 })).length, 2);
  } finally {
    await close();
  }
});

Deno.test("fleet supervisor: syncTelemetry brings every Worker's latest telemetry, however long its batches take", async () => {
  // No batch comes on its own during the test: only what a sync asks for.
  const { fleet, close } = await supervisedFleet(["s-1", "s-2", "s-3"], 600_000);
  try {
    assert.equal(fleet.telemetry.size, 0, "nothing sent yet");
    const report = await fleet.report(); // every device powered on and idle
    assert.ok(report.every((d) => d.telemetry.state === "running"));
    await fleet.syncTelemetry();
    assert.deepEqual(
      [...fleet.telemetry.values()].map((t) => [t.thing, t.state]).sort(),
      [["s-1", "running"], ["s-2", "running"], ["s-3", "running"]],
    );
  } finally {
    await close();
  }
});

Deno.test("brokersFor: every fleet process's devices are spread over every node, with the rest as fallbacks", () => {
  const nodes = ["mqtt://n1:1883", "mqtt://n2:1883", "mqtt://n3:1883"];
  // Three processes, three nodes: process p runs devices p, p+3, p+6... whose seeds are
  // consecutive apart from the run's seed (fleet/run.ts: seed * 100_003 + index).
  for (let process = 0; process < 3; process++) {
    const perNode = new Map<string, number>();
    for (let index = process; index < 30_000; index += 3) {
      const { brokerUrl, fallbackBrokerUrls } = brokersFor(1 * 100_003 + index, nodes);
      perNode.set(brokerUrl, (perNode.get(brokerUrl) ?? 0) + 1);
      assert.deepEqual([brokerUrl, ...fallbackBrokerUrls!].sort(), nodes);
    }
    for (const node of nodes) {
      const share = (perNode.get(node) ?? 0) / 10_000;
      assert.ok(Math.abs(share - 1 / 3) < 0.03, `process ${process}, ${node}: ${share}`);
    }
  }
  assert.deepEqual(brokersFor(5, ["mqtt://only:1"]), { brokerUrl: "mqtt://only:1" });
});
