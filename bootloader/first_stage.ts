/**
 * The first stage of a two-stage secure boot: immutable code (the chip's mask ROM, here a
 * function no flash write can reach) that reads the root certificate from the read-only boot ROM
 * region, verifies the second-stage bootloader in one of its two slots against it and hands over.
 * The second stage (`boot()`) then verifies the firmware as before.
 *
 * The second stage is updatable with the same test/confirm/revert protection as firmware: a new
 * one is written to the other slot and marked pending; the first stage runs it once on trial;
 * unless the running software confirms it before the next reset, the first stage goes back to
 * the slot that worked. A second stage that does not verify (patched, unsigned, signed by someone
 * else) is never run: the other slot is, and with neither valid the device halts rather than run
 * unverified code. State lives in a power-safe A/B record (the agent store's format).
 *
 * @module
 */

import { AgentStateStore } from "./agent_store.ts";
import { boot, type BootOutcome, type BootRom } from "./bootloader.ts";
import type { Clock } from "../lib/clock.ts";
import { type Certificate, parseCertificate } from "../protocol/certificates.ts";
import { type VerificationCache } from "../protocol/signatures.ts";
import type { FlashArea } from "./flash_area.ts";
import {
  formatVersion,
  type ImageDependency,
  ImageId,
  type ImageVersion,
} from "../protocol/image_format.ts";
import { validateAreaImage } from "./image_validate.ts";
import { loadTrust } from "./trust_store.ts";
import type { DeviceAreas } from "./layout.ts";
import { viewOf } from "../lib/bytes.ts";

/** Marks a provisioned boot ROM region. */
const ROM_MAGIC = new TextEncoder().encode("OTAROM01");

/** What a second-stage image's payload says it is. */
export const SECOND_STAGE_KIND = "second-stage-bootloader";

/** The job document `fileType` of a second-stage bootloader update (0 is the application). */
export const SECOND_STAGE_FILE_TYPE = 1;

/**
 * How a second stage behaves once the first hands over: it boots the firmware, or it crashes
 * before doing so (a broken bootloader build, to prove a failed bootloader update cannot brick).
 */
export type SecondStageBehavior = "boots" | "crashes";

/** What verifying a second stage tells about it. */
export interface SecondStageFacts {
  readonly version: string;
  readonly imageVersion: ImageVersion;
  readonly behavior: SecondStageBehavior;
  /** Versions of other images it needs (its DEPENDENCY TLVs). */
  readonly dependencies: readonly ImageDependency[];
}

/** Which second stage is in use. */
export interface SecondStageState {
  /** The slot that last ran and was confirmed. */
  readonly active: 0 | 1;
  /** A slot written with a new second stage, to try at the next boot. */
  readonly pending: 0 | 1 | null;
  /** A slot running once on trial, to confirm before the next reset. */
  readonly trial: 0 | 1 | null;
  /**
   * A slot written and verified to be installed together with the application (the update
   * service's install makes it pending); the first stage does not try it by itself.
   */
  readonly candidate?: 0 | 1 | null;
}

/** A freshly provisioned chip: slot A active, nothing pending or on trial. */
export const PROVISIONED_STATE: SecondStageState = { active: 0, pending: null, trial: null };

/** Outcome of {@linkcode firstStage}. */
export type FirstStageOutcome =
  | {
    readonly kind: "run";
    readonly slot: 0 | 1;
    readonly version: string;
    readonly imageVersion: ImageVersion;
    readonly behavior: SecondStageBehavior;
    readonly trial: boolean;
    /**
     * The root the second stage verifies firmware against: the boot ROM region's, or the one the
     * trust store's root links lead to from it.
     */
    readonly root: Certificate;
    /** Signing keys the trust store revokes. */
    readonly revoked: ReadonlySet<string>;
    /** Roots rotated away from, whose signers still verify. */
    readonly formerRoots: readonly Certificate[];
    readonly log: readonly string[];
  }
  | { readonly kind: "halt"; readonly reason: string; readonly log: readonly string[] }
  /** No boot ROM region was provisioned: a single-stage device of earlier versions. */
  | { readonly kind: "unprovisioned" };

/**
 * The payload of a second-stage image: a small manifest (its code, in a simulation).
 *
 * @example
 * ```ts
 * import { secondStagePayload } from "./first_stage.ts";
 * new TextDecoder().decode(secondStagePayload("2.1.0")); // '{"kind":"second-stage-bootloader","version":"2.1.0"}'
 * ```
 */
