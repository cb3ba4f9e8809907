/**
 * One simulated device below the agent: its flash chip (the only state that survives a reset),
 * its boot ROM, the bootloader, a watchdog, and the simulated application whose behaviour comes
 * from the manifest inside the signed image it boots. Every power-on rebuilds all RAM state
 * from flash (a lesson of MCUboot's simulator, where a variable surviving a simulated reset hid
 * a brick).
 *
 * @module
 */

import { type Clock, systemClock, type TimerId } from "../lib/clock.ts";
import { alignUp, toHex } from "../lib/bytes.ts";
import { type BootOutcome, type BootRecord, type BootRom, slotImageSize } from "./bootloader.ts";
import type { FlashArea } from "./flash_area.ts";
import {
  bootChain,
  bootRomContents,
  PROVISIONED_STATE,
  secondStageStore,
  verifySecondStage,
} from "./first_stage.ts";
import { type Behavior, readManifest } from "./firmware.ts";
import {
  FlashError,
  isPowerCut,
  type NorFlash,
  PowerCutError,
  type PowerCutPlan,
} from "./flash.ts";
import type { SecureElement } from "./secure_element.ts";
import { FirmwareUpdateService, FwuState, fwuStateName, type SecondStageComponent } from "./fwu.ts";
import {
  compareVersions,
  formatVersion,
  ImageId,
  type ImageVersion,
  unmetDependency,
} from "../protocol/image_format.ts";
import { decodeAreaImage } from "./image_validate.ts";
import { createFlash, type DeviceAreas, type DeviceLayout, openAreas } from "./layout.ts";
import { OtaPal } from "./ota_pal.ts";
import { SecurityCounter } from "./security_counter.ts";
import { readTrailer, type SlotTrailer } from "./trailer.ts";
import { applyTrustUpdate, loadTrust, withTrust } from "./trust_store.ts";

/** Power and run state. */
export type DeviceState = "off" | "running" | "recovery" | "boot-loop" | "halted";

/** Options for {@linkcode Device}. */
export interface DeviceOptions {
  /** Partition map. */
  readonly layout: DeviceLayout;
  /** Boot ROM contents. */
  readonly rom: BootRom;
  /** An existing chip (e.g. a clone of a factory chip); a blank one otherwise. */
  readonly flash?: NorFlash;
  /** Time source. @default {systemClock} */
  readonly clock?: Clock;
  /** Watchdog period: an application that stops feeding it is reset. @default {30000} */
  readonly watchdogMs?: number;
  /** Consecutive crashes before the device gives up booting. @default {4} */
  readonly maxBootAttempts?: number;
  /**
   * Lets a simulation make this one device misbehave with an image that is fine elsewhere (a
   * hardware revision the new firmware does not support): given the manifest's behaviour and the
   * booted version, returns the behaviour to simulate.
   */
  readonly behaviorOverride?: (behavior: Behavior, version: string) => Behavior;
  /**
   * Erase the previous image once a new one is confirmed (PSA `clean` in UPDATED), so that no
   * exploitable old image stays in flash to be booted. @default {false}
   */
  readonly erasePreviousImage?: boolean;
  /** The device's secure element (its identity key and certificate), if it has one. */
  readonly secureElement?: SecureElement;
}

/** What the application that runs looks like from outside. */
export interface RunningFirmware {
  readonly version: string;
  readonly behavior: Behavior;
  readonly trial: boolean;
  readonly securityCounter: number;
  /**
   * The SHA-256 (hex) the booted image carries and the boot ROM checked its bytes against: what
   * proves the device runs exactly the image that was published.
   */
  readonly imageSha256: string;
}

/** What the software running on the device (agent, connection) is told. */
export interface DeviceHooks {
  /** The device booted an image and the application runs. */
  onBoot?(device: Device): void;
  /** Power went (reset, power cut, watchdog): RAM, and with it the application, is gone. */
  onPowerOff?(device: Device): void;
}

/** A reset and why it happened. */
export interface ResetEvent {
  readonly reason: string;
  readonly at: number;
}

/** The second-stage bootloader that booted the device. */
export interface RunningSecondStage {
  /** Its slot: 0 (A) or 1 (B). */
  readonly slot: 0 | 1;
  readonly version: string;
  readonly imageVersion: ImageVersion;
  /** Booted once on trial: a reset before {@linkcode Device.confirmSecondStage} reverts it. */
  readonly trial: boolean;
}

