/**
 * The cloud's side of delta updates: the patches an OTA update offers, made with
 * `npm:fossil-delta` from each image the targeted devices may run (the bases) to the new image.
 * A patch is offered only when it is much smaller than the image (else the image itself is
 * cheaper to send, and to get right); a device that does not run any base fetches the image.
 *
 * @example
 * ```ts ignore
 * const offers = makeDeltaOffers(newImage, [factoryImage, previousImage]);
 * offers[0].patch.length; // a few per cent of newImage.length for a small change
 * ```
 *
 * @module
 */

import { createDelta } from "fossil-delta";
import { sha256 } from "../protocol/signatures.ts";
import { bytesEqual } from "../lib/bytes.ts";
import { MAX_DELTA_OFFERS } from "../protocol/job_document.ts";

/** A patch from one base to the target. */
export interface DeltaOfferFile {
  /** SHA-256 of the whole base image (what a device hashes its running slot's image to). */
  readonly baseSha256: Uint8Array;
  readonly patch: Uint8Array;
}

/** A patch is offered when it is at most this share of the image. */
export const MAX_PATCH_SHARE = 0.5;

/**
 * The patches worth offering from `bases` to `target`, at most {@linkcode MAX_DELTA_OFFERS},
 * bases taken in the order given (the most likely first): a base given twice or equal to the
 * target is skipped, and so is one whose patch is over {@linkcode MAX_PATCH_SHARE} of the target.
 */
export function makeDeltaOffers(
  target: Uint8Array,
  bases: readonly Uint8Array[],
): DeltaOfferFile[] {
  const offers: DeltaOfferFile[] = [];
  const seen: Uint8Array[] = [sha256(target)];
  for (const base of bases) {
    if (offers.length === MAX_DELTA_OFFERS) break;
    const baseSha256 = sha256(base);
    if (seen.some((hash) => bytesEqual(hash, baseSha256))) continue;
    seen.push(baseSha256);
    const patch = new Uint8Array(createDelta(base, target));
    if (patch.length > target.length * MAX_PATCH_SHARE) continue;
    offers.push({ baseSha256, patch });
  }
  return offers;
}
