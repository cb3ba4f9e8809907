/**
 * The boot decision: a small, ordered table from the slots' trailer states and the swap-status
 * sector to a swap type, evaluated top to bottom (first match wins), as in MCUboot's
 * `boot_swap_tables`. Pure: no flash access, so every row is unit-tested directly.
 *
 * @module
 */

import type { FlagState, MagicState, SlotTrailer } from "./trailer.ts";

/** What the bootloader does before validating the primary slot. */
export type SwapType = "none" | "test" | "perm" | "revert" | "resume";

/** The flash state the decision reads. */
export interface BootInputs {
  readonly primary: SlotTrailer;
  readonly secondary: SlotTrailer;
  /** Whether the swap-status sector records an unfinished swap. */
  readonly swapInProgress: boolean;
}

/** A column matcher: an exact state, "any", or "not-unset" (set or torn). */
type Match<T extends string> = T | "any" | "not-unset";

/** One row of the table. */
export interface BootDecisionRow {
  readonly row: number;
  readonly swapInProgress: boolean | "any";
  readonly primaryMagic: Match<MagicState>;
  readonly primaryImageOk: Match<FlagState>;
  readonly primaryCopyDone: Match<FlagState>;
  readonly secondaryMagic: Match<MagicState>;
  readonly secondaryImageOk: Match<FlagState>;
  readonly secondaryFailed: Match<FlagState>;
  readonly swap: SwapType;
  /** Set when the secondary's request must be recorded as failed with this detail. */
  readonly refuseRequest?: string;
  readonly why: string;
}

/** The decision table. Row order matters. */
export const BOOT_DECISION_TABLE: readonly BootDecisionRow[] = [
  {
    row: 1,
    swapInProgress: true,
    primaryMagic: "any",
    primaryImageOk: "any",
    primaryCopyDone: "any",
    secondaryMagic: "any",
    secondaryImageOk: "any",
    secondaryFailed: "any",
    swap: "resume",
    why: "a swap was interrupted: complete it from its status records",
  },
  {
    row: 2,
    swapInProgress: false,
    primaryMagic: "any",
    primaryImageOk: "any",
    primaryCopyDone: "any",
    secondaryMagic: "good",
    secondaryImageOk: "unset",
    secondaryFailed: "unset",
    swap: "test",
    why: "an update is pending in the secondary slot: install it for one test boot",
  },
  {
    row: 3,
    swapInProgress: false,
    primaryMagic: "any",
    primaryImageOk: "any",
    primaryCopyDone: "any",
    secondaryMagic: "good",
    secondaryImageOk: "set",
    secondaryFailed: "unset",
    swap: "perm",
    why: "a permanent update is pending in the secondary slot",
  },
  {
    row: 4,
    swapInProgress: false,
    primaryMagic: "any",
    primaryImageOk: "any",
    primaryCopyDone: "any",
    secondaryMagic: "good",
    secondaryImageOk: "bad",
    secondaryFailed: "unset",
    swap: "test",
    why: "a pending update with a torn permanent flag: install it as a test (fails toward revert)",
  },
  {
    // Before the rows that read a failed or torn secondary: whatever the secondary says, an
    // unconfirmed image must not keep running (MCUboot #1966 bricked on exactly this).
    row: 5,
    swapInProgress: false,
    primaryMagic: "good",
    primaryImageOk: "unset",
    primaryCopyDone: "set",
    secondaryMagic: "any",
    secondaryImageOk: "any",
    secondaryFailed: "any",
    swap: "revert",
    why: "the primary image was tested but never confirmed: revert to the previous image",
  },
  {
    row: 6,
    swapInProgress: false,
    primaryMagic: "any",
    primaryImageOk: "any",
    primaryCopyDone: "any",
    secondaryMagic: "any",
    secondaryImageOk: "any",
    secondaryFailed: "not-unset",
    swap: "none",
    why: "the secondary slot holds a failed update: it is never retried",
  },
  {
    row: 7,
    swapInProgress: false,
    primaryMagic: "any",
    primaryImageOk: "any",
    primaryCopyDone: "any",
    secondaryMagic: "bad",
    secondaryImageOk: "any",
    secondaryFailed: "unset",
    swap: "none",
    refuseRequest: "install request torn by a power cut",
    why: "the install request in the secondary slot is torn: refuse it",
  },
  {
    row: 8,
    swapInProgress: "any",
    primaryMagic: "any",
    primaryImageOk: "any",
    primaryCopyDone: "any",
    secondaryMagic: "any",
    secondaryImageOk: "any",
    secondaryFailed: "any",
    swap: "none",
    why: "nothing pending: boot the primary image",
  },
];

function matches<T extends string>(want: Match<T>, have: T): boolean {
  if (want === "any") return true;
  if (want === "not-unset") return have !== "unset";
  return want === have;
}

/**
 * Picks the first matching row.
 *
 * @example
 * ```ts ignore
 * const decision = decideBoot({ primary, secondary, swapInProgress: false });
 * decision.swap; // "test"
 * ```
 */
export function decideBoot(inputs: BootInputs): BootDecisionRow {
  for (const row of BOOT_DECISION_TABLE) {
    if (row.swapInProgress !== "any" && row.swapInProgress !== inputs.swapInProgress) continue;
    if (!matches(row.primaryMagic, inputs.primary.magic)) continue;
    if (!matches(row.primaryImageOk, inputs.primary.imageOk)) continue;
    if (!matches(row.primaryCopyDone, inputs.primary.copyDone)) continue;
    if (!matches(row.secondaryMagic, inputs.secondary.magic)) continue;
    if (!matches(row.secondaryImageOk, inputs.secondary.imageOk)) continue;
    if (!matches(row.secondaryFailed, inputs.secondary.failed)) continue;
    return row;
  }
  // Row 8 matches everything; this keeps the function total for the type checker.
  return BOOT_DECISION_TABLE[BOOT_DECISION_TABLE.length - 1]!;
}
