/**
 * The OTA end-to-end qualification cases (seed 001, table "E2E test cases"), each named after
 * its case and registered once per data protocol by the test files beside this one. Each checks
 * both sides: the job execution's final status and reason in the job service, and the device's
 * running version, slots and security counter as its Worker reads them from flash.
 *
 * @module
 */
import assert from "node:assert/strict";
import { toBase64 } from "../../lib/base64.ts";
import { OtaPalMainStatus } from "../../protocol/ota_pal_status.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { pemEncode, signData } from "../../protocol/signatures.ts";
import {
  type DataProtocol,
  type QualificationWorld,
  qualificationWorld,
  signedImage,
  takeOverSession,
} from "../helpers/qualification.ts";
import { testPki } from "../helpers/pki.ts";
import { waitUntil } from "../helpers/wait.ts";
import type { ExecutionRecord } from "../../broker/store.ts";

/** One qualification case. */
export interface QualificationCase {
  readonly name: string;
  /** Protocols it applies to. */
  readonly protocols: readonly DataProtocol[];
  readonly agentConfig?: Record<string, number>;
  run(world: QualificationWorld): Promise<void>;
}

const hex8 = (n: number) => `0x${n.toString(16).padStart(8, "0")}`;

/** The device settled on `version`, confirmed, with `counter`; its staging slot is clean. */
async function deviceRuns(world: QualificationWorld, version: string, counter: number) {
  const report = await world.device();
  assert.equal(report.telemetry.version, version);
  assert.equal(report.device.running?.trial, false, "the running image is confirmed");
  assert.equal(report.device.securityCounter, counter);
  assert.ok(report.bootable, "the flash boots a trusted image");
  return report;
}

/** A refused update: the device never left 1.0.0 (its primary slot was never swapped). */
async function untouched(world: QualificationWorld) {
  const report = await deviceRuns(world, "1.0.0+0", 1);
  assert.equal(report.device.primary.magic, "unset", "the factory slot was never swapped");
  assert.equal(report.device.updateState, "READY", "nothing is left staged");
}

/**
 * Ships a trusted 1.1.0 image in a job the cloud did not sign, with the signature entry `sign`
 * makes for it (a compromised cloud, or a man in the middle).
 */
async function unsignedJob(
  world: QualificationWorld,
  id: string,
  sign: (image: Uint8Array) => Promise<Record<string, unknown>>,
): Promise<string> {
  const { image } = await signedImage({ version: "1.1.0", securityCounter: 2 });
  const entry = await sign(image);
  return await world.rawJob(id, image, (base) => ({ ...base, ...entry }));
}

/** The device refused the image's signature, said so, and never left 1.0.0. */
async function signatureRefused(world: QualificationWorld, execution: ExecutionRecord) {
  assert.match(
    execution.statusDetails.reason ?? "",
    new RegExp(`^${hex8(OtaPalMainStatus.SignatureCheckFailed)}:`),
  );
  await untouched(world);
}

