/**
 * The world of the OTA end-to-end qualification cases: the real cloud (embedded aedes over TCP,
 * job, stream and file services, OTA-update manager, operator API serving pre-signed URLs) and
 * one device actor in its own Web Worker, on factory image 1.0.0 with security counter 1.
 *
 * @module
 */
import { toBase64 } from "../../lib/base64.ts";
import mqtt from "mqtt";
import type { AgentConfig } from "../../agent/agent_config.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { pemEncode, signData } from "../../protocol/signatures.ts";
import { type Behavior, buildFirmware } from "../../bootloader/firmware.ts";
import { type Cloud, startCloud } from "../../broker/cloud.ts";
import type { ExecutionRecord } from "../../broker/store.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import type { DeviceReport } from "../../fleet/worker_messages.ts";
import { FleetSupervisor } from "../../fleet/supervisor.ts";
import { settledTelemetry } from "../../fleet/device_actor.ts";
import { AGENT_TEST_CONFIG } from "./agent_rig.ts";
import {
  factoryDevice,
  releaseProfile,
  secondStageImage,
  SIGNER_CERT_PATH,
  smallLayout,
  testImage,
  testPki,
} from "./pki.ts";
import { waitUntil } from "./wait.ts";
import { type Clock, systemClock, type TimerId } from "../../lib/clock.ts";
import { DeviceRuntime } from "../../agent/device_runtime.ts";
import { fetchHttpPort } from "../../agent/http_fetch.ts";
import {
  SECOND_STAGE_FILE_TYPE,
  type SecondStageBehavior,
  secondStagePayload,
} from "../../bootloader/first_stage.ts";
import type { Device } from "../../bootloader/device.ts";
import { fwuStateName } from "../../bootloader/fwu.ts";
import { bootsTrustedImage } from "../../bootloader/bootability.ts";
import { type OtaUpdateRequest } from "../../broker/ota_updates.ts";

/** Real time, plus an offset a test moves forward (an expiry passing without waiting for it). */
export class ManualOffsetClock implements Clock {
  #offset = 0;
  /** Moves this clock `ms` ahead of real time. */
  advance(ms: number): void {
    this.#offset += ms;
  }
  now(): number {
    return systemClock.now() + this.#offset;
  }
  setTimer(ms: number, callback: () => void): TimerId {
    return systemClock.setTimer(ms, callback);
  }
  clearTimer(id: TimerId): void {
    systemClock.clearTimer(id);
  }
}

/** The data plane a case runs over. */
export type DataProtocol = "MQTT" | "HTTP";

/** Payload size of every test image (16 KiB: 16 blocks of 1 KiB). */
export const IMAGE_PAYLOAD = 16 * 1024;
const THING = "qualified-device";
const SECRET = "qualified-secret";

/** The cloud side of a qualification world, serving one device (`thing`). */
export interface QualificationCloud {
  readonly cloud: Cloud;
  readonly thing: string;
  /** The device's password. */
  readonly secret: string;
  readonly protocol: DataProtocol;
  /** The cloud's clock: real time plus whatever a case jumps it ahead by. */
  readonly clock: ManualOffsetClock;
  /** Creates an OTA update of a payload signed by the cloud's signing profile; returns the job id. */
  update(
    id: string,
    options: {
      version: string;
      securityCounter?: number;
      behavior?: Behavior;
      presignedUrlExpirySeconds?: number;
      inProgressTimeoutInMinutes?: number;
      /** Publish a second-stage bootloader that behaves so (file type 1) instead of firmware. */
      secondStage?: SecondStageBehavior;
      /** The board the image is built for (its HARDWARE_ID TLV). */
      hardwareId?: string;
      /** The job's download-rate floor (slow retrieval). */
      minimumRate?: OtaUpdateRequest["minimumRate"];
      /** Ship this second stage (signed by the test signer) with the firmware, installed together. */
      withSecondStage?: { readonly version: string; readonly behavior?: SecondStageBehavior };
      /** Other targets than the qualification device. */
      targets?: OtaUpdateRequest["targets"];
      rollout?: OtaUpdateRequest["rollout"];
    },
  ): Promise<string>;
  /**
   * Publishes a job whose file the cloud did not sign or check (a compromised or mistaken cloud):
   * `document` rewrites the file entry of the job document.
   */
  rawJob(
    id: string,
    image: Uint8Array,
    file: (entry: Record<string, unknown>) => Record<string, unknown>,
  ): Promise<string>;
  /** The image bytes a job published (what a device that completed it must run). */
  published(jobId: string): Promise<Uint8Array>;
  /** The device's execution of a job. */
  execution(jobId: string): Promise<ExecutionRecord | null>;
  /** The device's executions in progress right now (an agent works on at most one). */
  inProgress(): Promise<number>;
  close(): Promise<void>;
}

