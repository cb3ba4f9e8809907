/**
 * The second-stage bootloader updated over the air (#8): a job of file type 1 carries a signed
 * second stage; the device writes it to its spare stage-2 slot, the first stage boots it once on
 * trial, the application's self-test confirms it. A second stage that crashes is reverted by the
 * first stage, an older one is refused, and a power loss between the confirmation and the report
 * loses nothing. Real broker, real job and stream services, the device in-process.
 */
import assert from "node:assert/strict";
import {
  executionEnded,
  type InProcessDevice,
  inProcessDevice,
  losePowerWithReport,
  type QualificationCloud,
  qualificationCloud,
  withInProcessDevice,
} from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";
import { PLACEHOLDER_SIGNATURE } from "../helpers/pki.ts";

async function twoStageWorld(
  body: (side: QualificationCloud, rig: InProcessDevice) => Promise<void>,
): Promise<void> {
  const side = await qualificationCloud("MQTT");
  const rig = await inProcessDevice(side, undefined, { twoStage: true });
  await withInProcessDevice(side, rig, async () => {
    await rig.runtime.start();
    assert.deepEqual(
      { slot: rig.device.secondStage?.slot, version: rig.device.secondStage?.version },
      { slot: 0, version: "2.0.0+0" },
      "the factory second stage runs from slot A",
    );
    await body(side, rig);
  });
}

const ended = executionEnded;

Deno.test("second stage OTA: downloaded, tried once, confirmed by the self-test; the job SUCCEEDS and later boots keep it", async () => {
  await twoStageWorld(async (side, rig) => {
    const jobId = await side.update("stage2-2-1", { version: "2.1.0", secondStage: "boots" });
    await waitUntil(ended(side, jobId), "the bootloader update to end", 60_000);
    const execution = (await side.execution(jobId))!;
    assert.equal(execution.status, "SUCCEEDED", JSON.stringify(execution.statusDetails));
    assert.equal(execution.statusDetails.reason, "accepted  v2.1.0");
    assert.equal(execution.statusDetails.updatedBy, "0x02010000");
    assert.deepEqual(
      { ...rig.device.secondStage, imageVersion: undefined },
      { slot: 1, version: "2.1.0+0", trial: false, imageVersion: undefined },
    );
    assert.ok(rig.device.bootLogs.flat().some((line) => line.includes("new second stage 2.1.0")));
    assert.equal(rig.device.running?.version, "1.0.0+0", "the firmware was not touched");
    await waitUntil(
      async () =>
        JSON.stringify((await side.cloud.shadows.get(side.thing))?.reported.bootloader) ===
          JSON.stringify({ version: "2.1.0+0", slot: "B", trial: false }),
      "the shadow to report the confirmed bootloader",
    );

    await rig.device.reset("after the bootloader update");
    assert.equal(rig.device.secondStage?.version, "2.1.0+0");
    assert.equal(rig.device.secondStage?.trial, false, "confirmed: no second trial");
    assert.ok(await rig.bootable());
  });
});

Deno.test("second stage OTA: a second stage that crashes is reverted by the first stage and the job FAILS with why", async () => {
  await twoStageWorld(async (side, rig) => {
    const jobId = await side.update("stage2-broken", { version: "2.1.0", secondStage: "crashes" });
    await waitUntil(ended(side, jobId), "the bootloader update to end", 60_000);
    const execution = (await side.execution(jobId))!;
    assert.equal(execution.status, "FAILED");
    assert.match(String(execution.statusDetails.detail), /did not come up/);
    const bootLog = rig.device.bootLogs.flat();
    assert.ok(bootLog.some((line) => line.includes("2.1.0+0 crashed before booting firmware")));
    assert.ok(bootLog.some((line) => line.includes("was not confirmed: back to A")));
    assert.deepEqual(
      { slot: rig.device.secondStage?.slot, version: rig.device.secondStage?.version },
      { slot: 0, version: "2.0.0+0" },
    );
    assert.equal(rig.device.state, "running", "the device never stopped booting");
    assert.ok(await rig.bootable());
  });
});

