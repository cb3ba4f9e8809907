/**
 * What a fleet run reports: the JSON report's shape, the stage times of an update computed from
 * the devices' marks, and the summary printed at the end of a run.
 *
 * @module
 */

import type { UpdateMarks } from "./device_actor.ts";
import { badWaveShape, type Options } from "./fleet_args.ts";

/** The JSON report. */
export interface FleetReport {
  scenario: string;
  devices: number;
  imageBytes: number;
  blockBytes: number;
  protocol: string;
  workers: number;
  outcome: {
    succeeded: number;
    failed: number;
    rejected: number;
    timedOut: number;
    canceled: number;
    other: number;
  };
  /** Every update of the run with its final counts (back-to-back has three). */
  updates: { jobId: string; status: string; counts: Record<string, number> }[];
  jobStatus: string;
  /** Why the last job is where it is (a pause by its health gate, a cancel), if it says. */
  jobReason: string | null;
  bricked: number;
  runningVersion: Record<string, number>;
  /** Devices by application and second stage together ("1.1.0+0 / 2.1.0+0"). */
  runningPair: Record<string, number>;
  /** Devices running an image that reached them encrypted (`--encrypted`). */
  runningEncrypted?: number;
  faults: {
    disconnects: number;
    corruptedBlocks: number;
    powerCuts: number;
    /** Power losses while the new image ran on trial: each reverts it and fails its execution. */
    trialPowerCuts: number;
    crashes: number;
    lostMessages: number;
    /** Devices whose application slots were erased after the rollout (`--wipe-share`). */
    wipes: number;
    /** Devices reset to the factory image after the update (`--scenario factory-reset`). */
    factoryResets: number;
    /** Workers made to crash (`--worker-crashes`). */
    workerCrashes: number;
    /** Worker deaths the supervisor saw and recovered from. */
    workerRestarts: number;
  };
  bytesDelivered: number;
  /**
   * What a device's MQTT connections carried, on average over this process's devices: packets
   * each way (PUBACKs, pings and the rest included) and bytes its sockets wrote and read.
   */
  wirePerDevice: {
    packetsSent: number;
    packetsReceived: number;
    bytesSent: number;
    bytesReceived: number;
  };
  /** Times the cloud (joined with --broker/--api) was unreachable and waited for, and how long. */
  cloudOutages: { count: number; seconds: number };
  wallSeconds: number;
  /**
   * Where the wall time went, in order: `setup` (cloud, PKI, provisioning, Workers), `boot` (every
   * device running), `update <version>` (signing, rollout, download, swap, self-test, settle) per
   * update, `report` (final state and the boot ROM check of every flash).
   */
  phases: Record<string, number>;
  /**
   * Per update, how long devices spent in each stage (seconds: median, 90th percentile, max over
   * the devices that passed it): `accept` from the update's creation to the agent accepting the
   * job (rollout wait included), `download` to the image activated (blocks, close, signature),
   * `reboot` to the self-test on the new image (swap, boot, reconnect, job fetched again),
   * `confirm` to the update complete (self-test, SUCCEEDED acknowledged, image confirmed).
   */
  stages: Record<string, Record<UpdateStage, StageTimes>>;
  /**
   * Per update, where each stage's time went (see {@linkcode stageParts}): `accept` into the
   * rollout's wait and the delivery of the job, `download` into the blocks and the image's
   * check, `reboot` into the bootloader's swap and boot, the connection and the job fetched again.
   */
  stageParts?: Record<string, Record<StagePart, StageTimes>>;
  /** Per update, what delta patches saved (`--delta`). */
  deltaSavings?: Record<string, DeltaSavings>;
  peakRssBytes: number;
  /** Whose memory `peakRssBytes` is. @default {"main process"} */
  peakRssOf?: string;
  series: { t: number; counts: Record<string, number> }[];
  expected: string;
  asExpected: boolean;
}

/** The stages of one device's update, in order. */
export type UpdateStage = "accept" | "download" | "reboot" | "confirm";

/** Seconds a stage took across devices. */
export interface StageTimes {
  readonly devices: number;
  readonly p50: number;
  readonly p90: number;
  readonly max: number;
}

