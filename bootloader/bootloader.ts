/**
 * The secure boot flow: finish an interrupted swap, or take the boot decision and install,
 * refuse or revert; then validate the primary image (hash, signature chained to the ROM root,
 * security counter) on every boot; fall back to the previous image if the primary is corrupt,
 * or stop in recovery when nothing valid is left. Every step goes to the boot log.
 *
 * All state comes from flash: the function keeps nothing between boots.
 *
 * @module
 */

import type { Clock } from "../lib/clock.ts";
import type { Certificate } from "../protocol/certificates.ts";
import type { VerificationCache } from "../protocol/signatures.ts";
import type { FlashArea } from "./flash_area.ts";
import {
  compareVersions,
  type DecodedImage,
  formatVersion,
  type ImageVersion,
  isEncrypted,
  unmetDependency,
} from "../protocol/image_format.ts";
import {
  decodeAreaImage,
  type ImageKeys,
  validateAreaImage,
  type ValidationResult,
} from "./image_validate.ts";
import type { DeviceAreas } from "./layout.ts";
import { PsaStatus } from "./psa_status.ts";
import { SecurityCounter } from "./security_counter.ts";
import { decideBoot } from "./boot_decision.ts";
import { continueSwap, performSwap, type SwapKeys } from "./swap.ts";
import {
  readSwapStatus,
  type SwapCipherRecord,
  type SwapCipherRecords,
  type SwapKind,
} from "./swap_status.ts";
import type { UnwrapResult } from "../protocol/image_encryption.ts";
import {
  eraseTrailer,
  readTrailer,
  type SlotTrailer,
  writeTrailerFailure,
  writeTrailerFlag,
} from "./trailer.ts";

/** The immutable part of the device: what its boot ROM holds. */
export interface BootRom {
  /** Trust anchor for code signing. */
  readonly root: Certificate;
  /** Code-signer certificates the OTA PAL may read by path (PEM or DER). */
  readonly certificates?: ReadonlyMap<string, string | Uint8Array>;
  /** Shared signature-result cache (a simulator optimisation; results are exact). */
  readonly verificationCache?: VerificationCache;
  /**
   * The secure element's image-key slot, as the boot ROM reaches it: unwraps the payload key of
   * an encrypted image (none: encrypted images are refused).
   */
  readonly imageKeys?: ImageKeys;
  /**
   * The board this chip is (a hardware id written at manufacture): a candidate built for another
   * board (its HARDWARE_ID TLV) is refused. None: only images built for any board install.
   */
  readonly hardwareId?: string;
  /**
   * Signing keys refused even with a valid signature (SHA-256 of their SPKI, hex): the trust
   * store's revocations (see trust_store.ts).
   */
  readonly revokedKeys?: ReadonlySet<string>;
  /** Roots the trust store rotated away from, whose signers still verify (see trust_store.ts). */
  readonly formerRoots?: readonly Certificate[];
}

/** What the boot ROM hands to the running image (MCUboot's shared boot data). */
export interface BootRecord {
  /** The image now running from the primary slot. */
  readonly image: DecodedImage;
  /** SHA-256 of its hashed region. */
  readonly digest: Uint8Array;
  /** True on the first boot of an unconfirmed image: it must confirm or be reverted. */
  readonly trial: boolean;
  /** Security counter after this boot. */
  readonly securityCounter: number;
  /** What the bootloader did this boot. */
  readonly action: "none" | "installed" | "reverted" | "resumed" | "refused" | "fell-back";
}

/** Outcome of a boot. */
export type BootOutcome =
  | { readonly kind: "run"; readonly record: BootRecord; readonly log: readonly string[] }
  | { readonly kind: "recovery"; readonly reason: string; readonly log: readonly string[] };

/** Inputs of {@linkcode boot}. */
export interface BootContext {
  readonly areas: DeviceAreas;
  readonly rom: BootRom;
  readonly clock: Clock;
  /**
   * The versions of the device's other images, by `ImageId` (the second stage the chain runs):
   * what a candidate's DEPENDENCY TLVs are checked against.
   */
  readonly components?: ReadonlyMap<number, ImageVersion>;
}

function describe(trailer: SlotTrailer): string {
  const flags = `magic=${trailer.magic} image_ok=${trailer.imageOk} copy_done=${trailer.copyDone}`;
  return trailer.failed === "unset"
    ? flags
    : `${flags} failed=${trailer.failed}(${trailer.failReason})`;
}

