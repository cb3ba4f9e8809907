/**
 * `deno task fleet`: starts the cloud, provisions a fleet of simulated devices on factory image
 * 1.0.0 in Web Workers, rolls a signed 1.1.0 out to them while breaking them on purpose, shows the
 * progress, and writes a JSON report. Exit code 0 when the run ended as the scenario expects,
 * 1 otherwise, 2 on bad flags.
 *
 * @module
 */

import { toBase64 } from "../lib/base64.ts";
// @ts-types="@types/cli-progress"
import cliProgress from "cli-progress";
import { certificateDer } from "../protocol/certificates.ts";
import {
  createRootCertificate,
  createSigningPki,
  exportPrivateKeyPem,
  generateSigningKeys,
} from "../pki/certificate_issuer.ts";
import { pemEncode } from "../protocol/signatures.ts";
import { type Behavior, buildFirmware } from "../bootloader/firmware.ts";
import { parseVersion } from "../protocol/image_format.ts";
import { signImage } from "../protocol/image_sign.ts";
import { startCloud } from "../broker/cloud.ts";
import { embeddedAccess, remoteAccess } from "./cloud_access.ts";
import { operatorApi } from "../broker/operator_api.ts";
import { ScaledClock } from "../lib/clock.ts";
import { seededRandom } from "../lib/random.ts";
import { forEachLimited } from "../lib/concurrency.ts";
import type { FleetDeviceSpec } from "./device_actor.ts";
import { FleetSupervisor } from "./supervisor.ts";
import { secondStagePayload } from "../bootloader/first_stage.ts";
import { provisionSecureElement } from "../pki/provisioning.ts";
import { SecureElement } from "../bootloader/secure_element.ts";
import { startCpuProfile } from "../lib/cpu_profiler.ts";
import { blocksPerRequestFor, type Options, parseFleetArgs, USAGE } from "./fleet_args.ts";
import { type FleetReport, formatSummary, judgeRun, stageTimes } from "./report.ts";
import { planDeviceFaults, planWorkerCrashes } from "./fault_plan.ts";

/** A fleet CA for device identities, valid for ten years of wall time. */
async function createFleetCa() {
  const keys = await generateSigningKeys();
  const validity = {
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 10 * 365 * 86_400_000),
  };
  const certificate = await createRootCertificate(keys, {
    subject: "CN=Fleet device CA",
    ...validity,
  });
  return { certificate, privateKey: keys.privateKey, validity };
}

/** Runs a fleet experiment and returns its report. */
/** A progress snapshot (about once a second). */
export interface FleetProgress {
  readonly version: string;
  readonly status: string;
  readonly done: number;
  readonly total: number;
  readonly counts: Record<string, number>;
  readonly mbPerSecond: number;
  readonly etaSeconds: number | null;
}

/**
 * Runs a fleet as `options` say (see {@linkcode parseFleetArgs}) and returns its report; with
 * `cpuProfile`, V8 profiles of this thread and of every Worker land in that directory.
 *
 * @example
 * ```ts ignore
 * const report = await runFleet(parseFleetArgs(["--devices", "50"]), console.log);
 * ```
 */
export async function runFleet(
  options: Options,
  out: (line: string) => void,
  onProgress?: (progress: FleetProgress) => void,
  linger?: (report: FleetReport) => Promise<void>,
): Promise<FleetReport> {
  if (!options.cpuProfile) return await runFleetUnprofiled(options, out, onProgress, linger);
  // Here rather than in the CLI, so that a run through this API gets the main thread's profile
  // and a directory its Workers can write to.
  await Deno.mkdir(options.cpuProfile, { recursive: true });
  const stopCpuProfile = await startCpuProfile();
  try {
    return await runFleetUnprofiled(options, out, onProgress, linger);
  } finally {
    await stopCpuProfile(`${options.cpuProfile}/main.cpuprofile`);
  }
}

