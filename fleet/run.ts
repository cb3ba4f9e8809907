/**
 * A fleet run, phase by phase: the cloud side (embedded, or joined through its operator API),
 * the signing PKI and images, the devices drawn, registered and started in Workers, their boot,
 * one rollout per version (faults injected, progress followed, the end awaited), and the report.
 * {@linkcode runFleet} strings the phases together.
 *
 * @module
 */

import { toBase64 } from "../lib/base64.ts";
import { certificateDer } from "../protocol/certificates.ts";
import { ECDSA_P256, pemEncode } from "../protocol/signatures.ts";
import {
  createRootCertificate,
  createSigningPki,
  deriveSigningKeys,
  exportPrivateKeyPem,
  generateSigningKeys,
} from "../pki/certificate_issuer.ts";
import { provisionSecureElement } from "../pki/provisioning.ts";
import { type Behavior, buildFirmware, evolveFirmware } from "../bootloader/firmware.ts";
import { SECOND_STAGE_FILE_TYPE, secondStagePayload } from "../bootloader/first_stage.ts";
import { SecureElement } from "../bootloader/secure_element.ts";
import { compareVersions, formatVersion, parseVersion } from "../protocol/image_format.ts";
import { signImage } from "../protocol/image_sign.ts";
import { type Cloud, startCloud } from "../broker/cloud.ts";
import { operatorApi } from "../broker/operator_api.ts";
import type { OtaUpdateRequest } from "../broker/ota_updates.ts";
import { type CloudAccess, embeddedAccess, remoteAccess } from "./cloud_access.ts";
import { ScaledClock } from "../lib/clock.ts";
import { type Random, seededRandom } from "../lib/random.ts";
import { forEachLimited } from "../lib/concurrency.ts";
import { startCpuProfile } from "../lib/cpu_profiler.ts";
import { type FleetDeviceSpec, settledTelemetry } from "./device_actor.ts";
import { FleetSupervisor } from "./supervisor.ts";
import type { WorkerInit } from "./worker_messages.ts";
import { badWaveShape, blocksPerRequestFor, type Options } from "./fleet_args.ts";
import {
  BUNDLED_SECOND_STAGE,
  deltaSavings,
  FACTORY_SECOND_STAGE,
  type FleetReport,
  judgeRun,
  stageParts,
  stageTimes,
} from "./report.ts";
import { planDeviceFaults, planWorkerCrashes } from "./fault_plan.ts";
import { CODE_VERIFY_KEY } from "../protocol/job_document.ts";
import { loadTrust, type Trust } from "./trust_inputs.ts";
import { UsageError } from "../lib/usage_error.ts";
import { type FleetProgress, formatProgress, rolloutStages } from "./progress.ts";

/**
 * The id of the update a run creates for `version`: `--update-id` (default `fleet`, or
 * `fleet-<random>` when joining a cloud) with the version appended, e.g. `fleet-1-1-0`.
 */
export function updateIdFor(options: Pick<Options, "updateId">, version: string): string {
  return `${options.updateId}-${version.replaceAll(".", "-")}`;
}

/** The version every device starts from. */
const FACTORY_VERSION = parseVersion("1.0.0")!;

/** Where devices keep the certificate of an image signed elsewhere (`--certificate`). */
const EXTERNAL_CERT_PATH = "/certs/external_signer.pem";

/** Where devices keep the signer certificate the job document names. */
const CERT_PATH = "/certs/ota_signer.pem";

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

/** The cloud a run talks to, and how it reaches it. */
interface CloudSide {
  readonly embedded: Cloud | null;
  readonly server: Deno.HttpServer | null;
  readonly access: CloudAccess;
  readonly token: string;
  readonly fleetCa: Awaited<ReturnType<typeof createFleetCa>> | null;
}

/** Phase 1: the embedded cloud and its operator API, or a running cloud joined through its API. */
async function startCloudSide(
  options: Options,
  out: (line: string) => void,
): Promise<CloudSide> {
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
      { port: options.dashboardPort ?? 0, hostname: "127.0.0.1", onListen: () => {} },
      operatorApi(embedded, { token }),
    )
    : null;
  if (embedded && server) {
    embedded.files.baseUrl = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  }
  if (options.dashboard) {
    // The token rides in the fragment: the page keeps it, no server ever sees it in a URL.
    const base = embedded
      ? embedded.files.baseUrl
      : options.remote!.apis[0]!.replace(/\/api\/?$/, "");
    out(`dashboard: ${base}/dashboard/#token=${encodeURIComponent(token)}`);
  }
  const access = embedded
    ? embeddedAccess(embedded)
    : remoteAccess(options.remote!.brokers, options.remote!.apis, token, {
      outageToleranceMs: options.outageToleranceSeconds * 1000,
      log: out,
    });
  return { embedded, server, access, token, fleetCa };
}