export const CASES: readonly QualificationCase[] = [
  {
    name: "OTAE2EGreaterVersion",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      const jobId = await world.update("greater", { version: "1.1.0", securityCounter: 2 });
      const execution = await world.ended(jobId, "SUCCEEDED");
      assert.equal(execution.statusDetails.reason, "accepted  v1.1.0");
      const report = await deviceRuns(world, "1.1.0+0", 2);
      assert.equal(report.device.primary.magic, "good", "the new image came in by a swap");
      assert.equal(report.device.primary.imageOk, "set");
      assert.equal(report.device.updateState, "UPDATED");
    },
  },
  {
    name: "OTAE2EBackToBackDownloads",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      for (const [i, version] of ["1.1.0", "1.2.0", "1.3.0"].entries()) {
        const jobId = await world.update(`back-${i}`, { version, securityCounter: 2 + i });
        const execution = await world.ended(jobId, "SUCCEEDED");
        assert.equal(execution.statusDetails.reason, `accepted  v${version}`);
        await deviceRuns(world, `${version}+0`, 2 + i);
      }
    },
  },
  {
    name: "OTAE2ERollbackIfUnableToConnectAfterUpdate",
    protocols: ["MQTT", "HTTP"],
    agentConfig: { selfTestTimeoutMs: 1_000 },
    async run(world) {
      const jobId = await world.update("no-network", {
        version: "1.1.0",
        securityCounter: 2,
        behavior: "no-network",
      });
      const execution = await world.ended(jobId, "FAILED");
      assert.equal(execution.statusDetails.reason, "rejected: 0x00000010");
      assert.match(execution.statusDetails.detail ?? "", /trial image was not confirmed: reverted/);
      const report = await deviceRuns(world, "1.0.0+0", 1);
      assert.ok(
        report.device.lastBootLog.some((line) => /revert/.test(line)),
        report.device.lastBootLog.join("\n"),
      );
      assert.equal(report.device.primary.imageOk, "set", "the revert left 1.0.0 confirmed");
      assert.ok(report.device.lastBootLog.some((line) => /revert/.test(line)));
      assert.equal(report.device.updateState, "READY", "the refused image is gone");
    },
  },
  {
    name: "OTAE2ESameVersion",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      const jobId = await world.update("same", { version: "1.0.0", securityCounter: 1 });
      const execution = await world.ended(jobId, "REJECTED");
      assert.equal(execution.statusDetails.reason, "rejected: 0x00000010");
      await untouched(world);
    },
  },
  {
    name: "OTAE2EPreviousVersion",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      const jobId = await world.update("previous", { version: "0.9.0", securityCounter: 1 });
      const execution = await world.ended(jobId, "REJECTED");
      assert.equal(execution.statusDetails.reason, "rejected: 0x0000000f");
      await untouched(world);
    },
  },
  {
    name: "OTAE2EUnsignedImage",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      // The job document's signature is the trusted signer's, over other bytes: the image
      // itself was never signed as shipped.
      const pki = await testPki();
      const jobId = await unsignedJob(world, "unsigned", async () => ({
        "sig-sha256-ecdsa": toBase64(
          await signData(pki.signerKeys.privateKey, new TextEncoder().encode("something else")),
        ),
      }));
      await signatureRefused(world, await world.ended(jobId, "FAILED"));
    },
  },
  {
    name: "OTAE2EUntrustedCertificate",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      // Signed, consistently, by a signer from another root. The cloud refuses to create it (the
      // signer does not chain to the devices' root); shipped anyway (a compromised cloud), the
      // device checks it against the certificate it trusts and refuses it too.
      const pki = await testPki();
      const { image, signature } = await signedImage({
        version: "1.1.0",
        securityCounter: 2,
        signer: "rogue",
      });
      const refused = await world.cloud.otaUpdates.createOtaUpdate({
        otaUpdateId: "untrusted",
        image: toBase64(image),
        signature,
        certificatePem: pemEncode("CERTIFICATE", certificateDer(pki.rogue)),
        rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
        certFile: "/certs/ota_signer.pem",
        targets: { things: [world.thing] },
        protocols: [world.protocol],
      });
      assert.equal(refused.ok, false);
      assert.match(
        refused.ok ? "" : refused.reason,
        /signature does not verify against the trusted root/,
      );
      const jobId = await world.rawJob("untrusted", image, (entry) => ({
        ...entry,
        "sig-sha256-ecdsa": signature,
      }));
      await signatureRefused(world, await world.ended(jobId, "FAILED"));
    },
  },
  {
    name: "OTAE2EIncorrectSigningAlgorithm",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      const pki = await testPki();
      const jobId = await unsignedJob(world, "rsa", async (image) => ({
        "sig-sha256-rsa": toBase64(await signData(pki.signerKeys.privateKey, image)),
      }));
      const execution = await world.ended(jobId, "REJECTED");
      assert.match(
        execution.statusDetails.detail ?? "",
        /unsupported signature algorithm 'sig-sha256-rsa'/,
      );
      await signatureRefused(world, execution);
    },
  },
  {
    name: "OTAE2EDisconnectResume",
    protocols: ["MQTT", "HTTP"],
    // Small requests, so that what a resume re-fetches (one request's worth at most) cannot be
    // mistaken for a restart from block 0.
    agentConfig: { blocksPerRequest: 2 },
    async run(world) {
      const jobId = await world.update("resume", { version: "1.1.0", securityCounter: 2 });
      const blocks = Math.ceil((await world.cloud.otaUpdates.describe("resume"))!.fileSize / 1024);
      const delivered = () => world.cloud.streams.stats.blocksSent + world.cloud.files.served;
      await waitUntil(() => delivered() >= blocks / 2, "half the image to be delivered");
      const before = world.disconnects();
      await takeOverSession(world);
      const execution = await world.ended(jobId, "SUCCEEDED");
      assert.ok(world.disconnects() > before, "the takeover disconnected the device");
      assert.equal(execution.statusDetails.reason, "accepted  v1.1.0");
      await deviceRuns(world, "1.1.0+0", 2);
      // Resumed, not restarted: a restart would send the first half again.
      assert.ok(delivered() < blocks * 1.5, `${delivered()} blocks for a ${blocks}-block image`);
    },
  },
  {
    name: "OTAE2EDisconnectCancelUpdate",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      const first = await world.update("cancel-me", { version: "1.1.0", securityCounter: 2 });
      await waitUntil(
        async () => (await world.execution(first))?.status === "IN_PROGRESS",
        "the download",
      );
      await takeOverSession(world);
      assert.ok(
        (await world.cloud.jobs.cancelJob(first, { force: true, reason: "canceled in test" })).ok,
      );
      const second = await world.update("after-cancel", { version: "1.2.0", securityCounter: 3 });
      const execution = await world.ended(second, "SUCCEEDED");
      assert.equal(execution.statusDetails.reason, "accepted  v1.2.0");
      assert.equal((await world.execution(first))?.status, "CANCELED");
      await deviceRuns(world, "1.2.0+0", 3);
    },
  },
  {
    name: "OTAE2EPresignedUrlExpired",
    protocols: ["HTTP"],
    async run(world) {
      const jobId = await world.update("expiring", {
        version: "1.1.0",
        securityCounter: 2,
        presignedUrlExpirySeconds: 60,
      });
      await waitUntil(() => world.cloud.files.served >= 2, "the download to be under way");
      // The URL's hour is up: the cloud's clock jumps past its expiry.
      world.clock.advance(61_000);
      const execution = await world.ended(jobId, "SUCCEEDED");
      assert.ok(world.cloud.files.refused >= 1, "the expired URL was refused");
      assert.equal(execution.statusDetails.reason, "accepted  v1.1.0");
      await deviceRuns(world, "1.1.0+0", 2);
    },
  },
  {
    name: "OTAE2E2UpdatesCancel1st",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      const first = await world.update("first", { version: "1.1.0", securityCounter: 2 });
      const second = await world.update("second", { version: "1.2.0", securityCounter: 3 });
      await waitUntil(
        async () => (await world.execution(first))?.status === "IN_PROGRESS",
        "the download",
      );
      assert.ok(
        (await world.cloud.jobs.cancelJob(first, { force: true, reason: "canceled in test" })).ok,
      );
      const execution = await world.ended(second, "SUCCEEDED");
      assert.equal(execution.statusDetails.reason, "accepted  v1.2.0");
      assert.equal((await world.execution(first))?.status, "CANCELED");
      await deviceRuns(world, "1.2.0+0", 3);
    },
  },
  {
    name: "OTAE2ECancelThenUpdate",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      const first = await world.update("canceled", { version: "1.1.0", securityCounter: 2 });
      await waitUntil(
        async () => (await world.execution(first))?.status === "IN_PROGRESS",
        "the download",
      );
      assert.ok(
        (await world.cloud.jobs.cancelJob(first, { force: true, reason: "canceled in test" })).ok,
      );
      const second = await world.update("then", { version: "1.1.0", securityCounter: 2 });
      const execution = await world.ended(second, "SUCCEEDED");
      assert.equal(execution.statusDetails.reason, "accepted  v1.1.0");
      assert.equal((await world.execution(first))?.status, "CANCELED");
      await deviceRuns(world, "1.1.0+0", 2);
    },
  },
  {
    name: "OTAE2EImageCrashed",
    protocols: ["MQTT", "HTTP"],
    async run(world) {
      const jobId = await world.update("crash", {
        version: "1.1.0",
        securityCounter: 2,
        behavior: "crash-on-boot",
      });
      const execution = await world.ended(jobId, "FAILED");
      assert.equal(execution.statusDetails.reason, "rejected: 0x00000010");
      assert.match(execution.statusDetails.detail ?? "", /trial image was not confirmed: reverted/);
      const report = await deviceRuns(world, "1.0.0+0", 1);
      assert.equal(report.device.primary.imageOk, "set", "the revert left 1.0.0 confirmed");
      assert.ok(report.device.lastBootLog.some((line) => /revert/.test(line)));
      assert.equal(report.device.updateState, "READY", "the refused image is gone");
    },
  },
];

/** Registers every case that applies to `protocol` as a Deno test. */
export function registerCases(protocol: DataProtocol): void {
  for (const testCase of CASES) {
    if (!testCase.protocols.includes(protocol)) continue;
    Deno.test(`${testCase.name} (${protocol})`, async () => {
      const world = await qualificationWorld(protocol, testCase.agentConfig ?? {});
      try {
        await testCase.run(world);
      } catch (error) {
        console.log(world.logs.join("\n"));
        throw error;
      } finally {
        await world.close();
      }
    });
  }
}