/** One qualification world: the cloud and the device in its Worker. */
export interface QualificationWorld extends QualificationCloud {
  readonly fleet: FleetSupervisor;
  /** The device's log lines (boot, agent), for a failing case to show. */
  readonly logs: readonly string[];
  /** How many times the device's MQTT connection was closed so far. */
  disconnects(): number;
  /**
   * Waits until the device runs a confirmed image with no update under way, a refused one cleaned
   * away (FAILED lasts until the agent aborts the staged image).
   */
  settled(): Promise<void>;
  /** Waits for the execution to reach `status` (and the job to settle on the device). */
  ended(jobId: string, status: string): Promise<ExecutionRecord>;
  /** The device's state, read from its Worker (flash trailers, counter, running image). */
  device(): Promise<DeviceReport>;
}

/**
 * Starts the cloud: broker, services, operator API for pre-signed URLs, the "release" signing
 * profile and the device's thing in group "fleet".
 */
export async function qualificationCloud(protocol: DataProtocol): Promise<QualificationCloud> {
  const clock = new ManualOffsetClock();
  const cloud = await startCloud({ tickMs: 100, clock });
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: "qualification-token" }),
  );
  cloud.files.baseUrl = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  const profile = await cloud.otaUpdates.createSigningProfile(await releaseProfile());
  if (!profile.ok) throw new Error(profile.reason);
  await cloud.provisionThing(THING, SECRET);
  await cloud.jobs.addThingToGroup("fleet", THING);
  const files = new Map<string, string>();
  const execution = (jobId: string) => cloud.store.getExecution(jobId, THING);
  return {
    cloud,
    thing: THING,
    secret: SECRET,
    protocol,
    clock,
    async update(id, options) {
      const created = await cloud.otaUpdates.createOtaUpdate({
        otaUpdateId: id,
        payload: toBase64(
          options.secondStage
            ? secondStagePayload(options.version, options.secondStage)
            : buildFirmware(
              { behavior: options.behavior ?? "ok", version: options.version },
              IMAGE_PAYLOAD,
            ),
        ),
        ...(options.secondStage ? { fileType: SECOND_STAGE_FILE_TYPE } : {}),
        ...(options.hardwareId !== undefined ? { hardwareId: options.hardwareId } : {}),
        ...(options.minimumRate ? { minimumRate: options.minimumRate } : {}),
        ...(options.withSecondStage
          ? {
            extraFiles: [{
              fileType: SECOND_STAGE_FILE_TYPE,
              filePath: "stage2.img",
              data: toBase64(
                await secondStageImage(
                  options.withSecondStage.version,
                  "trusted",
                  options.withSecondStage.behavior,
                ),
              ),
            }],
          }
          : {}),
        version: options.version,
        securityCounter: options.securityCounter ?? 1,
        signingProfile: "release",
        certFile: SIGNER_CERT_PATH,
        targets: options.targets ?? { things: [THING] },
        ...(options.rollout ? { rollout: options.rollout } : {}),
        protocols: [protocol],
        ...(options.presignedUrlExpirySeconds
          ? { presignedUrlExpirySeconds: options.presignedUrlExpirySeconds }
          : {}),
        ...(options.inProgressTimeoutInMinutes
          ? { timeout: { inProgressTimeoutInMinutes: options.inProgressTimeoutInMinutes } }
          : {}),
      });
      if (!created.ok) throw new Error(created.reason);
      files.set(created.value.jobId, created.value.fileKey);
      return created.value.jobId;
    },
    async rawJob(id, image, file) {
      const jobId = `AFR_OTA-${id}`;
      const fileKey = `raw-${id}.bin`;
      await cloud.store.putFile(fileKey, image);
      files.set(jobId, fileKey);
      cloud.streams.addStream(jobId, new Map([[0, image]]));
      const entry: Record<string, unknown> = {
        filepath: "firmware.bin",
        filesize: image.length,
        fileid: 0,
        certfile: SIGNER_CERT_PATH,
      };
      if (protocol === "HTTP") {
        entry.update_data_url = `\${ota:presigned-url:${fileKey}:300}`;
        entry.auth_scheme = "aws.s3.presigned";
      }
      const created = await cloud.jobs.createJob({
        jobId,
        document: {
          afr_ota: {
            protocols: [protocol],
            ...(protocol === "MQTT" ? { streamname: jobId } : {}),
            files: [file(entry)],
          },
        },
        targets: { things: [THING] },
      });
      if (!created.ok) throw new Error(created.reason);
      return jobId;
    },
    async published(jobId) {
      const bytes = await cloud.store.getFile(files.get(jobId) ?? "");
      if (!bytes) throw new Error(`no image published for ${jobId}`);
      return bytes;
    },
    execution,
    inProgress: async () =>
      (await cloud.store.executionsOfThing(THING)).filter((e) => e.status === "IN_PROGRESS").length,
    async close() {
      await server.shutdown();
      await cloud.close();
    },
  };
}

