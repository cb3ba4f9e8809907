/**
 * `deno task demo`: one simulated device walks through the update paths the platform is about,
 * printing what its bootloader decided at every boot. With `--root-ca`, `--signer-key` and
 * `--signer-cert` it trusts and signs with a PKI made outside (openssl's, an AWS signer's); with
 * `--image`, `--signature` and `--certificate` its first update is an image signed elsewhere.
 *
 *   1. factory image 1.0.0 boots; 1.1.0 is downloaded through the OTA PAL, verified, installed,
 *      tested and confirmed;
 *   2. 1.2.0 crashes on boot and is reverted without help;
 *   3. power is cut in the middle of the swap that installs 1.3.0, and the swap resumes;
 *   4. a downgrade to 1.0.5 is refused.
 *
 * @module
 */

import { ManualClock } from "../lib/clock.ts";
import { createSigningPki } from "../pki/certificate_issuer.ts";
import { signData } from "../protocol/signatures.ts";
import { Device, flashFactoryImage } from "../bootloader/device.ts";
import { type Behavior, buildFirmware } from "../bootloader/firmware.ts";
import { isPowerCut } from "../bootloader/flash.ts";
import { fwuStateName } from "../bootloader/fwu.ts";
import { compareVersions, formatVersion, parseVersion } from "../protocol/image_format.ts";
import { signImage } from "../protocol/image_sign.ts";
import { createFlash, deviceLayout } from "../bootloader/layout.ts";
import { type OtaFileContext } from "../bootloader/ota_pal.ts";
import { OtaImageState, otaPalMain } from "../protocol/ota_pal_status.ts";
import { blockSizeProblem, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from "../protocol/stream_codec.ts";
import { type FlagSpec, parseFlags, usage } from "../lib/flags.ts";
import { loadTrust, type Trust, TRUST_FLAGS } from "./trust_inputs.ts";
import { UsageError } from "../lib/usage_error.ts";
import { standardFlags, usageLine } from "../lib/cli.ts";

const DEMO_FLAGS: readonly FlagSpec[] = [
  {
    name: "image-size",
    value: "SIZE",
    help: "firmware payload size, e.g. 128KiB",
    sizeRange: [1024, 480 * 1024],
    default: "256KiB",
  },
  {
    name: "block-size",
    value: "SIZE",
    help: "download block size, a power of two",
    sizeRange: [MIN_BLOCK_SIZE, MAX_BLOCK_SIZE],
    default: "4KiB",
  },
  ...TRUST_FLAGS,
];

const USAGE = usage(
  `Usage: deno task demo [options]

One device through the secure update path: an update installed and confirmed, one that crashes
and is reverted, a power cut in the middle of a swap, a downgrade refused. An --image signed
elsewhere is the first update: its version must lie between 1.0.0 and 1.2.0.`,
  DEMO_FLAGS,
);

function fail(message: string): never {
  console.error(usageLine(message));
  Deno.exit(2);
}

const early = standardFlags(Deno.args, USAGE);
if (early) {
  console.log(early.text);
  Deno.exit(0);
}

let flags;
let imageSize = 0;
let blockSize = 0;
try {
  flags = parseFlags(Deno.args, DEMO_FLAGS);
  imageSize = flags.size("image-size");
  blockSize = flags.size("block-size");
} catch (error) {
  fail((error as Error).message);
}
const values = flags.texts;
const blockSizeWrong = blockSizeProblem(blockSize);
if (blockSizeWrong !== null) {
  fail(`Invalid --block-size: it ${blockSizeWrong}: current value is '${values["block-size"]}'`);
}

const clock = new ManualClock(Date.now());
const validity = {
  notBefore: new Date(clock.now() - 86_400_000),
  notAfter: new Date(clock.now() + 3650 * 86_400_000),
};
const given = [values["root-ca"], values["signer-key"], values["signer-cert"]];
const external = [values.image, values.signature, values.certificate];
if (given.some((f) => f !== undefined) && given.some((f) => f === undefined)) {
  fail("--root-ca, --signer-key and --signer-cert go together");
}
if (external.some((f) => f !== undefined) && (external.some((f) => f === undefined) || !given[0])) {
  fail(
    "--image, --signature and --certificate go together, with --root-ca, --signer-key and --signer-cert",
  );
}
let trust: Trust | null = null;
try {
  trust = given[0] === undefined ? null : await loadTrust({
    rootCa: given[0],
    signerKey: given[1]!,
    signerCert: given[2]!,
    ...(external[0]
      ? { image: { image: external[0], signature: external[1]!, certificate: external[2]! } }
      : {}),
  });
} catch (error) {
  if (error instanceof UsageError) fail(error.message);
  throw error;
}
if (trust?.external) {
  const v = trust.external.version;
  if (
    compareVersions(v, parseVersion("1.0.0")!) <= 0 ||
    compareVersions(v, parseVersion("1.2.0")!) >= 0
  ) {
    fail(
      `--image is version ${
        formatVersion(v)
      }: the demo's first update must be between 1.0.0 and 1.2.0`,
    );
  }
}
const { root, signerKeys, signer } = trust ?? await createSigningPki({
  rootSubject: "CN=Demo Device Root",
  signerSubject: "CN=Demo Firmware Signer",
  validity,
});
const certPath = "/certs/signer.pem";
const externalCertPath = "/certs/external_signer.pem";
const rom = {
  root,
  certificates: new Map([
    [certPath, signer.toString("pem")],
    ...(trust?.external
      ? [[externalCertPath, trust.external.certificatePem] as [string, string]]
      : []),
  ]),
};

async function image(
  version: string,
  securityCounter: number,
  behavior: Behavior = "ok",
): Promise<Uint8Array> {
  return await signImage(
    {
      payload: buildFirmware({ behavior, version }, imageSize!),
      version: parseVersion(version)!,
      securityCounter,
    },
    { privateKey: signerKeys.privateKey, certificate: signer },
  );
}

const layout = deviceLayout({ slotSectors: 128 });
const flash = createFlash(layout);
flashFactoryImage(flash, layout, await image("1.0.0", 1));
const device = new Device({ layout, rom, clock, flash });

function showBoot(title: string): void {
  console.log(`\n-- ${title}`);
  for (const line of device.bootLogs[device.bootLogs.length - 1] ?? []) {
    console.log(`   boot: ${line}`);
  }
  const running = device.running;
  console.log(
    `   => ${device.state}${
      running ? ` ${running.version}${running.trial ? " (trial)" : ""}` : ""
    }, security counter ${device.report().securityCounter}`,
  );
}

async function download(
  bytes: Uint8Array,
  signedElsewhere?: { signature: Uint8Array; certFilePath: string },
): Promise<OtaFileContext | null> {
  const file: OtaFileContext = {
    filePath: "firmware.bin",
    fileSize: bytes.length,
    signature: signedElsewhere?.signature ?? await signData(signerKeys.privateKey, bytes),
    certFilePath: signedElsewhere?.certFilePath ?? certPath,
    fileHandle: null,
  };
  const pal = device.pal;
  if (pal.createFileForRx(file) !== 0) throw new Error(`create failed: ${pal.lastError}`);
  for (let offset = 0; offset < bytes.length; offset += blockSize!) {
    const block = bytes.subarray(offset, Math.min(bytes.length, offset + blockSize!));
    if (pal.writeBlock(file, offset, block) !== block.length) {
      throw new Error(`write failed: ${pal.lastError}`);
    }
  }
  const closed = await pal.closeFile(file);
  console.log(
    `   downloaded ${bytes.length} bytes in ${
      Math.ceil(bytes.length / blockSize!)
    } blocks; close: ${otaPalMain(closed) === 0 ? "signature verified" : pal.lastError}`,
  );
  return otaPalMain(closed) === 0 ? file : null;
}

await device.powerOn();
showBoot("factory boot");

let file: OtaFileContext | null;
if (trust?.external) {
  console.log(`\n== update to ${formatVersion(trust.external.version)}, an image signed elsewhere`);
  file = await download(trust.external.image, {
    signature: trust.external.signature,
    certFilePath: externalCertPath,
  });
} else {
  console.log("\n== update to 1.1.0");
  file = await download(await image("1.1.0", 2));
}
device.pal.activateNewImage(file);
await device.settle();
showBoot("boot after activation");
const test = device.selfTest();
console.log(`   self-test: ${test.reason}`);
device.pal.setPlatformImageState(null, OtaImageState.Accepted);
console.log(
  `   accepted: update state ${
    fwuStateName(device.fwu.state)
  }, security counter ${device.report().securityCounter}`,
);

console.log("\n== update to 1.2.0, an image that crashes on boot");
file = await download(await image("1.2.0", 2, "crash-on-boot"));
device.pal.activateNewImage(file);
await device.settle();
showBoot(`after ${device.resets.filter((r) => r.reason === "crash on boot").length} crash(es)`);
console.log(
  `   update state ${fwuStateName(device.fwu.state)}: ${device.fwu.query(0).info?.errorDetail}`,
);

console.log("\n== update to 1.3.0 with a power cut in the middle of the swap");
file = await download(await image("1.3.0", 3));
device.cutPowerAt({ atOperation: 60, torn: true });
device.pal.activateNewImage(file);
try {
  await device.settle();
} catch (error) {
  if (!isPowerCut(error)) throw error;
  console.log(`   ${(error as Error).message}: device is ${device.state}`);
}
await device.powerOn();
showBoot("power restored");
device.pal.setPlatformImageState(null, OtaImageState.Accepted);

console.log("\n== downgrade to 1.0.5");
file = await download(await image("1.0.5", 3));
const activated = device.pal.activateNewImage(file);
console.log(`   activate: ${activated === 0 ? "accepted" : `refused (${device.pal.lastError})`}`);

const stats = flash.stats;
const memory = flash.memoryUsage();
let maxWear = 0;
for (let s = 0; s < layout.geometry.sectorCount; s++) maxWear = Math.max(maxWear, flash.wear(s));
console.log(`
summary
  running            ${device.running?.version} (security counter ${device.report().securityCounter})
  boots / resets     ${device.bootLogs.length} logged / ${device.resets.length}
  flash operations   ${stats.programs} programs, ${stats.erases} erases, ${stats.reads} reads
  max sector wear    ${maxWear} erase cycles
  flash memory       ${(memory.privateBytes / 1024).toFixed(0)} KiB private, ${
  (memory.sharedBytes / 1024).toFixed(0)
} KiB shared, ${memory.erasedSectors} erased sectors`);
