/**
 * Builds and signs images in the format of {@link ./image_format.ts}.
 *
 * @module
 */

import { concatBytes, viewOf } from "../lib/bytes.ts";
import { type Certificate, certificateDer } from "./certificates.ts";
import { sha256, signData } from "./signatures.ts";
import { IMAGE_KEY_BYTES, payloadCipher, wrapImageKey } from "./image_encryption.ts";
import {
  encodeDependency,
  encodeHeader,
  encodeTlvArea,
  HARDWARE_ID_PATTERN,
  IMAGE_HEADER_SIZE,
  type ImageDependency,
  ImageFlag,
  type ImageVersion,
  TLV_INFO_MAGIC,
  TLV_PROTECTED_INFO_MAGIC,
  TlvType,
} from "./image_format.ts";

/** What goes into an image. */
export interface ImageSpec {
  /** The firmware bytes. */
  readonly payload: Uint8Array;
  /** Image version. */
  readonly version: ImageVersion;
  /** Anti-rollback security counter (protected TLV). */
  readonly securityCounter: number;
  /** Header size (payload offset). @default {32} */
  readonly headerSize?: number;
  /** Header flags. @default {0} */
  readonly flags?: number;
  /** Load address. @default {0} */
  readonly loadAddress?: number;
  /** Versions of other images it needs (protected DEPENDENCY TLVs). */
  readonly dependencies?: readonly ImageDependency[];
  /** The board it is built for (protected HARDWARE_ID TLV); none: any board. */
  readonly hardwareId?: string;
}

function hardwareIdBytes(id: string): Uint8Array {
  if (!HARDWARE_ID_PATTERN.test(id)) {
    throw new RangeError(
      `Cannot build image: 'hardwareId' must be 1..64 of [A-Za-z0-9._-]: current value is '${id}'`,
    );
  }
  return new TextEncoder().encode(id);
}

/** Who signs. */
export interface ImageSigner {
  /** The signer's private key. */
  readonly privateKey: CryptoKey;
  /** The signer's code-signing certificate (embedded in the image). */
  readonly certificate: Certificate;
}

/**
 * Header + payload + protected TLVs: the region the hash and signature cover.
 *
 * @example
 * ```ts
 * import { hashedRegion } from "./image_sign.ts";
 * import { parseVersion } from "./image_format.ts";
 * hashedRegion({ payload: new Uint8Array(10), version: parseVersion("1.0.0")!, securityCounter: 1 })
 *   .length; // 32 + 10 + 12
 * ```
 */
export function hashedRegion(spec: ImageSpec): Uint8Array {
  const counter = new Uint8Array(4);
  if (
    !Number.isInteger(spec.securityCounter) || spec.securityCounter < 0 ||
    spec.securityCounter > 0xffffffff
  ) {
    throw new RangeError(
      `Cannot build image: 'securityCounter' must be a u32: current value is ${spec.securityCounter}`,
    );
  }
  viewOf(counter).setUint32(0, spec.securityCounter, true);
  const protectedArea = encodeTlvArea(TLV_PROTECTED_INFO_MAGIC, [
    ...(spec.dependencies ?? []).map((d) => ({
      type: TlvType.DEPENDENCY,
      value: encodeDependency(d),
    })),
    { type: TlvType.SEC_CNT, value: counter },
    ...(spec.hardwareId !== undefined
      ? [{ type: TlvType.HARDWARE_ID, value: hardwareIdBytes(spec.hardwareId) }]
      : []),
  ]);
  const headerSize = spec.headerSize ?? IMAGE_HEADER_SIZE;
  if (!Number.isInteger(headerSize) || headerSize < IMAGE_HEADER_SIZE || headerSize > 0xffff) {
    throw new RangeError(
      `Cannot build image: 'headerSize' must be 32..65535: current value is ${headerSize}`,
    );
  }
  const header = encodeHeader({
    loadAddress: spec.loadAddress ?? 0,
    headerSize,
    protectedTlvSize: protectedArea.length,
    payloadSize: spec.payload.length,
    flags: spec.flags ?? 0,
    version: spec.version,
  });
  return concatBytes([header, spec.payload, protectedArea]);
}

/**
 * Builds a signed image: hash, key hash, DER ECDSA signature and signer certificate TLVs.
 *
 * @example
 * ```ts ignore
 * const image = await signImage({ payload, version, securityCounter: 1 }, signer);
 * ```
 */
export async function signImage(
  spec: ImageSpec,
  signer: ImageSigner,
  options: SignOptions = {},
): Promise<Uint8Array> {
  const encryptTo = options.encryptTo;
  const flags = (spec.flags ?? 0) | (encryptTo ? ImageFlag.ENCRYPTED_AES128 : 0);
  // The signature covers the plaintext, with the header saying it is encrypted (as MCUboot's).
  const region = hashedRegion({ ...spec, flags });
  const digest = sha256(region);
  const signature = await signData(signer.privateKey, region);
  const keyHash = sha256(new Uint8Array(signer.certificate.publicKey.rawData));
  const entries: { type: number; value: Uint8Array }[] = [
    { type: TlvType.SHA256, value: digest },
    { type: TlvType.KEYHASH, value: keyHash },
    { type: TlvType.ECDSA_SIG, value: signature },
    { type: TlvType.SIGNER_CERT, value: certificateDer(signer.certificate) },
  ];
  if (encryptTo) {
    // A fresh key per image: CTR under a reused key would give two payloads' XOR away.
    const key = crypto.getRandomValues(new Uint8Array(IMAGE_KEY_BYTES));
    const payloadOffset = spec.headerSize ?? IMAGE_HEADER_SIZE;
    const payloadEnd = payloadOffset + spec.payload.length;
    region.set(payloadCipher(key, 0, region.subarray(payloadOffset, payloadEnd)), payloadOffset);
    entries.push({ type: TlvType.ENC_EC256, value: await wrapImageKey(key, encryptTo) });
  }
  return concatBytes([region, encodeTlvArea(TLV_INFO_MAGIC, entries)]);
}

/** How {@linkcode signImage} builds the image besides signing it. */
export interface SignOptions {
  /**
   * Encrypt the payload for the holder of this ECDH P-256 private key's public half (MCUboot's
   * ENC_EC256; see image_encryption.ts).
   */
  readonly encryptTo?: CryptoKey;
}

/**
 * An image with only the hash TLV: structurally valid, never bootable on a secure device.
 *
 * @example
 * ```ts
 * import { unsignedImage } from "./image_sign.ts";
 * import { parseVersion } from "./image_format.ts";
 * unsignedImage({ payload: new Uint8Array(4), version: parseVersion("1.0.0")!, securityCounter: 0 })
 *   .length > 0; // true
 * ```
 */
export function unsignedImage(spec: ImageSpec): Uint8Array {
  const region = hashedRegion(spec);
  return concatBytes([
    region,
    encodeTlvArea(TLV_INFO_MAGIC, [{ type: TlvType.SHA256, value: sha256(region) }]),
  ]);
}
