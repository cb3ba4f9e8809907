/**
 * Where a rollout stands while it runs, for the progress bar and the periodic progress lines:
 * the cloud's counts joined with what the devices themselves say (which stage of the update each
 * is in, how much of the image it has received), so the bar moves with every block rather than
 * only when devices end. Pure.
 *
 * @example
 * ```ts ignore
 * const stages = rolloutStages(counts, fleet.telemetry.values(), jobId, imageBytes);
 * formatProgress({ version: "1.1.0", status: "IN_PROGRESS", stages, ... });
 * ```
 */

import type { DeviceTelemetry } from "./device_actor.ts";

/** The fleet's devices by stage of one rollout. */
export interface RolloutStages {
  /** Targets the rollout has not notified yet (cloud). */
  readonly waiting: number;
  /** Notified, not taken yet (cloud). */
  readonly queued: number;
  /** Receiving the image (the device's update state is WRITING). */
  readonly downloading: number;
  /** Image complete, waiting for or in the reboot into it (CANDIDATE, STAGED, rebooting). */
  readonly installing: number;
  /** Running the new image on trial, self-testing. */
  readonly onTrial: number;
  /** Executions that ended, whichever way (cloud). */
  readonly ended: number;
  readonly succeeded: number;
  readonly failed: number;
  /**
   * Work done in devices: each ended device counts 1, a downloading one its share of the image
   * (up to 0.8), an installing or self-testing one 0.9: the whole only when all ended.
   */
  readonly work: number;
  readonly total: number;
}

/** Share of a device's update the download stands for (installing and trying are the rest). */
const DOWNLOAD_WEIGHT = 0.8;
const INSTALLED_WEIGHT = 0.9;

/**
 * Joins the cloud's counts of a job with the devices' telemetry for it. `counts` uses the job
 * service's keys (execution statuses, `pending`, `neverNotified`).
 */
export function rolloutStages(
  counts: Readonly<Record<string, number>>,
  telemetry: Iterable<DeviceTelemetry>,
  jobId: string,
  imageBytes: number,
): RolloutStages {
  const n = (key: string) => counts[key] ?? 0;
  const succeeded = n("SUCCEEDED");
  const failed = n("FAILED") + n("REJECTED") + n("TIMED_OUT");
  const ended = succeeded + failed + n("CANCELED") + n("REMOVED") + n("neverNotified");
  const total = ended + n("pending") + n("QUEUED") + n("IN_PROGRESS");
  let downloading = 0;
  let downloaded = 0;
  let installing = 0;
  let onTrial = 0;
  for (const device of telemetry) {
    // Only devices working on this job and not finished with it.
    if (device.marks?.jobId !== jobId || device.marks.complete !== undefined) continue;
    if (device.updateState === "WRITING") {
      downloading++;
      downloaded += imageBytes > 0 ? Math.min(1, (device.marks.bytes ?? 0) / imageBytes) : 0;
    } else if (device.trial || device.updateState === "TRIAL") {
      onTrial++;
    } else if (
      device.updateState === "CANDIDATE" || device.updateState === "STAGED" ||
      (device.marks.activated !== undefined && device.state !== "running")
    ) {
      installing++;
    }
  }
  // The devices' telemetry lags the cloud's counts by up to a batch: a device the cloud already
  // counts as ended may still say it is on trial. Those under way are at most the executions in
  // progress, the later stages first.
  const active = n("IN_PROGRESS");
  onTrial = Math.min(onTrial, active);
  installing = Math.min(installing, active - onTrial);
  const stillDownloading = Math.min(downloading, active - onTrial - installing);
  if (downloading > 0) downloaded *= stillDownloading / downloading;
  downloading = stillDownloading;
  const work = Math.min(
    total,
    ended + DOWNLOAD_WEIGHT * downloaded + INSTALLED_WEIGHT * (installing + onTrial),
  );
  return {
    waiting: n("pending"),
    queued: n("QUEUED"),
    downloading,
    installing,
    onTrial,
    ended,
    succeeded,
    failed,
    work,
    total,
  };
}

/** A progress snapshot (about once a second, and once more when the rollout ends). */
export interface FleetProgress {
  readonly version: string;
  readonly status: string;
  readonly stages: RolloutStages;
  /** Image bytes the devices received during this rollout. */
  readonly bytesReceived: number;
  /** Received by the devices, over the last interval. */
  readonly mbPerSecond: number;
  readonly etaSeconds: number | null;
  /** The last snapshot of this rollout. */
  readonly final: boolean;
}

/** One line: ended of total, the devices per stage, bytes, speed and ETA. */
export function formatProgress(p: FleetProgress): string {
  const s = p.stages;
  const stages = [
    s.waiting > 0 ? `waiting ${s.waiting}` : "",
    s.queued > 0 ? `queued ${s.queued}` : "",
    s.downloading > 0 ? `downloading ${s.downloading}` : "",
    s.installing > 0 ? `installing ${s.installing}` : "",
    s.onTrial > 0 ? `on trial ${s.onTrial}` : "",
  ].filter(Boolean).join(", ");
  return `${p.status} ended ${s.ended}/${s.total} (ok ${s.succeeded}, failed ${s.failed})${
    stages ? ` | ${stages}` : ""
  } | ${(p.bytesReceived / 1e6).toFixed(1)} MB at ${p.mbPerSecond.toFixed(1)} MB/s | ${
    p.final ? "done" : `ETA ${p.etaSeconds === null ? "?" : `${p.etaSeconds} s`}`
  }`;
}