export function secondStagePayload(
  version: string,
  behavior: SecondStageBehavior = "boots",
): Uint8Array {
  const manifest = {
    kind: SECOND_STAGE_KIND,
    version,
    ...(behavior === "boots" ? {} : { behavior }),
  };
  return new TextEncoder().encode(JSON.stringify(manifest));
}

/** The root certificate in the boot ROM region, or null when none was provisioned. */
export function readBootRom(area: FlashArea): Uint8Array | null {
  const head = area.read(0, ROM_MAGIC.length + 4);
  if (!ROM_MAGIC.every((b, i) => head[i] === b)) return null;
  const length = viewOf(head).getUint32(ROM_MAGIC.length, true);
  if (length === 0 || length > area.size - head.length) return null;
  return area.read(head.length, length);
}

/** The boot ROM region's contents for a root certificate (written once, at provisioning). */
export function bootRomContents(rootCertificateDer: Uint8Array, writeUnit: number): Uint8Array {
  const length = ROM_MAGIC.length + 4 + rootCertificateDer.length;
  const bytes = new Uint8Array(Math.ceil(length / writeUnit) * writeUnit).fill(0xff);
  bytes.set(ROM_MAGIC);
  viewOf(bytes).setUint32(ROM_MAGIC.length, rootCertificateDer.length, true);
  bytes.set(rootCertificateDer, ROM_MAGIC.length + 4);
  return bytes;
}

/** The second stage's A/B state record. */
export function secondStageStore(areas: DeviceAreas): {
  load(): SecondStageState;
  save(state: SecondStageState): void;
} {
  const store = new AgentStateStore(areas.stage2State);
  return {
    load() {
      const bytes = store.load();
      if (!bytes || bytes.length === 0) return PROVISIONED_STATE;
      try {
        const state = JSON.parse(new TextDecoder().decode(bytes)) as SecondStageState;
        return state.active === 0 || state.active === 1 ? state : PROVISIONED_STATE;
      } catch {
        return PROVISIONED_STATE;
      }
    },
    save(state) {
      store.save(new TextEncoder().encode(JSON.stringify(state)));
    },
  };
}

/**
 * Verifies the second stage in `slot`: a signed image chained to the root whose payload is a
 * second-stage manifest. Returns its version, or the reason it is refused.
 */
export async function verifySecondStage(
  area: FlashArea,
  root: Certificate,
  options: {
    at?: Date;
    cache?: VerificationCache;
    revokedKeys?: ReadonlySet<string>;
    formerRoots?: readonly Certificate[];
  } = {},
): Promise<
  | { ok: true; stage: SecondStageFacts }
  | { ok: false; reason: string }
> {
  const validated = await validateAreaImage(area, area.size, {
    root,
    ...(options.at ? { at: options.at } : {}),
    ...(options.cache ? { cache: options.cache } : {}),
    ...(options.revokedKeys ? { revokedKeys: options.revokedKeys } : {}),
    ...(options.formerRoots ? { formerRoots: options.formerRoots } : {}),
  });
  if (!validated.ok) return { ok: false, reason: validated.reason };
  const image = validated.image;
  const payload = area.read(image.payloadOffset, image.header.payloadSize);
  let behavior: SecondStageBehavior = "boots";
  try {
    const manifest = JSON.parse(new TextDecoder().decode(payload));
    if (manifest?.kind !== SECOND_STAGE_KIND) throw new Error("not a second stage");
    if (manifest.behavior === "crashes") behavior = "crashes";
  } catch {
    return { ok: false, reason: "signed, but not a second-stage bootloader image" };
  }
  return {
    ok: true,
    stage: {
      version: formatVersion(image.header.version),
      imageVersion: image.header.version,
      behavior,
      dependencies: image.dependencies,
    },
  };
}

/**
 * Runs the first stage: picks, verifies and hands over to a second stage.
 *
 * @example
 * ```ts ignore
 * const stage = await firstStage(areas, { at: new Date() });
 * if (stage.kind === "run") await boot({ areas, rom: { ...rom, root: stage.root }, clock });
 * ```
 */
