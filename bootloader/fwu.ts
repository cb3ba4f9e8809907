/**
 * Firmware-update service with the PSA Certified Firmware Update API 1.0 component model:
 * component 0 is the application image; component 1, on a device that boots in two stages, its
 * second-stage bootloader. Staging is non-volatile: WRITING and CANDIDATE survive a reboot, which
 * is what lets an agent resume a download after a power cut.
 *
 * As the API specifies, `install` installs every candidate together, `accept` accepts and
 * `reject` rejects every component on trial: an application and a second stage staged for one
 * update come up on trial after one reboot and are both kept or both reverted. What holds them
 * together across power cuts is the application's dependency on the second stage it comes with
 * (MCUboot's DEPENDENCY TLV, which `install` requires): a bootloader that went back refuses, or
 * reverts, an application it does not meet.
 *
 * The component state is never kept only in RAM (except REJECTED, which the spec makes
 * volatile): it is derived at start-up from the slot trailers and the boot record, so a reset at
 * any point leaves a state the spec allows.
 *
 * @module
 */

import type { Clock } from "../lib/clock.ts";
import { alignUp, isFilledWith } from "../lib/bytes.ts";
import { boardOf, type BootRecord, type BootRom, slotImageSize, stagedOn } from "./bootloader.ts";
import { ERASED, FlashError, isPowerCut } from "./flash.ts";
import {
  compareVersions,
  formatVersion,
  type ImageDependency,
  ImageId,
  type ImageVersion,
  unmetDependency,
} from "../protocol/image_format.ts";
import { decodeAreaImage, validateAreaImage } from "./image_validate.ts";
import type { DeviceAreas } from "./layout.ts";
import { PsaStatus } from "./psa_status.ts";
import { SecurityCounter } from "./security_counter.ts";
import {
  eraseTrailer,
  readTrailer,
  writeTrailerFailure,
  writeTrailerFlag,
  writeTrailerMagic,
} from "./trailer.ts";

/** Component states (`PSA_FWU_*`). */
export const FwuState = {
  READY: 0,
  WRITING: 1,
  CANDIDATE: 2,
  STAGED: 3,
  FAILED: 4,
  TRIAL: 5,
  REJECTED: 6,
  UPDATED: 7,
} as const;
/** A component state. */
export type FwuStateValue = typeof FwuState[keyof typeof FwuState];

/**
 * Name of a state.
 *
 * @example
 * ```ts
 * import { fwuStateName } from "./fwu.ts";
 * fwuStateName(5); // "TRIAL"
 * ```
 */
export function fwuStateName(state: number): string {
  return Object.entries(FwuState).find(([, value]) => value === state)?.[0] ?? `state ${state}`;
}

/** Operations that change state. */
export type FwuOperation =
  | "start"
  | "write"
  | "finish"
  | "cancel"
  | "install"
  | "accept"
  | "reject"
  | "clean";

/** One legal transition. */
export interface FwuTransition {
  readonly operation: FwuOperation;
  readonly from: FwuStateValue;
  readonly to: FwuStateValue;
  /** Status returned on success. */
  readonly status: number;
  /** State taken when the operation fails after it started changing the store. */
  readonly onFailure?: FwuStateValue;
}

const S = FwuState;
/** The component state model (spec figure "standard component state model"), as data. */
export const FWU_TRANSITIONS: readonly FwuTransition[] = [
  { operation: "start", from: S.READY, to: S.WRITING, status: PsaStatus.SUCCESS },
  {
    operation: "write",
    from: S.WRITING,
    to: S.WRITING,
    status: PsaStatus.SUCCESS,
    onFailure: S.FAILED,
  },
  {
    operation: "finish",
    from: S.WRITING,
    to: S.CANDIDATE,
    status: PsaStatus.SUCCESS,
    onFailure: S.FAILED,
  },
  { operation: "cancel", from: S.WRITING, to: S.FAILED, status: PsaStatus.SUCCESS },
  { operation: "cancel", from: S.CANDIDATE, to: S.FAILED, status: PsaStatus.SUCCESS },
  {
    operation: "install",
    from: S.CANDIDATE,
    to: S.STAGED,
    status: PsaStatus.SUCCESS_REBOOT,
    onFailure: S.FAILED,
  },
  { operation: "reject", from: S.STAGED, to: S.FAILED, status: PsaStatus.SUCCESS },
  { operation: "reject", from: S.TRIAL, to: S.REJECTED, status: PsaStatus.SUCCESS_REBOOT },
  { operation: "accept", from: S.TRIAL, to: S.UPDATED, status: PsaStatus.SUCCESS },
  { operation: "clean", from: S.FAILED, to: S.READY, status: PsaStatus.SUCCESS },
  { operation: "clean", from: S.UPDATED, to: S.READY, status: PsaStatus.SUCCESS },
];

