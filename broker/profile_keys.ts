/**
 * Signing-profile private keys at rest: sealed with AES-256-GCM under a key-encryption key the
 * broker is given at start (`--profile-key-file`, `OTA_PROFILE_KEY`), never stored or returned in
 * clear. Opened, a key is a non-extractable WebCrypto key: the cloud can sign with it, nothing can
 * read it back. The profile's name is the seal's associated data, so a sealed key moved to another
 * profile does not open.
 *
 * @example
 * ```ts ignore
 * const vault = await ProfileKeyVault.fromSecret("a long secret from the operator");
 * const sealed = await vault.seal("release", pkcs8);
 * const key = await vault.open("release", sealed); // CryptoKey, extractable: false
 * ```
 *
 * @module
 */

import { fromBase64, toBase64 } from "../lib/base64.ts";
import { toArrayBuffer } from "../lib/bytes.ts";
import { ECDSA_P256 } from "../protocol/signatures.ts";

/** A private key as stored: AES-256-GCM over its PKCS#8 DER. */
export interface SealedKey {
  readonly alg: "A256GCM";
  /** 12-byte nonce, base64. */
  readonly iv: string;
  /** Ciphertext and tag, base64. */
  readonly data: string;
}

/** The shortest secret a key-encryption key is derived from. */
export const MIN_PROFILE_SECRET = 16;

const HKDF_INFO = new TextEncoder().encode("ota signing-profile key encryption v1");

/** Seals and opens signing-profile private keys. */
export class ProfileKeyVault {
  readonly #kek: CryptoKey;
  /** Whether the key-encryption key lives only as long as this process. */
  readonly ephemeral: boolean;

  private constructor(kek: CryptoKey, ephemeral: boolean) {
    this.#kek = kek;
    this.ephemeral = ephemeral;
  }

  /** A vault whose key derives from `secret` (HKDF-SHA256); the same secret opens its seals. */
  static async fromSecret(secret: string): Promise<ProfileKeyVault> {
    if (secret.length < MIN_PROFILE_SECRET) {
      throw new RangeError(
        `Cannot use the profile key: it must have at least ${MIN_PROFILE_SECRET} characters`,
      );
    }
    const material = await crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(secret),
      "HKDF",
      false,
      ["deriveKey"],
    );
    const kek = await crypto.subtle.deriveKey(
      { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(32), info: HKDF_INFO },
      material,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
    return new ProfileKeyVault(kek, false);
  }

  /** A vault whose random key never leaves this process: its seals die with it. */
  static async ephemeral(): Promise<ProfileKeyVault> {
    const kek = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, [
      "encrypt",
      "decrypt",
    ]);
    return new ProfileKeyVault(kek, true);
  }

  /** Seals `pkcs8` (a private key's DER) for profile `name`. */
  async seal(name: string, pkcs8: Uint8Array<ArrayBuffer>): Promise<SealedKey> {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const data = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(name) },
        this.#kek,
        pkcs8,
      ),
    );
    return { alg: "A256GCM", iv: toBase64(iv), data: toBase64(data) };
  }

  /**
   * The signing key sealed for profile `name`, non-extractable; null when it does not open (sealed
   * under another key, for another profile, or altered).
   */
  async open(name: string, sealed: SealedKey): Promise<CryptoKey | null> {
    const iv = fromBase64(sealed?.iv);
    const data = fromBase64(sealed?.data);
    if (sealed?.alg !== "A256GCM" || !iv || iv.length !== 12 || !data) return null;
    let pkcs8: Uint8Array<ArrayBuffer>;
    try {
      pkcs8 = new Uint8Array(
        await crypto.subtle.decrypt(
          {
            name: "AES-GCM",
            iv: toArrayBuffer(iv),
            additionalData: new TextEncoder().encode(name),
          },
          this.#kek,
          toArrayBuffer(data),
        ),
      );
    } catch {
      return null;
    }
    try {
      return await crypto.subtle.importKey("pkcs8", pkcs8, ECDSA_P256, false, ["sign"]);
    } catch {
      return null;
    } finally {
      pkcs8.fill(0);
    }
  }
}
