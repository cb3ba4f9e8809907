/**
 * The agent end-to-end rig: a broker (aedes unless told otherwise), the test job/stream
 * responder and one simulated device with its agent runtime.
 */
import type { AgentConfig } from "../../agent/agent_config.ts";
import assert from "node:assert/strict";
import { DeviceRuntime } from "../../agent/device_runtime.ts";
import { fetchHttpPort } from "../../agent/http_fetch.ts";
import { startEmbeddedBroker } from "../../broker/embedded.ts";
import { signData } from "../../protocol/signatures.ts";
import { FwuState } from "../../bootloader/fwu.ts";
import { type Behavior } from "../../bootloader/firmware.ts";
import { factoryDevice, SIGNER_CERT_PATH, smallLayout, testImage, testPki } from "./pki.ts";
import { firmwareJobDocument, TestOtaCloud } from "./ota_cloud.ts";
import { waitUntil } from "./wait.ts";

export const AGENT_TEST_CONFIG = {
  blockSize: 1024,
  blocksPerRequest: 8,
  requestTimeoutMs: 400,
  maxMomentum: 200,
  statusFrequency: 4,
  selfTestTimeoutMs: 15_000,
  statusAckTimeoutMs: 1_000,
  jobRequestBackoffMs: [300, 2_000] as const,
  persistEveryBlocks: 2,
};

export interface Rig {
  readonly cloud: TestOtaCloud;
  readonly runtime: DeviceRuntime;
  readonly thing: string;
  close(): Promise<void>;
}

/** Broker (aedes unless `brokerUrl` is given), test cloud and one device on factory image 1.0.0. */
export async function rig(
  options: {
    brokerUrl?: string;
    http?: boolean;
    factoryVersion?: string;
    agentConfig?: Partial<AgentConfig>;
    watchdogMs?: number;
  } = {},
): Promise<Rig> {
  const embedded = options.brokerUrl ? null : await startEmbeddedBroker();
  const url = options.brokerUrl ?? embedded!.url;
  const cloud = await TestOtaCloud.connect(url);
  const thing = `dev-${crypto.randomUUID().slice(0, 8)}`;
  const { device } = await factoryDevice({
    layout: smallLayout(24),
    systemTime: true,
    factory: { version: options.factoryVersion ?? "1.0.0", securityCounter: 1 },
    ...(options.watchdogMs ? { watchdogMs: options.watchdogMs } : {}),
  });
  const runtime = new DeviceRuntime({
    device,
    thingName: thing,
    brokerUrl: url,
    agentConfig: { ...AGENT_TEST_CONFIG, ...options.agentConfig },
    ...(options.http ? { http: fetchHttpPort } : {}),
  });
  return {
    cloud,
    runtime,
    thing,
    async close() {
      await runtime.stop();
      await cloud.close();
      await embedded?.close();
    },
  };
}

export async function signedUpdate(
  version: string,
  behavior: Behavior = "ok",
  payloadSize = 16 * 1024,
) {
  const image = await testImage({ version, behavior, securityCounter: 2, payloadSize });
  const signature = await signData((await testPki()).signerKeys.privateKey, image);
  return { image, signature };
}

/** Runs the happy path and checks both sides; returns the execution. */
/** Publishes `image` as stream `stream` and creates the job for the rig's device. */
export function startJob(
  r: Rig,
  image: Uint8Array,
  signature: Uint8Array,
  jobId = "job-1",
  stream = "stream-1",
): ReturnType<TestOtaCloud["createJob"]> {
  r.cloud.addStream(stream, new Map([[0, image]]));
  return r.cloud.createJob(
    r.thing,
    jobId,
    firmwareJobDocument({ stream, size: image.length, signature, certFile: SIGNER_CERT_PATH }),
  );
}

export async function happyUpdate(r: Rig, options: { createJobFirst?: boolean } = {}) {
  const { image, signature } = await signedUpdate("1.1.0");
  r.cloud.addStream("stream-1", new Map([[0, image]]));
  const document = firmwareJobDocument({
    stream: "stream-1",
    size: image.length,
    signature,
    certFile: SIGNER_CERT_PATH,
  });
  if (options.createJobFirst) await r.cloud.createJob(r.thing, "job-1", document);
  await r.runtime.start();
  if (!options.createJobFirst) await r.cloud.createJob(r.thing, "job-1", document);
  const execution = r.cloud.execution(r.thing, "job-1");
  await r.cloud.waitFor(() => execution.status === "SUCCEEDED", "SUCCEEDED");
  await waitUntil(
    () =>
      r.runtime.device.running?.trial === false && r.runtime.device.running.version === "1.1.0+0",
    "the image to be confirmed",
  );
  assert.equal(execution.statusDetails.reason, "accepted  v1.1.0");
  const statuses = execution.history.map((h) =>
    h.statusDetails.self_test ?? h.statusDetails.receive ?? h.status
  );
  assert.ok(statuses.includes("ready"), `self_test ready reported: ${statuses}`);
  assert.ok(
    execution.history.some((h) => /^\d+\/17$/.test(h.statusDetails.receive ?? "")),
    "progress reported as received/total",
  );
  assert.equal(r.runtime.device.fwu.state, FwuState.UPDATED);
  assert.equal(r.runtime.device.report().securityCounter, 2);
  return execution;
}