/**
 * The legal transition of `operation` from `state`, if any.
 *
 * @example
 * ```ts
 * import { FwuState, fwuTransition } from "./fwu.ts";
 * fwuTransition("accept", FwuState.TRIAL)?.to === FwuState.UPDATED; // true
 * ```
 */
export function fwuTransition(
  operation: FwuOperation,
  state: FwuStateValue,
): FwuTransition | undefined {
  return FWU_TRANSITIONS.find((t) => t.operation === operation && t.from === state);
}

/** `psa_fwu_component_info_t`. */
export interface FwuComponentInfo {
  readonly state: FwuStateValue;
  /** Why the second image is FAILED or REJECTED. */
  readonly error: number;
  /** Human-readable detail of `error`. */
  readonly errorDetail: string | null;
  /** Version of the active image. */
  readonly version: ImageVersion;
  /** Largest image the staging slot holds. */
  readonly maxSize: number;
  /** `PSA_FWU_FLAG_*`: 0, staging is not volatile. */
  readonly flags: number;
  /** Implementation detail: SHA-256 of the candidate's hashed region once verified. */
  readonly candidateDigest: Uint8Array | null;
}

/** The application image. */
export const FIRMWARE_COMPONENT = 0;
/** The second-stage bootloader (staged whole, by `Device.stageSecondStage`). */
export const SECOND_STAGE_COMPONENT = 1;

/** What the update service needs of the device's second stage, its component 1. */
export interface SecondStageComponent {
  /** The running second stage's version (null: the device boots in one stage). */
  running(): ImageVersion | null;
  /** A second stage staged to install with the application (pending once installed), or null. */
  candidate(): { readonly version: ImageVersion; readonly pending: boolean } | null;
  /** Makes the candidate pending: the first stage tries it at the next boot. */
  commit(): void;
  /** Forgets a candidate or pending second stage. */
  cancel(): void;
  /** Whether the running second stage is on trial. */
  onTrial(): boolean;
  /** Keeps the second stage on trial. */
  confirm(): void;
}
/** Largest block one `write` takes. */
export const FWU_MAX_WRITE_SIZE = 64 * 1024;

/** The version the service reports when no image runs (recovery mode). */
const NO_VERSION: ImageVersion = { major: 0, minor: 0, revision: 0, build: 0 };

/** Dependencies of the service. */
export interface FwuContext {
  readonly areas: DeviceAreas;
  readonly rom: BootRom;
  readonly clock: Clock;
  /**
   * What the bootloader reported for this boot; null in recovery mode, where no image runs and
   * the service exists only to receive one.
   */
  readonly bootRecord: BootRecord | null;
  /** Asks the device to reboot (the call returns; the reset happens after it). */
  readonly requestReboot: () => void;
  /**
   * The versions of the device's other images by `ImageId` (its second-stage bootloader), which a
   * candidate's dependencies must be met by. None: the device has no other image.
   */
  readonly components?: () => ReadonlyMap<number, ImageVersion>;
  /** Component 1, the second-stage bootloader (none: the device boots in one stage). */
  readonly secondStage?: SecondStageComponent;
}

/**
 * The firmware-update service of a running device.
 *
 * @example
 * ```ts ignore
 * const fwu = new FirmwareUpdateService(context);
 * fwu.start(0);
 * fwu.write(0, 0, imageBytes);
 * await fwu.finish(0);
 * fwu.install(); // PSA_SUCCESS_REBOOT
 * ```
 */
export class FirmwareUpdateService {
  readonly #context: FwuContext;
  readonly #fuses: SecurityCounter;
  #rejected = false;
  #candidateDigest: Uint8Array | null = null;

  /** Opens the service; the state is read from flash. */
  constructor(context: FwuContext) {
    this.#context = context;
    this.#fuses = new SecurityCounter(context.areas.fuses);
  }