async function runFleetUnprofiled(
  options: Options,
  out: (line: string) => void,
  onProgress?: (progress: FleetProgress) => void,
  linger?: (report: FleetReport) => Promise<void>,
): Promise<FleetReport> {
  const started = performance.now();
  const phases: Record<string, number> = {};
  const stages: FleetReport["stages"] = {};
  let phaseStart = started;
  const endPhase = (name: string) => {
    const now = performance.now();
    phases[name] = Math.round((now - phaseStart) / 100) / 10;
    phaseStart = now;
  };
  let peakRss = Deno.memoryUsage().rss;
  const sample = () => (peakRss = Math.max(peakRss, Deno.memoryUsage().rss));
  const random = seededRandom(options.seed);
  const clock = new ScaledClock(options.timeScale);
  // Embedded cloud, or a running one joined through its operator API (shards share it).
  // With secure elements, a fleet CA certifies each device's key at provisioning.
  const fleetCa = options.identity === "secure-element" ? await createFleetCa() : null;
  const embedded = options.remote ? null : await startCloud({
    clock,
    tickMs: 1000,
    ...(fleetCa ? { deviceCa: pemEncode("CERTIFICATE", certificateDer(fleetCa.certificate)) } : {}),
  });
  const token = options.remote?.token ?? crypto.randomUUID();
  const server = embedded
    ? Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      operatorApi(embedded, { token }),
    )
    : null;
  if (embedded && server) {
    embedded.files.baseUrl = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  }
  if (options.dashboard) {
    // The token rides in the fragment: the page keeps it, no server ever sees it in a URL.
    const base = embedded ? embedded.files.baseUrl : options.remote!.api.replace(/\/api\/?$/, "");
    out(`dashboard: ${base}/dashboard/#token=${encodeURIComponent(token)}`);
  }
  const access = embedded
    ? embeddedAccess(embedded)
    : remoteAccess(options.remote!.broker, options.remote!.api, token);
  const slotSectors = Math.ceil((options.imageSize + 4096) / 4096) + 1;
  // Shards must agree on one signing PKI without sharing private keys: when joining a cloud the
  // keys derive from the operator token and seed; certificates are then equivalent everywhere.
  const validity = options.remote
    ? {
      notBefore: new Date("2020-01-01T00:00:00Z"),
      notAfter: new Date("2100-01-01T00:00:00Z"),
      serialNumber: "01",
    }
    : {
      notBefore: new Date(Date.now() - 86_400_000),
      notAfter: new Date(Date.now() + 3650 * 86_400_000),
    };
  const { root, signerKeys, signer } = await createSigningPki({
    rootSubject: "CN=Fleet Device Root",
    signerSubject: "CN=Fleet Signer",
    validity,
    ...(options.remote ? { derivedFrom: `${token}:${options.seed}` } : {}),
  });
  const certPath = "/certs/ota_signer.pem";
  const signerPem = pemEncode("CERTIFICATE", certificateDer(signer));
  const factoryImage = await signImage(
    {
      payload: buildFirmware({ behavior: "ok", version: "1.0.0" }, options.imageSize),
      version: parseVersion("1.0.0")!,
      securityCounter: 1,
    },
    { privateKey: signerKeys.privateKey, certificate: signer },
  );
  // Every device boots in two stages: the fleet's second-stage bootloader, signed the same way.
  const secondStage = await signImage(
    { payload: secondStagePayload("2.0.0"), version: parseVersion("2.0.0")!, securityCounter: 1 },
    { privateKey: signerKeys.privateKey, certificate: signer },
  );
  // rollback: nobody can confirm; canary-abort: the first wave fails and the abort criterion must stop the rest.
  const behavior: Behavior = options.scenario === "rollback" || options.scenario === "canary-abort"
    ? "fail-self-test"
    : "ok";
  const devices: FleetDeviceSpec[] = [];
  let globalBad = 0;
  for (let i = 0; i < options.devices; i++) {
    const bad = random.next() < options.badImageShare;
    if (bad) globalBad++;
    if (i % options.shard.count !== options.shard.index - 1) continue;
    devices.push({
      thing: `dev-${String(i).padStart(5, "0")}`,
      secret: "", // the cloud generates it at registration
      seed: options.seed * 100_003 + i,
      ...(bad ? { badImage: options.badImageBehavior } : {}),
    });
  }
  /** Devices this process runs (all of them, or its shard's share). */
  const local = devices.length;
  // late-joiners: a tenth of the fleet is provisioned but joins the group only during the job.
  const initialDevices = options.scenario === "late-joiners" ? Math.ceil(local * 0.9) : local;
  // Several registrations in flight: one at a time, a 10,000-device setup waited on 10,000 round
  // trips with the broker idle in between.
  await forEachLimited(devices, 16, async (device, index) => {
    const secret = await access.provisionThing(device.thing, index < initialDevices);
    devices[index] = { ...devices[index]!, secret };
    if (fleetCa && embedded) {
      // The factory step: a key born in the element, certified by the fleet CA, registered.
      const element = await SecureElement.generate();
      const der = await provisionSecureElement(element, device.thing, fleetCa, fleetCa.validity);
      const registered = await embedded.registerDeviceCertificate(device.thing, der);
      if (!registered.ok) throw new Error(`${device.thing}: ${registered.reason}`);
      devices[index] = { ...devices[index]!, element: element.toChip() };
    }
  });
  let imageBytes = 0;
  const logs: string[] = [];
  const fleet = new FleetSupervisor({
    ...(options.workers !== undefined ? { workers: options.workers } : {}),
    ...(options.devicesPerWorker !== undefined
      ? { devicesPerWorker: options.devicesPerWorker }
      : {}),
    init: {
      slotSectors,
      rootCertificateDer: certificateDer(root),
      certificates: [[certPath, signerPem]],
      factoryImage,
      secondStage,
      brokerUrl: access.brokerUrl,
      // Devices keep real time: their request and self-test timers guard real sockets under real
      // load. The cloud's clock is the scaled one (rollout rates, job timeouts, schedules).
      timeScale: 1,
      agentConfig: {
        blockSize: options.blockSize,
        blocksPerRequest: blocksPerRequestFor(options.blockSize),
        requestTimeoutMs: 5_000,
        maxMomentum: 60,
        selfTestTimeoutMs: 30_000,
        statusAckTimeoutMs: 5_000,
        jobRequestBackoffMs: [2_000, 30_000],
        persistEveryBlocks: 16,
        preferredProtocol: options.protocol === "http" ? "HTTP" : "MQTT",
      },
      seed: options.seed,
      telemetryMs: 250,
      ...(options.erasePreviousImage ? { erasePreviousImage: true } : {}),
      ...(options.network ? { network: options.network } : {}),
      ...(options.cpuProfile ? { cpuProfileDir: options.cpuProfile } : {}),
      ...(options.trace.length > 0 ? { traceThings: options.trace } : {}),
    },
    log: (line) => {
      // A traced device's lines come as "[thing] ...": shown live, the rest kept for a failure.
      if (options.trace.length > 0 && line.startsWith("[")) {
        out(`trace ${((performance.now() - started) / 1000).toFixed(1)} s ${line}`);
      } else {
        logs.push(line);
      }
    },
  });
  const series: FleetReport["series"] = [];
  const faultTimers: ReturnType<typeof setTimeout>[] = [];
  const crashPlan = planWorkerCrashes(options.workerCrashes, random);
  let crashesDone = 0;
  let report: FleetReport | null = null;
  try {
    await fleet.start(devices.slice(0, initialDevices));
    endPhase("setup");
    out(
      `fleet: ${options.devices} devices in ${fleet.workerCount} workers, scenario ${options.scenario}, image ${options.imageSize} bytes, blocks ${options.blockSize}`,
    );
    const deadline = performance.now() + options.timeoutSeconds * 1000;
    const waitFor = async (condition: () => boolean | Promise<boolean>, what: string) => {
      while (!(await condition())) {
        if (performance.now() > deadline) {
          // Say where the devices that did not get there are, and why, before giving up.
          const stuck = (await fleet.report()).filter((d) => !d.telemetry.marks?.complete);
          out(`${stuck.length} devices did not complete; the first of them:`);
          for (const d of stuck.slice(0, 5)) {
            out(
              `  ${d.telemetry.thing}: ${d.telemetry.state}, ${d.telemetry.version}, update ${d.telemetry.updateState}`,
            );
            for (const line of d.lastLog) out(`    ${line}`);
          }
          throw new Error(`timed out waiting for ${what}`);
        }
        sample();
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    await waitFor(
      () =>
        [...fleet.telemetry.values()].filter((t) => t.state === "running").length ===
          initialDevices,
      "every device to boot",
    );
    endPhase("boot");
    // One shard (the first) creates the signing profile and the updates; the others wait for them.
    const leader = options.shard.index === 1;
    if (leader) {
      await access.createSigningProfile({
        name: "fleet",
        rootPem: pemEncode("CERTIFICATE", certificateDer(root)),
        certificatePem: signerPem,
        privateKeyPem: await exportPrivateKeyPem(signerKeys.privateKey),
      });
    }
    const planFaults = () => {
      for (const fault of planDeviceFaults(devices.map((d) => d.thing), options, random)) {
        if (fault.delayMs === 0) fleet.send(fault.thing, fault.message);
        else {faultTimers.push(setTimeout(() =>
            fleet.send(fault.thing, fault.message), fault.delayMs));}
      }
    };
    const versions = options.scenario === "back-to-back" ? ["1.1.0", "1.2.0", "1.3.0"] : ["1.1.0"];
    const jobIds: string[] = [];
    const lateJoiners = options.scenario === "late-joiners" ? devices.slice(initialDevices) : [];
    let lastLine = 0;
    let lastBytes = 0;
    let lastAt = performance.now();
    for (const [index, version] of versions.entries()) {
      const otaUpdateId = `fleet-${version.replaceAll(".", "-")}`;
      let created = leader ? null : await access.findOtaUpdate(otaUpdateId);
      if (!leader) {
        await waitFor(
          async () => (created = await access.findOtaUpdate(otaUpdateId)) !== null,
          `shard 1 to create ${otaUpdateId}`,
        );
      } else {created = await access.createOtaUpdate({
          otaUpdateId,
          payload: toBase64(buildFirmware({ behavior, version }, options.imageSize)),
          version,
          securityCounter: 2 + index,
          signingProfile: "fleet",
          certFile: certPath,
          targets: { groups: ["fleet"] },
          protocols: options.protocol === "http" ? ["HTTP"] : ["MQTT"],
          ...(options.scenario === "late-joiners"
            ? { targetSelection: "CONTINUOUS" as const }
            : {}),
          ...(options.retries > 0
            ? { retry: [{ failureType: "ALL" as const, numberOfRetries: options.retries }] }
            : {}),
          rollout: options.maxPerMinute < 1000
            ? { maximumPerMinute: options.maxPerMinute }
            // Exponential by default: a canary of 100 per minute that doubles every 100 notified.
            : {
              exponentialRate: {
                baseRatePerMinute: 100,
                incrementFactor: 2,
                rateIncreaseCriteria: { numberOfNotifiedThings: 100 },
              },
            },
          ...(options.scenario === "canary-abort"
            ? {
              abort: [{
                failureType: "ALL" as const,
                action: "CANCEL" as const,
                thresholdPercentage: 20,
                minNumberOfExecutedThings: Math.min(10, options.devices),
              }],
              rollout: {
                maximumPerMinute: Math.max(
                  1,
                  Math.min(options.maxPerMinute, Math.ceil(options.devices / 10)),
                ),
              },
            }
            : {}),
          ...(options.abortPercent !== undefined
            ? {
              abort: [{
                failureType: "ALL" as const,
                action: "CANCEL" as const,
                thresholdPercentage: options.abortPercent,
                minNumberOfExecutedThings: Math.min(10, options.devices),
              }],
            }
            : {}),
        });}
      const { jobId, fileSize } = created!;
      const createdAt = Date.now();
      jobIds.push(jobId);
      imageBytes = fileSize;
      if (index === 0) planFaults();
      if (lateJoiners.length > 0) {
        // Devices that join the group while the continuous job runs get it without rate limits.
        await fleet.addDevices(lateJoiners);
        for (const device of lateJoiners) await access.addToGroup(device.thing);
      }
      const progress = async () => {
        const state = await access.jobState(jobId);
        const counts = state.counts;
        series.push({ t: Math.round(performance.now() - started), counts: { ...counts } });
        if (performance.now() - lastLine > 1000) {
          const bytes = access.bytesDelivered(options.blockSize) ?? 0;
          const rate = (bytes - lastBytes) / ((performance.now() - lastAt) / 1000);
          const done = counts.SUCCEEDED + counts.FAILED + counts.REJECTED + counts.TIMED_OUT +
            counts.CANCELED;
          const elapsed = (performance.now() - started) / 1000;
          const eta = done > 0 ? Math.round((options.devices - done) * elapsed / done) : null;
          lastLine = lastAt = performance.now();
          lastBytes = bytes;
          const status = state.status;
          if (onProgress) {
            onProgress({
              version,
              status,
              done,
              total: options.devices,
              counts: { ...counts },
              mbPerSecond: rate / 1e6,
              etaSeconds: eta,
            });
          } else {
            out(
              `progress ${version}: ${status} succeeded ${counts.SUCCEEDED} failed ${counts.FAILED} rejected ${counts.REJECTED} in progress ${counts.IN_PROGRESS} queued ${counts.QUEUED} not notified ${counts.pending} | ${
                (rate / 1e6).toFixed(1)
              } MB/s | ETA ${eta === null ? "?" : `${eta} s`}`,
            );
          }
        }
        return state;
      };
      let canceled = false;
      const ended = async () => {
        const state = await progress();
        const done = state.counts;
        if (
          options.cancelAt !== undefined && !canceled &&
          done.SUCCEEDED + done.FAILED + done.REJECTED + done.TIMED_OUT >=
            options.cancelAt * options.devices
        ) {
          canceled = true;
          await access.cancelJob(jobId, "canceled by the operator mid-rollout (--cancel)");
        }
        const doneShare = (done.SUCCEEDED + done.FAILED + done.REJECTED + done.TIMED_OUT) /
          options.devices;
        while (crashesDone < crashPlan.length && doneShare >= crashPlan[crashesDone]!) {
          fleet.crashWorker(random.below(fleet.workerCount));
          crashesDone++;
        }
        const status = state.status;
        const continuousDone = options.scenario === "late-joiners" &&
          done.SUCCEEDED === options.devices;
        if (status !== "COMPLETED" && status !== "CANCELED" && !continuousDone) return false;
        // A crash just ordered has not been seen yet: its devices' telemetry is not news yet.
        if (fleet.workerRestarts < crashesDone) return false;
        // Wait for devices to settle: none mid-update, every confirmation landed.
        return fleet.telemetry.size === local &&
          [...fleet.telemetry.values()].every((t) =>
            t.state === "running" && !t.trial &&
            (t.updateState === "READY" || t.updateState === "UPDATED" || t.updateState === "FAILED")
          );
      };
      await waitFor(ended, `the update to ${version} to end`);
      endPhase(`update ${version}`);
      stages[version] = stageTimes(
        createdAt,
        [...fleet.telemetry.values()].map((t) => t.marks),
        jobId,
      );
    }
    const jobId = jobIds[jobIds.length - 1]!;
    const expectedVersion = `${versions[versions.length - 1]}+0`;
    const finals = await fleet.report();
    const last = await access.jobState(jobId);
    const counts = last.counts;
    // Outcome over every update of the run (back-to-back runs three).
    const total = { SUCCEEDED: 0, FAILED: 0, REJECTED: 0, TIMED_OUT: 0, CANCELED: 0 };
    for (const id of jobIds) {
      const c = (await access.jobState(id)).counts;
      for (const key of Object.keys(total) as (keyof typeof total)[]) total[key] += c[key];
    }
    const runningVersion: Record<string, number> = {};
    for (const d of finals) {
      const version = d.telemetry.version ?? "none";
      runningVersion[version] = (runningVersion[version] ?? 0) + 1;
    }
    const faults = {
      disconnects: 0,
      corruptedBlocks: 0,
      powerCuts: 0,
      trialPowerCuts: 0,
      crashes: 0,
      lostMessages: 0,
      workerCrashes: crashesDone,
      workerRestarts: fleet.workerRestarts,
    };
    for (const d of finals) {
      faults.disconnects += d.faults.disconnects;
      faults.corruptedBlocks += d.faults.corruptedBlocks;
      faults.powerCuts += d.faults.powerCuts;
      faults.trialPowerCuts += d.faults.trialPowerCuts;
      faults.crashes += d.faults.crashes;
      faults.lostMessages += d.faults.lostMessages;
    }
    const jobStatus = last.status;
    const bricked = finals.filter((d) => !d.bootable).length;
    const { expected, asExpected } = judgeRun({
      options,
      local,
      finals: finals.length,
      bricked,
      globalBad,
      // Job counts cover the whole fleet (every shard); versions and boots this process's devices.
      badDevices: devices.filter((d) => d.badImage).length,
      // A power loss while the new image runs on trial reverts it, as a crash would: that
      // execution FAILS (unless --retries gives it another go). Only such devices may miss it.
      revertedByPowerCut: finals.filter((d) =>
        d.faults.trialPowerCuts > 0 && d.telemetry.version !== expectedVersion
      ).length,
      trialPowerCuts: faults.trialPowerCuts,
      expectedVersion,
      updates: versions.length,
      runningVersion,
      jobStatus,
      lastCounts: counts,
      total,
    });
    const updates = [];
    for (const id of jobIds) {
      const state = await access.jobState(id);
      updates.push({
        jobId: id,
        status: state.status,
        counts: state.counts as unknown as Record<string, number>,
      });
    }
    sample();
    endPhase("report");
    report = {
      scenario: options.scenario,
      devices: local,
      imageBytes,
      blockBytes: options.blockSize,
      protocol: options.protocol,
      workers: fleet.workerCount,
      outcome: {
        succeeded: counts.SUCCEEDED,
        failed: counts.FAILED,
        rejected: counts.REJECTED,
        timedOut: counts.TIMED_OUT,
        canceled: counts.CANCELED,
        // Everything else: still open, removed, or never notified (a canceled rollout stops there).
        other: local - counts.SUCCEEDED - counts.FAILED - counts.REJECTED -
          counts.TIMED_OUT - counts.CANCELED,
      },
      updates,
      jobStatus,
      bricked,
      runningVersion,
      faults,
      // A remote cloud does not say what its stream service sent: estimate from the image size.
      bytesDelivered: access.bytesDelivered(options.blockSize) ?? imageBytes * total.SUCCEEDED,
      wallSeconds: Math.round((performance.now() - started) / 100) / 10,
      phases,
      stages,
      peakRssBytes: peakRss,
      series,
      expected,
      asExpected,
    };
    if (linger) await linger(report);
    return report;
  } finally {
    for (const timer of faultTimers) clearTimeout(timer);
    if (!report) { for (const line of logs.slice(-20)) out(`log: ${line}`); }
    await fleet.stop();
    await server?.shutdown();
    await embedded?.close();
  }
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseFleetArgs(Deno.args);
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  try {
    // A live bar on a terminal; plain periodic lines otherwise (logs, CI).
    const bar = Deno.stdout.isTerminal()
      ? new cliProgress.SingleBar(
        { format: "{version} {bar} {value}/{total} | {line}" },
        cliProgress.Presets.shades_classic,
      )
      : null;
    let barStarted = false;
    const report = await runFleet(
      options,
      (line) => console.log(line),
      bar
        ? (p) => {
          const line =
            `ok ${p.counts.SUCCEEDED} failed ${p.counts.FAILED} in progress ${p.counts.IN_PROGRESS} queued ${p.counts.QUEUED} | ${
              p.mbPerSecond.toFixed(1)
            } MB/s | ETA ${p.etaSeconds ?? "?"} s`;
          if (!barStarted) bar.start(p.total, p.done, { version: p.version, line });
          else bar.update(p.done, { version: p.version, line });
          barStarted = true;
        }
        : undefined,
      options.dashboard
        ? async (report) => {
          bar?.stop();
          await Deno.writeTextFile(options.report, JSON.stringify(report, null, 2));
          console.log(
            `run over (${
              report.asExpected ? "as expected" : "NOT as expected"
            }, report in ${options.report}); the dashboard stays up until Ctrl-C`,
          );
          await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", resolve));
        }
        : undefined,
    );
    bar?.stop();
    await Deno.writeTextFile(options.report, JSON.stringify(report, null, 2));
    console.log(`\n${formatSummary(report, options.report)}`);
    Deno.exit(report.asExpected ? 0 : 1);
  } catch (error) {
    console.error(`fleet run failed: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