/** The bytes of a slot an image may occupy: all but its trailer sector. */
export function slotImageSize(area: FlashArea): number {
  return (area.sectorCount - 1) * area.sectorSize;
}

function sectorsFor(areas: DeviceAreas, ...images: (DecodedImage | undefined)[]): number {
  const slotSectors = areas.primary.sectorCount - 1;
  let bytes = 0;
  for (const image of images) {
    if (!image) return slotSectors; // unknown extent: exchange the whole image region
    bytes = Math.max(bytes, image.totalSize);
  }
  return Math.min(slotSectors, Math.max(1, Math.ceil(bytes / areas.primary.sectorSize)));
}

/** Erases the candidate and records why, so it is never tried again. */
function refuseCandidate(areas: DeviceAreas, reason: number, detail: string): void {
  const { secondary } = areas;
  // Image sectors first: until the trailer goes, a cut here just repeats the refusal.
  for (let sector = 0; sector < secondary.sectorCount - 1; sector++) {
    secondary.eraseSectorIfNeeded(sector);
  }
  eraseTrailer(secondary);
  writeTrailerFailure(secondary, reason, detail);
}

function failureCode(result: ValidationResult): number {
  if (result.ok) return PsaStatus.SUCCESS;
  if (result.wrongHardware) return PsaStatus.ERROR_NOT_SUPPORTED;
  return /security counter|downgrade/.test(result.reason)
    ? PsaStatus.ERROR_NOT_PERMITTED
    : result.image
    ? PsaStatus.ERROR_INVALID_SIGNATURE
    : PsaStatus.ERROR_DATA_INVALID;
}

/** The record of `image`'s encrypted payload, or null for a plaintext image. */
function cipherRecord(image: DecodedImage): SwapCipherRecord | null {
  if (!isEncrypted(image) || !image.encryptedKey) return null;
  return {
    start: image.payloadOffset,
    end: image.payloadOffset + image.header.payloadSize,
    wrappedKey: image.encryptedKey,
  };
}

/**
 * What a swap of `primary` (installed, plaintext) and `secondary` (staged, verified) turns, with
 * the keys. The staged image's key unwrapped when it was verified; the installed image's is
 * unwrapped to encrypt it again on its way out, and where it cannot be (a key no longer held)
 * it is moved as it is, which the log says.
 */
async function swapCiphers(
  rom: BootRom,
  primary: DecodedImage | null,
  secondary: DecodedImage,
  log: string[],
): Promise<{ records: SwapCipherRecords; keys: SwapKeys }> {
  const incoming = cipherRecord(secondary);
  let outgoing = primary ? cipherRecord(primary) : null;
  const primaryKey = outgoing ? await unwrapRecord(rom, outgoing) : null;
  if (outgoing && !primaryKey?.ok) {
    log.push("the running image's key cannot be unwrapped: it leaves the primary slot unencrypted");
    outgoing = null;
  }
  const secondaryKey = incoming ? await unwrapRecord(rom, incoming) : null;
  return {
    records: { primary: outgoing, secondary: incoming },
    keys: {
      primary: primaryKey?.ok ? primaryKey.key : null,
      secondary: secondaryKey?.ok ? secondaryKey.key : null,
    },
  };
}

/** The payload key of a recorded encrypted payload, as the secure element unwraps it. */
function unwrapRecord(rom: BootRom, record: SwapCipherRecord): Promise<UnwrapResult> {
  return rom.imageKeys
    ? rom.imageKeys.unwrapImageKey(record.wrappedKey)
    : Promise.resolve({ ok: false, reason: "no image key to decrypt the payload" });
}

/** How a staged image is read on this ROM: decrypted with its secure element's keys, if any. */
export function stagedOn(rom: BootRom): { readonly keys?: ImageKeys } {
  return rom.imageKeys ? { keys: rom.imageKeys } : {};
}

/** The board a staged image must be built for on this ROM (see `BootRom.hardwareId`). */
export function boardOf(rom: BootRom): { readonly id: string | null } {
  return { id: rom.hardwareId ?? null };
}

/**
 * Swaps `incoming` (verified in the secondary slot) into the primary slot and `running` out, over
 * the sectors either occupies, decrypting and encrypting as they need.
 */