export async function firstStage(
  areas: DeviceAreas,
  options: { at?: Date; cache?: VerificationCache; revokedKeys?: ReadonlySet<string> } = {},
): Promise<FirstStageOutcome> {
  const der = readBootRom(areas.bootRom);
  if (!der) return { kind: "unprovisioned" };
  const log: string[] = [];
  const parsed = parseCertificate(der);
  if (!parsed.ok) {
    return { kind: "halt", reason: `boot ROM root certificate: ${parsed.reason}`, log };
  }
  // The trust store may have rotated the root and revoked keys; it is checked from the ROM's root.
  const trust = await loadTrust(areas.trustStore, parsed.value);
  const root = trust.root;
  const revoked = trust.revoked;
  const formerRoots = trust.formerRoots;
  const checks = { ...options, revokedKeys: revoked, formerRoots };
  const store = secondStageStore(areas);
  let state = store.load();
  const name = (slot: 0 | 1) => (slot === 0 ? "A" : "B");
  if (state.trial !== null) {
    log.push(
      `stage 1: second stage ${name(state.trial)} ran on trial and was not confirmed: back to ${
        name(state.active)
      }`,
    );
    state = { active: state.active, pending: null, trial: null };
    store.save(state);
  }
  if (state.pending !== null) {
    const pending = state.pending;
    const checked = await verifySecondStage(areas.stage2[pending], root, checks);
    if (checked.ok) {
      state = { active: state.active, pending: null, trial: pending };
      store.save(state);
      log.push(
        `stage 1: new second stage ${checked.stage.version} in ${name(pending)}: trial boot`,
      );
      return {
        kind: "run",
        slot: pending,
        ...checked.stage,
        trial: true,
        root,
        revoked,
        formerRoots,
        log,
      };
    }
    log.push(`stage 1: new second stage in ${name(pending)} refused: ${checked.reason}`);
    state = { active: state.active, pending: null, trial: null };
    store.save(state);
  }
  for (const slot of [state.active, state.active === 0 ? 1 : 0] as const) {
    const checked = await verifySecondStage(areas.stage2[slot], root, checks);
    if (checked.ok) {
      if (slot !== state.active) {
        log.push(`stage 1: falling back to second stage ${name(slot)}`);
        store.save({ active: slot, pending: null, trial: null });
      }
      log.push(`stage 1: second stage ${checked.stage.version} from ${name(slot)} verified`);
      return { kind: "run", slot, ...checked.stage, trial: false, root, revoked, formerRoots, log };
    }
    log.push(`stage 1: second stage ${name(slot)} refused: ${checked.reason}`);
  }
  log.push("stage 1: no valid second stage: halted");
  return { kind: "halt", reason: "no valid second-stage bootloader", log };
}

/**
 * Both stages as a boot ROM run them: the first stage (when provisioned), then the second's
 * firmware boot against the root the first read. A "halt" comes back as recovery: nothing runs.
 *
 * @example
 * ```ts ignore
 * const outcome = await bootChain({ areas, rom, clock });
 * outcome.kind; // "run" when a trusted second stage and a trusted image boot
 * ```
 */
export async function bootChain(
  options: { areas: DeviceAreas; rom: BootRom; clock: Clock },
): Promise<BootOutcome & { readonly stage: FirstStageOutcome }> {
  const run = () =>
    firstStage(options.areas, {
      at: new Date(options.clock.now()),
      ...(options.rom.verificationCache ? { cache: options.rom.verificationCache } : {}),
    });
  let stage = await run();
  if (stage.kind === "run" && stage.behavior === "crashes") {
    // The watchdog resets the chip; a second stage on trial is then reverted by the first.
    const crashed = [...stage.log, `stage 2: ${stage.version} crashed before booting firmware`];
    const again = stage.trial ? await run() : null;
    stage = again?.kind === "run" && again.behavior === "boots"
      ? { ...again, log: [...crashed, ...again.log] }
      : { kind: "halt", reason: "no second-stage bootloader that boots", log: crashed };
  }
  if (stage.kind === "halt") {
    return { kind: "recovery", reason: stage.reason, log: stage.log, stage };
  }
  const outcome = await boot({
    ...options,
    ...(stage.kind === "run"
      ? {
        rom: {
          ...options.rom,
          root: stage.root,
          revokedKeys: stage.revoked,
          formerRoots: stage.formerRoots,
        },
        components: new Map([[ImageId.SECOND_STAGE, stage.imageVersion]]),
      }
      : {}),
  });
  return stage.kind === "run"
    ? { ...outcome, log: [...stage.log, ...outcome.log], stage }
    : { ...outcome, stage };
}
