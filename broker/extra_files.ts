/**
 * The files an OTA update carries besides its firmware (the job document's `files` array): data
 * files for the device's application, each with its detached signature, made by the update's
 * signing profile or given by its external signer and checked here. The agent takes them before
 * the firmware and hands each, verified, to the application.
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

/** At most this many files besides the firmware. */
export const MAX_EXTRA_FILES = 8;
/** A data file's largest size: what the agent takes by default (`maxDataFileSize`). */
export const MAX_EXTRA_FILE_BYTES = 64 * 1024;

/** One more file of an update, as the API takes it. */
export interface ExtraFileRequest {
  /** 2..255: what the device's application makes of it (0 and 1 are firmware, bootloader). */
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
    if (!Number.isInteger(fileType) || (fileType as number) < 2 || (fileType as number) > 255) {
      return {
        ok: false,
        reason: `${where}.fileType must be 2..255 (0 firmware and 1 bootloader go alone)`,
      };
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
    files.push({ fileType: fileType as number, filePath, data, signature });
  }
  return { ok: true, value: files };
}
