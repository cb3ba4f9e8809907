/**
 * The agent's ports: everything it reaches the world through, as interfaces it owns. MQTT and
 * HTTP are implemented over mqtt.js and fetch (`mqtt_transport.ts`, `http_fetch.ts`); the
 * platform (OTA PAL, running version, self-test, update state) by the device
 * (`device_runtime.ts` over `bootloader/`).
 *
 * @module
 */

import { type ImageVersion } from "../protocol/image_format.ts";

/** The MQTT connection, as the agent sees it. */
export interface MqttPort {
  publish(topic: string, payload: Uint8Array | string, qos: 0 | 1): Promise<void>;
  /** One SUBSCRIBE for one topic or several; rejects unless every one is granted. */
  subscribe(topics: string | readonly string[], qos: 0 | 1): Promise<void>;
  unsubscribe(topic: string): Promise<void>;
}

/** Ranged HTTP GET (pre-signed URLs). */
export interface HttpPort {
  /** GET `url` with `Range: bytes=start-end` (inclusive). */
  getRange(url: string, start: number, end: number): Promise<{ status: number; body: Uint8Array }>;
}

/**
 * A part of the device other than the application image that is updated with its own
 * test/confirm/revert (the second-stage bootloader): a job file of `fileType` goes here instead
 * of to the PAL. It is the only file of its job (trying it takes a reboot), or comes with the
 * application firmware it is installed together with (see `stage`).
 */
export interface UpdatableComponent {
  /** The job document `fileType` of this component's files. */
  readonly fileType: number;
  /** For logs and reasons, e.g. "second-stage bootloader". */
  readonly name: string;
  /** The version running now. */
  version(): ImageVersion;
  /** Verifies and stores `data` for the device to try at its next boot. */
  install(
    data: Uint8Array,
  ): Promise<{ ok: true } | { ok: false; reason: string; downgrade: boolean }>;
  /**
   * Verifies and stores `data` to be installed together with the application of the same job
   * (one reboot, both kept or both reverted; see the update service). None: this component
   * updates only alone.
   */
  stage?(
    data: Uint8Array,
  ): Promise<{ ok: true } | { ok: false; reason: string; downgrade: boolean }>;
  /** Forgets an installed or staged component the device has not tried yet. */
  cancel(): void;
  /** The running component booted once on trial and must be confirmed before the next reset. */
  onTrial(): boolean;
  /** Makes the trial permanent. */
  confirm(): boolean;
}

/** A file being received, as the agent describes it to the PAL (AWS `OtaFileContext_t`). */
export interface PalFile {
  /** Path of the file on the device (job document `filepath`). */
  filePath: string;
  /** Declared size. */
  fileSize: number;
  /** Detached DER ECDSA signature (job document `sig-sha256-ecdsa`, base64-decoded). */
  signature: Uint8Array | null;
  /** Path of the signer certificate (job document `certfile`). */
  certFilePath: string;
  /** The PAL's handle of the open file; null when none. */
  fileHandle: object | null;
  /** Received as a delta patch of `size` bytes from the running image (blocks in order). */
  patch?: { readonly size: number } | null;
}

/**
 * The OTA PAL as the agent uses it: the AWS PAL calls, each answering an `OtaPalStatus_t`
 * (`protocol/ota_pal_status.ts`), and the last error in words. `bootloader/ota_pal.ts`
 * implements it on the PSA firmware-update service.
 */
export interface PalPort {
  /** Why the last call failed, for reports. */
  readonly lastError: string | null;
  createFileForRx(file: PalFile | null): number;
  /** Reopens a file whose download was interrupted (a reset, a power cut), keeping its blocks. */
  resumeFileForRx(file: PalFile | null): number;
  writeBlock(file: PalFile | null, offset: number, data: Uint8Array): number;
  /** SHA-256 of the running image as a whole, what a delta patch names as its base. */
  runningImageSha256(): Uint8Array | null;
  /** Checks the detached signature and has the image verified as the bootloader will. */
  closeFile(file: PalFile | null): Promise<number>;
  /** Checks a data file's detached signature against the certificate at `certFilePath`. */
  checkDataSignature(
    data: Uint8Array,
    signature: Uint8Array | null,
    certFilePath: string,
  ): Promise<number>;
  activateNewImage(file: PalFile | null): number;
  resetDevice(file: PalFile | null): number;
  setPlatformImageState(file: PalFile | null, state: number): number;
  getPlatformImageState(file: PalFile | null): number;
}

/** What the agent needs from the device it runs on. */
export interface AgentPlatform {
  readonly pal: PalPort;
  /** Version of the image running now. */
  readonly runningVersion: ImageVersion;
  /** The application's self-test (must reach the cloud, must not crash). */
  selfTest(): { passed: boolean; reason: string };
  /** The update service state name (for resume and rollback decisions). */
  updateState(): number;
  /**
   * Why the last update failed, if the update service knows: the PSA status (e.g.
   * `ERROR_INSTALL_INTERRUPTED`, -159, when a power cut tore the install request) and its detail.
   */
  updateFailure(): { readonly code: number; readonly detail: string } | null;
  /** Components updated through their own file type (none: every data file goes to the app). */
  readonly components?: readonly UpdatableComponent[];
  /**
   * Recovery (OTA-only) mode: no application runs to take data files, so only jobs whose files
   * are all firmware (file type 0) are taken.
   */
  readonly firmwareOnly?: boolean;
  /**
   * Takes a verified file of a type the device itself consumes (its trust store): null when the
   * type is not one (the file goes to the application), else whether it was applied; a refusal
   * fails the job with its reason.
   */
  installFile?(
    fileType: number,
    data: Uint8Array,
  ): Promise<{ ok: true } | { ok: false; reason: string }> | null;
}
