/**
 * A fleet's final state in figures: what a run's report needs of its devices (running versions,
 * bricked ones, faults, wire traffic), added up where the devices live. Each Worker sums its own
 * and sends one small object; the supervisor adds the Workers' together. Shipping every device's
 * full report to the main thread instead cost tens of kilobytes per device at the end of a run,
 * which is what ran a 100,000-device machine out of memory.
 *
 * @example
 * ```ts
 * import { addDevice, emptySummary, mergeSummaries } from "./fleet_summary.ts";
 *
 * const worker = emptySummary();
 * // for each device: addDevice(worker, device, "1.1.0+0");
 * const fleet = mergeSummaries([worker, emptySummary()]);
 * fleet.devices; // 0
 * ```
 *
 * @module
 */

import type { WireTraffic } from "../agent/device_runtime.ts";
import { type ActorFaults, type DeviceTelemetry, noFaults } from "./device_actor.ts";

/** The figures of a set of devices. */
export interface FleetSummary {
  devices: number;
  /** Devices by the version they run ("none": no image running). */
  runningVersion: Record<string, number>;
  /**
   * Devices by what they run as application and second-stage bootloader together, e.g.
   * "1.1.0+0 / 2.1.0+0" (what shows a mix of an update's two components).
   */
  runningPair: Record<string, number>;
  /** Devices whose flash no longer boots an image from the trusted signer. */
  bricked: number;
  /** Devices running an image that reached them encrypted (its header says ENCRYPTED_AES128). */
  runningEncrypted: number;
  /** Faults injected into them, summed. */
  faults: ActorFaults;
  /** What their MQTT connections carried, summed. */
  wire: WireTraffic;
  /**
   * Devices not on the expected version that lost power while an image ran on trial: the boot ROM
   * reverted it, so their update may fail (unless the cloud retries it).
   */
  revertedByPowerCut: number;
  /**
   * Devices not on the expected version that lost power at any point: an update with a second
   * stage goes back whole when the power goes during its install or its reboot, too (the first
   * stage cannot tell a power cut from a crash of the second stage on trial).
   */
  offByPowerCut: number;
}

/** What a device contributes to a summary. */
export interface SummarizedDevice {
  readonly telemetry: DeviceTelemetry;
  readonly bootable: boolean;
  /** Whether the image it runs came encrypted. */
  readonly runsEncrypted: boolean;
  /** The version of the second-stage bootloader it booted through (null: one stage, or none). */
  readonly secondStage: string | null;
  readonly faults: ActorFaults;
  readonly wire: WireTraffic;
}

/** A summary of no devices. */
export function emptySummary(): FleetSummary {
  return {
    devices: 0,
    runningVersion: {},
    runningPair: {},
    bricked: 0,
    runningEncrypted: 0,
    faults: noFaults(),
    wire: { packetsSent: 0, packetsReceived: 0, bytesSent: 0, bytesReceived: 0 },
    revertedByPowerCut: 0,
    offByPowerCut: 0,
  };
}

/** Adds `device` to `summary` (`expectedVersion`: the version the run should end on). */
export function addDevice(
  summary: FleetSummary,
  device: SummarizedDevice,
  expectedVersion: string,
): void {
  const version = device.telemetry.version ?? "none";
  summary.devices++;
  summary.runningVersion[version] = (summary.runningVersion[version] ?? 0) + 1;
  const pair = `${version} / ${device.secondStage ?? "none"}`;
  summary.runningPair[pair] = (summary.runningPair[pair] ?? 0) + 1;
  if (!device.bootable) summary.bricked++;
  if (device.runsEncrypted) summary.runningEncrypted++;
  addInto(summary.faults, device.faults);
  addInto(summary.wire, device.wire);
  if (device.faults.trialPowerCuts > 0 && device.telemetry.version !== expectedVersion) {
    summary.revertedByPowerCut++;
  }
  if (device.faults.powerCuts > 0 && device.telemetry.version !== expectedVersion) {
    summary.offByPowerCut++;
  }
}

/** The summary of all of `parts`' devices together. */
export function mergeSummaries(parts: readonly FleetSummary[]): FleetSummary {
  const total = emptySummary();
  for (const part of parts) {
    total.devices += part.devices;
    for (const [version, count] of Object.entries(part.runningVersion)) {
      total.runningVersion[version] = (total.runningVersion[version] ?? 0) + count;
    }
    for (const [pair, count] of Object.entries(part.runningPair)) {
      total.runningPair[pair] = (total.runningPair[pair] ?? 0) + count;
    }
    total.bricked += part.bricked;
    total.runningEncrypted += part.runningEncrypted;
    addInto(total.faults, part.faults);
    addInto(total.wire, part.wire);
    total.revertedByPowerCut += part.revertedByPowerCut;
    total.offByPowerCut += part.offByPowerCut;
  }
  return total;
}

function addInto<T extends object>(into: T, from: T): void {
  const target = into as Record<string, number>;
  for (const [key, value] of Object.entries(from) as [string, number][]) {
    target[key] = (target[key] ?? 0) + value;
  }
}