  /** The staging slot's image capacity. */
  get maxSize(): number {
    return slotImageSize(this.#context.areas.secondary);
  }

  /** The staging slot's write unit: a write starts on one. */
  get writeUnit(): number {
    return this.#context.areas.secondary.writeUnit;
  }

  /** Current state, derived from flash. */
  get state(): FwuStateValue {
    const { primary, secondary } = this.#context.areas;
    const staging = readTrailer(secondary);
    if (staging.failed !== "unset") return S.FAILED;
    if (this.#context.bootRecord?.trial) {
      const active = readTrailer(primary);
      if (active.imageOk === "unset") return this.#rejected ? S.REJECTED : S.TRIAL;
    }
    if (staging.magic !== "unset") return S.STAGED;
    if (staging.candidate !== "unset") return S.CANDIDATE;
    if (staging.writing !== "unset") return S.WRITING;
    const stagingHoldsData = !secondary.isErased(0, Math.min(secondary.sectorSize, this.maxSize));
    return stagingHoldsData ? S.UPDATED : S.READY;
  }

  /** `psa_fwu_query`. */
  query(component: number): { status: number; info?: FwuComponentInfo } {
    if (component === SECOND_STAGE_COMPONENT) return this.#querySecondStage();
    if (component !== FIRMWARE_COMPONENT) return { status: PsaStatus.ERROR_DOES_NOT_EXIST };
    const staging = readTrailer(this.#context.areas.secondary);
    const state = this.state;
    return {
      status: PsaStatus.SUCCESS,
      info: {
        state,
        error: state === S.FAILED
          ? staging.failReason ?? PsaStatus.ERROR_STORAGE_FAILURE
          : state === S.REJECTED
          ? PsaStatus.ERROR_NOT_PERMITTED
          : PsaStatus.SUCCESS,
        errorDetail: state === S.FAILED ? staging.failDetail : null,
        version: this.#context.bootRecord?.image.header.version ?? NO_VERSION,
        maxSize: this.maxSize,
        flags: 0,
        candidateDigest: state === S.CANDIDATE || state === S.STAGED ? this.#candidateDigest : null,
      },
    };
  }

  #querySecondStage(): { status: number; info?: FwuComponentInfo } {
    const stage = this.#context.secondStage;
    const running = stage?.running();
    if (!stage || !running) return { status: PsaStatus.ERROR_DOES_NOT_EXIST };
    const candidate = stage.candidate();
    return {
      status: PsaStatus.SUCCESS,
      info: {
        state: stage.onTrial()
          ? S.TRIAL
          : candidate?.pending
          ? S.STAGED
          : candidate
          ? S.CANDIDATE
          : S.READY,
        error: PsaStatus.SUCCESS,
        errorDetail: null,
        version: running,
        maxSize: this.#context.areas.stage2[0].size,
        flags: 0,
        candidateDigest: null,
      },
    };
  }

  /** The versions a candidate's dependencies are checked against: with a staged second stage. */
  #componentsWithCandidates(): ReadonlyMap<number, ImageVersion> {
    const components = new Map(this.#context.components?.() ?? []);
    const staged = this.#context.secondStage?.candidate();
    if (staged) components.set(ImageId.SECOND_STAGE, staged.version);
    return components;
  }

  /** `psa_fwu_start`: READY -> WRITING, erasing the staging slot. */
  start(component: number, manifest?: Uint8Array): number {
    const guard = this.#guard(component, "start");
    if (guard !== PsaStatus.SUCCESS) return guard;
    if (manifest && manifest.length > 0) return PsaStatus.ERROR_NOT_SUPPORTED; // manifests are bundled
    const { secondary } = this.#context.areas;
    return this.#storage(() => {
      for (let sector = 0; sector < secondary.sectorCount; sector++) {
        secondary.eraseSectorIfNeeded(sector);
      }
      writeTrailerFlag(secondary, "writing");
      this.#candidateDigest = null;
    });
  }

  /**
   * `psa_fwu_write`: programs a block at `offset` (write-unit aligned; a trailing partial unit is
   * padded with erased bytes). Rewriting bytes already there is accepted, so a block torn by a
   * power cut can be written again only if it did not reach the flash differently.
   */
  write(component: number, offset: number, block: Uint8Array): number {
    const guard = this.#guard(component, "write");
    if (guard !== PsaStatus.SUCCESS) return guard;
    const { secondary } = this.#context.areas;
    const unit = secondary.writeUnit;
    if (!Number.isInteger(offset) || offset < 0 || offset % unit !== 0) {
      return PsaStatus.ERROR_INVALID_ARGUMENT;
    }
    if (block.length === 0 || block.length > FWU_MAX_WRITE_SIZE) {
      return PsaStatus.ERROR_INVALID_ARGUMENT;
    }
    if (offset + block.length > this.maxSize) return PsaStatus.ERROR_INSUFFICIENT_STORAGE;
    const padded = block.length % unit === 0
      ? block
      : new Uint8Array(alignUp(block.length, unit)).fill(ERASED);
    if (padded !== block) padded.set(block);
    // The common case, a block landing on erased flash, is one program: the unit-by-unit walk
    // (a block rewritten after a power cut) costs three subarrays per 8-byte unit.
    const status = secondary.isErased(offset, padded.length)
      ? this.#storage(() => secondary.program(offset, padded))
      : this.#rewrite(offset, padded, secondary.read(offset, padded.length));
    if (status === "conflict") {
      return this.#fail(
        PsaStatus.ERROR_STORAGE_FAILURE,
        `block at ${offset} conflicts with data already written`,
      );
    }
    return status === PsaStatus.SUCCESS
      ? status
      : this.#fail(status, `flash program at ${offset} failed`);
  }

  /** Programs the still-erased units of a block whose other units already hold the same bytes. */
  #rewrite(offset: number, padded: Uint8Array, existing: Uint8Array): number | "conflict" {
    const { secondary } = this.#context.areas;
    const unit = secondary.writeUnit;
    for (let at = 0; at < padded.length; at += unit) {
      const have = existing.subarray(at, at + unit);
      const want = padded.subarray(at, at + unit);
      if (!isFilledWith(have, ERASED) && have.some((b, i) => b !== want[i])) return "conflict";
    }
    return this.#storage(() => {
      let runStart = -1;
      const flush = (end: number) => {
        if (runStart >= 0) secondary.program(offset + runStart, padded.subarray(runStart, end));
        runStart = -1;
      };
      for (let at = 0; at < padded.length; at += unit) {
        if (isFilledWith(existing, ERASED, at, at + unit)) {
          if (runStart < 0) runStart = at;
        } else {
          flush(at);
        }
      }
      flush(padded.length);
    });
  }

  /** `psa_fwu_finish`: verifies the written image as the bootloader would; WRITING -> CANDIDATE. */
  async finish(component: number): Promise<number> {
    const guard = this.#guard(component, "finish");
    if (guard !== PsaStatus.SUCCESS) return guard;
    const { secondary } = this.#context.areas;
    const result = await validateAreaImage(
      secondary,
      this.maxSize,
      {
        root: this.#context.rom.root,
        ...(this.#context.rom.revokedKeys ? { revokedKeys: this.#context.rom.revokedKeys } : {}),
        ...(this.#context.rom.formerRoots ? { formerRoots: this.#context.rom.formerRoots } : {}),
        minimumSecurityCounter: this.#fuses.read(),
        at: new Date(this.#context.clock.now()),
        ...(this.#context.rom.verificationCache
          ? { cache: this.#context.rom.verificationCache }
          : {}),
        // Staged: an encrypted image is checked decrypted, with a key only the element unwraps.
        staged: stagedOn(this.#context.rom),
        // Built for this board: checked before anything is installed.
        hardware: boardOf(this.#context.rom),
      },
    );
    if (!result.ok) {
      return this.#fail(
        result.wrongHardware
          ? PsaStatus.ERROR_NOT_SUPPORTED
          : result.image
          ? PsaStatus.ERROR_INVALID_SIGNATURE
          : PsaStatus.ERROR_DATA_INVALID,
        result.reason,
      );
    }
    const unmet = unmetDependency(result.image.dependencies, this.#componentsWithCandidates());
    if (unmet) return this.#fail(PsaStatus.ERROR_DEPENDENCY_NEEDED, unmet);
    const status = this.#storage(() => writeTrailerFlag(secondary, "candidate"));
    if (status === PsaStatus.SUCCESS) this.#candidateDigest = result.digest;
    return status;
  }

  /**
   * `psa_fwu_cancel`: WRITING/CANDIDATE -> FAILED; of component 1, a staged second stage is
   * forgotten (CANDIDATE -> READY: it has no failure record of its own).
   */
  cancel(component: number): number {
    if (component === SECOND_STAGE_COMPONENT) {
      const stage = this.#context.secondStage;
      if (!stage?.running()) return PsaStatus.ERROR_DOES_NOT_EXIST;
      const candidate = stage.candidate();
      if (!candidate || candidate.pending) return PsaStatus.ERROR_BAD_STATE;
      return this.#storage(() => stage.cancel());
    }
    const guard = this.#guard(component, "cancel");
    if (guard !== PsaStatus.SUCCESS) return guard;
    return this.#storage(() =>
      writeTrailerFailure(
        this.#context.areas.secondary,
        PsaStatus.ERROR_NOT_PERMITTED,
        "update cancelled",
      )
    );
  }

  /**
   * `psa_fwu_install`: CANDIDATE -> STAGED (returns PSA_SUCCESS_REBOOT), together with a staged
   * second stage. A candidate older than the running image, or below the security counter, fails
   * here already (the bootloader would refuse it too); so does an application staged with a
   * second stage it does not depend on, which a power cut could leave running with the old one.
   */
  install(): number {
    const state = this.state;
    if (state !== S.CANDIDATE) return PsaStatus.ERROR_BAD_STATE;
    const { secondary } = this.#context.areas;
    const candidate = decodeAreaImage(secondary, this.maxSize);
    if (!candidate.ok) return this.#fail(PsaStatus.ERROR_DATA_INVALID, candidate.reason);
    // In recovery no image runs to compare with: the security counter below still refuses an
    // image older than the device has accepted.
    const running = this.#context.bootRecord?.image.header.version ?? NO_VERSION;
    const next = candidate.image.header.version;
    if (compareVersions(next, running) < 0) {
      return this.#fail(
        PsaStatus.ERROR_NOT_PERMITTED,
        `downgrade from ${formatVersion(running)} to ${formatVersion(next)} refused`,
      );
    }
    if ((candidate.image.securityCounter ?? -1) < this.#fuses.read()) {
      return this.#fail(
        PsaStatus.ERROR_NOT_PERMITTED,
        "candidate security counter is below the device's",
      );
    }
    const stage = this.#context.secondStage;
    const staged = stage?.candidate() ?? null;
    if (staged) {
      const unbound = unboundSecondStage(
        candidate.image.dependencies,
        staged.version,
        stage!.running(),
      );
      if (unbound) return this.#fail(PsaStatus.ERROR_DEPENDENCY_NEEDED, unbound);
    }
    // The application's request first: were the power to go before the second stage's, the old
    // second stage refuses the application it does not meet, and both stay old.
    const status = this.#storage(() => {
      writeTrailerMagic(secondary);
      if (staged && !staged.pending) stage!.commit();
    });
    return status === PsaStatus.SUCCESS ? PsaStatus.SUCCESS_REBOOT : status;
  }

  /**
   * `psa_fwu_accept`: TRIAL -> UPDATED; confirms the image and a second stage on trial with it,
   * then raises the security counter. The application first: were the power to go between the
   * two, the reverted second stage does not meet the confirmed application, and the bootloader
   * puts the previous one back (which the counter, not raised yet, still allows).
   */
  accept(): number {
    if (this.state !== S.TRIAL) return PsaStatus.ERROR_BAD_STATE;
    return this.#storage(() => {
      writeTrailerFlag(this.#context.areas.primary, "imageOk");
      const stage = this.#context.secondStage;
      if (stage?.onTrial()) stage.confirm();
      const counter = this.#context.bootRecord?.image.securityCounter ?? 0;
      this.#fuses.raiseTo(Math.min(counter, this.#fuses.capacity));
    });
  }

  /**
   * `psa_fwu_reject`: STAGED -> FAILED (the request is marked failed, so the bootloader ignores
   * it), or TRIAL -> REJECTED (PSA_SUCCESS_REBOOT: the reboot reverts).
   */
  reject(error: number): number {
    const state = this.state;
    if (state === S.STAGED) {
      return this.#storage(() => {
        writeTrailerFailure(
          this.#context.areas.secondary,
          error || PsaStatus.ERROR_NOT_PERMITTED,
          "install rejected",
        );
        this.#context.secondStage?.cancel();
      });
    }
    if (state === S.TRIAL) {
      this.#rejected = true;
      return PsaStatus.SUCCESS_REBOOT;
    }
    return PsaStatus.ERROR_BAD_STATE;
  }

  /** `psa_fwu_clean`: FAILED/UPDATED -> READY, erasing the staging slot. */
  clean(component: number): number {
    const guard = this.#guard(component, "clean");
    if (guard !== PsaStatus.SUCCESS) return guard;
    const { secondary } = this.#context.areas;
    return this.#storage(() => {
      for (let sector = 0; sector < secondary.sectorCount - 1; sector++) {
        secondary.eraseSectorIfNeeded(sector);
      }
      eraseTrailer(secondary);
      this.#candidateDigest = null;
    });
  }

  /** The first `length` bytes of the staging slot (what the agent received). */
  readStaged(length: number): Uint8Array {
    return this.#context.areas.secondary.read(0, Math.max(0, Math.min(length, this.maxSize)));
  }

  /** SHA-256 of what {@linkcode FirmwareUpdateService.readStaged} would return, without a copy. */
  stagedDigest(length: number): Uint8Array {
    return this.#context.areas.secondary.digest(0, Math.max(0, Math.min(length, this.maxSize)));
  }

  /**
   * The image in the primary slot as a delta patch's base: its whole size (header, payload, both
   * TLV areas) and the SHA-256 of those bytes; null when the slot holds no decodable image.
   */
  runningImage(): { readonly size: number; readonly sha256: Uint8Array } | null {
    const { primary } = this.#context.areas;
    const decoded = decodeAreaImage(primary, slotImageSize(primary));
    if (!decoded.ok) return null;
    const size = decoded.image.totalSize;
    return { size, sha256: primary.digest(0, size) };
  }

  /** Bytes of the primary slot (a delta patch's base), never past the slot. */
  readRunning(offset: number, length: number): Uint8Array {
    return this.#context.areas.primary.read(offset, length);
  }

  /** `psa_fwu_request_reboot`. */
  requestReboot(): number {
    this.#context.requestReboot();
    return PsaStatus.SUCCESS;
  }

  #guard(component: number, operation: FwuOperation): number {
    if (component !== FIRMWARE_COMPONENT) return PsaStatus.ERROR_DOES_NOT_EXIST;
    return fwuTransition(operation, this.state) ? PsaStatus.SUCCESS : PsaStatus.ERROR_BAD_STATE;
  }

  /** Records a failure in the staging trailer (-> FAILED) and returns `code`. */
  #fail(code: number, detail: string): number {
    this.#storage(() => writeTrailerFailure(this.#context.areas.secondary, code, detail));
    return code;
  }

  /** Runs a flash change; a refused flash operation is a storage failure, a power cut propagates. */
  #storage(change: () => void): number {
    try {
      change();
      return PsaStatus.SUCCESS;
    } catch (error) {
      if (isPowerCut(error) || !(error instanceof FlashError)) throw error;
      return PsaStatus.ERROR_STORAGE_FAILURE;
    }
  }
}

