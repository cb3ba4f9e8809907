/**
 * The device's secure element: a P-256 key generated inside it that signs but can never be read,
 * not even by code running on the device (a non-extractable WebCrypto key; the module keeps it
 * in a private field and hands out nothing but signatures), and the device certificate the
 * fleet CA issued for that key at provisioning. Like a real secure element it is a separate chip:
 * power cuts and resets do not touch it.
 *
 * Deno's TLS stack takes a private key as PEM and offers no signing callback, so a key that
 * cannot leave the element cannot do a TLS client handshake here (ATECC608-class parts do, via
 * mbedTLS's PK callbacks). The device proves its identity with a login token instead: its
 * certificate, a timestamp and the element's signature over both and its thing name, sent as
 * the MQTT password over a server-authenticated TLS connection (Google Cloud IoT Core's scheme
 * with a certificate rather than a bare key). See `broker/device_identity.ts`.
 *
 * @module
 */

import { ECDSA_P256, signData } from "../protocol/signatures.ts";
import { bytesEqual, toArrayBuffer } from "../lib/bytes.ts";
import { ECDH_P256, unwrapImageKey, type UnwrapResult } from "../protocol/image_encryption.ts";
import { toBase64Url } from "../lib/base64.ts";
import { LOGIN_TOKEN_PREFIX, loginTokenMessage } from "../protocol/login_token.ts";

/** A secure element as it travels between threads (see {@linkcode SecureElement.toChip}). */
export interface SecureElementChip {
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly publicKeySpki: Uint8Array;
  readonly certificate: Uint8Array | null;
  readonly imageKey?: CryptoKey;
}

/**
 * A secure element.
 *
 * @example
 * ```ts ignore
 * const element = await SecureElement.generate();
 * element.installCertificate(der); // issued by the fleet CA for element.publicKey
 * const password = await element.loginToken("dev-1", Date.now());
 * ```
 */
export class SecureElement {
  readonly #privateKey: CryptoKey;
  readonly #publicKeySpki: Uint8Array;
  /** The public half, for the CA to certify. */
  readonly publicKey: CryptoKey;
  #certificate: Uint8Array | null = null;
  /** The key encrypted images are wrapped for (ECDH P-256), once provisioned. */
  #imageKey: CryptoKey | null = null;

  private constructor(keys: CryptoKeyPair, spki: Uint8Array) {
    this.#privateKey = keys.privateKey;
    this.publicKey = keys.publicKey;
    this.#publicKeySpki = spki;
  }

  /**
   * The chip itself, to move it with its device to another thread (a Web Worker): the key goes
   * as a structured-clone of the non-extractable CryptoKey, which stays non-extractable there.
   */
  toChip(): SecureElementChip {
    return {
      privateKey: this.#privateKey,
      publicKey: this.publicKey,
      publicKeySpki: this.#publicKeySpki,
      certificate: this.#certificate,
      ...(this.#imageKey ? { imageKey: this.#imageKey } : {}),
    };
  }

  /** The element a {@linkcode SecureElement.toChip} chip holds. */
  static fromChip(chip: SecureElementChip): SecureElement {
    if (chip.privateKey.extractable) throw new Error("a secure element key is never extractable");
    const element = new SecureElement(
      { privateKey: chip.privateKey, publicKey: chip.publicKey },
      chip.publicKeySpki,
    );
    element.#certificate = chip.certificate;
    if (chip.imageKey) {
      if (chip.imageKey.extractable) throw new Error("an image key is never extractable");
      element.#imageKey = chip.imageKey;
    }
    return element;
  }

  /** Generates a fresh key pair inside the element (re-provisioning makes a new element key). */
  static async generate(): Promise<SecureElement> {
    const keys = await crypto.subtle.generateKey(ECDSA_P256, false, ["sign", "verify"]);
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
    return new SecureElement(keys, spki);
  }

  /** Whether the private key could be exported (never: the point of the element). */
  get privateKeyExtractable(): boolean {
    return this.#privateKey.extractable;
  }

  /** The device certificate (DER), once provisioned. */
  get certificate(): Uint8Array | null {
    return this.#certificate;
  }

  /**
   * Stores the certificate the CA issued; refused unless `certifiedSpki` (the certificate's
   * SubjectPublicKeyInfo) is this element's key.
   */
  installCertificate(der: Uint8Array, certifiedSpki: Uint8Array): boolean {
    if (!bytesEqual(certifiedSpki, this.#publicKeySpki)) return false;
    this.#certificate = der.slice();
    return true;
  }

  /**
   * Provisions the private key encrypted images are made for (PKCS#8, ECDH P-256; the product's
   * `image encryption-keygen` key): imported as a key that can never be read back, the bytes
   * given are not kept. A later call replaces it.
   */
  async installImageKey(pkcs8: Uint8Array): Promise<void> {
    this.#imageKey = await crypto.subtle.importKey(
      "pkcs8",
      toArrayBuffer(pkcs8),
      ECDH_P256,
      false,
      ["deriveBits"],
    );
  }

  /** Whether an image key is provisioned. */
  get hasImageKey(): boolean {
    return this.#imageKey !== null;
  }

  /**
   * The payload key of an encrypted image, unwrapped from its ENC_EC256 TLV with the provisioned
   * image key (which stays inside): for the bootloader's decrypting swap, as MCUboot's holds it
   * in RAM for the copy. Refused with the reason when no key is provisioned or the TLV was not
   * made for it.
   */
  unwrapImageKey(tlv: Uint8Array): Promise<UnwrapResult> {
    if (!this.#imageKey) {
      return Promise.resolve({ ok: false, reason: "no image key in the secure element" });
    }
    return unwrapImageKey(tlv, this.#imageKey);
  }

  /** Signs `data` (ECDSA P-256/SHA-256, DER, as every signature in the project). */
  sign(data: Uint8Array): Promise<Uint8Array> {
    return signData(this.#privateKey, data);
  }

  /**
   * A login token for `thing` at time `at` (ms), for the broker named `server` (the host it
   * dials): `se2.<cert>.<at>.<server>.<signature>`, base64url.
   */
  async loginToken(thing: string, at: number, server: string): Promise<string> {
    if (!this.#certificate) throw new Error("the secure element holds no certificate yet");
    const signature = await this.sign(loginTokenMessage(thing, at, server));
    return [
      LOGIN_TOKEN_PREFIX,
      toBase64Url(this.#certificate),
      String(at),
      toBase64Url(new TextEncoder().encode(server)),
      toBase64Url(signature),
    ].join(".");
  }
}