/** Starts the cloud and the device; the device boots 1.0.0 and waits for jobs. */
export async function qualificationWorld(
  protocol: DataProtocol,
  agentConfig: Partial<AgentConfig> = {},
  options: {
    /** More certificates in the device's store, beside the trusted signer's: [path, PEM]. */
    readonly deviceCertificates?: readonly (readonly [string, string])[];
  } = {},
): Promise<QualificationWorld> {
  const pki = await testPki();
  const side = await qualificationCloud(protocol);
  const { cloud } = side;
  let disconnects = 0;
  cloud.broker?.broker.on("clientDisconnect", (client: { id: string }) => {
    if (client.id === THING) disconnects++;
  });
  const signerPem = pemEncode("CERTIFICATE", certificateDer(pki.signer));
  const logs: string[] = [];
  const fleet = new FleetSupervisor({
    log: (line) => logs.push(line),
    devicesPerWorker: 1,
    init: {
      slotSectors: 24,
      rootCertificateDer: certificateDer(pki.root),
      certificates: [[SIGNER_CERT_PATH, signerPem], ...(options.deviceCertificates ?? [])],
      factoryImage: await testImage({ version: "1.0.0", payloadSize: IMAGE_PAYLOAD }),
      brokerUrls: [cloud.url],
      timeScale: 1,
      agentConfig: { ...AGENT_TEST_CONFIG, preferredProtocol: protocol, ...agentConfig },
      seed: 1,
      telemetryMs: 50,
      deviceLogs: true,
    },
  });
  await fleet.start([{ thing: THING, secret: SECRET, seed: 7 }]);
  await waitUntil(
    () => fleet.telemetry.get(THING)?.state === "running" && cloud.broker !== null,
    "the device to boot 1.0.0",
  );
  const execution = side.execution;
  const device = async () => (await fleet.report())[0]!;
  const settled = () =>
    waitUntil(
      () => {
        const t = fleet.telemetry.get(THING);
        return t !== undefined && settledTelemetry(t) && t.updateState !== "FAILED";
      },
      "the device to settle",
      60_000,
    );
  return {
    ...side,
    fleet,
    logs,
    disconnects: () => disconnects,
    execution,
    settled,
    async ended(jobId, status) {
      await waitUntil(
        async () => (await execution(jobId))?.status === status,
        `${jobId} to be ${status}`,
      );
      await settled();
      return (await execution(jobId))!;
    },
    device,
    async close() {
      await fleet.stop();
      await side.close();
    },
  };
}

/** An image signed by the trusted signer, with its detached signature (base64). */
export async function signedImage(
  options: { version: string; securityCounter?: number; signer?: "trusted" | "rogue" },
): Promise<{ image: Uint8Array; signature: string }> {
  const pki = await testPki();
  const image = await testImage({
    version: options.version,
    securityCounter: options.securityCounter ?? 1,
    payloadSize: IMAGE_PAYLOAD,
    signer: options.signer ?? "trusted",
  });
  const key = options.signer === "rogue" ? pki.rogueKeys : pki.signerKeys;
  return { image, signature: toBase64(await signData(key.privateKey, image)) };
}

/**
 * Takes the device's MQTT session over with its own client id and credentials, as AWS IoT Core's
 * qualification does to disconnect a device, then lets go.
 */
