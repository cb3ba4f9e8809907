/**
 * The protocol floor replays what a fleet device did on the wire: the same packets and bytes per
 * device as the fleet run it was logged from, every client action answered, no client stuck.
 */
import assert from "node:assert/strict";
import { typicalDevice } from "../../bench/fleet_floor.ts";
import { measureProtocolFloor } from "../../bench/protocol_floor.ts";
import { protocolScript } from "../../bench/protocol_script.ts";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { runFleet } from "../../fleet/run.ts";
import { parseWireLog } from "../../fleet/wire_log.ts";

Deno.test("protocol floor: clients in their own process replay a logged fleet device exactly", async () => {
  const dir = await Deno.makeTempDir({ prefix: "protocol-floor-test-" });
  try {
    const report = await runFleet(
      parseFleetArgs([
        "--devices",
        "6",
        "--workers",
        "2",
        "--image-size",
        "24KiB",
        "--block-size",
        "1KiB",
        "--trace",
        "dev-00001,dev-00004",
        "--wire-log",
        `${dir}/wire.jsonl`,
      ]),
      () => {},
    );
    assert.ok(report.asExpected);
    const logged = await Deno.readTextFile(`${dir}/wire.jsonl`);
    const things = new Set(parseWireLog(logged).map((r) => r.thing));
    assert.deepEqual([...things].sort(), ["dev-00001", "dev-00004"], "only the traced devices");
    const wireLog = typicalDevice(logged);
    const script = protocolScript(parseWireLog(wireLog));
    // Two connections: before the reboot into the new image and after it.
    assert.equal(script.connections.length, 2);
    assert.ok(script.recorded.publishesReceived >= 24, "at least the image's 24 blocks");

    const floor = await measureProtocolFloor({ devices: 6, workers: 2, wireLog });
    assert.equal(floor.failed, 0);
    assert.equal(floor.unmatched, 0, "every client action found its step");
    // Each client did what the logged device did, packet for packet (keepalive pings aside:
    // none in a run this short).
    assert.equal(floor.wirePerDevice.publishesSent, script.recorded.publishesSent);
    assert.equal(floor.wirePerDevice.publishesReceived, script.recorded.publishesReceived);
    assert.equal(floor.wirePerDevice.packetsSent, script.recorded.packetsSent);
    assert.equal(floor.wirePerDevice.packetsReceived, script.recorded.packetsReceived);
    // What came in is the same bytes (only the length of a client's password may differ on the way out).
    assert.equal(floor.wirePerDevice.bytesReceived, script.recorded.bytesReceived);
    // And the logged device is a typical one: the fleet's devices averaged about the same.
    const near = (floorValue: number, fleetValue: number) =>
      Math.abs(floorValue - fleetValue) <= 0.15 * fleetValue;
    assert.ok(
      near(floor.wirePerDevice.packetsSent, report.wirePerDevice.packetsSent) &&
        near(floor.wirePerDevice.packetsReceived, report.wirePerDevice.packetsReceived) &&
        near(floor.wirePerDevice.bytesReceived, report.wirePerDevice.bytesReceived),
      `floor ${JSON.stringify(floor.wirePerDevice)} vs fleet ${
        JSON.stringify(report.wirePerDevice)
      }`,
    );
    assert.ok(floor.seconds > 0 && floor.cpuSeconds > 0 && floor.peakRssBytes > 0);
    // Each process's CPU, and together (to the tenths they are kept in) the run's.
    const { clients, responder, ...others } = floor.cpuByProcess;
    assert.deepEqual(others, {});
    assert.ok(clients! > 0 && responder! >= 0, JSON.stringify(floor.cpuByProcess));
    assert.ok(Math.abs(clients! + responder! - floor.cpuSeconds) <= 0.1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
