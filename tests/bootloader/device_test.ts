/**
 * The simulated device's own bookkeeping: power losses that strike while an image runs on trial
 * (the boot ROM reverts such an image, so the fleet must not expect it to have updated).
 */
import assert from "node:assert/strict";
import { OtaImageState } from "../../protocol/ota_pal_status.ts";
import { factoryDevice, testImage } from "../helpers/pki.ts";
import { installUpdate } from "../helpers/update.ts";

Deno.test("device: a power loss during a trial is counted, and the trial reverts; none is counted once confirmed", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  const update = await testImage({ version: "1.1.0", securityCounter: 2 });
  device.powerOff();
  await device.powerOn();
  assert.equal(device.trialsInterrupted, 0, "a confirmed image is not a trial");

  await installUpdate(device, update);
  assert.equal(device.running?.trial, true);
  device.powerOff();
  assert.equal(device.trialsInterrupted, 1);
  await device.powerOn();
  assert.equal(device.running?.version, "1.0.0+0", "the interrupted trial was reverted");
});

Deno.test("device: a power cut by a flash operation during a trial counts as well; a confirmed image's does not", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  await installUpdate(device, await testImage({ version: "1.1.0", securityCounter: 2 }));
  device.cutPowerAt({ atOperation: 1, torn: true });
  assert.throws(() => device.pal.setPlatformImageState(null, OtaImageState.Accepted));
  assert.equal(device.state, "off");
  assert.equal(device.trialsInterrupted, 1, "the torn confirmation left the trial unconfirmed");

  await device.powerOn();
  await installUpdate(device, await testImage({ version: "1.1.0", securityCounter: 2 }));
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
  device.powerOff();
  assert.equal(device.trialsInterrupted, 1, "unchanged: the image had confirmed itself");
});

Deno.test("device: a reset the device makes itself during a trial (a timer, the watchdog) reverts it but is no power loss", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  await installUpdate(device, await testImage({ version: "1.1.0", securityCounter: 2 }));
  assert.equal(device.running?.trial, true);
  await device.reset("self-test timer expired");
  assert.equal(device.running?.version, "1.0.0+0", "the unconfirmed trial was reverted");
  assert.equal(
    device.trialsInterrupted,
    0,
    "the fleet must not excuse this failure as a power cut",
  );
});