/**
 * Why an application with `dependencies` may not be installed together with second stage
 * `staged` over `running`, or null: it must need a second stage newer than the running one, which
 * the staged one is. (Short: it is kept in the slot trailer's failure record.)
 *
 * @example
 * ```ts
 * import { unboundSecondStage } from "./fwu.ts";
 * import { parseVersion } from "../protocol/image_format.ts";
 * unboundSecondStage([], parseVersion("2.1.0")!, parseVersion("2.0.0")!);
 * // "app does not depend on second stage 2.1.0+0"
 * ```
 */
export function unboundSecondStage(
  dependencies: readonly ImageDependency[],
  staged: ImageVersion,
  running: ImageVersion | null,
): string | null {
  const need = dependencies.find((d) => d.imageId === ImageId.SECOND_STAGE);
  const unbound = `app does not depend on second stage ${formatVersion(staged)}`;
  if (!need) return unbound;
  if (compareVersions(need.minVersion, staged) > 0) {
    return `app needs second stage ${formatVersion(need.minVersion)}, comes with ${
      formatVersion(staged)
    }`;
  }
  if (running && compareVersions(need.minVersion, running) <= 0) {
    return `${unbound} (needs ${formatVersion(need.minVersion)}, met by the running one)`;
  }
  return null;
}