export async function takeOverSession(world: QualificationWorld): Promise<void> {
  const intruder = await mqtt.connectAsync(world.cloud.url, {
    clientId: world.thing,
    username: world.thing,
    password: world.secret,
    reconnectPeriod: 0,
  });
  await intruder.endAsync();
}

/** A device run in the test's own thread against a {@linkcode QualificationCloud}. */
export interface InProcessDevice {
  readonly device: Device;
  readonly runtime: DeviceRuntime;
  readonly logs: string[];
  /** Whether the flash boots an image from the trusted signer (a boot ROM run on a clone). */
  bootable(): Promise<boolean>;
  /** Whether it runs a confirmed image with no update under way. */
  settled(): boolean;
}

/**
 * Builds (powered off) the qualification device in-process, so a test can sit between its
 * socket and its agent (`messageFilter`: return the payload to deliver it, null to hold or drop
 * it; `deliver` hands a held message to the agent that was running when it arrived).
 */
export async function inProcessDevice(
  side: QualificationCloud,
  messageFilter?: (
    topic: string,
    payload: Uint8Array,
    deliver: (bytes: Uint8Array) => void,
  ) => Uint8Array | null,
  options: { readonly twoStage?: boolean; readonly agentConfig?: Partial<AgentConfig> } = {},
): Promise<InProcessDevice> {
  const layout = smallLayout(24);
  const { device, pki } = await factoryDevice({
    layout,
    systemTime: true,
    twoStage: options.twoStage ?? false,
    factory: { version: "1.0.0", securityCounter: 1, payloadSize: IMAGE_PAYLOAD },
  });
  const logs: string[] = [];
  const runtime: DeviceRuntime = new DeviceRuntime({
    device,
    thingName: side.thing,
    brokerUrl: side.cloud.url,
    agentConfig: { ...AGENT_TEST_CONFIG, preferredProtocol: side.protocol, ...options.agentConfig },
    mqttOptions: { username: side.thing, password: side.secret, reconnectPeriod: 200 },
    http: fetchHttpPort,
    log: (line) => logs.push(line),
    ...(messageFilter
      ? {
        messageFilter: (topic: string, payload: Uint8Array) => {
          const agent = runtime.agent;
          return messageFilter(topic, payload, (bytes) => {
            // After a reboot a new agent runs that never asked for this message.
            if (agent && runtime.agent === agent) agent.handleMessage(topic, bytes);
          });
        },
      }
      : {}),
  });
  return {
    device,
    runtime,
    logs,
    bootable: () => bootsTrustedImage(device.flash, layout, pki.rom, systemClock),
    settled: () =>
      device.state === "running" && device.running?.trial === false &&
      ["READY", "UPDATED"].includes(fwuStateName(device.fwu.state)),
  };
}

/** Runs `body`, shows the device's log if it fails, and stops the device and the cloud. */
export async function withInProcessDevice(
  side: QualificationCloud,
  rig: InProcessDevice,
  body: () => Promise<void>,
): Promise<void> {
  try {
    await body();
  } catch (error) {
    console.log(rig.logs.join("\n"));
    throw error;
  } finally {
    await rig.runtime.stop();
    await side.close();
  }
}

/** A condition: the device's execution of `jobId` ended (SUCCEEDED, FAILED or REJECTED). */
export const executionEnded =
  (side: QualificationCloud, jobId: string) => async (): Promise<boolean> =>
    ["SUCCEEDED", "FAILED", "REJECTED"].includes((await side.execution(jobId))?.status ?? "");

/**
 * The device loses power as it sends `status` for the job `jobId()` names: the broker drops that
 * report (the cloud never hears it) and the device goes off. Returns whether it happened yet.
 */
export function losePowerWithReport(
  side: QualificationCloud,
  rig: InProcessDevice,
  jobId: () => string,
  status: string,
): () => boolean {
  let cut = false;
  const broker = side.cloud.broker!.broker;
  broker.authorizePublish = ((original) =>
  // deno-lint-ignore no-explicit-any
  (client: any, packet: any, callback: (error?: Error | null) => void) => {
    if (
      !cut && packet.topic === `$aws/things/${side.thing}/jobs/${jobId()}/update` &&
      String(packet.payload).includes(`"${status}"`)
    ) {
      cut = true;
      queueMicrotask(() => rig.device.powerOff());
      return callback(new Error("lost with the power"));
    }
    return original(client, packet, callback);
  })(broker.authorizePublish);
  return () => cut;
}