Deno.test("second stage OTA: an older second stage is REJECTED (the bootloader has its own anti-rollback)", async () => {
  await twoStageWorld(async (side, rig) => {
    const jobId = await side.update("stage2-old", { version: "1.9.0", secondStage: "boots" });
    await waitUntil(ended(side, jobId), "the bootloader update to end", 60_000);
    const execution = (await side.execution(jobId))!;
    assert.equal(execution.status, "REJECTED");
    assert.match(String(execution.statusDetails.detail), /not newer than the running 2\.0\.0/);
    assert.equal(rig.device.secondStage?.version, "2.0.0+0");
    await rig.device.reset("after the refused update");
    assert.equal(rig.device.secondStage?.version, "2.0.0+0", "nothing was left pending");
  });
});

Deno.test("second stage OTA: power lost after the confirmation, before SUCCEEDED reached the cloud: the next boot reports it", async () => {
  await twoStageWorld(async (side, rig) => {
    let jobId = "";
    const cut = losePowerWithReport(side, rig, () => jobId, "SUCCEEDED");
    jobId = await side.update("stage2-cut", { version: "2.1.0", secondStage: "boots" });
    await waitUntil(() => cut() && rig.device.state === "off", "the power to go with the report");
    assert.equal((await side.execution(jobId))?.status, "IN_PROGRESS");

    await rig.runtime.start();
    await waitUntil(ended(side, jobId), "the report after the reboot", 60_000);
    assert.equal((await side.execution(jobId))?.status, "SUCCEEDED");
    assert.ok(rig.logs.some((line) => line.includes("was confirmed before a reset")));
    assert.equal(rig.device.secondStage?.version, "2.1.0+0");
    assert.equal(rig.device.secondStage?.trial, false);
  });
});

Deno.test("second stage OTA: a job that mixes a second stage with a data file and no firmware is REJECTED before anything is downloaded", async () => {
  await twoStageWorld(async (side, rig) => {
    const file = (fileid: number, fileType: number) => ({
      filepath: `file-${fileid}.bin`,
      filesize: 1024,
      fileid,
      certfile: "/certs/ota_signer.pem",
      "sig-sha256-ecdsa": PLACEHOLDER_SIGNATURE,
      fileType,
    });
    const created = await side.cloud.jobs.createJob({
      jobId: "mixed-files",
      document: {
        afr_ota: { protocols: ["MQTT"], streamname: "nowhere", files: [file(0, 1), file(1, 3)] },
      },
      targets: { things: [side.thing] },
    });
    assert.ok(created.ok);
    await waitUntil(ended(side, "mixed-files"), "the job to be refused", 60_000);
    const execution = (await side.execution("mixed-files"))!;
    assert.equal(execution.status, "REJECTED");
    assert.match(
      String(execution.statusDetails.detail),
      /goes alone or with the application it is installed with/,
    );
    assert.equal(rig.device.secondStage?.version, "2.0.0+0");
    assert.equal(rig.device.running?.version, "1.0.0+0");
  });
});

Deno.test("firmware and second stage together: one reboot, both on trial, both confirmed; the job SUCCEEDS and later boots keep both", async () => {
  await twoStageWorld(async (side, rig) => {
    const resetsBefore = rig.device.resets.length;
    const jobId = await side.update("bundle-ok", {
      version: "1.1.0",
      securityCounter: 2,
      withSecondStage: { version: "2.1.0" },
    });
    await waitUntil(ended(side, jobId), "the two-component update to end", 60_000);
    const execution = (await side.execution(jobId))!;
    assert.equal(execution.status, "SUCCEEDED", JSON.stringify(execution.statusDetails));
    // As for any firmware, the device confirms once the cloud has acknowledged SUCCEEDED.
    await waitUntil(
      () => rig.device.running?.trial === false && rig.device.secondStage?.trial === false,
      "the pair to be confirmed",
    );
    assert.deepEqual(
      [rig.device.running?.version, rig.device.running?.trial],
      ["1.1.0+0", false],
    );
    assert.deepEqual(
      [
        rig.device.secondStage?.version,
        rig.device.secondStage?.slot,
        rig.device.secondStage?.trial,
      ],
      ["2.1.0+0", 1, false],
    );
    assert.equal(rig.device.resets.length - resetsBefore, 1, "one reboot for both");
    assert.ok(rig.logs.some((line) => line.includes("staged to go in with the application")));
    await waitUntil(
      async () =>
        JSON.stringify((await side.cloud.shadows.get(side.thing))?.reported.bootloader) ===
          JSON.stringify({ version: "2.1.0+0", slot: "B", trial: false }),
      "the shadow to report the new bootloader",
    );
    await rig.device.reset("after the update");
    assert.equal(
      `${rig.device.running?.version}/${rig.device.secondStage?.version}`,
      "1.1.0+0/2.1.0+0",
    );
  });
});