/** Snapshot of the device for reports and assertions. */
export interface DeviceReport {
  readonly state: DeviceState;
  readonly running: RunningFirmware | null;
  readonly securityCounter: number;
  readonly primary: SlotTrailer;
  readonly secondary: SlotTrailer;
  readonly updateState: string | null;
  readonly lastBootLog: readonly string[];
}

/**
 * A simulated device.
 *
 * @example
 * ```ts ignore
 * const device = new Device({ layout, rom, flash: factoryFlash.clone() });
 * await device.powerOn();
 * device.running?.version; // "1.0.0+0"
 * ```
 */
export class Device {
  /** The chip. */
  readonly flash: NorFlash;
  /** Partition map. */
  readonly layout: DeviceLayout;
  /** Opened areas. */
  readonly areas: DeviceAreas;
  /** Boot ROM. */
  readonly rom: BootRom;
  /** Time source. */
  readonly clock: Clock;
  /** Boot logs, oldest first (the last 16 boots). */
  readonly bootLogs: string[][] = [];
  /** Resets, oldest first. */
  readonly resets: ResetEvent[] = [];
  readonly #watchdogMs: number;
  readonly #maxBootAttempts: number;
  #state: DeviceState = "off";
  #record: BootRecord | null = null;
  #behavior: Behavior = "ok";
  #fwu: FirmwareUpdateService | null = null;
  #pal: OtaPal | null = null;
  #watchdog: TimerId | null = null;
  #pending: Promise<void> | null = null;
  #pendingError: unknown = null;
  #hooks: DeviceHooks = {};
  readonly #behaviorOverride: ((behavior: Behavior, version: string) => Behavior) | null;

