/**
 * Fail-safe OTA-only mode (#8): a device whose flash holds no image that verifies runs no code
 * from it; its boot ROM's minimal client connects, reports its state (the shadow says
 * "recovery" and why) and takes a signed firmware image through the normal OTA path, after which
 * the device boots that image and confirms it as usual. In recovery it takes firmware only, and
 * the security counter still refuses an image older than the device has accepted.
 * Real broker, job and stream services; the device in-process.
 */
import assert from "node:assert/strict";
import type { FlashArea } from "../../bootloader/flash_area.ts";
import {
  executionEnded,
  type InProcessDevice,
  inProcessDevice,
  type QualificationCloud,
  qualificationCloud,
  withInProcessDevice,
} from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";
import { PLACEHOLDER_SIGNATURE } from "../helpers/pki.ts";

/** Rewrites a few bytes of the stored image's payload, as a flash fault or an attacker would. */
function damage(area: FlashArea): void {
  const sector = 1;
  const bytes = area.read(sector * area.sectorSize, area.sectorSize).slice();
  bytes.set([0xde, 0xad, 0xbe, 0xef], 64);
  area.eraseSector(sector);
  area.program(sector * area.sectorSize, bytes);
}

async function recoveryWorld(
  body: (side: QualificationCloud, rig: InProcessDevice) => Promise<void>,
): Promise<void> {
  const side = await qualificationCloud("MQTT");
  const rig = await inProcessDevice(side);
  await withInProcessDevice(side, rig, async () => {
    // One normal boot first: the factory image's security counter (1) is burnt into the fuses.
    await rig.runtime.start();
    await rig.runtime.stop();
    assert.equal(rig.device.report().securityCounter, 1);
    rig.device.powerOff();
    rig.device.flash.powerOn();
    damage(rig.device.areas.primary);
    rig.device.flash.powerOff();
    await rig.runtime.start();
    assert.equal(rig.device.state, "recovery");
    assert.equal(rig.device.running, null, "nothing from the damaged flash runs");
    await body(side, rig);
  });
}

const ended = executionEnded;

Deno.test("recovery mode: a device with no valid image reports it and is brought back by a signed image over the normal OTA path", async () => {
  await recoveryWorld(async (side, rig) => {
    await waitUntil(
      async () => (await side.cloud.shadows.get(side.thing))?.reported.mode === "recovery",
      "the device to report recovery mode",
    );
    const reported = (await side.cloud.shadows.get(side.thing))!.reported;
    assert.match(String(reported.recoveryReason), /no valid image/);
    assert.equal(reported.firmware ?? null, null, "no firmware runs");

    const jobId = await side.update("rescue", { version: "1.1.0", securityCounter: 1 });
    await waitUntil(ended(side, jobId), "the rescue update to end", 60_000);
    assert.equal((await side.execution(jobId))?.status, "SUCCEEDED");
    await waitUntil(rig.settled, "the device to run the rescue image confirmed");
    assert.equal(rig.device.state, "running");
    assert.equal(rig.device.running?.version, "1.1.0+0");
    assert.ok(rig.logs.some((line) => line.includes("recovery mode (OTA only): no valid image")));
    await waitUntil(
      async () => (await side.cloud.shadows.get(side.thing))?.reported.mode === "application",
      "the shadow to say the application runs again",
    );
    await rig.device.reset("power cycle");
    assert.equal(rig.device.running?.version, "1.1.0+0", "and it stays");
    assert.ok(await rig.bootable());
  });
});

Deno.test("recovery mode: data and bootloader files are REJECTED, an image below the security counter is refused; the device stays in recovery", async () => {
  await recoveryWorld(async (side, rig) => {
    const data = await side.rawJob("data-file", new Uint8Array(64), (file) => ({
      ...file,
      fileType: 3,
      "sig-sha256-ecdsa": PLACEHOLDER_SIGNATURE,
    }));
    await waitUntil(ended(side, data), "the data job to be refused", 60_000);
    assert.equal((await side.execution(data))?.status, "REJECTED");
    assert.match(String((await side.execution(data))?.statusDetails.detail), /recovery mode/);

    // The factory image carried security counter 1: a counter-0 image is older than the device.
    const old = await side.update("too-old", { version: "1.1.0", securityCounter: 0 });
    await waitUntil(ended(side, old), "the old image to be refused", 60_000);
    assert.equal((await side.execution(old))?.status, "FAILED");
    assert.match(
      JSON.stringify((await side.execution(old))?.statusDetails),
      /security counter 0 is below the device's 1/,
    );
    assert.equal(rig.device.state, "recovery");
    assert.equal(rig.device.running, null);
  });
});