async function swapIn(
  context: BootContext,
  kind: SwapKind,
  incoming: DecodedImage,
  running: DecodedImage | null,
  log: string[],
): Promise<void> {
  const sectors = sectorsFor(context.areas, incoming, running ?? undefined);
  const ciphers = await swapCiphers(context.rom, running, incoming, log);
  performSwap(
    context.areas,
    kind,
    sectors,
    (line) => log.push(line),
    ciphers.records,
    ciphers.keys,
  );
}

/** The keys of a recorded swap's encrypted payloads, unwrapped again to resume it. */
async function recordedKeys(
  rom: BootRom,
  records: SwapCipherRecords,
): Promise<{ ok: true; keys: SwapKeys } | { ok: false; reason: string }> {
  const keys: { primary: Uint8Array | null; secondary: Uint8Array | null } = {
    primary: null,
    secondary: null,
  };
  for (const side of ["primary", "secondary"] as const) {
    const record = records[side];
    if (!record) continue;
    const unwrapped = await unwrapRecord(rom, record);
    if (!unwrapped.ok) return { ok: false, reason: unwrapped.reason };
    keys[side] = unwrapped.key;
  }
  return { ok: true, keys };
}

/**
 * Boots the device from its flash.
 *
 * @example
 * ```ts ignore
 * const outcome = await boot({ areas, rom, clock });
 * if (outcome.kind === "run") console.log(formatVersion(outcome.record.image.header.version));
 * ```
 */
