/** The fleet's final figures, added up in each Worker and merged in the supervisor. */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  addDevice,
  emptySummary,
  type FleetSummary,
  mergeSummaries,
  type SummarizedDevice,
} from "../../fleet/fleet_summary.ts";
import type { DeviceTelemetry } from "../../fleet/device_actor.ts";

const EXPECTED = "1.1.0+0";

const device = fc.record({
  version: fc.constantFrom(EXPECTED, "1.0.0+0", null),
  secondStage: fc.constantFrom("2.0.0+0", "2.1.0+0", null),
  bootable: fc.boolean(),
  trialPowerCuts: fc.nat(3),
  disconnects: fc.nat(5),
  bytesReceived: fc.nat(1_000_000),
}).map((
  { version, secondStage, bootable, trialPowerCuts, disconnects, bytesReceived },
): SummarizedDevice => ({
  telemetry: { thing: "t", version } as unknown as DeviceTelemetry,
  bootable,
  secondStage,
  runsEncrypted: version === EXPECTED && bootable,
  faults: {
    ...emptySummary().faults,
    trialPowerCuts,
    powerCuts: trialPowerCuts,
    disconnects,
  },
  wire: { packetsSent: 3, packetsReceived: 5, bytesSent: 100, bytesReceived },
}));

function summaryOf(devices: readonly SummarizedDevice[]): FleetSummary {
  const summary = emptySummary();
  for (const d of devices) addDevice(summary, d, EXPECTED);
  return summary;
}

Deno.test("fleet summary: property: however the devices are split over Workers, the merged figures are the whole fleet's", () => {
  fc.assert(
    fc.property(fc.array(device, { maxLength: 60 }), fc.array(fc.nat(60)), (devices, cuts) => {
      // Split the devices at the cut points, as Workers hold them.
      const points = [...new Set(cuts.map((c) => c % (devices.length + 1)))].sort((a, b) => a - b);
      const parts: SummarizedDevice[][] = [];
      let from = 0;
      for (const point of [...points, devices.length]) {
        parts.push(devices.slice(from, point));
        from = point;
      }
      const merged = mergeSummaries(parts.map(summaryOf));
      assert.deepEqual(merged, summaryOf(devices));
      // And the figures are the devices' own.
      assert.equal(merged.devices, devices.length);
      assert.equal(
        Object.values(merged.runningVersion).reduce((a, b) => a + b, 0),
        devices.length,
      );
      assert.equal(
        merged.runningVersion.none ?? 0,
        devices.filter((d) => !d.telemetry.version).length,
      );
      assert.equal(merged.bricked, devices.filter((d) => !d.bootable).length);
      // Each device counted once by its pair, under its application and its second stage.
      for (const [pair, count] of Object.entries(merged.runningPair)) {
        const [app, stage] = pair.split(" / ");
        assert.equal(
          count,
          devices.filter((d) =>
            (d.telemetry.version ?? "none") === app && (d.secondStage ?? "none") === stage
          ).length,
        );
      }
      assert.equal(
        Object.values(merged.runningPair).reduce((a, b) => a + b, 0),
        devices.length,
      );
      assert.equal(merged.runningEncrypted, devices.filter((d) => d.runsEncrypted).length);
      assert.equal(
        merged.revertedByPowerCut,
        devices.filter((d) => d.faults.trialPowerCuts > 0 && d.telemetry.version !== EXPECTED)
          .length,
      );
      assert.equal(
        merged.offByPowerCut,
        devices.filter((d) => d.faults.powerCuts > 0 && d.telemetry.version !== EXPECTED).length,
      );
      assert.equal(
        merged.wire.bytesReceived,
        devices.reduce((sum, d) => sum + d.wire.bytesReceived, 0),
      );
      assert.equal(
        merged.faults.disconnects,
        devices.reduce((s, d) => s + d.faults.disconnects, 0),
      );
    }),
  );
});

Deno.test("fleet summary: no devices is all zeros, and merging nothing is no devices", () => {
  assert.deepEqual(mergeSummaries([]), emptySummary());
  assert.equal(emptySummary().devices, 0);
  assert.deepEqual(emptySummary().runningVersion, {});
});
