/**
 * Authenticates an image the way the bootloader does before running it: structure, SHA-256 of
 * the hashed region, signer certificate chained to the ROM root with the code-signing EKU, key
 * hash, ECDSA signature, and the anti-rollback security counter.
 *
 * @module
 */

import { bytesEqual } from "../lib/bytes.ts";
import { createHash } from "node:crypto";
import {
  type Certificate,
  checkCodeSignerUnder,
  parseCertificate,
} from "../protocol/certificates.ts";
import { type VerificationCache, verifySignature } from "../protocol/signatures.ts";
import { type FlashArea, readMemo } from "./flash_area.ts";
import {
  type ByteSource,
  type DecodedImage,
  decodeImage,
  type DecodeResult,
  isEncrypted,
  wrongHardware,
} from "../protocol/image_format.ts";
import { payloadCipher, type UnwrapResult } from "../protocol/image_encryption.ts";

/** Options for {@linkcode validateImage}. */
export interface ValidateOptions {
  /** The trust anchor from the boot ROM. */
  readonly root: Certificate;
  /** Current security counter: an image below it is refused. */
  readonly minimumSecurityCounter?: number;
  /** Check the signer certificate's validity period at this time. */
  readonly at?: Date;
  /** Signature result cache. */
  readonly cache?: VerificationCache;
  /**
   * Set when the image is read as staged (a secondary slot, a download): an encrypted image is
   * ciphertext there, decrypted for its hash and signature with the key `keys` unwraps from its
   * ENC_EC256 TLV (a device without `keys` refuses it). Unset: the image is read as installed,
   * where an encrypted image's payload is already plaintext.
   */
  readonly staged?: { readonly keys?: ImageKeys };
  /**
   * The device's board (its boot ROM's hardware id): an image built for another board (its
   * HARDWARE_ID TLV) is refused. Unset: the board is not checked (an installed image ran already).
   */
  readonly hardware?: { readonly id: string | null };
  /** Signing keys refused even with a valid signature (SHA-256 of their SPKI, hex). */
  readonly revokedKeys?: ReadonlySet<string>;
  /**
   * Roots the trust store rotated away from: their signers' images still verify (the firmware a
   * device runs was signed before the rotation) until their keys are revoked.
   */
  readonly formerRoots?: readonly Certificate[];
}

/** Who can unwrap an encrypted image's payload key: the device's secure element. */
export interface ImageKeys {
  unwrapImageKey(tlv: Uint8Array): Promise<UnwrapResult>;
}

/**
 * `source` with the payload of `image` (encrypted with `key`) read as plaintext: the transform is
 * AES-128-CTR, so any range decrypts on its own.
 */
export function decryptingSource(
  source: ByteSource,
  image: DecodedImage,
  key: Uint8Array,
): ByteSource {
  const start = image.payloadOffset;
  const end = start + image.header.payloadSize;
  return {
    size: source.size,
    read(offset, length) {
      const bytes = source.read(offset, length).slice();
      const from = Math.max(offset, start);
      const to = Math.min(offset + length, end);
      if (from < to) {
        bytes.set(
          payloadCipher(key, from - start, bytes.subarray(from - offset, to - offset)),
          from - offset,
        );
      }
      return bytes;
    },
  };
}

/** Outcome of {@linkcode validateImage}. */
export type ValidationResult =
  | { readonly ok: true; readonly image: DecodedImage; readonly digest: Uint8Array }
  | {
    readonly ok: false;
    readonly reason: string;
    readonly image?: DecodedImage;
    /** Set when the image is authentic but built for another board. */
    readonly wrongHardware?: true;
  };

const READ_CHUNK = 16 * 1024;

/**
 * SHA-256 of `length` bytes of `source`, read in chunks (no full copy of the slot).
 *
 * @example
 * ```ts
 * import { digestSource } from "./image_validate.ts";
 * import { bytesSource } from "../protocol/image_format.ts";
 * digestSource(bytesSource(new Uint8Array(3)), 3).length; // 32
 * ```
 */
export function digestSource(source: ByteSource, length: number): Uint8Array {
  if (source.digest) return source.digest(length);
  const hash = createHash("sha256");
  for (let at = 0; at < length; at += READ_CHUNK) {
    hash.update(source.read(at, Math.min(READ_CHUNK, length - at)));
  }
  return new Uint8Array(hash.digest());
}

