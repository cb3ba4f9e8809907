/**
 * Encrypted images as MCUboot makes them (its `ENC_EC256` scheme; docs/device.md): the payload is
 * encrypted with AES-128-CTR under a fresh random key, its counter starting at zero at the first
 * payload byte and counting 16-byte blocks; the header and TLVs stay in clear and the signature
 * covers the plaintext. The key travels in an `ENC_EC256` TLV (0x32, 113 bytes) wrapped for the
 * device's P-256 key by ECIES: an ephemeral key agreement with it, HKDF-SHA256 (no salt, info
 * `MCUBoot_ECIES_v1`, 48 bytes: 16 for AES-128-CTR with a zero nonce over the key, 32 for an
 * HMAC-SHA256 over the wrapped key), laid out as ephemeral public key (65, uncompressed) | MAC
 * (32) | wrapped key (16).
 *
 * The cloud side wraps with a public key; the device side unwraps with a private key its secure
 * element holds and never shows (`bootloader/secure_element.ts`).
 *
 * @example
 * ```ts
 * import { payloadCipher, unwrapImageKey, wrapImageKey } from "./image_encryption.ts";
 *
 * const device = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, [
 *   "deriveBits",
 * ]);
 * const key = crypto.getRandomValues(new Uint8Array(16));
 * const tlv = await wrapImageKey(key, device.publicKey);
 * const unwrapped = await unwrapImageKey(tlv, device.privateKey);
 * const secret = payloadCipher(key, 0, new TextEncoder().encode("firmware"));
 * unwrapped.ok && payloadCipher(unwrapped.key, 0, secret).length; // 8
 * ```
 *
 * @module
 */

import { createCipheriv, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { concatBytes, toArrayBuffer } from "../lib/bytes.ts";

/** WebCrypto's name for the key agreement. */
export const ECDH_P256 = { name: "ECDH", namedCurve: "P-256" } as const;
/** Bytes of the payload key (AES-128). */
export const IMAGE_KEY_BYTES = 16;
/** Bytes of an `ENC_EC256` TLV: ephemeral public key, MAC, wrapped key. */
export const ENC_EC256_TLV_BYTES = 65 + 32 + IMAGE_KEY_BYTES;
const HKDF_INFO = new TextEncoder().encode("MCUBoot_ECIES_v1");

/** An unwrapped payload key, or why there is none. */
export type UnwrapResult =
  | { readonly ok: true; readonly key: Uint8Array }
  | { readonly ok: false; readonly reason: string };

/**
 * AES-128-CTR over `bytes` lying at byte `offset` of the payload (encrypting and decrypting are
 * the same): any part of a payload can be turned on its own, which is what lets a swap cut short
 * by a power loss redo a sector without the ones before it.
 */
export function payloadCipher(key: Uint8Array, offset: number, bytes: Uint8Array): Uint8Array {
  if (key.length !== IMAGE_KEY_BYTES) {
    throw new RangeError(`an image key has ${IMAGE_KEY_BYTES} bytes, not ${key.length}`);
  }
  const counter = new Uint8Array(16);
  let block = Math.floor(offset / 16);
  for (let i = 15; i >= 0 && block > 0; i--) {
    counter[i] = block % 256;
    block = Math.floor(block / 256);
  }
  const cipher = createCipheriv("aes-128-ctr", key, counter);
  const skip = offset % 16;
  if (skip > 0) cipher.update(new Uint8Array(skip));
  const turned = new Uint8Array(cipher.update(bytes));
  // CTR has nothing left to give; final() releases the cipher (it is a resource in Deno).
  cipher.final();
  return turned;
}

/** HKDF-SHA256 of the shared secret: the key-wrapping key and the MAC key. */
async function derivedKeys(shared: Uint8Array): Promise<{ wrap: Uint8Array; mac: CryptoKey }> {
  const ikm = await crypto.subtle.importKey("raw", toArrayBuffer(shared), "HKDF", false, [
    "deriveBits",
  ]);
  const material = new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: HKDF_INFO },
      ikm,
      48 * 8,
    ),
  );
  const mac = await crypto.subtle.importKey(
    "raw",
    toArrayBuffer(material.subarray(16, 48)),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  return { wrap: material.slice(0, 16), mac };
}

