/**
 * The files an OTA update carries besides its firmware (the job document's `files` array): data
 * files for the device's application, each with its detached signature, made by the update's
 * signing profile or given by its external signer and checked here. The agent takes them before
 * the firmware and hands each, verified, to the application.
 *
 * One of them may be the device's second-stage bootloader (file type 1, a signed image): the
 * device installs it together with the firmware, which must depend on it (see
 * {@linkcode secondStageBinding}).
 *
 * @example
 * ```ts ignore
 * const extra = await prepareExtraFiles(request.extraFiles, { sign: (d) => signData(key, d) });
 * if (extra.ok) for (const f of extra.value) console.log(f.filePath, f.data.length);
 * ```
 *
 * @module
 */

import { fromBase64 } from "../lib/base64.ts";
import { parseTrustUpdate, TRUST_STORE_FILE_TYPE } from "../protocol/trust_update.ts";
import {
  bytesSource,
  compareVersions,
  decodeImage,
  formatVersion,
  ImageId,
  type ImageVersion,
} from "../protocol/image_format.ts";

/** At most this many files besides the firmware. */
export const MAX_EXTRA_FILES = 8;
/** A data file's largest size: what the agent takes by default (`maxDataFileSize`). */
export const MAX_EXTRA_FILE_BYTES = 64 * 1024;

/** One more file of an update, as the API takes it. */
export interface ExtraFileRequest {
  /**
   * 3..255: what the device's application makes of it; 1: a second-stage bootloader image
   * installed together with the firmware; 2: a trust-store update (protocol/trust_update.ts).
   */
  readonly fileType: number;
  /** Its name on the device (`filepath`), 1..128 characters of [A-Za-z0-9_./-]. */
  readonly filePath: string;
  /** The file, base64. */
  readonly data: string;
  /** Its detached signature (base64 DER) by the update's external signer. */
  readonly signature?: string;
}

/** A checked, signed extra file. */
export interface ExtraFile {
  readonly fileType: number;
  readonly filePath: string;
  readonly data: Uint8Array;
  readonly signature: Uint8Array;
}

/** How the files get their signatures: made with the signing profile, or checked. */
export type ExtraFileSigning =
  | { readonly sign: (data: Uint8Array) => Promise<Uint8Array> }
  | { readonly verify: (data: Uint8Array, signature: Uint8Array) => Promise<boolean> };

type Prepared = { ok: true; value: ExtraFile[] } | { ok: false; reason: string };

/** Checks and signs `given` (the request's `extraFiles`); a bad entry is refused by its index. */
export async function prepareExtraFiles(
  given: unknown,
  signing: ExtraFileSigning,
): Promise<Prepared> {
  if (given === undefined) return { ok: true, value: [] };
  if (!Array.isArray(given) || given.length > MAX_EXTRA_FILES) {
    return { ok: false, reason: `extraFiles must be an array of at most ${MAX_EXTRA_FILES}` };
  }
  const files: ExtraFile[] = [];
  for (const [i, entry] of given.entries()) {
    const where = `extraFiles[${i}]`;
    if (typeof entry !== "object" || entry === null) {
      return { ok: false, reason: `${where} must be an object` };
    }
    const { fileType, filePath, data: text, signature: signatureText } = entry as Record<
      string,
      unknown
    >;
    if (!Number.isInteger(fileType) || (fileType as number) < 1 || (fileType as number) > 255) {
      return {
        ok: false,
        reason: `${where}.fileType must be 1..255 (0 is the firmware itself)`,
      };
    }
    if (fileType === SECOND_STAGE_FILE && files.some((f) => f.fileType === SECOND_STAGE_FILE)) {
      return { ok: false, reason: `${where}: one second-stage bootloader (fileType 1) at most` };
    }
    if (typeof filePath !== "string" || !/^[A-Za-z0-9_./-]{1,128}$/.test(filePath)) {
      return { ok: false, reason: `${where}.filePath must be 1..128 of [A-Za-z0-9_./-]` };
    }
    if (files.some((f) => f.filePath === filePath)) {
      return { ok: false, reason: `${where}.filePath '${filePath}' is given twice` };
    }
    const data = typeof text === "string" ? fromBase64(text) : null;
    if (!data || data.length === 0 || data.length > MAX_EXTRA_FILE_BYTES) {
      return {
        ok: false,
        reason: `${where}.data must be base64 of 1..${MAX_EXTRA_FILE_BYTES} bytes`,
      };
    }
    let signature: Uint8Array;
    if ("sign" in signing) {
      if (signatureText !== undefined) {
        return {
          ok: false,
          reason: `${where}.signature: the signing profile signs this update's files`,
        };
      }
      signature = await signing.sign(data);
    } else {
      const given = typeof signatureText === "string" ? fromBase64(signatureText) : null;
      if (!given || !(await signing.verify(data, given))) {
        return {
          ok: false,
          reason: `${where}.signature must be the external signer's (base64 DER) over the file`,
        };
      }
      signature = given;
    }
    if (fileType === TRUST_STORE_FILE_TYPE) {
      const update = parseTrustUpdate(data);
      if (!update.ok) return { ok: false, reason: `${where}: ${update.reason}` };
    }
    if (fileType === SECOND_STAGE_FILE && !decodedVersion(data)) {
      return { ok: false, reason: `${where}: a second-stage bootloader must be a signed image` };
    }
    files.push({ fileType: fileType as number, filePath, data, signature });
  }
  return { ok: true, value: files };
}

/** The file type of a second-stage bootloader. */
const SECOND_STAGE_FILE = 1;

function decodedVersion(data: Uint8Array): ImageVersion | null {
  const decoded = decodeImage(bytesSource(data));
  return decoded.ok ? decoded.image.header.version : null;
}

/**
 * The version of the second-stage bootloader among a request's extra files (base64 data of the
 * entry of file type 1), or null when there is none or it is not an image ({@linkcode
 * prepareExtraFiles} says why). The cloud makes the firmware it signs depend on it.
 */
export function bundledSecondStageVersion(given: unknown): ImageVersion | null {
  if (!Array.isArray(given)) return null;
  const entry = given.find((e) => e?.fileType === SECOND_STAGE_FILE);
  const data = typeof entry?.data === "string" ? fromBase64(entry.data) : null;
  return data ? decodedVersion(data) : null;
}

/**
 * Why firmware `image` cannot go with the second stage of `files`, or null (also when there is
 * none): a device installs the two together only when the firmware depends on that second stage
 * (MCUboot's DEPENDENCY TLV, `image sign --depends-on second-stage:X.Y.Z`), which is what keeps
 * them together across a power cut.
 *
 * @example
 * ```ts ignore
 * secondStageBinding(image, files); // "the firmware must depend on the second stage it comes with (2.1.0+0): ..."
 * ```
 */
export function secondStageBinding(
  image: Uint8Array,
  files: readonly ExtraFile[],
): string | null {
  const stage = files.find((f) => f.fileType === SECOND_STAGE_FILE);
  if (!stage) return null;
  const staged = decodedVersion(stage.data)!;
  const decoded = decodeImage(bytesSource(image));
  const need = decoded.ok
    ? decoded.image.dependencies.find((d) => d.imageId === ImageId.SECOND_STAGE)
    : undefined;
  const prefix = `the firmware must depend on the second stage it comes with (${
    formatVersion(staged)
  })`;
  if (!need) return `${prefix}: it declares no second-stage dependency`;
  if (compareVersions(need.minVersion, staged) > 0) {
    return `${prefix}: it needs ${formatVersion(need.minVersion)}`;
  }
  return null;
}
