/**
 * What the agent decides after a reboot into (or out of) an update, as pure functions of what the
 * device reports: whether an image that is not on trial was never activated, was cut off by a
 * power loss before it ran, or failed; and whether the image on trial is really newer than the
 * one that downloaded it. The agent carries the verdicts out (reports, PAL calls, mailbox).
 *
 * @example
 * ```ts
 * import { trialVersionProblem } from "./self_test.ts";
 * trialVersionProblem({ updatedBy: "0x01010000", running: "0x01010000", allowDowngrade: false });
 * // { reason: "rejected: 0x00000010", detail: "running version is not newer than the one that downloaded it" }
 * ```
 *
 * @module
 */

import { OtaErr, stateReason } from "../protocol/job_status.ts";
import { FwuState } from "../bootloader/fwu.ts";
import { PsaStatus } from "../bootloader/psa_status.ts";

/** A refusal: the reason in the AWS format and a detail for people. */
export interface Refusal {
  readonly reason: string;
  readonly detail: string;
}

/**
 * The image on trial against the version word that downloaded it (`statusDetails.updatedBy`):
 * the same or an older version is refused unless downgrades are allowed; no word, no check.
 */
export function trialVersionProblem(facts: {
  readonly updatedBy: string | undefined;
  readonly running: string;
  readonly allowDowngrade: boolean;
}): Refusal | null {
  const { updatedBy, running } = facts;
  if (facts.allowDowngrade || updatedBy === undefined || !/^0x[0-9a-f]{8}$/i.test(updatedBy)) {
    return null;
  }
  const previous = parseInt(updatedBy, 16);
  const now = parseInt(running, 16);
  if (now > previous) return null;
  return {
    reason: stateReason(
      "rejected",
      now === previous ? OtaErr.SameFirmwareVersion : OtaErr.DowngradeNotAllowed,
    ),
    detail: "running version is not newer than the one that downloaded it",
  };
}

/** What to do when the job expects a self-test but no image is on trial. */
export type NotOnTrial =
  | { readonly action: "activate" }
  | { readonly action: "download-again"; readonly detail: string }
  | ({ readonly action: "fail" } & Refusal);

/**
 * The table for a job in self-test whose image is not on trial, first match wins:
 *
 * | update state          | last failure               | running = updatedBy | action         |
 * | --------------------- | -------------------------- | ------------------- | -------------- |
 * | CANDIDATE or STAGED   | any                        | any                 | activate       |
 * | other                 | install interrupted        | yes                 | download again |
 * | other                 | any                        | yes                 | fail: same     |
 * | other                 | any                        | no                  | fail: mismatch |
 *
 * A power cut while the install was being requested means the image never ran, so it says
 * nothing about the image: failing the job would count it against the abort threshold.
 */
export function notOnTrialAction(facts: {
  readonly updateState: number;
  readonly failure: { readonly code: number; readonly detail: string } | null;
  readonly updatedBy: string | undefined;
  readonly running: string;
}): NotOnTrial {
  if (facts.updateState === FwuState.CANDIDATE || facts.updateState === FwuState.STAGED) {
    return { action: "activate" };
  }
  const sameAsBefore = facts.updatedBy === facts.running;
  if (facts.failure?.code === PsaStatus.ERROR_INSTALL_INTERRUPTED && sameAsBefore) {
    return { action: "download-again", detail: facts.failure.detail };
  }
  return {
    action: "fail",
    reason: stateReason(
      "rejected",
      sameAsBefore ? OtaErr.SameFirmwareVersion : OtaErr.ImageStateMismatch,
    ),
    detail: facts.failure?.detail ?? "the new image is not running",
  };
}
