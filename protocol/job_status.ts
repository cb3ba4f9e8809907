/**
 * Job execution status payloads in the AWS OTA agent's formats (reason strings included), so a
 * console or script written for AWS reads ours.
 *
 * @module
 */

import type { ImageVersion } from "./image_format.ts";

/** AWS IoT Jobs execution statuses. */
export type JobExecutionStatus =
  | "QUEUED"
  | "IN_PROGRESS"
  | "SUCCEEDED"
  | "FAILED"
  | "TIMED_OUT"
  | "REJECTED"
  | "REMOVED"
  | "CANCELED";

/** `OtaErr_t` codes used as reasons. */
export const OtaErr = {
  None: 0,
  JobParserError: 12,
  InvalidDataProtocol: 13,
  MomentumAbort: 14,
  DowngradeNotAllowed: 15,
  SameFirmwareVersion: 16,
  ImageStateMismatch: 17,
  NoActiveJob: 18,
  UserAbort: 19,
  FailedToDecodeCbor: 21,
  ActivateFailed: 22,
  FileSizeOverflow: 23,
} as const;

/** `OtaJobParseErr_t` codes. */
export const JobParseErr = {
  None: 0,
  NullJob: 1,
  UpdateCurrentJob: 2,
  ZeroFileSize: 3,
  NonConformingJobDoc: 4,
  BadModelInitParams: 5,
  NoContextAvailable: 6,
  NoActiveJobs: 7,
} as const;

const hex8 = (value: number) => `0x${(value >>> 0).toString(16).padStart(8, "0")}`;

/**
 * `FailedWithVal`: `"0x<reason>: 0x<subReason>"`.
 *
 * @example
 * ```ts
 * import { failedReason } from "./job_status.ts";
 * failedReason(0xe3, 0x95); // "0x000000e3: 0x00000095"
 * ```
 */
export function failedReason(reason: number, subReason: number): string {
  return `${hex8(reason)}: ${hex8(subReason)}`;
}

/**
 * `"rejected: 0x<subReason>"` or `"aborted: 0x<subReason>"`.
 *
 * @example
 * ```ts
 * import { stateReason } from "./job_status.ts";
 * stateReason("rejected", 16); // "rejected: 0x00000010"
 * ```
 */
export function stateReason(kind: "rejected" | "aborted", subReason: number): string {
  return `${kind}: ${hex8(subReason)}`;
}

/**
 * The AWS agent's 32-bit version (`major << 24 | minor << 16 | revision`) as `0x` + 8 hex digits,
 * used in `updatedBy`.
 *
 * @example
 * ```ts
 * import { versionWord } from "./job_status.ts";
 * versionWord({ major: 1, minor: 0, revision: 1, build: 0 }); // "0x01000001"
 * ```
 */
export function versionWord(version: ImageVersion): string {
  return hex8(
    ((version.major & 0xff) << 24) | ((version.minor & 0xff) << 16) | (version.revision & 0xffff),
  );
}

/**
 * `"accepted  v<major>.<minor>.<revision>"` (two spaces, as the AWS agent writes it).
 *
 * @example
 * ```ts
 * import { acceptedReason } from "./job_status.ts";
 * acceptedReason({ major: 1, minor: 2, revision: 3, build: 0 }); // "accepted  v1.2.3"
 * ```
 */
export function acceptedReason(version: ImageVersion): string {
  return `accepted  v${version.major}.${version.minor}.${version.revision}`;
}