/** What devices are made of: the PKI they trust, the factory image and the second stage. */
interface FleetImages {
  readonly root: Awaited<ReturnType<typeof createSigningPki>>["root"];
  readonly signerKeys: Awaited<ReturnType<typeof createSigningPki>>["signerKeys"];
  readonly signerPem: string;
  /** The signer's private key as PEM (for the cloud's signing profile). */
  readonly signerKeyPem: string;
  readonly factoryImage: Uint8Array;
  readonly secondStage: Uint8Array;
  /**
   * two-components and bad-component: the second stage each update ships with its firmware
   * (one that boots, or one that crashes on trial).
   */
  readonly bundledSecondStage?: Uint8Array;
  /** The update as an image signed elsewhere (`--image`), when given. */
  readonly external?: Trust["external"];
  /**
   * With `--encrypted`: the product's image key, which every device's secure element gets at
   * provisioning (PKCS#8), and its public half, which updates are encrypted for (PEM).
   */
  readonly imageKey?: { readonly pkcs8: Uint8Array; readonly publicPem: string };
}

/** Phase 2: the signing PKI and the images every device starts from. */
async function makeImages(options: Options, token: string): Promise<FleetImages> {
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
  // A root of trust made outside (--root-ca ...), or the fleet's own.
  const trust = options.trust ? await loadTrust(options.trust) : null;
  if (trust?.external && compareVersions(trust.external.version, FACTORY_VERSION) <= 0) {
    throw new UsageError(
      `--image is version ${
        formatVersion(trust.external.version)
      }: not newer than the devices' factory image 1.0.0`,
    );
  }
  const { root, signerKeys, signer } = trust ?? await createSigningPki({
    rootSubject: "CN=Fleet Device Root",
    signerSubject: "CN=Fleet Signer",
    validity,
    ...(options.remote ? { derivedFrom: `${token}:${options.seed}` } : {}),
  });
  const signerPem = pemEncode("CERTIFICATE", certificateDer(signer));
  const signerKeyPem = trust?.signerKeyPem ?? await exportPrivateKeyPem(signerKeys.privateKey);
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
    {
      payload: secondStagePayload(FACTORY_SECOND_STAGE),
      version: parseVersion(FACTORY_SECOND_STAGE)!,
      securityCounter: 1,
    },
    { privateKey: signerKeys.privateKey, certificate: signer },
  );
  const bundled = options.scenario === "two-components" || options.scenario === "bad-component"
    ? await signImage(
      {
        payload: secondStagePayload(
          BUNDLED_SECOND_STAGE,
          options.scenario === "bad-component" ? "crashes" : "boots",
        ),
        version: parseVersion(BUNDLED_SECOND_STAGE)!,
        securityCounter: 1,
      },
      { privateKey: signerKeys.privateKey, certificate: signer },
    )
    : null;
  return {
    root,
    signerKeys,
    signerPem,
    signerKeyPem,
    factoryImage,
    secondStage,
    ...(bundled ? { bundledSecondStage: bundled } : {}),
    ...(trust?.external ? { external: trust.external } : {}),
    ...(options.encrypted ? { imageKey: await productImageKey(options, token) } : {}),
  };
}

/**
 * The product's image encryption key: derived from the operator token and seed when joining a
 * cloud (shards must agree on it, as on the signing PKI), else fresh.
 */
async function productImageKey(
  options: Options,
  token: string,
): Promise<{ pkcs8: Uint8Array; publicPem: string }> {
  // An EC key's PKCS#8 and SPKI do not say whether it signs or agrees keys: the element imports
  // it for ECDH.
  const keys = options.remote
    ? await deriveSigningKeys(`${token}:${options.seed}:image-encryption`)
    : await crypto.subtle.generateKey(ECDSA_P256, true, ["sign", "verify"]);
  return {
    pkcs8: new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
    publicPem: pemEncode(
      "PUBLIC KEY",
      new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey)),
    ),
  };
}

