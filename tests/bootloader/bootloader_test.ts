import assert from "node:assert/strict";
import { FwuState } from "../../bootloader/fwu.ts";
import { OtaImageState } from "../../protocol/ota_pal_status.ts";
import { PsaStatus } from "../../bootloader/psa_status.ts";
import { factoryDevice, testImage, withAlteredSignature } from "../helpers/pki.ts";
import { installUpdate, plantCandidate } from "../helpers/update.ts";

Deno.test("boot() runs a factory image and locks its security counter into the fuses", async () => {
  const { device } = await factoryDevice({ factory: { version: "1.0.0", securityCounter: 2 } });
  const outcome = await device.powerOn();
  assert.equal(outcome.kind, "run");
  assert.equal(device.running?.version, "1.0.0+0");
  assert.equal(device.running?.trial, false);
  assert.equal(device.report().securityCounter, 2);
  assert.equal(device.fwu.state, FwuState.READY);
});

Deno.test("an update boots once as a test and stays after it confirms itself", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  await installUpdate(device, await testImage({ version: "1.1.0", securityCounter: 3 }));
  assert.equal(device.running?.version, "1.1.0+0");
  assert.equal(device.running?.trial, true);
  assert.equal(device.fwu.state, FwuState.TRIAL);
  assert.equal(device.report().securityCounter, 1, "counter must not rise before confirmation");
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), 0);
  assert.equal(device.fwu.state, FwuState.UPDATED);
  assert.equal(device.report().securityCounter, 3);
  await device.reset("power cycle");
  assert.equal(device.running?.version, "1.1.0+0");
  assert.equal(device.running?.trial, false);
});

Deno.test("an update that is not confirmed before the next reset is reverted", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  await installUpdate(device, await testImage({ version: "1.1.0" }));
  await device.reset("power cycle during the test");
  assert.equal(device.running?.version, "1.0.0+0");
  assert.equal(device.running?.trial, false);
  const info = device.fwu.query(0).info!;
  assert.equal(info.state, FwuState.FAILED);
  assert.match(info.errorDetail ?? "", /not confirmed/);
  await device.reset("again");
  assert.equal(device.running?.version, "1.0.0+0", "no ping-pong after a revert");
});

Deno.test("an image that crashes on boot is reverted without intervention", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  await installUpdate(device, await testImage({ version: "1.1.0", behavior: "crash-on-boot" }));
  assert.equal(device.state, "running");
  assert.equal(device.running?.version, "1.0.0+0");
  assert.ok(device.resets.some((r) => r.reason === "crash on boot"));
  assert.equal(device.fwu.state, FwuState.FAILED);
});

Deno.test("a downgrade written behind the update service is refused and erased by the bootloader", async () => {
  const { device } = await factoryDevice({ factory: { version: "2.0.0" } });
  await device.powerOn();
  const old = await testImage({ version: "1.9.0" });
  plantCandidate(device, old);
  await device.reset("attacker reboots");
  assert.equal(device.running?.version, "2.0.0+0");
  assert.match(device.report().lastBootLog.join("\n"), /downgrade/);
  assert.ok(device.areas.secondary.isErased(0, 4096), "refused candidate must be erased");
  assert.equal(device.fwu.query(0).info?.error, PsaStatus.ERROR_NOT_PERMITTED);
});

Deno.test("an image below the security counter never boots, even with a higher version", async () => {
  const { device } = await factoryDevice({ factory: { version: "1.0.0", securityCounter: 5 } });
  await device.powerOn();
  const image = await testImage({ version: "1.2.0", securityCounter: 4 });
  plantCandidate(device, image);
  await device.reset("attacker reboots");
  assert.equal(device.running?.version, "1.0.0+0");
  assert.match(
    device.report().lastBootLog.join("\n"),
    /security counter 4 is below the device's 5/,
  );
});

for (const attack of ["rogue signer", "tampered payload", "altered signature"] as const) {
  Deno.test(`a candidate with a ${attack} is refused at boot and never retried`, async () => {
    const { device } = await factoryDevice();
    await device.powerOn();
    const image = await testImage({
      version: "1.1.0",
      signer: attack === "rogue signer" ? "rogue" : "trusted",
    });
    if (attack === "tampered payload") image[100]! ^= 0x01;
    // The hash TLV still matches: only the signature over it is wrong.
    plantCandidate(device, attack === "altered signature" ? withAlteredSignature(image) : image);
    await device.reset("attacker reboots");
    assert.equal(device.running?.version, "1.0.0+0");
    const log = device.report().lastBootLog.join("\n");
    assert.match(
      log,
      {
        "rogue signer": /not verify against the trusted root/,
        "tampered payload": /hash does not match/,
        "altered signature": /signature does not verify/,
      }[attack],
    );
    await device.reset("again");
    assert.doesNotMatch(
      device.report().lastBootLog.join("\n"),
      /candidate/,
      "the refused image is not retried",
    );
  });
}

Deno.test("a corrupted primary falls back to the previous image kept in the secondary", async () => {
  const { device } = await factoryDevice({ factory: { version: "1.0.0", securityCounter: 1 } });
  await device.powerOn();
  await installUpdate(device, await testImage({ version: "1.1.0", securityCounter: 1 }));
  device.pal.setPlatformImageState(null, OtaImageState.Accepted);
  // Clear bits in the running image behind the bootloader's back (still legal on NOR).
  device.powerOff();
  device.flash.powerOn();
  const sector = device.areas.primary.read(4096, 8);
  if (sector.every((b) => b === 0)) throw new Error("unexpected zero data");
  device.areas.primary.eraseSector(1);
  await device.powerOn();
  assert.equal(device.state, "running");
  assert.equal(device.running?.version, "1.0.0+0");
  assert.match(device.report().lastBootLog.join("\n"), /falling back/);
});

Deno.test("with no valid image left the device enters recovery instead of running untrusted code", async () => {
  const { device } = await factoryDevice();
  await device.powerOn();
  device.powerOff();
  device.flash.powerOn();
  device.areas.primary.eraseSector(1);
  const outcome = await device.powerOn();
  assert.equal(outcome.kind, "recovery");
  assert.equal(device.state, "recovery");
  assert.equal(device.running, null);
});
