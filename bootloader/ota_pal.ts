/**
 * The OTA PAL (AWS IoT OTA platform abstraction layer) of a file-system-less flash device,
 * implemented on the PSA firmware-update service, with the AWS status codes.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { checkCodeSignerUnder, parseCertificate } from "../protocol/certificates.ts";
import { verifySignature } from "../protocol/signatures.ts";
import { FIRMWARE_COMPONENT, type FirmwareUpdateService, FwuState } from "./fwu.ts";
import { PsaStatus, psaStatusName } from "./psa_status.ts";
import type { BootRom } from "./bootloader.ts";
import type { Clock } from "../lib/clock.ts";
import {
  OtaImageState,
  OtaPalImageState,
  otaPalMain,
  OtaPalMainStatus,
  otaPalStatus,
} from "../protocol/ota_pal_status.ts";
import { CODE_VERIFY_KEY } from "../protocol/job_document.ts";
import { DeltaWriter } from "./delta_writer.ts";

/** Handle of the file being received. */
export interface OtaFileHandle {
  readonly component: number;
  readonly path: string;
}

/** `OtaFileContext_t`: what the agent knows of the file being received. */
export interface OtaFileContext {
  /** Path of the file on the device (job document `filepath`). */
  filePath: string;
  /** Declared size. */
  fileSize: number;
  /** Detached DER ECDSA signature (job document `sig-sha256-ecdsa`, base64-decoded). */
  signature: Uint8Array | null;
  /** Path of the signer certificate (job document `certfile`). */
  certFilePath: string;
  /** Open file; null when none. */
  fileHandle: OtaFileHandle | null;
  /**
   * Received as a delta patch from the running image (an extension): the blocks written are the
   * patch's `size` bytes, in order; the file of `fileSize` bytes is built from them.
   */
  patch?: { readonly size: number } | null;
}

/** Dependencies of the PAL. */
export interface OtaPalContext {
  readonly fwu: FirmwareUpdateService;
  readonly rom: BootRom;
  readonly clock: Clock;
  /** Erase the previous image as soon as the new one is accepted (threat-model hardening). */
  readonly erasePreviousImage?: boolean;
}

/** PSA status in the low 24 bits of a PAL status, for diagnosis. */
function sub(psa: number): number {
  return Math.abs(psa) & 0xffffff;
}

/**
 * The OTA PAL.
 *
 * @example
 * ```ts ignore
 * const pal = new OtaPal({ fwu, rom, clock });
 * pal.createFileForRx(file);
 * pal.writeBlock(file, 0, block);
 * await pal.closeFile(file);
 * pal.activateNewImage(file);
 * ```
 */
export class OtaPal {
  readonly #context: OtaPalContext;
  /** The patch being applied into the staging slot, with the handle of its file. */
  #delta: { readonly handle: OtaFileHandle; readonly writer: DeltaWriter } | null = null;
  /** Why the last call failed, for logs and job status details. */
  lastError: string | null = null;

  /** Builds the PAL over a firmware-update service. */
  constructor(context: OtaPalContext) {
    this.#context = context;
  }

