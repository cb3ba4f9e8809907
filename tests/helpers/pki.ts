/**
 * Test fixtures: a code-signing PKI (root, signer, untrusted signer), signed simulated images
 * and factory devices. Built once per test module and reused.
 *
 * @module
 */

import { type Certificate, certificateDer } from "../../protocol/certificates.ts";
import { createSigningPki, exportPrivateKeyPem } from "../../pki/certificate_issuer.ts";
import { pemEncode, type SigningKeys } from "../../protocol/signatures.ts";
import { type BootRom } from "../../bootloader/bootloader.ts";
import type { SigningProfile } from "../../broker/ota_updates.ts";
import { Device, flashFactoryImage, provisionBootChain } from "../../bootloader/device.ts";
import { type SecondStageBehavior, secondStagePayload } from "../../bootloader/first_stage.ts";
import { type Behavior, buildFirmware } from "../../bootloader/firmware.ts";
import { bytesSource, decodeImage, parseVersion, TlvType } from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { createFlash, type DeviceLayout, deviceLayout } from "../../bootloader/layout.ts";
import { ManualClock, systemClock } from "../../lib/clock.ts";
import { toBase64 } from "../../lib/base64.ts";

/** The test PKI. */
export interface TestPki {
  readonly rootKeys: SigningKeys;
  readonly root: Certificate;
  readonly signerKeys: SigningKeys;
  readonly signer: Certificate;
  /** A signer chained to another root. */
  readonly rogueKeys: SigningKeys;
  readonly rogue: Certificate;
  /** The ROM every test device gets. */
  readonly rom: BootRom;
}

/** Path under which the trusted signer certificate is stored on devices. */
export const SIGNER_CERT_PATH = "/certs/ota_signer.pem";

export const VALIDITY = {
  notBefore: new Date("2025-01-01T00:00:00Z"),
  notAfter: new Date("2035-01-01T00:00:00Z"),
};

let cached: Promise<TestPki> | null = null;

/** Builds (once) the PKI. */
export function testPki(): Promise<TestPki> {
  cached ??= (async () => {
    const { rootKeys, root, signerKeys, signer } = await createSigningPki({
      rootSubject: "CN=Test OTA Root",
      signerSubject: "CN=Test Firmware Signer",
      validity: VALIDITY,
    });
    // Another root of the same name, and a signer it certified: trusted by no test device.
    const { signerKeys: rogueKeys, signer: rogue } = await createSigningPki({
      rootSubject: "CN=Test OTA Root",
      signerSubject: "CN=Rogue Signer",
      validity: VALIDITY,
    });
    const rom: BootRom = {
      root,
      certificates: new Map([[SIGNER_CERT_PATH, pemEncode("CERTIFICATE", certificateDer(signer))]]),
      hardwareId: TEST_BOARD,
    };
    return { rootKeys, root, signerKeys, signer, rogueKeys, rogue, rom };
  })();
  return cached;
}

/** The board every test device is (its boot ROM's hardware id). */
export const TEST_BOARD = "ota-sim-board";

/** Options of {@linkcode testImage}. */
export interface TestImageOptions {
  readonly version: string;
  readonly behavior?: Behavior;
  readonly securityCounter?: number;
  readonly payloadSize?: number;
  readonly signer?: "trusted" | "rogue";
}

/** A signed simulated image. */
export async function testImage(options: TestImageOptions): Promise<Uint8Array> {
  const pki = await testPki();
  const payload = buildFirmware(
    { behavior: options.behavior ?? "ok", version: options.version },
    options.payloadSize ?? 8 * 1024,
  );
  const rogue = options.signer === "rogue";
  return await signImage(
    {
      payload,
      version: parseVersion(options.version)!,
      securityCounter: options.securityCounter ?? 1,
    },
    {
      privateKey: rogue ? pki.rogueKeys.privateKey : pki.signerKeys.privateKey,
      certificate: rogue ? pki.rogue : pki.signer,
    },
  );
}

/** A signed second-stage bootloader image (by the trusted signer unless told otherwise). */
export async function secondStageImage(
  version: string,
  signer: "trusted" | "rogue" = "trusted",
  behavior: SecondStageBehavior = "boots",
): Promise<Uint8Array> {
  const pki = await testPki();
  const rogue = signer === "rogue";
  return await signImage(
    {
      payload: secondStagePayload(version, behavior),
      version: parseVersion(version)!,
      securityCounter: 1,
    },
    {
      privateKey: rogue ? pki.rogueKeys.privateKey : pki.signerKeys.privateKey,
      certificate: rogue ? pki.rogue : pki.signer,
    },
  );
}

