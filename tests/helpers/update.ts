/**
 * Drives an update through the OTA PAL the way the agent will: create, write blocks, close
 * (detached signature check), activate, reboot.
 *
 * @module
 */

import { signData } from "../../protocol/signatures.ts";
import type { Device } from "../../bootloader/device.ts";
import { type OtaFileContext } from "../../bootloader/ota_pal.ts";
import { otaPalMain, OtaPalMainStatus } from "../../protocol/ota_pal_status.ts";
import { writeTrailerMagic } from "../../bootloader/trailer.ts";
import { alignUp } from "../../lib/bytes.ts";
import { SIGNER_CERT_PATH, testPki } from "./pki.ts";

/** A file context for `image`, signed by the trusted signer unless a signature is given. */
export async function fileFor(image: Uint8Array, signature?: Uint8Array): Promise<OtaFileContext> {
  const pki = await testPki();
  return {
    filePath: "firmware.bin",
    fileSize: image.length,
    signature: signature ?? await signData(pki.signerKeys.privateKey, image),
    certFilePath: SIGNER_CERT_PATH,
    fileHandle: null,
  };
}

/** Writes `image` in blocks of `blockSize` through the PAL. */
export function writeAll(
  device: Device,
  file: OtaFileContext,
  image: Uint8Array,
  blockSize = 1024,
): void {
  for (let offset = 0; offset < image.length; offset += blockSize) {
    const block = image.subarray(offset, Math.min(image.length, offset + blockSize));
    const written = device.pal.writeBlock(file, offset, block);
    if (written !== block.length) {
      throw new Error(`writeBlock at ${offset} returned ${written}: ${device.pal.lastError}`);
    }
  }
}

/**
 * Downloads, verifies and activates `image`, then waits for the reboot into the trial. With
 * `patch`, the download is that delta patch from the running image, applied as it arrives.
 */
export async function installUpdate(
  device: Device,
  image: Uint8Array,
  signature?: Uint8Array,
  patch?: Uint8Array,
): Promise<void> {
  const file = { ...await fileFor(image, signature), patch: patch ? { size: patch.length } : null };
  const created = device.pal.createFileForRx(file);
  if (created !== 0) {
    throw new Error(`createFileForRx failed: 0x${created.toString(16)} ${device.pal.lastError}`);
  }
  writeAll(device, file, patch ?? image);
  const closed = await device.pal.closeFile(file);
  if (otaPalMain(closed) !== OtaPalMainStatus.Success) {
    throw new Error(`closeFile failed: 0x${closed.toString(16)} ${device.pal.lastError}`);
  }
  const activated = device.pal.activateNewImage(file);
  if (activated !== 0) throw new Error(`activateNewImage failed: ${device.pal.lastError}`);
  await device.settle();
}

/**
 * Puts `image` in the secondary slot with an install request, behind the update service's back
 * (what an attacker with flash access, or a buggy update client, could do).
 */
export function plantCandidate(device: Device, image: Uint8Array): void {
  const padded = new Uint8Array(alignUp(image.length, device.areas.secondary.writeUnit)).fill(0xff);
  padded.set(image);
  device.areas.secondary.program(0, padded);
  writeTrailerMagic(device.areas.secondary);
}