  #error(main: number, detail: string, psa = 0): number {
    this.lastError = detail;
    return otaPalStatus(main, sub(psa));
  }

  /** `otaPal_CreateFileForRx`: opens the staging slot for a new file (a stale one is discarded). */
  createFileForRx(file: OtaFileContext | null): number {
    if (!file) return this.#error(OtaPalMainStatus.NullFileContext, "no file context");
    const { fwu } = this.#context;
    if (!Number.isInteger(file.fileSize) || file.fileSize <= 0) {
      return this.#error(OtaPalMainStatus.RxFileCreateFailed, `invalid file size ${file.fileSize}`);
    }
    if (file.fileSize > fwu.maxSize) {
      return this.#error(
        OtaPalMainStatus.RxFileTooLarge,
        `file of ${file.fileSize} bytes exceeds the ${fwu.maxSize}-byte slot`,
      );
    }
    const state = fwu.state;
    if (state === FwuState.WRITING || state === FwuState.CANDIDATE) fwu.cancel(FIRMWARE_COMPONENT);
    if (fwu.state === FwuState.FAILED || fwu.state === FwuState.UPDATED) {
      fwu.clean(FIRMWARE_COMPONENT);
    }
    const status = fwu.start(FIRMWARE_COMPONENT);
    if (status !== PsaStatus.SUCCESS) {
      return this.#error(
        OtaPalMainStatus.RxFileCreateFailed,
        `cannot start an update in state ${fwu.state}: ${psaStatusName(status)}`,
        status,
      );
    }
    const handle = { component: FIRMWARE_COMPONENT, path: file.filePath };
    this.#delta = null;
    if (file.patch) {
      const writer = this.#deltaWriter(file.fileSize);
      if (typeof writer === "string") {
        fwu.cancel(FIRMWARE_COMPONENT);
        fwu.clean(FIRMWARE_COMPONENT);
        return this.#error(OtaPalMainStatus.RxFileCreateFailed, writer);
      }
      this.#delta = { handle, writer };
    }
    file.fileHandle = handle;
    return otaPalStatus(OtaPalMainStatus.Success);
  }

  /**
   * The SHA-256 of the running image as a whole (an extension): what a delta patch names as its
   * base. Null when the primary slot holds no image.
   */
  runningImageSha256(): Uint8Array | null {
    return this.#context.fwu.runningImage()?.sha256 ?? null;
  }

  /** The writer applying `file`'s patch, if that file is the one it was opened for. */
  #writerOf(file: OtaFileContext): DeltaWriter | null {
    return this.#delta?.handle === file.fileHandle ? this.#delta.writer : null;
  }

  /** A writer that builds a file of at most `fileSize` bytes from a patch of the running image. */
  #deltaWriter(fileSize: number): DeltaWriter | string {
    const { fwu } = this.#context;
    const base = fwu.runningImage();
    if (!base) return "no running image to apply a patch to";
    return new DeltaWriter({
      baseSize: base.size,
      maxTargetSize: Math.min(fileSize, fwu.maxSize),
      writeUnit: fwu.writeUnit,
      readBase: (offset, length) => fwu.readRunning(offset, length),
      write: (offset, bytes) => {
        const status = fwu.write(FIRMWARE_COMPONENT, offset, bytes);
        return status === PsaStatus.SUCCESS ? null : psaStatusName(status);
      },
    });
  }

  /**
   * Reopens a download that a reset interrupted (an extension of the AWS PAL): succeeds only when
   * the staging slot is still being written, so blocks already in flash are kept.
   */
  resumeFileForRx(file: OtaFileContext | null): number {
    if (!file) return this.#error(OtaPalMainStatus.NullFileContext, "no file context");
    if (this.#context.fwu.state !== FwuState.WRITING) {
      return this.#error(OtaPalMainStatus.RxFileCreateFailed, "no interrupted download to resume");
    }
    file.fileHandle = { component: FIRMWARE_COMPONENT, path: file.filePath };
    return otaPalStatus(OtaPalMainStatus.Success);
  }

  /** `otaPal_WriteBlock`: returns the bytes written, or a negative value on error. */
  writeBlock(file: OtaFileContext | null, offset: number, data: Uint8Array): number {
    if (!file?.fileHandle) {
      this.lastError = "no open file";
      return -1;
    }
    // A patch's blocks are bounded by the patch, the file's by the file.
    const size = file.patch?.size ?? file.fileSize;
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > size) {
      this.lastError = `block of ${data.length} bytes at ${offset} is outside the ${size}-byte ${
        file.patch ? "patch" : "file"
      }`;
      return -1;
    }
    if (file.patch) {
      const delta = this.#writerOf(file);
      if (!delta) {
        this.lastError = "no patch being applied to this file";
        return -1;
      }
      if (offset !== delta.consumed) {
        this.lastError = `patch block at ${offset} out of order: ${delta.consumed} bytes applied ` +
          `of ${file.patch.size}`;
        return -1;
      }
      const failure = delta.push(data);
      if (failure !== null) {
        this.lastError = failure;
        return -1;
      }
      return data.length;
    }
    const status = this.#context.fwu.write(file.fileHandle.component, offset, data);
    if (status !== PsaStatus.SUCCESS) {
      this.lastError = `write at ${offset} failed: ${psaStatusName(status)}`;
      return -1;
    }
    return data.length;
  }

  /**
   * `otaPal_ReadAndAssumeCertificate`: the signer certificate at `path`, or null. Like the AWS
   * PALs, a name the store does not hold falls back to the device's own code-verification
   * certificate ({@linkcode CODE_VERIFY_KEY}), when it was provisioned with one: AWS's
   * documents name certificates (`test.crt`, `Code Verify Key`) a device may keep elsewhere.
   * Whatever is read must still chain to the ROM root and be a code signer.
   */
  readAndAssumeCertificate(path: string): { certificate: Uint8Array; size: number } | null {
    const store = this.#context.rom.certificates;
    const stored = store?.get(path) ?? store?.get(CODE_VERIFY_KEY);
    if (stored === undefined) return null;
    const certificate = typeof stored === "string" ? new TextEncoder().encode(stored) : stored;
    return { certificate, size: certificate.length };
  }

  /**
   * `otaPal_CheckFileSignature`: verifies the detached signature over the received file with the
   * certificate at `certFilePath`, which must chain to the ROM root and be a valid code signer.
   */
  async checkFileSignature(file: OtaFileContext | null): Promise<number> {
    if (!file) return this.#error(OtaPalMainStatus.NullFileContext, "no file context");
    const { fwu } = this.#context;
    // Hashed in place; the bytes are read only if no device of the process checked them yet.
    return await this.#checkSignature(
      fwu.stagedDigest(file.fileSize),
      () => fwu.readStaged(file.fileSize),
      file.signature,
      file.certFilePath,
    );
  }

  /**
   * Verifies a detached signature over `bytes` (a received file that is not firmware, kept in
   * RAM) with the certificate at `certFilePath`, under the same rules as firmware.
   */
  async checkDataSignature(
    bytes: Uint8Array,
    signature: Uint8Array | null,
    certFilePath: string,
  ): Promise<number> {
    const digest = new Uint8Array(createHash("sha256").update(bytes).digest());
    return await this.#checkSignature(digest, bytes, signature, certFilePath);
  }

  async #checkSignature(
    digest: Uint8Array,
    message: Uint8Array | (() => Uint8Array),
    signature: Uint8Array | null,
    certFilePath: string,
  ): Promise<number> {
    const stored = this.readAndAssumeCertificate(certFilePath);
    if (!stored) {
      return this.#error(
        OtaPalMainStatus.BadSignerCert,
        `no signer certificate at '${certFilePath}'`,
      );
    }
    const text = new TextDecoder().decode(stored.certificate);
    const parsed = parseCertificate(text.includes("-----BEGIN") ? text : stored.certificate);
    if (!parsed.ok) return this.#error(OtaPalMainStatus.BadSignerCert, parsed.reason);
    const rom = this.#context.rom;
    const signer = await checkCodeSignerUnder(
      parsed.value,
      [rom.root, ...(rom.formerRoots ?? [])],
      new Date(this.#context.clock.now()),
    );
    if (!signer.ok) return this.#error(OtaPalMainStatus.BadSignerCert, signer.reason);
    const revoked = this.#context.rom.revokedKeys;
    if (revoked?.size && revoked.has(signer.value.verifier.keyHash.toHex())) {
      return this.#error(OtaPalMainStatus.BadSignerCert, "the signer's key is revoked");
    }
    if (!signature || signature.length === 0) {
      return this.#error(OtaPalMainStatus.SignatureCheckFailed, "no signature in the file context");
    }
    const valid = await verifySignature(
      signer.value.verifier,
      message,
      digest,
      signature,
      this.#context.rom.verificationCache,
    );
    if (!valid) {
      return this.#error(OtaPalMainStatus.SignatureCheckFailed, "file signature does not verify");
    }
    return otaPalStatus(OtaPalMainStatus.Success);
  }

  /**
   * `otaPal_CloseFile`: checks the detached signature, then has the update service verify the
   * image as the bootloader will; any failure leaves the update FAILED.
   */
  async closeFile(file: OtaFileContext | null): Promise<number> {
    if (!file) return this.#error(OtaPalMainStatus.NullFileContext, "no file context");
    if (!file.fileHandle) return this.#error(OtaPalMainStatus.FileClose, "no open file");
    const { fwu } = this.#context;
    if (file.patch) {
      const delta = this.#writerOf(file);
      this.#delta = null;
      const failure = delta ? delta.finish() : "no patch being applied to this file";
      const size = delta?.targetSize ?? -1;
      if (failure !== null || size !== file.fileSize) {
        fwu.cancel(FIRMWARE_COMPONENT);
        return this.#error(
          OtaPalMainStatus.FileClose,
          failure ?? `the patch built ${size} bytes, the file has ${file.fileSize}`,
        );
      }
    }
    const signature = await this.checkFileSignature(file);
    if (otaPalMain(signature) !== OtaPalMainStatus.Success) {
      const detail = this.lastError ?? "signature check failed";
      fwu.cancel(FIRMWARE_COMPONENT);
      this.lastError = detail;
      return signature;
    }
    const status = await fwu.finish(file.fileHandle.component);
    if (status !== PsaStatus.SUCCESS) {
      const detail = fwu.query(FIRMWARE_COMPONENT).info?.errorDetail ?? psaStatusName(status);
      return this.#error(
        OtaPalMainStatus.SignatureCheckFailed,
        `image verification failed: ${detail}`,
        status,
      );
    }
    return otaPalStatus(OtaPalMainStatus.Success);
  }

  /**
   * `otaPal_Abort`: abandons the open file. Safe on a null context or handle; a verified
   * (closed) image is never erased by it.
   */
  abort(file: OtaFileContext | null): number {
    if (!file?.fileHandle) {
      if (file) file.fileHandle = null;
      return otaPalStatus(OtaPalMainStatus.Success);
    }
    const { fwu } = this.#context;
    if (fwu.state === FwuState.WRITING) {
      const cancel = fwu.cancel(FIRMWARE_COMPONENT);
      const clean = fwu.clean(FIRMWARE_COMPONENT);
      if (cancel !== PsaStatus.SUCCESS || clean !== PsaStatus.SUCCESS) {
        return this.#error(
          OtaPalMainStatus.FileAbort,
          `abort failed: ${psaStatusName(cancel || clean)}`,
        );
      }
    }
    file.fileHandle = null;
    return otaPalStatus(OtaPalMainStatus.Success);
  }

  /** `otaPal_ActivateNewImage`: installs the candidate and asks for the reboot that tests it. */
  activateNewImage(file: OtaFileContext | null): number {
    const { fwu } = this.#context;
    const status = fwu.install();
    if (status !== PsaStatus.SUCCESS_REBOOT && status !== PsaStatus.SUCCESS_RESTART) {
      return this.#error(
        OtaPalMainStatus.ActivateFailed,
        `install failed: ${psaStatusName(status)}`,
        status,
      );
    }
    if (file) file.fileHandle = null;
    fwu.requestReboot();
    return otaPalStatus(OtaPalMainStatus.Success);
  }

  /** `otaPal_ResetDevice`. */
  resetDevice(_file: OtaFileContext | null): number {
    this.#context.fwu.requestReboot();
    return otaPalStatus(OtaPalMainStatus.Success);
  }

  /** `otaPal_SetPlatformImageState`. */
  setPlatformImageState(file: OtaFileContext | null, state: number): number {
    const { fwu } = this.#context;
    const current = fwu.state;
    switch (state) {
      case OtaImageState.Testing:
        // Nothing to do: an installed update always boots first as a test.
        if (
          current === FwuState.WRITING || current === FwuState.CANDIDATE ||
          current === FwuState.STAGED ||
          current === FwuState.TRIAL
        ) return otaPalStatus(OtaPalMainStatus.Success);
        return this.#error(OtaPalMainStatus.BadImageState, `no update to test in state ${current}`);
      case OtaImageState.Accepted: {
        if (current === FwuState.UPDATED) return otaPalStatus(OtaPalMainStatus.Success);
        if (current !== FwuState.TRIAL) {
          return this.#error(
            OtaPalMainStatus.CommitFailed,
            "no image on trial to accept (was it closed and booted?)",
          );
        }
        const status = fwu.accept();
        if (status !== PsaStatus.SUCCESS) {
          return this.#error(
            OtaPalMainStatus.CommitFailed,
            `accept failed: ${psaStatusName(status)}`,
            status,
          );
        }
        // The old image is no longer needed to revert: gone, it cannot be booted by anyone.
        if (this.#context.erasePreviousImage) fwu.clean(0);
        return otaPalStatus(OtaPalMainStatus.Success);
      }
      case OtaImageState.Rejected:
      case OtaImageState.Aborted: {
        const failure = state === OtaImageState.Rejected
          ? OtaPalMainStatus.RejectFailed
          : OtaPalMainStatus.AbortFailed;
        let status: number = PsaStatus.SUCCESS;
        if (current === FwuState.TRIAL || current === FwuState.STAGED) {
          status = fwu.reject(PsaStatus.ERROR_NOT_PERMITTED);
        } else if (current === FwuState.WRITING || current === FwuState.CANDIDATE) {
          status = fwu.cancel(FIRMWARE_COMPONENT);
        } else if (current === FwuState.UPDATED && state === OtaImageState.Rejected) {
          return this.#error(failure, "the image was already accepted");
        }
        if (status < 0) {
          return this.#error(failure, `reject failed: ${psaStatusName(status)}`, status);
        }
        if (state === OtaImageState.Aborted && fwu.state === FwuState.FAILED) {
          fwu.clean(FIRMWARE_COMPONENT);
        }
        if (file) file.fileHandle = null;
        return otaPalStatus(OtaPalMainStatus.Success);
      }
      default:
        return this.#error(
          OtaPalMainStatus.BadImageState,
          `image state ${state} is not Testing, Accepted, Rejected or Aborted`,
        );
    }
  }

  /** `otaPal_GetPlatformImageState`. */
  getPlatformImageState(_file: OtaFileContext | null): number {
    switch (this.#context.fwu.state) {
      case FwuState.TRIAL:
        return OtaPalImageState.PendingCommit;
      case FwuState.FAILED:
      case FwuState.REJECTED:
        return OtaPalImageState.Invalid;
      default:
        return OtaPalImageState.Valid;
    }
  }
}