/** Phase 3: the devices of this process (all, or its shard's share), drawn from the seed. */
function drawDevices(
  options: Options,
  random: Random,
): { devices: FleetDeviceSpec[]; globalBad: number } {
  const devices: FleetDeviceSpec[] = [];
  let globalBad = 0;
  const badWave = options.scenario === "bad-wave";
  for (let i = 0; i < options.devices; i++) {
    const drawn = random.next() < options.badImageShare;
    // bad-wave: half of the first wave runs an image that fails its self-test.
    const bad = badWave ? i < badWaveShape(options).bad : drawn;
    if (bad) globalBad++;
    if (i % options.shard.count !== options.shard.index - 1) continue;
    devices.push({
      thing: `dev-${String(i).padStart(5, "0")}`,
      secret: "", // the cloud generates it at registration
      seed: options.seed * 100_003 + i,
      ...(bad ? { badImage: badWave ? "fail-self-test" : options.badImageBehavior } : {}),
    });
  }
  return { devices, globalBad };
}

/** factory-reset: a fifth of the devices (at least one), drawn from the seed. */
function factoryResetShare(devices: readonly FleetDeviceSpec[], random: Random): string[] {
  const count = Math.max(1, Math.round(devices.length / 5));
  const things = devices.map((d) => d.thing);
  for (let i = things.length - 1; i > 0; i--) {
    const j = random.below(i + 1);
    [things[i], things[j]] = [things[j]!, things[i]!];
  }
  return things.slice(0, count);
}

/** The fleet's device names, in order (every shard knows all of them). */
function thingNames(options: Options): string[] {
  return Array.from({ length: options.devices }, (_, i) => `dev-${String(i).padStart(5, "0")}`);
}

/**
 * The OTA update a fleet run creates for `version` (the `index`-th of the run): its payload,
 * signing profile, targets, protocol, retries, rollout rate and abort criteria, as the scenario
 * and flags ask.
 */