/** The `ENC_EC256` TLV value carrying `imageKey` to the holder of `recipient`'s private key. */
export async function wrapImageKey(
  imageKey: Uint8Array,
  recipient: CryptoKey,
): Promise<Uint8Array> {
  if (imageKey.length !== IMAGE_KEY_BYTES) {
    throw new RangeError(`an image key has ${IMAGE_KEY_BYTES} bytes, not ${imageKey.length}`);
  }
  const ephemeral = await crypto.subtle.generateKey(ECDH_P256, true, ["deriveBits"]);
  const shared = new Uint8Array(
    await crypto.subtle.deriveBits({ name: "ECDH", public: recipient }, ephemeral.privateKey, 256),
  );
  const { wrap, mac } = await derivedKeys(shared);
  const wrapped = payloadCipher(wrap, 0, imageKey);
  const tag = new Uint8Array(await crypto.subtle.sign("HMAC", mac, toArrayBuffer(wrapped)));
  const point = new Uint8Array(await crypto.subtle.exportKey("raw", ephemeral.publicKey));
  return concatBytes([point, tag, wrapped]);
}

/**
 * The payload key in an `ENC_EC256` TLV value, unwrapped with `privateKey` (an ECDH P-256 key,
 * which may be non-extractable); a TLV made for another key, or altered anywhere, is refused
 * with the reason and never yields a key.
 */
export async function unwrapImageKey(
  tlv: Uint8Array,
  privateKey: CryptoKey,
): Promise<UnwrapResult> {
  if (tlv.length !== ENC_EC256_TLV_BYTES) {
    return { ok: false, reason: `ENC_EC256 TLV has ${tlv.length} bytes, expected 113` };
  }
  let ephemeral: CryptoKey;
  try {
    ephemeral = await crypto.subtle.importKey(
      "raw",
      toArrayBuffer(tlv.subarray(0, 65)),
      ECDH_P256,
      false,
      [],
    );
  } catch {
    return { ok: false, reason: "ephemeral key is not a P-256 point" };
  }
  let shared: Uint8Array;
  try {
    shared = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "ECDH", public: ephemeral }, privateKey, 256),
    );
  } catch (error) {
    return { ok: false, reason: `key agreement failed: ${(error as Error).message}` };
  }
  const { wrap, mac } = await derivedKeys(shared);
  const wrapped = tlv.slice(97, 113);
  // WebCrypto's verify compares in constant time.
  if (
    !(await crypto.subtle.verify(
      "HMAC",
      mac,
      toArrayBuffer(tlv.subarray(65, 97)),
      toArrayBuffer(wrapped),
    ))
  ) {
    // Short: the reason ends up in a slot trailer's 64 bytes, behind "cannot decrypt: ".
    return { ok: false, reason: "key MAC mismatch: encrypted for another key" };
  }
  return { ok: true, key: payloadCipher(wrap, 0, wrapped) };
}

/** A key file read, or why it cannot be used. */
export type KeyFileResult<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: string };

function p256<T>(read: () => KeyObject, then: (key: KeyObject) => T): KeyFileResult<T> {
  let key: KeyObject;
  try {
    key = read();
  } catch (error) {
    return { ok: false, reason: `cannot parse the key: ${(error as Error).message}` };
  }
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    return { ok: false, reason: "not a P-256 (prime256v1) key: ENC_EC256 needs one" };
  }
  return { ok: true, value: then(key) };
}

/**
 * The public key images are encrypted to, from a PEM file (`PUBLIC KEY`, as `image
 * encryption-keygen` or `openssl pkey -pubout` write it; a private key file gives its public
 * half).
 */
export async function importImagePublicKeyPem(pem: string): Promise<KeyFileResult<CryptoKey>> {
  const read = p256(
    () => createPublicKey({ key: pem, format: "pem" }),
    (key) => new Uint8Array(key.export({ format: "der", type: "spki" })),
  );
  if (!read.ok) return read;
  return {
    ok: true,
    value: await crypto.subtle.importKey(
      "spki",
      toArrayBuffer(read.value),
      ECDH_P256,
      true,
      [],
    ),
  };
}

/** The PKCS#8 bytes of an image decryption key PEM file (PKCS#8 or SEC1 `EC PRIVATE KEY`). */
export function imagePrivateKeyPkcs8(pem: string): KeyFileResult<Uint8Array> {
  return p256(
    () => createPrivateKey({ key: pem, format: "pem" }),
    (key) => new Uint8Array(key.export({ format: "der", type: "pkcs8" })),
  );
}