/** The parts of the stages, named `<stage>.<part>`. */
export type StagePart =
  | "accept.rollout"
  | "accept.delivery"
  | "download.blocks"
  | "download.check"
  | "reboot.boot"
  | "reboot.connect"
  | "reboot.job";

/**
 * Where the time of each stage went, over the devices whose marks show both ends of a part:
 * - `accept.rollout`: from the update's creation until the cloud queued the device's execution
 *   (the rollout's rate and waves; only with `queued`, when the cloud queued each thing's, in
 *   real time);
 * - `accept.delivery`: from then until the agent has the job (notification, the device's turn
 *   on a busy CPU, its request for the document and the answer);
 * - `download.blocks`: from the job received until the last image bytes arrived;
 * - `download.check`: from then until the image was activated (close, signature, and the cloud's
 *   acknowledgement of the status that the self-test is ready, which the agent waits for);
 * - `reboot.boot`: from the activation until the new application runs (reset, bootloader swap and
 *   verification, boot);
 * - `reboot.connect`: from then until its MQTT connection is up (login included);
 * - `reboot.job`: from then until the self-test starts (the job fetched again).
 *
 * @example
 * ```ts
 * const parts = stageParts(0, [{ thing: "t", marks: { jobId: "j", received: 5000 } }], "j",
 *   new Map([["t", 1000]]));
 * parts["accept.rollout"].p50; // 1
 * ```
 */
export function stageParts(
  createdAt: number,
  devices: readonly { readonly thing: string; readonly marks: UpdateMarks | null }[],
  jobId: string,
  queued: ReadonlyMap<string, number> | null,
): Record<StagePart, StageTimes> {
  const spans: Record<StagePart, number[]> = {
    "accept.rollout": [],
    "accept.delivery": [],
    "download.blocks": [],
    "download.check": [],
    "reboot.boot": [],
    "reboot.connect": [],
    "reboot.job": [],
  };
  const span = (part: StagePart, from: number | undefined, to: number | undefined) => {
    if (from !== undefined && to !== undefined) spans[part].push(to - from);
  };
  for (const { thing, marks: m } of devices) {
    if (!m || m.jobId !== jobId) continue;
    const queuedAt = queued?.get(thing);
    span("accept.rollout", createdAt, queuedAt);
    span("accept.delivery", queuedAt, m.received);
    span("download.blocks", m.received, m.lastBytes);
    span("download.check", m.lastBytes, m.activated);
    span("reboot.boot", m.activated, m.booted);
    span("reboot.connect", m.booted, m.connected);
    span("reboot.job", m.connected, m.selfTest);
  }
  return Object.fromEntries(
    Object.entries(spans).map(([part, ms]) => [part, spread(ms)]),
  ) as Record<StagePart, StageTimes>;
}

/** Median, 90th percentile and maximum of spans in milliseconds, in seconds (0.01 s). */
function spread(ms: number[]): StageTimes {
  const sorted = ms.sort((a, b) => a - b);
  const at = (q: number) =>
    sorted.length === 0
      ? 0
      : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! / 10) / 100;
  return { devices: sorted.length, p50: at(0.5), p90: at(0.9), max: at(1) };
}

/** Stage times of one update from the devices' marks (see {@linkcode FleetReport.stages}). */
export function stageTimes(
  createdAt: number,
  marks: readonly (UpdateMarks | null)[],
  jobId: string,
): Record<UpdateStage, StageTimes> {
  const spans: Record<UpdateStage, number[]> = {
    accept: [],
    download: [],
    reboot: [],
    confirm: [],
  };
  for (const m of marks) {
    if (!m || m.jobId !== jobId) continue;
    spans.accept.push(m.received - createdAt);
    if (m.activated !== undefined) spans.download.push(m.activated - m.received);
    if (m.activated !== undefined && m.selfTest !== undefined) {
      spans.reboot.push(m.selfTest - m.activated);
    }
    if (m.selfTest !== undefined && m.complete !== undefined) {
      spans.confirm.push(m.complete - m.selfTest);
    }
  }
  return {
    accept: spread(spans.accept),
    download: spread(spans.download),
    reboot: spread(spans.reboot),
    confirm: spread(spans.confirm),
  };
}