/** A small layout for fast tests: 16 sectors of 4 KiB per slot. */
export function smallLayout(slotSectors = 16): DeviceLayout {
  return deviceLayout({ slotSectors });
}

/** A powered-off device whose primary slot holds `factoryImage`. */
export async function factoryDevice(
  options: {
    layout?: DeviceLayout;
    factory?: TestImageOptions;
    clock?: ManualClock;
    /** Run the device on real time (end-to-end tests over real sockets). */
    systemTime?: boolean;
    /** Watchdog period of the device. */
    watchdogMs?: number;
    /** Erase the previous image once a new one is confirmed. */
    erasePreviousImage?: boolean;
    /** Provision the two-stage boot chain (boot ROM region + second stage 2.0.0 in slot A). */
    twoStage?: boolean;
    seed?: number;
  } = {},
): Promise<{ device: Device; clock: ManualClock; pki: TestPki }> {
  const pki = await testPki();
  const layout = options.layout ?? smallLayout();
  const clock = options.clock ?? new ManualClock(Date.parse("2026-06-01T00:00:00Z"));
  const flash = createFlash(layout, { seed: options.seed ?? 1 });
  flashFactoryImage(flash, layout, await testImage(options.factory ?? { version: "1.0.0" }));
  if (options.twoStage) {
    provisionBootChain(flash, layout, {
      rootCertificateDer: certificateDer(pki.root),
      secondStage: await secondStageImage("2.0.0"),
    });
  }
  const deviceClock = options.systemTime ? systemClock : clock;
  const device = new Device({
    layout,
    rom: pki.rom,
    clock: deviceClock,
    flash,
    ...(options.watchdogMs ? { watchdogMs: options.watchdogMs } : {}),
    ...(options.erasePreviousImage ? { erasePreviousImage: true } : {}),
  });
  return { device, clock, pki };
}

/**
 * An OTA update request of 1.1.0 (16 KiB) as a payload the "release" profile signs, for `targets`
 * (the "fleet" group by default); the caller adds its id and protocols.
 */
export function releaseRequest(
  targets: { groups?: string[]; things?: string[] } = { groups: ["fleet"] },
) {
  return {
    payload: toBase64(buildFirmware({ behavior: "ok", version: "1.1.0" }, 16 * 1024)),
    version: "1.1.0",
    securityCounter: 2,
    signingProfile: "release",
    certFile: SIGNER_CERT_PATH,
    targets,
  };
}

/** The "release" signing profile of the test PKI's signer, as an operator would create it. */
export async function releaseProfile(): Promise<SigningProfile> {
  const pki = await testPki();
  return {
    name: "release",
    rootPem: pemEncode("CERTIFICATE", certificateDer(pki.root)),
    certificatePem: pemEncode("CERTIFICATE", certificateDer(pki.signer)),
    privateKeyPem: await exportPrivateKeyPem(pki.signerKeys.privateKey),
  };
}

/**
 * `image` with one byte of its ECDSA signature (the `r` integer, so the DER stays well formed)
 * changed; the SHA-256 TLV still matches the header and payload.
 */
export function withAlteredSignature(image: Uint8Array): Uint8Array {
  const decoded = decodeImage(bytesSource(image));
  if (!decoded.ok) throw new Error(decoded.reason);
  const signature = decoded.image.tlvs.find((t) => t.type === TlvType.ECDSA_SIG)!.value;
  const at = indexOfBytes(image, signature);
  if (at < 0) throw new Error("signature TLV not found in the image bytes");
  const altered = image.slice();
  altered[at + 10]! ^= 0x01;
  return altered;
}

function indexOfBytes(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/**
 * A well-formed DER ECDSA signature that signs nothing of ours (the one in AWS's own test
 * documents): for documents whose refusal must come from somewhere other than the signature.
 */
export const PLACEHOLDER_SIGNATURE =
  "MEQCIF2QDvww1G/kpRGZ8FYvQrok1bSZvXjXefRk7sqNcyPTAiB4dvGt8fozIY5NC0vUDJ2MY42ZERYEcrbwA4n6q7vrBg==";