  /** Builds a powered-off device. */
  constructor(options: DeviceOptions) {
    this.layout = options.layout;
    // The boot ROM reaches the secure element's image-key slot, if the device has an element.
    this.rom = options.secureElement && !options.rom.imageKeys
      ? { ...options.rom, imageKeys: options.secureElement }
      : options.rom;
    this.clock = options.clock ?? systemClock;
    this.flash = options.flash ?? createFlash(options.layout);
    this.areas = openAreas(this.flash, options.layout);
    this.#watchdogMs = options.watchdogMs ?? 30_000;
    // A cut can strike any flash operation the running software makes, not only the boot ROM's.
    this.flash.onPowerCut = () => {
      if (this.#state === "off") {
        // A boot cut short: a second stage it had put on trial goes back at the next boot.
        if (this.#boot) this.#noteTrialInterrupted();
        return;
      }
      this.#noteTrialInterrupted();
      this.#clearRam();
      this.#state = "off";
      this.#hooks.onPowerOff?.(this);
    };
    this.#maxBootAttempts = options.maxBootAttempts ?? 4;
    this.#behaviorOverride = options.behaviorOverride ?? null;
    this.#erasePreviousImage = options.erasePreviousImage ?? false;
    this.secureElement = options.secureElement ?? null;
  }

  /**
   * The secure element: a chip of its own, so it keeps its key through power cuts and resets.
   * Re-provisioning fits a new one (a new key; the cloud registers its new certificate).
   */
  secureElement: SecureElement | null;

  readonly #erasePreviousImage: boolean;

  /** Power and run state. */
  get state(): DeviceState {
    return this.#state;
  }

  /** The running application, when there is one. */
  get running(): RunningFirmware | null {
    if (this.#state !== "running" || !this.#record) return null;
    // Asked for every device at every telemetry batch: the same answer while the boot record,
    // the behavior and the flash (the trailer says whether the trial is over) did not move.
    const generation = this.flash.generation;
    const known = this.#running;
    if (
      known?.record === this.#record && known.generation === generation &&
      known.value.behavior === this.#behavior
    ) {
      return known.value;
    }
    const value = {
      version: formatVersion(this.#record.image.header.version),
      behavior: this.#behavior,
      // Still on trial until the image confirms itself (the boot record only knows how it booted).
      trial: this.#record.trial && readTrailer(this.areas.primary).imageOk === "unset",
      securityCounter: this.#record.securityCounter,
      imageSha256: toHex(this.#record.image.sha256 ?? new Uint8Array()),
    };
    this.#running = { record: this.#record, generation, value };
    return value;
  }

  #running: {
    readonly record: BootRecord;
    readonly generation: number;
    readonly value: RunningFirmware;
  } | null = null;

  #secondStage: RunningSecondStage | null = null;

  /** The second-stage bootloader that booted this time (null: a single-stage device). */
  get secondStage(): RunningSecondStage | null {
    return this.#secondStage;
  }

  /**
   * Writes a new second-stage bootloader into the slot not in use and asks the first stage to
   * try it at the next boot. The image is verified first, as the first stage will.
   */
  async installSecondStage(
    image: Uint8Array,
  ): Promise<{ ok: true } | { ok: false; reason: string; downgrade: boolean }> {
    return await this.#writeSecondStage(image, "pending");
  }

  /**
   * Writes and verifies a new second stage as {@linkcode Device.installSecondStage} does, but
   * leaves it a candidate: the update service's install makes it pending together with the
   * application candidate that depends on it (one reboot, both on trial, both confirmed or both
   * reverted).
   */
  async stageSecondStage(
    image: Uint8Array,
  ): Promise<{ ok: true } | { ok: false; reason: string; downgrade: boolean }> {
    return await this.#writeSecondStage(image, "candidate");
  }

  /** Writes and verifies a second stage in the spare slot, then records it as `as`. */
  async #writeSecondStage(
    image: Uint8Array,
    as: "pending" | "candidate",
  ): Promise<{ ok: true } | { ok: false; reason: string; downgrade: boolean }> {
    const current = this.#secondStage;
    const refuse = (reason: string, downgrade = false) => ({
      ok: false as const,
      reason,
      downgrade,
    });
    if (this.#state !== "running" || !current) return refuse("no two-stage boot is running");
    if (current.trial) return refuse("the running second stage is still on trial");
    const target = current.slot === 0 ? 1 : 0;
    const area = this.areas.stage2[target];
    if (image.length > area.size) {
      return refuse(`${image.length} bytes exceed the ${area.size}-byte slot`);
    }
    // The record first: a candidate or pending slot must never point at a half-written image.
    this.cancelSecondStage();
    const eraseTarget = () => {
      for (let sector = 0; sector < area.sectorCount; sector++) area.eraseSectorIfNeeded(sector);
    };
    eraseTarget();
    programFrom0(area, image);
    const checked = await verifySecondStage(area, this.trusted.root, {
      ...(this.trusted.revokedKeys ? { revokedKeys: this.trusted.revokedKeys } : {}),
      at: new Date(this.clock.now()),
    });
    if (!checked.ok) {
      eraseTarget();
      return refuse(checked.reason);
    }
    const application = this.#record?.image.header.version;
    const unmet = unmetDependency(
      checked.stage.dependencies,
      new Map(application ? [[ImageId.APPLICATION, application]] : []),
    );
    if (unmet) {
      eraseTarget();
      return refuse(unmet);
    }
    // The bootloader has its own anti-rollback: an older one may carry fixed vulnerabilities.
    if (compareVersions(checked.stage.imageVersion, current.imageVersion) <= 0) {
      eraseTarget();
      return refuse(
        `version ${checked.stage.version} is not newer than the running ${current.version}`,
        true,
      );
    }
    secondStageStore(this.areas).save(
      as === "pending"
        ? { active: current.slot, pending: target, trial: null }
        : { active: current.slot, pending: null, trial: null, candidate: target },
    );
    return { ok: true };
  }

  /** Forgets a second stage staged or installed but not tried yet (its job went away). */
  cancelSecondStage(): void {
    const current = this.#secondStage;
    if (!current || current.trial || this.#state !== "running") return;
    const state = secondStageStore(this.areas).load();
    if (state.pending === null && (state.candidate ?? null) === null) return;
    secondStageStore(this.areas).save({ active: current.slot, pending: null, trial: null });
  }

  /** Makes the second stage on trial the one to keep (the running software's self-test passed). */
  confirmSecondStage(): boolean {
    const current = this.#secondStage;
    if (!current?.trial || this.#state !== "running") return false;
    secondStageStore(this.areas).save({ active: current.slot, pending: null, trial: null });
    this.#secondStage = { ...current, trial: false };
    return true;
  }

  /** The second stage as the update service's component 1 (nothing runs on a single-stage one). */
  #secondStageComponent(): SecondStageComponent {
    const store = secondStageStore(this.areas);
    return {
      running: () => this.#secondStage?.imageVersion ?? null,
      candidate: () => {
        if (!this.#secondStage) return null;
        const state = store.load();
        const slot = state.candidate ?? state.pending;
        if (slot === null || slot === undefined) return null;
        const decoded = decodeAreaImage(this.areas.stage2[slot], this.areas.stage2[slot].size);
        return decoded.ok
          ? { version: decoded.image.header.version, pending: state.pending !== null }
          : null;
      },
      commit: () => {
        if (!this.#secondStage) return;
        const state = store.load();
        if (state.candidate === null || state.candidate === undefined) return;
        store.save({ active: state.active, pending: state.candidate, trial: null });
      },
      cancel: () => this.cancelSecondStage(),
      onTrial: () => this.#secondStage?.trial === true,
      confirm: () => this.confirmSecondStage(),
    };
  }

  /** The boot ROM as the trust store changes it (root, signers, revoked keys): read at each boot. */
  #trusted: BootRom | null = null;

  /** What this device trusts now: its boot ROM, as its trust store changes it. */
  get trusted(): BootRom {
    return this.#trusted ?? this.rom;
  }

  /**
   * Applies a trust-store update (see trust_store.ts) and trusts what it says from now on; refused
   * with a reason when it is not newer, not signed by the device's root, or revokes the key that
   * signed the running firmware.
   */
  async applyTrustUpdate(bytes: Uint8Array): Promise<{ ok: true } | { ok: false; reason: string }> {
    if (this.#state !== "running") return { ok: false, reason: "no firmware is running" };
    const keyHash = this.#record?.image.keyHash;
    const applied = await applyTrustUpdate(this.areas.trustStore, this.rom.root, bytes, {
      at: new Date(this.clock.now()),
      runningKeyHash: keyHash ? keyHash.toHex() : null,
    });
    if (!applied.ok) return applied;
    this.#trusted = withTrust(this.rom, applied.trust);
    return { ok: true };
  }

  #startUpdateService(record: BootRecord | null): FirmwareUpdateService {
    // The services read the trust at each use: a trust-store update applies at once.
    const trusted = () => this.trusted;
    const fwu = new FirmwareUpdateService({
      areas: this.areas,
      get rom() {
        return trusted();
      },
      clock: this.clock,
      bootRecord: record,
      requestReboot: () => this.#scheduleReset("reboot requested by software"),
      components: () =>
        new Map(
          this.#secondStage ? [[ImageId.SECOND_STAGE, this.#secondStage.imageVersion]] : [],
        ),
      secondStage: this.#secondStageComponent(),
    });
    this.#fwu = fwu;
    this.#pal = new OtaPal({
      fwu,
      get rom() {
        return trusted();
      },
      clock: this.clock,
      erasePreviousImage: this.#erasePreviousImage,
    });
    return fwu;
  }

  #recoveryReason: string | null = null;

  /** Why the device is in recovery (OTA-only) mode; null when it is not. */
  get recoveryReason(): string | null {
    return this.#state === "recovery" ? this.#recoveryReason : null;
  }

  /** Whether software runs that can use the update service (the image, or recovery mode). */
  get #serving(): boolean {
    return this.#state === "running" || this.#state === "recovery";
  }

  /** The boot ROM's report for the current boot. */
  get bootRecord(): BootRecord | null {
    return this.#state === "running" ? this.#record : null;
  }

  /** The firmware-update service of the running image (or of recovery mode). */
  get fwu(): FirmwareUpdateService {
    if (!this.#fwu || !this.#serving) {
      throw new Error(`Cannot use the update service: device is ${this.#state}`);
    }
    return this.#fwu;
  }

  /** The OTA PAL of the running image (or of recovery mode). */
  get pal(): OtaPal {
    if (!this.#pal || !this.#serving) {
      throw new Error(`Cannot use the OTA PAL: device is ${this.#state}`);
    }
    return this.#pal;
  }

  /** Sets who hears of boots and power loss (the agent runtime). */
  setHooks(hooks: DeviceHooks): void {
    this.#hooks = hooks;
  }

  /** Arms a power cut at a future flash operation. */
  cutPowerAt(plan: PowerCutPlan): void {
    this.flash.cutPowerAt(plan);
  }

  /**
   * Powers on and boots. An image that crashes on boot resets the device at once (and the
   * bootloader reverts it if it was on trial); after `maxBootAttempts` crashes in a row the
   * device stays in "boot-loop". A power cut during boot leaves the device off and rethrows.
   */
  async powerOn(): Promise<BootOutcome> {
    // Already booting, the power on: that boot is this power-on's too (a watchdog that saw the
    // device off mid-boot must not start a second boot over the same flash).
    if (this.#boot && this.flash.poweredOn) return await this.#boot;
    const previous = this.#boot;
    const boot = (async () => {
      // One boot at a time, as on a chip: a boot the power went from (a reset, a cut) stops at
      // its next flash access, and only then does this one start.
      if (previous) await previous.catch(() => {});
      return await this.#bootFromReset();
    })();
    this.#boot = boot;
    try {
      return await boot;
    } catch (error) {
      // Cut short by a reset while it waited: the boot that reset started is the device's now.
      const newer = this.#boot;
      if (newer !== null && newer !== boot) return await newer;
      throw error;
    } finally {
      if (this.#boot === boot) this.#boot = null;
    }
  }

  /** The boot in progress, if any. */
  #boot: Promise<BootOutcome> | null = null;

  async #bootFromReset(): Promise<BootOutcome> {
    this.flash.powerOn();
    for (let attempt = 1;; attempt++) {
      this.#clearRam();
      let outcome: BootOutcome;
      try {
        // Two stages when the chip was provisioned so: the first verifies the second, which
        // verifies the firmware against the root the first read from the boot ROM region.
        this.#trusted = withTrust(this.rom, await loadTrust(this.areas.trustStore, this.rom.root));
        const chain = await bootChain({ areas: this.areas, rom: this.trusted, clock: this.clock });
        // The power went while the boot waited (on the secure element, on a signature check):
        // what it decided is void, as a chip's boot stops with its power.
        if (!this.flash.poweredOn) throw new PowerCutError(this.flash.stats.operations, false);
        const stage = chain.stage;
        if (stage.kind === "halt") {
          this.#secondStage = null;
          this.#remember([...stage.log]);
          this.#state = "halted";
          return chain;
        }
        this.#secondStage = stage.kind === "run"
          ? {
            slot: stage.slot,
            version: stage.version,
            imageVersion: stage.imageVersion,
            trial: stage.trial,
          }
          : null;
        outcome = chain;
      } catch (error) {
        // A flash access with the power gone (a reset or cut while the boot waited) is a cut.
        const cut = isPowerCut(error) ? error : (error instanceof FlashError &&
            error.code === "powered-off")
          ? new PowerCutError(this.flash.stats.operations, false)
          : null;
        if (cut) {
          this.#state = "off";
          this.#hooks.onPowerOff?.(this);
          throw cut;
        }
        throw error;
      }
      this.#remember(outcome.log as string[]);
      if (outcome.kind === "recovery") {
        // Fail-safe OTA-only mode: no image to run, but the boot ROM's minimal client can still
        // connect, report and receive a signed image through the normal update service.
        this.#state = "recovery";
        this.#recoveryReason = outcome.reason;
        this.#startUpdateService(null);
        this.#hooks.onBoot?.(this);
        return outcome;
      }
      const record = outcome.record;
      const payload = this.areas.primary.read(
        record.image.payloadOffset,
        Math.min(record.image.header.payloadSize, 2048),
      );
      const reading = readManifest(payload);
      this.#record = record;
      this.#behavior = this.#behaviorOverride
        ? this.#behaviorOverride(
          reading.manifest.behavior,
          formatVersion(record.image.header.version),
        )
        : reading.manifest.behavior;
      const log = outcome.log as string[];
      if (reading.source === "malformed") {
        log.push(`firmware manifest malformed: ${reading.reason}`);
      }
      if (this.#behavior === "crash-on-boot") {
        log.push("application crashed on boot: reset");
        this.resets.push({ reason: "crash on boot", at: this.clock.now() });
        if (attempt >= this.#maxBootAttempts) {
          this.#state = "boot-loop";
          this.#record = null;
          return outcome;
        }
        continue;
      }
      this.#state = "running";
      const fwu = this.#startUpdateService(record);
      // A clean the power interrupted after the confirmation is finished at the next boot.
      if (this.#erasePreviousImage && fwu.state === FwuState.UPDATED) {
        fwu.clean(0);
        log.push("previous image erased (confirmed update)");
      }
      if (this.#behavior === "hang") {
        // A hung application stops feeding the watchdog, which then resets the device.
        this.#watchdog = this.clock.setTimer(this.#watchdogMs, () => {
          this.#watchdog = null;
          this.#scheduleReset("watchdog");
        });
      }
      this.#hooks.onBoot?.(this);
      return outcome;
    }
  }

  /** Cuts power now. RAM state is gone; flash keeps what it had. */
  powerOff(): void {
    this.#powerDown({ powerLoss: true });
  }

  /**
   * Stops the device. A reset the device makes itself (software reboot, watchdog, self-test
   * timer) also reverts an unconfirmed trial, but that is the image's doing, not a power loss.
   */
  #powerDown({ powerLoss }: { powerLoss: boolean }): void {
    const wasOn = this.#state !== "off";
    if (wasOn && powerLoss) this.#noteTrialInterrupted();
    this.flash.powerOff();
    this.#clearRam();
    this.#state = "off";
    if (wasOn) this.#hooks.onPowerOff?.(this);
  }

