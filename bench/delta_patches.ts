/**
 * Delta patches for realistic releases: the patch's size against the image's for each kind of
 * change a release makes (a version string, three rewritten functions, an inserted 1 KiB block,
 * all of them together as `evolveFirmware` makes them), the cloud's time to make it, and a
 * device's time to apply it through its OTA PAL into the staging slot and to check the result
 * (signature and the bootloader's validation). A device's RAM for a patch is fixed: the writer's
 * 512-byte buffer and a few numbers of parser state, whatever the image or the patch.
 *
 * ```sh
 * deno task bench:delta            # 64 KiB, 256 KiB and 512 KiB images
 * deno task bench:delta --sizes 256KiB
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { createDelta } from "fossil-delta";
import { buildFirmware, evolveFirmware } from "../bootloader/firmware.ts";
import { Device, flashFactoryImage } from "../bootloader/device.ts";
import { createFlash, deviceLayout } from "../bootloader/layout.ts";
import { parseVersion } from "../protocol/image_format.ts";
import { signImage } from "../protocol/image_sign.ts";
import { otaPalMain, OtaPalMainStatus } from "../protocol/ota_pal_status.ts";
import { parseSize } from "../lib/units.ts";
import { testPki } from "../tests/helpers/pki.ts";
import { fileFor, writeAll } from "../tests/helpers/update.ts";

const pki = await testPki();

/** Signs a payload as a release of `version`. */
function release(payload: Uint8Array, version: string): Promise<Uint8Array> {
  return signImage({ payload, version: parseVersion(version)!, securityCounter: 1 }, {
    privateKey: pki.signerKeys.privateKey,
    certificate: pki.signer,
  });
}

/** The changes of each kind of release measured. */
const KINDS: readonly [string, { functions: number; insertedBytes: number }][] = [
  ["version string", { functions: 0, insertedBytes: 0 }],
  ["3 functions", { functions: 3, insertedBytes: 0 }],
  ["1 KiB inserted", { functions: 0, insertedBytes: 1024 }],
  ["all three", { functions: 3, insertedBytes: 1024 }],
];

/** Applies `patch` on a device running `base` and closes the file: milliseconds each. */
async function applyOnDevice(base: Uint8Array, target: Uint8Array, patch: Uint8Array) {
  const layout = deviceLayout({ slotSectors: Math.ceil(target.length / 4096) + 8 });
  const flash = createFlash(layout);
  flashFactoryImage(flash, layout, base);
  const device = new Device({ layout, rom: pki.rom, flash });
  await device.powerOn();
  const file = { ...await fileFor(target), patch: { size: patch.length } };
  const started = performance.now();
  if (device.pal.createFileForRx(file) !== 0) throw new Error(device.pal.lastError ?? "create");
  writeAll(device, file, patch, 4096);
  const applied = performance.now();
  const closed = await device.pal.closeFile(file);
  if (otaPalMain(closed) !== OtaPalMainStatus.Success) throw new Error(device.pal.lastError!);
  return { applyMs: applied - started, closeMs: performance.now() - applied };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { sizes: { type: "string", default: "64KiB,256KiB,512KiB" } },
  });
  const sizes = values.sizes!.split(",").map((text) => {
    const size = parseSize(text);
    if (size === null || size < 8192) throw new Error(`bad size '${text}'`);
    return size;
  });
  console.log(
    "| image | change | image bytes | patch bytes | patch / image | make (cloud) | apply (device) | check (device) |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const size of sizes) {
    const payload = buildFirmware({ behavior: "ok", version: "1.0.0" }, size);
    const base = await release(payload, "1.0.0");
    for (const [kind, changes] of KINDS) {
      const next = evolveFirmware(payload, { behavior: "ok", version: "1.1.0" }, changes);
      const target = await release(next, "1.1.0");
      const made = performance.now();
      const patch = new Uint8Array(createDelta(base, target));
      const makeMs = performance.now() - made;
      const { applyMs, closeMs } = await applyOnDevice(base, target, patch);
      console.log(
        `| ${size / 1024} KiB | ${kind} | ${target.length} | ${patch.length} | ${
          (patch.length / target.length * 100).toFixed(2)
        }% | ${makeMs.toFixed(1)} ms | ${applyMs.toFixed(1)} ms | ${closeMs.toFixed(1)} ms |`,
      );
    }
  }
}