/** What patches saved in one update (`--delta`). */
export interface DeltaSavings {
  /** Devices that completed the update. */
  readonly devices: number;
  /** Of those, the ones that took a patch (under half the image's bytes). */
  readonly patched: number;
  /** Image bytes the completed devices did not need: theirs against a whole image each. */
  readonly bytesSaved: number;
}

/**
 * What patches saved in an update of `imageSize`-byte images, from the devices' marks: a
 * device's bytes are everything it received for the job (re-sent blocks, a patch given up for
 * the image: all of it counts against the saving).
 *
 * @example
 * ```ts
 * import { deltaSavings } from "./report.ts";
 * deltaSavings([{ jobId: "j", received: 0, bytes: 1_000, complete: 9 }], "j", 100_000);
 * // { devices: 1, patched: 1, bytesSaved: 99000 }
 * ```
 */
export function deltaSavings(
  marks: readonly (UpdateMarks | null)[],
  jobId: string,
  imageSize: number,
): DeltaSavings {
  let devices = 0;
  let patched = 0;
  let bytesSaved = 0;
  for (const m of marks) {
    if (!m || m.jobId !== jobId || m.complete === undefined) continue;
    devices++;
    const bytes = m.bytes ?? 0;
    if (bytes < imageSize / 2) patched++;
    bytesSaved += Math.max(0, imageSize - bytes);
  }
  return { devices, patched, bytesSaved };
}

/**
 * The summary printed at the end of a run: outcome, versions, bricked devices, faults, phases
 * and stage times, whether the run ended as its scenario expects, and where the report went.
 */
export function formatSummary(report: FleetReport, reportPath: string): string {
  const o = report.outcome;
  return `summary (${report.scenario}: ${report.expected})
  devices            ${report.devices} in ${report.workers} workers
  job                ${report.jobStatus}${report.jobReason ? ` (${report.jobReason})` : ""}
  outcome            succeeded ${o.succeeded}, failed ${o.failed}, rejected ${o.rejected}, timed out ${o.timedOut}, canceled ${o.canceled}, other ${o.other}
  running versions   ${
    Object.entries(report.runningVersion).map(([v, n]) => `${v}: ${n}`).join(", ")
  }${
    report.runningEncrypted !== undefined
      ? ` (${report.runningEncrypted} of them from encrypted images)`
      : ""
  }
  with bootloader    ${
    Object.entries(report.runningPair ?? {}).map(([v, n]) => `${v}: ${n}`).join(", ")
  }
  bricked            ${report.bricked}
  faults             disconnects ${report.faults.disconnects}, corrupted blocks ${report.faults.corruptedBlocks}, power cuts ${report.faults.powerCuts} (${report.faults.trialPowerCuts} during a trial), crashes ${report.faults.crashes}, lost messages ${report.faults.lostMessages}, wiped ${report.faults.wipes}, factory resets ${report.faults.factoryResets}, worker crashes ${report.faults.workerCrashes} (restarts ${report.faults.workerRestarts})
  delivered          ${
    (report.bytesDelivered / 1e6).toFixed(1)
  } MB in ${report.wallSeconds} s, peak RSS ${(report.peakRssBytes / 2 ** 20).toFixed(0)} MiB (${
    report.peakRssOf ?? "main process"
  })
  phases             ${
    Object.entries(report.phases).map(([name, s]) => `${name} ${s} s`).join(", ")
  }${
    Object.entries(report.stages).map(([version, stages]) =>
      `\n  stages ${version.padEnd(10)} ${
        Object.entries(stages).map(([stage, t]) => `${stage} ${t.p50}/${t.p90}/${t.max} s`)
          .join(", ")
      } (median/p90/max)`
    ).join("")
  }${
    Object.entries(report.stageParts ?? {}).map(([version, parts]) =>
      `\n  stage parts ${version.padEnd(5)} ${
        Object.entries(parts).filter(([, t]) => t.devices > 0)
          .map(([part, t]) =>
            `${part} ${t.p50}/${t.p90}/${t.max} s`
          ).join(", ")
      }`
    ).join("")
  }${
    Object.entries(report.deltaSavings ?? {}).map(([version, d]) =>
      `\n  delta ${version.padEnd(11)} ${d.patched} of ${d.devices} devices took a patch, ${
        (d.bytesSaved / 1e6).toFixed(1)
      } MB of images not sent`
    ).join("")
  }
${
    report.cloudOutages.count > 0
      ? `  cloud outages      ${report.cloudOutages.count}, ${
        report.cloudOutages.seconds.toFixed(1)
      } s in all (waited out)\n`
      : ""
  }  as expected        ${report.asExpected ? "yes" : "NO"}
  report             ${reportPath}`;
}