  /** Power-cycles the device. */
  async reset(reason: string): Promise<BootOutcome> {
    this.resets.push({ reason, at: this.clock.now() });
    this.#powerDown({ powerLoss: false });
    return await this.powerOn();
  }

  /** Waits for a reset the device scheduled itself (software reboot, watchdog). */
  async settle(): Promise<void> {
    while (this.#pending) {
      const pending = this.#pending;
      await pending;
      if (this.#pending === pending) this.#pending = null;
    }
    if (this.#pendingError) {
      const error = this.#pendingError;
      this.#pendingError = null;
      throw error;
    }
  }

  /**
   * Runs the application's self-test as its behaviour dictates: `no-network` cannot reach the
   * cloud and `fail-self-test` fails its own checks.
   */
  selfTest(): { passed: boolean; reason: string } {
    if (this.#state !== "running") return { passed: false, reason: `device is ${this.#state}` };
    switch (this.#behavior) {
      case "no-network":
        return { passed: false, reason: "cannot connect to the network after the update" };
      case "fail-self-test":
        return { passed: false, reason: "application self-test failed" };
      case "hang":
        return { passed: false, reason: "application hangs" };
      default:
        return { passed: true, reason: "self-test passed" };
    }
  }

  /** A snapshot for reports and assertions (reads flash; needs power). */
  report(): DeviceReport {
    return this.#inspect(() => ({
      state: this.#state,
      running: this.running,
      securityCounter: new SecurityCounter(this.areas.fuses).read(),
      primary: readTrailer(this.areas.primary),
      secondary: readTrailer(this.areas.secondary),
      updateState: this.#fwu && this.#serving ? fwuStateName(this.#fwu.state) : null,
      lastBootLog: this.bootLogs[this.bootLogs.length - 1] ?? [],
    }));
  }

  /**
   * Power losses that struck while an image ran on trial, unconfirmed, or a second stage did
   * (from the moment the first stage chose to try it, boot included): the boot ROM reverts such
   * an image as it would one that crashed, so its update fails unless the cloud retries it.
   */
  trialsInterrupted = 0;

  #noteTrialInterrupted(): void {
    const onTrial = this.#inspect(() =>
      this.running?.trial === true || secondStageStore(this.areas).load().trial !== null
    );
    if (onTrial) this.trialsInterrupted++;
  }

  /** Reads flash as the simulator, not the device: with the power back on for the read if off. */
  #inspect<T>(read: () => T): T {
    const poweredOn = this.flash.poweredOn;
    if (!poweredOn) this.flash.powerOn();
    try {
      return read();
    } finally {
      if (!poweredOn) this.flash.powerOff();
    }
  }

  /**
   * What the device tells the cloud about itself (its shadow's reported state): the firmware it
   * runs, the version in each slot, the security counter, the update state and its last boot.
   */
  reportedState(): Record<string, unknown> {
    const report = this.report();
    const slotVersion = (area: FlashArea) => {
      const decoded = decodeAreaImage(area, slotImageSize(area));
      return decoded.ok ? formatVersion(decoded.image.header.version) : null;
    };
    return {
      mode: this.#state === "recovery" ? "recovery" : "application",
      ...(this.#state === "recovery" ? { recoveryReason: this.#recoveryReason } : {}),
      firmware: report.running?.version ?? null,
      ...(this.#secondStage
        ? {
          bootloader: {
            version: this.#secondStage.version,
            slot: this.#secondStage.slot === 0 ? "A" : "B",
            trial: this.#secondStage.trial,
          },
        }
        : {}),
      trial: report.running?.trial ?? false,
      securityCounter: report.securityCounter,
      updateState: report.updateState,
      slots: {
        primary: { version: slotVersion(this.areas.primary), imageOk: report.primary.imageOk },
        secondary: { version: slotVersion(this.areas.secondary), failed: report.secondary.failed },
      },
      boot: { count: this.bootLogs.length, log: report.lastBootLog.slice(-16) },
    };
  }

  #scheduleReset(reason: string): void {
    const previous = this.#pending ?? Promise.resolve();
    this.#pending = previous.then(async () => {
      try {
        await this.reset(reason);
      } catch (error) {
        this.#pendingError = error;
      }
    });
  }

  #remember(log: string[]): void {
    // The same array: lines the device adds after the boot ROM is done still belong to this boot.
    this.bootLogs.push(log);
    if (this.bootLogs.length > 16) this.bootLogs.shift();
  }

  #clearRam(): void {
    if (this.#watchdog !== null) this.clock.clearTimer(this.#watchdog);
    this.#watchdog = null;
    this.#record = null;
    this.#fwu = null;
    this.#pal = null;
    this.#behavior = "ok";
  }
}

