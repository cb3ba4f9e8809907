/**
 * The status codes and image states of the AWS OTA PAL (`OtaPalStatus_t`, `OtaImageState_t`,
 * `OtaPalImageState_t`): what the agent and the PAL say to each other, and what reaches the cloud
 * in a job's status details.
 *
 * @module
 */

/** `OtaPalMainStatus_t` (top 8 bits of an `OtaPalStatus_t`). */
export const OtaPalMainStatus = {
  Success: 0x00,
  Uninitialized: 0xe0,
  OutOfMemory: 0xe1,
  NullFileContext: 0xe2,
  SignatureCheckFailed: 0xe3,
  RxFileCreateFailed: 0xe4,
  RxFileTooLarge: 0xe5,
  BootInfoCreateFailed: 0xe6,
  BadSignerCert: 0xe7,
  BadImageState: 0xe8,
  AbortFailed: 0xe9,
  RejectFailed: 0xea,
  CommitFailed: 0xeb,
  ActivateFailed: 0xec,
  FileAbort: 0xed,
  FileClose: 0xee,
} as const;

/**
 * Combines a main code and a 24-bit platform sub-code (`OTA_PAL_COMBINE_ERR`).
 *
 * @example
 * ```ts
 * import { otaPalStatus, OtaPalMainStatus } from "./ota_pal.ts";
 * otaPalStatus(OtaPalMainStatus.SignatureCheckFailed, 0) === 0xe3000000; // true
 * ```
 */
export function otaPalStatus(main: number, sub = 0): number {
  return ((main & 0xff) << 24 >>> 0) + (sub & 0xffffff);
}

/** Main code of a status (`OTA_PAL_MAIN_ERR`). */
export function otaPalMain(status: number): number {
  return status >>> 24;
}

/** Sub code of a status (`OTA_PAL_SUB_ERR`). */
export function otaPalSub(status: number): number {
  return status & 0xffffff;
}

/** `OtaImageState_t`. */
export const OtaImageState = {
  Unknown: 0,
  Testing: 1,
  Accepted: 2,
  Rejected: 3,
  Aborted: 4,
} as const;
/** `OtaPalImageState_t`. */
export const OtaPalImageState = { Unknown: 0, PendingCommit: 1, Valid: 2, Invalid: 3 } as const;