/** What a run's outcome is judged on. */
export interface RunFacts {
  readonly options: Pick<
    Options,
    "scenario" | "abortPercent" | "cancelAt" | "powerCutRate" | "devices" | "shard"
  >;
  /** Devices this process ran. */
  readonly local: number;
  /** Devices that reported at the end. */
  readonly finals: number;
  readonly bricked: number;
  /** Devices of the whole fleet (every shard) given a misbehaving image. */
  readonly globalBad: number;
  /** This process's devices given a misbehaving image. */
  readonly badDevices: number;
  /** Devices off the new version because their power went while it was on trial. */
  readonly revertedByPowerCut: number;
  /** Devices off the new version that lost power at any point of the run. */
  readonly offByPowerCut?: number;
  readonly trialPowerCuts: number;
  /** Devices reset to the factory image after the update. */
  readonly factoryResets?: number;
  /** The last update's version, as devices report it (`1.1.0+0`). */
  readonly expectedVersion: string;
  /** How many updates the run rolled out. */
  readonly updates: number;
  readonly runningVersion: Readonly<Record<string, number>>;
  /** Devices by application and second stage together ("1.1.0+0 / 2.1.0+0"). */
  readonly runningPair: Readonly<Record<string, number>>;
  /** The last job's status and counts. */
  readonly jobStatus: string;
  readonly jobReason: string | null;
  readonly lastCounts: Readonly<Record<string, number>>;
  /** Counts summed over every update of the run. */
  readonly total: Readonly<Record<"SUCCEEDED" | "FAILED", number>>;
}

/** The second stage an update of the two-component scenarios ships with its firmware. */
export const BUNDLED_SECOND_STAGE = "2.1.0";
/** The second stage every fleet device is provisioned with. */
export const FACTORY_SECOND_STAGE = "2.0.0";

/**
 * two-components: firmware and second stage installed together, both kept; bad-component: the
 * second stage crashes, and the firmware goes back with it. Either way no device runs one new and
 * one old.
 */
function judgeComponents(facts: RunFacts): { expected: string; asExpected: boolean } {
  const { options, local, expectedVersion, runningPair } = facts;
  const before = `1.0.0+0 / ${FACTORY_SECOND_STAGE}+0`;
  const after = `${expectedVersion} / ${BUNDLED_SECOND_STAGE}+0`;
  const onBefore = runningPair[before] ?? 0;
  const onAfter = runningPair[after] ?? 0;
  const common = facts.bricked === 0 && facts.finals === local && onBefore + onAfter === local;
  if (options.scenario === "bad-component") {
    return {
      expected:
        `every device back on ${before} (the new second stage crashes on trial: the firmware goes back with it), every execution FAILED, no device with one new and one old`,
      asExpected: common && onBefore === local && facts.lastCounts.FAILED === options.devices,
    };
  }
  return {
    expected:
      `every device on ${after} (firmware and second stage installed together after one reboot), every execution SUCCEEDED${
        options.powerCutRate > 0
          ? " (but those whose power went during the install, its reboot or the trial: FAILED, both back)"
          : ""
      }, no device with one new and one old`,
    asExpected: common && onAfter + (facts.offByPowerCut ?? 0) === local &&
      facts.total.SUCCEEDED + facts.total.FAILED === options.devices &&
      (options.shard.count > 1 || facts.total.FAILED <= (facts.offByPowerCut ?? 0)),
  };
}