/**
 * Writes a factory image into the primary slot of a blank chip, as a production line would
 * (no trailer: the bootloader treats a never-swapped primary as confirmed).
 *
 * @example
 * ```ts ignore
 * const factory = createFlash(layout);
 * flashFactoryImage(factory, layout, signedImage);
 * ```
 */
/**
 * Provisions the two-stage boot chain at the factory: the root certificate into the boot ROM
 * region, which is then frozen read-only, and a signed second-stage bootloader into slot A.
 *
 * @example
 * ```ts ignore
 * provisionBootChain(flash, layout, { rootCertificateDer, secondStage: signedStage2Image });
 * ```
 */
export function provisionBootChain(
  flash: NorFlash,
  layout: DeviceLayout,
  options: { readonly rootCertificateDer: Uint8Array; readonly secondStage: Uint8Array },
): void {
  const areas = openAreas(flash, layout);
  areas.bootRom.program(0, bootRomContents(options.rootCertificateDer, areas.bootRom.writeUnit));
  const slot = areas.stage2[0];
  if (options.secondStage.length > slot.size) {
    throw new RangeError(
      `Cannot provision a second stage of ${options.secondStage.length} bytes: the slot holds ${slot.size}`,
    );
  }
  programFrom0(slot, options.secondStage);
  secondStageStore(areas).save(PROVISIONED_STATE);
  // Frozen from now on: not even the boot code may rewrite the root it trusts.
  flash.protect(layout.bootRom.firstSector, layout.bootRom.sectorCount, "read-only");
}

export function flashFactoryImage(flash: NorFlash, layout: DeviceLayout, image: Uint8Array): void {
  const { primary } = openAreas(flash, layout);
  const capacity = (primary.sectorCount - 1) * primary.sectorSize;
  if (image.length > capacity) {
    throw new RangeError(
      `Cannot flash a factory image of ${image.length} bytes: the slot holds ${capacity}`,
    );
  }
  programFrom0(primary, image);
}

/** Programs `bytes` at the start of an erased area, the last write unit padded with 0xFF. */
function programFrom0(area: FlashArea, bytes: Uint8Array): void {
  const padded = new Uint8Array(alignUp(bytes.length, area.writeUnit)).fill(0xff);
  padded.set(bytes);
  area.program(0, padded);
}