export async function boot(context: BootContext): Promise<BootOutcome> {
  const { areas, rom, clock } = context;
  const log: string[] = [];
  const fuses = new SecurityCounter(areas.fuses);
  const slotSectors = areas.primary.sectorCount - 1;
  let action: BootRecord["action"] = "none";
  const validate = (area: FlashArea, options: { at?: Date } = {}) =>
    validateAreaImage(area, slotImageSize(area), {
      root: rom.root,
      minimumSecurityCounter: fuses.read(),
      ...(rom.revokedKeys ? { revokedKeys: rom.revokedKeys } : {}),
      ...(rom.formerRoots ? { formerRoots: rom.formerRoots } : {}),
      ...(rom.verificationCache ? { cache: rom.verificationCache } : {}),
      // An encrypted image is ciphertext in the secondary slot, plaintext once installed.
      ...(area === areas.secondary ? { staged: stagedOn(rom), hardware: boardOf(rom) } : {}),
      ...options,
    });

  const status = readSwapStatus(areas.swapStatus, slotSectors);
  const primaryTrailer = readTrailer(areas.primary);
  const secondaryTrailer = readTrailer(areas.secondary);
  log.push(`primary trailer: ${describe(primaryTrailer)}`);
  log.push(`secondary trailer: ${describe(secondaryTrailer)}`);
  log.push(`security counter: ${fuses.read()}`);
  const decision = decideBoot({
    primary: primaryTrailer,
    secondary: secondaryTrailer,
    swapInProgress: status.state === "in-progress",
  });
  log.push(`decision row ${decision.row}: ${decision.swap} (${decision.why})`);

  if (decision.swap === "resume" && status.state === "in-progress") {
    const done = status.progress.filter((steps) => steps === 3).length;
    log.push(`resuming ${status.kind} swap: ${done}/${status.sectors} sectors done`);
    const keys = await recordedKeys(rom, status.ciphers);
    if (!keys.ok) {
      log.push(`cannot resume the swap: ${keys.reason}: entering recovery`);
      return { kind: "recovery", reason: `swap cannot resume: ${keys.reason}`, log };
    }
    continueSwap(areas, status, (line) => log.push(line), keys.keys);
    action = "resumed";
  } else if (decision.swap === "test" || decision.swap === "perm") {
    const candidate = await validate(areas.secondary, { at: new Date(clock.now()) });
    const running = decodeAreaImage(areas.primary, slotImageSize(areas.primary));
    let refusal: { code: number; detail: string } | null = null;
    if (!candidate.ok) {
      refusal = { code: failureCode(candidate), detail: candidate.reason };
    } else if (
      running.ok &&
      compareVersions(candidate.image.header.version, running.image.header.version) < 0
    ) {
      refusal = {
        code: PsaStatus.ERROR_NOT_PERMITTED,
        detail: `downgrade from ${formatVersion(running.image.header.version)} to ${
          formatVersion(candidate.image.header.version)
        } refused`,
      };
    } else {
      const unmet = unmetDependency(candidate.image.dependencies, context.components ?? new Map());
      if (unmet) refusal = { code: PsaStatus.ERROR_DEPENDENCY_NEEDED, detail: unmet };
    }
    if (refusal || !candidate.ok) {
      const detail = refusal?.detail ?? "invalid candidate";
      log.push(`candidate refused and erased: ${detail}`);
      refuseCandidate(areas, refusal?.code ?? PsaStatus.ERROR_INVALID_SIGNATURE, detail);
      action = "refused";
    } else {
      log.push(`candidate ${formatVersion(candidate.image.header.version)} verified`);
      await swapIn(context, decision.swap, candidate.image, running.ok ? running.image : null, log);
      action = "installed";
    }
  } else if (decision.swap === "revert") {
    const previous = await validate(areas.secondary);
    if (previous.ok) {
      const running = decodeAreaImage(areas.primary, slotImageSize(areas.primary));
      await swapIn(context, "revert", previous.image, running.ok ? running.image : null, log);
      action = "reverted";
    } else {
      // Nothing valid to go back to: keep the tested image rather than brick (MCUboot's FAIL).
      log.push(
        `previous image invalid (${previous.reason}): keeping the tested image as confirmed`,
      );
      writeTrailerFlag(areas.primary, "imageOk");
    }
  } else if (decision.refuseRequest && secondaryTrailer.failed === "unset") {
    writeTrailerFailure(
      areas.secondary,
      PsaStatus.ERROR_INSTALL_INTERRUPTED,
      decision.refuseRequest,
    );
    action = "refused";
  }

  let primary = await validate(areas.primary);
  if (!primary.ok) {
    log.push(`primary image invalid: ${primary.reason}`);
    const previous = await validate(areas.secondary);
    if (previous.ok) {
      log.push(
        `falling back to the previous image ${
          formatVersion(previous.image.header.version)
        } in the secondary slot`,
      );
      // Over the whole slot; the corrupt primary image is erased from the secondary slot after,
      // so there is nothing to encrypt on its way out.
      await swapIn(context, "fallback", previous.image, null, log);
      action = "fell-back";
      primary = await validate(areas.primary);
    }
    if (!primary.ok) {
      log.push(`no valid image left: entering recovery`);
      return { kind: "recovery", reason: `no valid image: ${primary.reason}`, log };
    }
  }

  const components = context.components ?? new Map();
  const unmet = unmetDependency(primary.image.dependencies, components);
  if (unmet) {
    // Installed together with a second stage that did not stay (it crashed on trial, or the
    // power went between the two confirmations): the previous image, which the running second
    // stage does meet, goes back in, so the two are never a mix of old and new.
    const previous = await validate(areas.secondary);
    const previousUnmet = previous.ok
      ? unmetDependency(previous.image.dependencies, components)
      : previous.reason;
    if (previous.ok && !previousUnmet) {
      log.push(
        `${formatVersion(primary.image.header.version)} ${unmet}: going back to ${
          formatVersion(previous.image.header.version)
        }`,
      );
      await swapIn(context, "dependency", previous.image, primary.image, log);
      action = "reverted";
      primary = await validate(areas.primary);
      if (!primary.ok) {
        log.push(`no valid image left: entering recovery`);
        return { kind: "recovery", reason: `no valid image: ${primary.reason}`, log };
      }
    } else {
      // Nothing to go back to: an image with an unmet dependency still beats no image at all.
      log.push(
        `${formatVersion(primary.image.header.version)} ${unmet}, and no previous image ` +
          `(${previousUnmet}): booting it`,
      );
    }
  }

  const trailer = readTrailer(areas.primary);
  const trial = trailer.magic === "good" && trailer.imageOk === "unset" &&
    trailer.copyDone === "set";
  if (
    !trial && primary.image.securityCounter !== null && primary.image.securityCounter > fuses.read()
  ) {
    // Confirmed images (and factory images, which were never swapped) lock the counter in.
    fuses.raiseTo(Math.min(primary.image.securityCounter, fuses.capacity));
    log.push(`security counter raised to ${fuses.read()}`);
  }
  log.push(
    `booting ${formatVersion(primary.image.header.version)} from the primary slot${
      trial ? " (trial: must confirm)" : ""
    }`,
  );
  return {
    kind: "run",
    record: {
      image: primary.image,
      digest: primary.digest,
      trial,
      securityCounter: fuses.read(),
      action,
    },
    log,
  };
}