export function updateRequestFor(
  options: Options,
  version: string,
  index: number,
  behavior: Behavior,
  certPath: string,
  delta?: { readonly payload: Uint8Array; readonly factoryImage: Uint8Array },
  encryptTo?: string,
  secondStage?: Uint8Array,
): OtaUpdateRequest {
  const otaUpdateId = updateIdFor(options, version);
  return {
    otaUpdateId,
    ...(encryptTo ? { encryptTo } : {}),
    // Installed together with the firmware, which the cloud makes depend on it.
    ...(secondStage
      ? {
        extraFiles: [{
          fileType: SECOND_STAGE_FILE_TYPE,
          filePath: "second-stage.img",
          data: toBase64(secondStage),
        }],
      }
      : {}),
    payload: toBase64(delta?.payload ?? buildFirmware({ behavior, version }, options.imageSize)),
    // Patches from the factory image (devices that missed every update) and from each update
    // shipped before (the cloud keeps them).
    ...(delta ? { delta: { bases: [toBase64(delta.factoryImage)], shipped: true } } : {}),
    version,
    securityCounter: 2 + index,
    signingProfile: "fleet",
    certFile: certPath,
    ...(options.scenario === "bad-wave"
      ? {
        // Named in order, so that the first wave is the one with the failing image.
        targets: { things: thingNames(options) },
        healthGate: {
          waveSize: badWaveShape(options).waveSize,
          minSuccessPercent: badWaveShape(options).minSuccessPercent,
          onFailure: "PAUSE" as const,
        },
      }
      : { targets: { groups: ["fleet"] } }),
    protocols: options.protocol === "http" ? ["HTTP"] : ["MQTT"],
    ...(options.scenario === "late-joiners" || options.scenario === "factory-reset"
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
  };
}

/** A run in progress: the state its phases share. */
class FleetRun {
  readonly options: Options;
  readonly #out: (line: string) => void;
  readonly #onProgress: ((progress: FleetProgress) => void) | undefined;
  readonly #started = performance.now();
  readonly #phases: Record<string, number> = {};
  readonly #stages: FleetReport["stages"] = {};
  readonly #stageParts: NonNullable<FleetReport["stageParts"]> = {};
  readonly #deltaSavings: NonNullable<FleetReport["deltaSavings"]> = {};
  readonly #series: FleetReport["series"] = [];
  readonly #logs: string[] = [];
  readonly #faultTimers: ReturnType<typeof setTimeout>[] = [];
  readonly #random: Random;
  readonly #crashPlan: number[];
  readonly #jobIds: string[] = [];
  #phaseStart = this.#started;
  #peakRss = Deno.memoryUsage().rss;
  #crashesDone = 0;
  #imageBytes = 0;
  #lastLine = 0;
  #lastBytes = 0;
  #lastAt = performance.now();
  #deadline = Infinity;
  #cloud: CloudSide | null = null;
  #images: FleetImages | null = null;
  /** The last update's payload (`--delta`: each release is made from the one before). */
  #releasePayload: Uint8Array | null = null;
  #fleet: FleetSupervisor | null = null;
  /** Where `--wire-log` records go. */
  #wireLog: Deno.FsFile | null = null;
  #devices: FleetDeviceSpec[] = [];
  #globalBad = 0;
  #initialDevices = 0;
  /** factory-reset: the devices reset after the update (once chosen), and when. */
  #reset: string[] | null = null;
  #resetAt = 0;

  constructor(
    options: Options,
    out: (line: string) => void,
    onProgress?: (progress: FleetProgress) => void,
  ) {
    this.options = options;
    this.#out = out;
    this.#onProgress = onProgress;
    this.#random = seededRandom(options.seed);
    this.#crashPlan = planWorkerCrashes(options.workerCrashes, this.#random);
  }

  /** The versions this run rolls out, in order. */
  get versions(): string[] {
    const external = this.#images?.external?.version;
    if (external) return [`${external.major}.${external.minor}.${external.revision}`];
    return this.options.scenario === "back-to-back" ? ["1.1.0", "1.2.0", "1.3.0"] : ["1.1.0"];
  }

  /** One shard (the first) creates the signing profile and the updates; the others wait. */
  get #leader(): boolean {
    return this.options.shard.index === 1;
  }

  /** rollback: nobody can confirm; canary-abort: the first wave fails and the abort must act. */
  #behavior(): Behavior {
    const { scenario } = this.options;
    return scenario === "rollback" || scenario === "canary-abort" ? "fail-self-test" : "ok";
  }

  #endPhase(name: string): void {
    const now = performance.now();
    this.#phases[name] = Math.round((now - this.#phaseStart) / 100) / 10;
    this.#phaseStart = now;
  }

  #sample(): void {
    this.#peakRss = Math.max(this.#peakRss, Deno.memoryUsage().rss);
  }

  /** Setup: the cloud, the images, the devices drawn, registered and started in Workers. */
  async setUp(): Promise<void> {
    const options = this.options;
    const out = this.#out;
    const started = this.#started;
    const logs = this.#logs;
    this.#cloud = await startCloudSide(options, out);
    const { access, embedded, fleetCa } = this.#cloud;
    const images = this.#images = await makeImages(options, this.#cloud.token);
    const { devices, globalBad } = drawDevices(options, this.#random);
    this.#devices = devices;
    this.#globalBad = globalBad;
    /** Devices this process runs (all of them, or its shard's share). */
    const local = devices.length;
    // late-joiners: a tenth of the fleet is provisioned but joins the group only during the job.
    const initialDevices = this.#initialDevices = options.scenario === "late-joiners"
      ? Math.ceil(local * 0.9)
      : local;
    // Several registrations in flight: one at a time, a 10,000-device setup waited on 10,000
    // round trips with the broker idle in between.
    await forEachLimited(devices, 16, async (device, index) => {
      const secret = await access.provisionThing(device.thing, index < initialDevices);
      devices[index] = { ...devices[index]!, secret };
      // The factory step: a secure element holding the device's identity (a key born in it,
      // certified by the fleet CA, registered) and the product's image key, or either.
      let element: SecureElement | null = null;
      if (fleetCa && embedded) {
        element = await SecureElement.generate();
        const der = await provisionSecureElement(element, device.thing, fleetCa, fleetCa.validity);
        const registered = await embedded.registerDeviceCertificate(device.thing, der);
        if (!registered.ok) throw new Error(`${device.thing}: ${registered.reason}`);
      }
      if (images.imageKey) {
        // Without an identity in it the device still logs in with its secret.
        element ??= await SecureElement.generate();
        await element.installImageKey(images.imageKey.pkcs8);
      }
      if (element) devices[index] = { ...devices[index]!, element: element.toChip() };
    });
    const slotSectors = Math.ceil((options.imageSize + 4096) / 4096) + 1;
    let wireLog: WorkerInit["wireLog"] | undefined;
    if (options.wireLog !== undefined && devices.length > 0) {
      this.#wireLog = await Deno.open(options.wireLog, {
        write: true,
        create: true,
        truncate: true,
      });
      wireLog = {
        things: options.trace.length > 0 ? options.trace : [devices[0]!.thing],
        startedAt: Date.now() - (performance.now() - started),
      };
    }
    const lines = new TextEncoder();
    this.#fleet = new FleetSupervisor({
      ...(options.workers !== undefined ? { workers: options.workers } : {}),
      ...(options.devicesPerWorker !== undefined
        ? { devicesPerWorker: options.devicesPerWorker }
        : {}),
      init: {
        slotSectors,
        rootCertificateDer: certificateDer(images.root),
        // The signer under its path, and as the device's own code-verification certificate, which
        // AWS's documents name (`Code Verify Key`) or fall back to.
        certificates: [
          [CERT_PATH, images.signerPem],
          [CODE_VERIFY_KEY, images.signerPem],
          ...(images.external
            ? [[EXTERNAL_CERT_PATH, images.external.certificatePem] as [string, string]]
            : []),
        ],
        factoryImage: images.factoryImage,
        secondStage: images.secondStage,
        brokerUrls: access.brokerUrls,
        // Devices keep real time: their request and self-test timers guard real sockets under real
        // load. The cloud's clock is the scaled one (rollout rates, job timeouts, schedules).
        timeScale: 1,
        agentConfig: {
          blockSize: options.blockSize,
          blocksPerRequest: blocksPerRequestFor(options.blockSize),
          requestTimeoutMs: 5_000,
          maxMomentum: 60,
          selfTestTimeoutMs: options.selfTestTimeoutSeconds * 1000,
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
        ...(options.heapProfile ? { heapProfileDir: options.heapProfile } : {}),
        ...(options.trace.length > 0 ? { traceThings: options.trace } : {}),
        ...(wireLog ? { wireLog } : {}),
      },
      wire: (record) => this.#wireLog?.writeSync(lines.encode(JSON.stringify(record) + "\n")),
      log: (line) => {
        // Injected faults are said as they happen, one line each; a traced device's lines come
        // as "[thing] ...": shown live; the rest is kept for a failure.
        if (line.startsWith("fault: ")) out(line);
        else if (options.trace.length > 0 && line.startsWith("[")) {
          out(`trace ${((performance.now() - started) / 1000).toFixed(1)} s ${line}`);
        } else {
          logs.push(line);
        }
      },
    });

    await this.#fleet.start(devices.slice(0, initialDevices));
    this.#endPhase("setup");
    out(
      `fleet: ${options.devices} devices in ${this.#fleet.workerCount} workers, scenario ${options.scenario}, image ${options.imageSize} bytes, blocks ${options.blockSize}, update ${
        updateIdFor(options, this.versions[0]!)
      }${options.encrypted ? ", images encrypted for the devices' key" : ""}`,
    );
    this.#deadline = performance.now() + options.timeoutSeconds * 1000;
  }

  /** Waits for `condition`; past the run's deadline, says which devices are stuck, and throws. */
  async #waitFor(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
    const fleet = this.#fleet!;
    const out = this.#out;
    const deadline = this.#deadline;
    while (!(await condition())) {
      if (performance.now() > deadline) {
        // Say where the devices that did not get there are, and why, before giving up.
        const stuck = await fleet.report({ incompleteAtMost: 5 });
        await fleet.syncTelemetry();
        const incomplete = [...fleet.telemetry.values()].filter((t) => !t.marks?.complete).length;
        out(`${incomplete} devices did not complete; the first of them:`);
        for (const d of stuck.slice(0, 5)) {
          out(
            `  ${d.telemetry.thing}: ${d.telemetry.state}, ${d.telemetry.version}, update ${d.telemetry.updateState}`,
          );
          for (const line of d.lastLog) out(`    ${line}`);
        }
        throw new Error(`timed out waiting for ${what}`);
      }
      this.#sample();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Boot: every device of the first wave running; the leader creates the signing profile. */
  async boot(): Promise<void> {
    const fleet = this.#fleet!;
    await this.#waitFor(
      () =>
        [...fleet.telemetry.values()].filter((t) => t.state === "running").length ===
          this.#initialDevices,
      "every device to boot",
    );
    this.#endPhase("boot");
    if (this.#leader) {
      const images = this.#images!;
      await this.#cloud!.access.createSigningProfile({
        name: "fleet",
        rootPem: pemEncode("CERTIFICATE", certificateDer(images.root)),
        certificatePem: images.signerPem,
        privateKeyPem: images.signerKeyPem,
      });
    }
  }

  /**
   * With `--delta`, the payload of `version` as a release made from the one before (the factory
   * payload first), and the factory image patches are made from; else undefined.
   */
  #delta(version: string): { payload: Uint8Array; factoryImage: Uint8Array } | undefined {
    if (!this.options.delta) return undefined;
    this.#releasePayload = evolveFirmware(
      this.#releasePayload ??
        buildFirmware({ behavior: "ok", version: "1.0.0" }, this.options.imageSize),
      { behavior: this.#behavior(), version },
    );
    return { payload: this.#releasePayload, factoryImage: this.#images!.factoryImage };
  }

  /** Every device settled: none mid-update, every confirmation landed. */
  #settled(): boolean {
    return [...this.#fleet!.telemetry.values()].every(settledTelemetry);
  }

  /** The fault plan, carried out: messages now, disconnects on timers. */
  #injectFaults(): void {
    const fleet = this.#fleet!;
    const things = this.#devices.map((d) => d.thing);
    for (const fault of planDeviceFaults(things, this.options, this.#random)) {
      if (fault.delayMs === 0) fleet.send(fault.thing, fault.message);
      else {
        this.#faultTimers.push(
          setTimeout(() => fleet.send(fault.thing, fault.message), fault.delayMs),
        );
      }
    }
  }

  /** One update: created (or awaited, in a follower shard), followed until it has ended. */
  async rollOut(version: string, index: number): Promise<void> {
    const options = this.options;
    const access = this.#cloud!.access;
    const fleet = this.#fleet!;
    const random = this.#random;
    const crashPlan = this.#crashPlan;
    const local = this.#devices.length;
    const lateJoiners = options.scenario === "late-joiners"
      ? this.#devices.slice(this.#initialDevices)
      : [];
    const otaUpdateId = updateIdFor(options, version);
    let created = this.#leader ? null : await access.findOtaUpdate(otaUpdateId);
    if (!this.#leader) {
      await this.#waitFor(
        async () => (created = await access.findOtaUpdate(otaUpdateId)) !== null,
        `shard 1 to create ${otaUpdateId}`,
      );
    } else {
      const external = this.#images!.external;
      created = await access.createOtaUpdate(
        external
          ? {
            otaUpdateId,
            image: toBase64(external.image),
            signature: toBase64(external.signature),
            certificatePem: external.certificatePem,
            rootPem: pemEncode("CERTIFICATE", certificateDer(this.#images!.root)),
            certFile: EXTERNAL_CERT_PATH,
            targets: { groups: ["fleet"] },
            protocols: options.protocol === "http" ? ["HTTP"] : ["MQTT"],
          }
          : updateRequestFor(
            options,
            version,
            index,
            this.#behavior(),
            CERT_PATH,
            this.#delta(version),
            this.#images!.imageKey?.publicPem,
            this.#images!.bundledSecondStage,
          ),
      );
    }
    const { jobId, fileSize } = created!;
    const createdAt = Date.now();
    this.#jobIds.push(jobId);
    this.#imageBytes = fileSize;
    if (index === 0) this.#injectFaults();
    if (lateJoiners.length > 0) {
      // Devices that join the group while the continuous job runs get it without rate limits.
      await fleet.addDevices(lateJoiners);
      for (const device of lateJoiners) await access.addToGroup(device.thing);
    }
    const bytesAtStart = fleet.bytesReceived;
    // One snapshot about every second, and a last one when the rollout ends (the bar's final
    // frame); speed from the devices' own byte counts, so it is real against a remote cloud too.
    const progress = async (final = false) => {
      const state = await access.jobState(jobId);
      const counts = state.counts;
      this.#series.push({
        t: Math.round(performance.now() - this.#started),
        counts: { ...counts },
      });
      if (!final && performance.now() - this.#lastLine <= 1000) return state;
      const now = performance.now();
      const bytes = fleet.bytesReceived;
      const rate = (bytes - this.#lastBytes) / Math.max(0.001, (now - this.#lastAt) / 1000);
      const stages = rolloutStages(counts, fleet.telemetry.values(), jobId, fileSize);
      const elapsed = (now - this.#started) / 1000;
      const eta = stages.work > 0
        ? Math.round((stages.total - stages.work) * elapsed / stages.work)
        : null;
      this.#lastLine = this.#lastAt = now;
      this.#lastBytes = bytes;
      const snapshot: FleetProgress = {
        version,
        status: state.status,
        stages,
        bytesReceived: bytes - bytesAtStart,
        mbPerSecond: rate / 1e6,
        etaSeconds: eta,
        final,
      };
      if (this.#onProgress) this.#onProgress(snapshot);
      else this.#out(`progress ${version}: ${formatProgress(snapshot)}`);
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
      while (this.#crashesDone < crashPlan.length && doneShare >= crashPlan[this.#crashesDone]!) {
        fleet.crashWorker(random.below(fleet.workerCount));
        this.#crashesDone++;
      }
      const status = state.status;
      let continuousDone = options.scenario === "late-joiners" &&
        done.SUCCEEDED === options.devices;
      if (options.scenario === "factory-reset") {
        // Once everyone has the update, a fifth of the fleet is reset to the factory image; the
        // run ends when those devices completed the update again after their reset.
        if (done.SUCCEEDED !== options.devices || !this.#settled()) return false;
        if (this.#reset === null) {
          this.#resetAt = Date.now();
          this.#reset = factoryResetShare(this.#devices, random);
          for (const thing of this.#reset) fleet.send(thing, { type: "factory-reset" });
          this.#out(
            `fault: ${this.#reset.length} devices reset to the factory image: ${
              this.#reset.join(", ")
            }`,
          );
          return false;
        }
        continuousDone = this.#reset.every((thing) => {
          const t = fleet.telemetry.get(thing);
          return (t?.marks?.complete ?? 0) > this.#resetAt && t?.version === `${version}+0`;
        });
      }
      // bad-wave ends when the health gate has paused the rollout.
      const gated = options.scenario === "bad-wave" && status === "PAUSED" &&
        /^health gate/.test(state.reason ?? "");
      if (status !== "COMPLETED" && status !== "CANCELED" && !continuousDone && !gated) {
        return false;
      }
      // A crash just ordered has not been seen yet: its devices' telemetry is not news yet.
      if (fleet.workerRestarts < this.#crashesDone) return false;
      // What a Worker last sent may be a batch behind (on a busy machine its devices could still
      // show their state from before the update): judged on what they say as of now.
      await fleet.syncTelemetry();
      return fleet.telemetry.size === local && this.#settled();
    };
    await this.#waitFor(ended, `the update to ${version} to end`);
    await progress(true);
    this.#endPhase(`update ${version}`);
    // Measured from the job's creation on the cloud (every shard the same moment), when the
    // cloud says; else from when this process learned of the update.
    const times = await access.jobTimes(jobId).catch((error) => {
      this.#out(`stage parts: the cloud's job times are unknown (${(error as Error).message})`);
      return null;
    });
    const devices = [...fleet.telemetry.values()];
    const from = times?.createdAt ?? createdAt;
    this.#stages[version] = stageTimes(from, devices.map((t) => t.marks), jobId);
    this.#stageParts[version] = stageParts(from, devices, jobId, times?.queued ?? null);
    if (options.delta) {
      this.#deltaSavings[version] = deltaSavings(devices.map((t) => t.marks), jobId, fileSize);
    }
  }

  /**
   * After the rollouts: a drawn share of the devices (`--wipe-share`) has both application slots
   * erased, a flash failure no update is to blame for; they boot into recovery mode and count as
   * bricked, which is how a run shows that its bricked count sees a device that cannot boot.
   */
  async wipe(): Promise<void> {
    const share = this.options.wipeShare;
    if (share === 0) return;
    const fleet = this.#fleet!;
    const wiped = this.#devices.filter(() => this.#random.next() < share).map((d) => d.thing);
    for (const thing of wiped) fleet.send(thing, { type: "wipe-slots" });
    await this.#waitFor(
      () => wiped.every((thing) => fleet.telemetry.get(thing)?.state === "recovery"),
      `the ${wiped.length} wiped devices to come up in recovery mode`,
    );
    this.#out(`fault: wiped the application slots of ${wiped.length} devices`);
  }

  /** Report: the outcome over every update, versions, faults, bricked devices, the judgement. */
  async report(): Promise<FleetReport> {
    const options = this.options;
    const access = this.#cloud!.access;
    const fleet = this.#fleet!;
    const devices = this.#devices;
    const local = devices.length;
    const globalBad = this.#globalBad;
    const versions = this.versions;
    const jobId = this.#jobIds[this.#jobIds.length - 1]!;
    const external = this.#images?.external;
    const expectedVersion = external
      ? formatVersion(external.version)
      : `${versions[versions.length - 1]}+0`;
    const finals = await fleet.summary(expectedVersion);
    // The log ends where the devices' counts in the report do: what follows is the run stopping.
    this.#wireLog?.close();
    this.#wireLog = null;
    const last = await access.jobState(jobId);
    const counts = last.counts;
    // Outcome over every update of the run (back-to-back runs three).
    const total = { SUCCEEDED: 0, FAILED: 0, REJECTED: 0, TIMED_OUT: 0, CANCELED: 0 };
    for (const id of this.#jobIds) {
      const c = (await access.jobState(id)).counts;
      for (const key of Object.keys(total) as (keyof typeof total)[]) total[key] += c[key];
    }
    const runningVersion = finals.runningVersion;
    const f = finals.faults;
    const faults = {
      disconnects: f.disconnects,
      corruptedBlocks: f.corruptedBlocks,
      powerCuts: f.powerCuts,
      trialPowerCuts: f.trialPowerCuts,
      crashes: f.crashes,
      lostMessages: f.lostMessages,
      wipes: f.wipes,
      factoryResets: f.factoryResets,
      workerCrashes: this.#crashesDone,
      workerRestarts: fleet.workerRestarts,
    };
    const jobStatus = last.status;
    const jobReason = last.reason;
    const bricked = finals.bricked;
    const wirePerDevice = { ...finals.wire };
    for (const key of Object.keys(wirePerDevice) as (keyof typeof wirePerDevice)[]) {
      wirePerDevice[key] = Math.round(wirePerDevice[key] / Math.max(1, finals.devices) * 10) / 10;
    }
    const { expected, asExpected } = judgeRun({
      options,
      local,
      finals: finals.devices,
      bricked,
      globalBad,
      // Job counts cover the whole fleet (every shard); versions and boots this process's devices.
      badDevices: devices.filter((d) => d.badImage).length,
      // A power loss while the new image runs on trial reverts it, as a crash would: that
      // execution FAILS (unless --retries gives it another go). Only such devices may miss it.
      revertedByPowerCut: finals.revertedByPowerCut,
      offByPowerCut: finals.offByPowerCut,
      trialPowerCuts: faults.trialPowerCuts,
      factoryResets: faults.factoryResets,
      expectedVersion,
      updates: versions.length,
      runningVersion,
      runningPair: finals.runningPair,
      jobStatus,
      jobReason,
      lastCounts: counts,
      total,
    });
    const updates = [];
    for (const id of this.#jobIds) {
      const state = await access.jobState(id);
      updates.push({
        jobId: id,
        status: state.status,
        counts: state.counts as unknown as Record<string, number>,
      });
    }
    this.#sample();
    this.#endPhase("report");
    return {
      scenario: options.scenario,
      devices: local,
      imageBytes: this.#imageBytes,
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
        // The counts are the job's, over every shard's devices.
        other: options.devices - counts.SUCCEEDED - counts.FAILED - counts.REJECTED -
          counts.TIMED_OUT - counts.CANCELED,
      },
      updates,
      jobStatus,
      jobReason,
      bricked,
      runningVersion,
      runningPair: finals.runningPair,
      ...(options.encrypted ? { runningEncrypted: finals.runningEncrypted } : {}),
      faults,
      cloudOutages: access.outages(),
      // A remote cloud does not say what its stream service sent: what the devices received.
      bytesDelivered: access.bytesDelivered(options.blockSize) ?? fleet.bytesReceived,
      wirePerDevice,
      wallSeconds: Math.round((performance.now() - this.#started) / 100) / 10,
      phases: this.#phases,
      stages: this.#stages,
      stageParts: this.#stageParts,
      ...(options.delta ? { deltaSavings: this.#deltaSavings } : {}),
      peakRssBytes: this.#peakRss,
      series: this.#series,
      expected,
      asExpected,
    };
  }

  /** Stops timers, Workers and servers; prints the last device logs of a run that failed. */
  async close(failed: boolean): Promise<void> {
    for (const timer of this.#faultTimers) clearTimeout(timer);
    if (failed) { for (const line of this.#logs.slice(-20)) this.#out(`log: ${line}`); }
    await this.#fleet?.stop();
    this.#wireLog?.close();
    this.#wireLog = null;
    await this.#cloud?.server?.shutdown();
    await this.#cloud?.embedded?.close();
  }
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
  if (!options.cpuProfile) return await runPhases(options, out, onProgress, linger);
  // Here rather than in the CLI, so that a run through this API gets the main thread's profile
  // and a directory its Workers can write to.
  await Deno.mkdir(options.cpuProfile, { recursive: true });
  const stopCpuProfile = await startCpuProfile();
  try {
    return await runPhases(options, out, onProgress, linger);
  } finally {
    await stopCpuProfile(`${options.cpuProfile}/main.cpuprofile`);
  }
}

async function runPhases(
  options: Options,
  out: (line: string) => void,
  onProgress?: (progress: FleetProgress) => void,
  linger?: (report: FleetReport) => Promise<void>,
): Promise<FleetReport> {
  const run = new FleetRun(options, out, onProgress);
  let report: FleetReport | null = null;
  try {
    await run.setUp();
    await run.boot();
    for (const [index, version] of run.versions.entries()) await run.rollOut(version, index);
    await run.wipe();
    report = await run.report();
    if (linger) await linger(report);
    return report;
  } finally {
    await run.close(report === null);
  }
}