/**
 * What the scenario expects, in words, and whether the run ended so: never with a bricked or
 * missing device; then by scenario (a rollout stopped by its abort criterion, a mixed fleet, a
 * cancel, a rollback, a canary abort, or every device on the new version).
 */
export function judgeRun(facts: RunFacts): { expected: string; asExpected: boolean } {
  const { options, local, runningVersion, expectedVersion, jobStatus } = facts;
  const mixed = facts.globalBad > 0 && options.scenario === "happy";
  const aborted = mixed && options.abortPercent !== undefined;
  const either =
    (runningVersion["1.0.0+0"] ?? 0) + (runningVersion[expectedVersion] ?? 0) === local;
  if (options.scenario === "factory-reset") {
    const resets = facts.factoryResets ?? 0;
    return {
      expected:
        `every device on ${expectedVersion}; the devices reset to the factory image after the update (its security counter sends them to recovery mode) are updated again by the continuous job`,
      asExpected: facts.bricked === 0 && facts.finals === local && resets >= 1 &&
        (runningVersion[expectedVersion] ?? 0) === local &&
        facts.lastCounts.SUCCEEDED === options.devices,
    };
  }
  if (options.scenario === "two-components" || options.scenario === "bad-component") {
    return judgeComponents(facts);
  }
  if (options.scenario === "bad-wave") {
    const { waveSize, bad } = badWaveShape(options);
    const pausedByGate = jobStatus === "PAUSED" && /^health gate/.test(facts.jobReason ?? "");
    return {
      expected:
        `the health gate pauses the rollout after the first wave (${bad} of its ${waveSize} devices fail their self-test); the ${
          options.devices - waveSize
        } devices after it are never notified; none bricked`,
      asExpected: facts.bricked === 0 && facts.finals === local && pausedByGate &&
        facts.lastCounts.SUCCEEDED === waveSize - bad && facts.lastCounts.FAILED === bad &&
        (runningVersion[expectedVersion] ?? 0) === waveSize - bad &&
        (runningVersion["1.0.0+0"] ?? 0) === local - (waveSize - bad),
    };
  }
  const expected = aborted
    ? `the abort criterion (${options.abortPercent}%) stops the rollout; devices on either image, none bricked`
    : mixed
    ? `${
      options.devices - facts.globalBad
    } devices on ${expectedVersion}; the ${facts.globalBad} with a misbehaving image back on 1.0.0`
    : options.cancelAt !== undefined
    ? "job CANCELED mid-rollout, every device on 1.0.0 or the new image, none bricked"
    : options.scenario === "rollback"
    ? "every device back on 1.0.0, every execution FAILED"
    : options.scenario === "canary-abort"
    ? "job CANCELED by its abort criterion, no device on 1.1.0"
    : `every device on ${expectedVersion}, every execution SUCCEEDED${
      options.powerCutRate > 0
        ? " (but those whose power went while the new image was on trial: FAILED, on the previous image)"
        : ""
    }`;
  const asExpected = facts.bricked === 0 && facts.finals === local && (
    aborted
      ? jobStatus === "CANCELED" && either
      : mixed
      ? (runningVersion[expectedVersion] ?? 0) === local - facts.badDevices &&
        (runningVersion["1.0.0+0"] ?? 0) === facts.badDevices &&
        facts.lastCounts.SUCCEEDED === options.devices - facts.globalBad
      : options.cancelAt !== undefined
      ? jobStatus === "CANCELED" && either
      : options.scenario === "rollback"
      ? runningVersion["1.0.0+0"] === local && facts.lastCounts.FAILED === options.devices
      : options.scenario === "canary-abort"
      ? jobStatus === "CANCELED" && (runningVersion["1.1.0+0"] ?? 0) === 0
      : (runningVersion[expectedVersion] ?? 0) + facts.revertedByPowerCut === local &&
        facts.total.SUCCEEDED + facts.total.FAILED === options.devices * facts.updates &&
        // Other shards' devices are theirs to account for.
        (options.shard.count > 1 || facts.total.FAILED <= facts.trialPowerCuts)
  );
  return { expected, asExpected };
}