Deno.test("firmware and second stage together: a second stage that crashes takes the firmware back with it; the job FAILS with why", async () => {
  await twoStageWorld(async (side, rig) => {
    const jobId = await side.update("bundle-crash", {
      version: "1.1.0",
      securityCounter: 2,
      withSecondStage: { version: "2.1.0", behavior: "crashes" },
    });
    await waitUntil(ended(side, jobId), "the two-component update to end", 60_000);
    const execution = (await side.execution(jobId))!;
    assert.equal(execution.status, "FAILED");
    assert.match(
      String(execution.statusDetails.detail),
      /needs second-stage bootloader 2\.1\.0\+0 or later, runs 2\.0\.0\+0/,
    );
    assert.equal(
      `${rig.device.running?.version}/${rig.device.secondStage?.version}`,
      "1.0.0+0/2.0.0+0",
    );
    assert.equal(rig.device.running?.trial, false);
    assert.equal(rig.device.secondStage?.trial, false);
    await rig.device.reset("after the failed update");
    assert.equal(
      `${rig.device.running?.version}/${rig.device.secondStage?.version}`,
      "1.0.0+0/2.0.0+0",
    );
  });
});

Deno.test("firmware and second stage together: SUCCEEDED lands but the power goes before the confirmation: both revert, then both are installed again", async () => {
  await twoStageWorld(async (side, rig) => {
    let jobId = "";
    let cut = false;
    const broker = side.cloud.broker!.broker;
    broker.authorizePublish = ((original) =>
    // deno-lint-ignore no-explicit-any
    (client: any, packet: any, callback: (error?: Error | null) => void) => {
      if (
        !cut && packet.topic === `$aws/things/${side.thing}/jobs/${jobId}/update` &&
        String(packet.payload).includes('"SUCCEEDED"')
      ) {
        // The report goes through; the device loses its power right after sending it.
        cut = true;
        queueMicrotask(() => rig.device.powerOff());
      }
      return original(client, packet, callback);
    })(broker.authorizePublish);
    jobId = await side.update("bundle-cut", {
      version: "1.1.0",
      securityCounter: 2,
      withSecondStage: { version: "2.1.0" },
    });
    await waitUntil(() => cut && rig.device.state === "off", "the power to go with the report");
    await waitUntil(
      async () => (await side.execution(jobId))?.status === "SUCCEEDED",
      "the report to land",
    );
    await rig.runtime.start();
    await waitUntil(
      () =>
        rig.device.running?.version === "1.1.0+0" && rig.device.running.trial === false &&
        rig.device.secondStage?.version === "2.1.0+0" && rig.device.secondStage.trial === false,
      "both to be installed again and confirmed",
      60_000,
    );
    assert.ok(
      rig.device.bootLogs.flat().some((line) => line.includes("was not confirmed: back to A")),
      "the unconfirmed pair went back first",
    );
    assert.ok(rig.logs.some((line) => line.includes("installing it again")));
    await rig.device.reset("after the update");
    assert.equal(
      `${rig.device.running?.version}/${rig.device.secondStage?.version}`,
      "1.1.0+0/2.1.0+0",
    );
  });
});

Deno.test("second stage OTA: the cloud puts fileType in the job document and refuses one outside 0..255", async () => {
  const side = await qualificationCloud("MQTT");
  try {
    const jobId = await side.update("stage2-doc", { version: "2.1.0", secondStage: "boots" });
    const document = (await side.cloud.store.getJob(jobId))!.spec.document as {
      afr_ota: { files: { fileType?: number; filepath: string }[] };
    };
    assert.deepEqual(
      document.afr_ota.files.map((f) => [f.fileType, f.filepath]),
      [[1, "file-type-1.bin"]],
    );
    for (const fileType of [-1, 256, 1.5]) {
      const refused = await side.cloud.otaUpdates.createOtaUpdate({
        otaUpdateId: `bad-type-${String(fileType).replace(".", "-")}`,
        payload: btoa("x"),
        version: "2.1.0",
        securityCounter: 1,
        signingProfile: "release",
        certFile: "/certs/ota_signer.pem",
        targets: { things: [side.thing] },
        fileType,
      });
      assert.deepEqual(refused, { ok: false, reason: "fileType must be an integer 0..255" });
    }
  } finally {
    await side.close();
  }
});