/**
 * Validates the image at the start of `source`. Never throws for a bad image.
 *
 * @example
 * ```ts ignore
 * const result = await validateImage(areas.secondary, { root, minimumSecurityCounter: 3 });
 * if (!result.ok) log(result.reason);
 * ```
 */
export function validateImage(
  source: ByteSource,
  options: ValidateOptions,
): Promise<ValidationResult> {
  return validateDecoded(source, decodeImage(source), options);
}

const decodedImageOf = readMemo<DecodeResult>();

/**
 * Decodes the image at the start of an area's first `size` bytes (the whole area by default),
 * again only once a sector it was read from changed: a device decodes its slots a dozen times
 * per update (each boot, the update service, every state report), and each decode copies the
 * header and TLVs out of flash.
 *
 * @example
 * ```ts ignore
 * const running = decodeAreaImage(areas.primary, slotImageSize);
 * if (running.ok) console.log(formatVersion(running.image.header.version));
 * ```
 */
export function decodeAreaImage(area: FlashArea, size: number = area.size): DecodeResult {
  return decodedImageOf(area, size, decodeImage);
}

/**
 * {@linkcode validateImage} of an area's first `size` bytes, decoding through
 * {@linkcode decodeAreaImage}; the hash and the signature are checked every time.
 *
 * @example
 * ```ts ignore
 * const result = await validateAreaImage(areas.secondary, slotImageSize, { root });
 * ```
 */
export function validateAreaImage(
  area: FlashArea,
  size: number,
  options: ValidateOptions,
): Promise<ValidationResult> {
  return validateDecoded(area.source(size), decodeAreaImage(area, size), options);
}

async function validateDecoded(
  source: ByteSource,
  decoded: DecodeResult,
  options: ValidateOptions,
): Promise<ValidationResult> {
  if (!decoded.ok) return decoded;
  const image = decoded.image;
  const refuse = (reason: string): ValidationResult => ({ ok: false, reason, image });
  if (options.staged && isEncrypted(image)) {
    const keys = options.staged.keys;
    if (!keys) return refuse("encrypted, and no key on this device to decrypt it");
    const unwrapped = await keys.unwrapImageKey(image.encryptedKey!);
    if (!unwrapped.ok) return refuse(`cannot decrypt: ${unwrapped.reason}`);
    source = decryptingSource(source, image, unwrapped.key);
  }
  if (!image.sha256) return refuse("image has no SHA256 TLV");
  const digest = digestSource(source, image.hashedSize);
  if (!bytesEqual(digest, image.sha256)) return refuse("image hash does not match its SHA256 TLV");
  if (!image.signature) return refuse("image is not signed (no ECDSA_SIG TLV)");
  if (!image.keyHash) return refuse("image has a signature but no KEYHASH TLV");
  if (!image.signerCertificate) return refuse("image has no SIGNER_CERT TLV");
  const cert = parseCertificate(image.signerCertificate);
  if (!cert.ok) return refuse(`signer certificate: ${cert.reason}`);
  const signer = await checkCodeSignerUnder(
    cert.value,
    [options.root, ...(options.formerRoots ?? [])],
    options.at,
  );
  if (!signer.ok) return refuse(signer.reason);
  if (!bytesEqual(signer.value.verifier.keyHash, image.keyHash)) {
    return refuse("KEYHASH does not match the signer certificate's key");
  }
  const valid = await verifySignature(
    signer.value.verifier,
    // Read only if this signature over this digest was never checked (a fleet checks it once).
    () => source.read(0, image.hashedSize),
    digest,
    image.signature,
    options.cache,
  );
  if (!valid) return refuse("image signature does not verify");
  if (options.revokedKeys?.size && options.revokedKeys.has(signer.value.verifier.keyHash.toHex())) {
    return refuse("image is signed by a revoked key");
  }
  if (image.securityCounter === null) return refuse("image has no security counter");
  const minimum = options.minimumSecurityCounter ?? 0;
  if (image.securityCounter < minimum) {
    return refuse(
      `image security counter ${image.securityCounter} is below the device's ${minimum}`,
    );
  }
  const board = options.hardware ? wrongHardware(image.hardwareId, options.hardware.id) : null;
  if (board) return { ok: false, reason: board, image, wrongHardware: true };
  return { ok: true, image, digest };
}
