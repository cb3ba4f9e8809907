/**
 * Job execution status payloads in the AWS OTA agent's formats (reason strings included), so a
 * console or script written for AWS reads ours.
 *
 * @module
 */

import type { ImageVersion } from "./image_format.ts";
import { OtaPalMainStatus } from "./ota_pal_status.ts";

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

/** "SignatureCheckFailed" -> "signature check failed". */
function words(name: string): string {
  return name.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
}

function nameOf(table: Readonly<Record<string, number>>, code: number): string | null {
  const entry = Object.entries(table).find(([, value]) => value === code);
  return entry ? words(entry[0]) : null;
}

/**
 * A status reason as people read it: `"rejected: 0x00000010"` is "rejected: same firmware
 * version", `"0x000000e3: 0x00000095"` is "signature check failed (0x95)"; anything this does
 * not know is given back as it is.
 *
 * @example
 * ```ts
 * import { explainReason } from "./job_status.ts";
 * explainReason("rejected: 0x00000010"); // "rejected: same firmware version"
 * explainReason("0x0000000c: 0x00000004"); // "job parser error: non conforming job doc"
 * ```
 */
export function explainReason(reason: string): string {
  const state = /^(rejected|aborted): 0x([0-9a-f]{8})$/i.exec(reason);
  if (state) {
    const name = nameOf(OtaErr, parseInt(state[2]!, 16));
    return name ? `${state[1]}: ${name}` : reason;
  }
  const failed = /^0x([0-9a-f]{8}): 0x([0-9a-f]{8})$/i.exec(reason);
  if (failed) {
    const main = parseInt(failed[1]!, 16);
    const sub = parseInt(failed[2]!, 16);
    const name = nameOf(OtaErr, main) ?? nameOf(OtaPalMainStatus, main);
    if (!name) return reason;
    if (main === OtaErr.JobParserError) {
      const parse = nameOf(JobParseErr, sub);
      return parse ? `${name}: ${parse}` : name;
    }
    return sub === 0 ? name : `${name} (0x${sub.toString(16)})`;
  }
  if (/^accepted +v/.test(reason)) return "accepted";
  return reason;
}
