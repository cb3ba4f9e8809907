/**
 * Signatures both sides of an update speak: ECDSA P-256/SHA-256 keys, SHA-256, PEM keys as
 * openssl writes them (SEC1 or PKCS#8), DER ECDSA signatures (WebCrypto's raw r‖s converted here,
 * at the edge) and verification with a cache of results.
 *
 * @module
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { concatBytes, toArrayBuffer, toHex } from "../lib/bytes.ts";
import { BoundedCache } from "../lib/bounded_cache.ts";

x509.cryptoProvider.set(crypto);

/** WebCrypto parameters of the only key type accepted. */
export const ECDSA_P256: EcKeyImportParams = { name: "ECDSA", namedCurve: "P-256" };
/** WebCrypto parameters of the only signature algorithm accepted. */
export const ECDSA_SHA256: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };
/** OID of the code-signing extended key usage. */
export const EKU_CODE_SIGNING = "1.3.6.1.5.5.7.3.3";
/** ExtendedKeyUsage id-kp-clientAuth: a TLS client, here a device identity. */
export const EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
/** The X.509 signature algorithm ecdsa-with-SHA256. */
export const OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2";

/** Outcome of a check that can fail for a stated reason. */
export type Checked<T> = { ok: true; value: T } | { ok: false; reason: string };

/** A key pair for signing. */
export interface SigningKeys {
  /** Signs. */
  readonly privateKey: CryptoKey;
  /** Verifies. */
  readonly publicKey: CryptoKey;
}

/**
 * SHA-256 of bytes (node:crypto: about twice WebCrypto's rate here, and synchronous).
 *
 * @example
 * ```ts
 * import { sha256 } from "./signatures.ts";
 * sha256(new Uint8Array()).length; // 32
 * ```
 */
export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

/**
 * Encodes DER bytes as PEM.
 *
 * @example
 * ```ts
 * import { pemEncode } from "./signatures.ts";
 * pemEncode("PRIVATE KEY", new Uint8Array([1])).startsWith("-----BEGIN PRIVATE KEY-----"); // true
 * ```
 */
export function pemEncode(label: string, der: Uint8Array): string {
  const base64 = btoa(String.fromCharCode(...der));
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/**
 * Decodes every PEM block of a text, strictly (matching labels, valid base64).
 *
 * @example
 * ```ts
 * import { pemDecode, pemEncode } from "./signatures.ts";
 * const result = pemDecode(pemEncode("CERTIFICATE", new Uint8Array([7])));
 * result.ok && result.value[0]!.der[0]; // 7
 * ```
 */
export function pemDecode(text: string): Checked<{ label: string; der: Uint8Array }[]> {
  const blocks: { label: string; der: Uint8Array }[] = [];
  const pattern = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
  for (const match of text.matchAll(pattern)) {
    const [, begin, body, end] = match;
    if (begin !== end) {
      return { ok: false, reason: `PEM block BEGIN ${begin} ends with END ${end}` };
    }
    const compact = body!.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 !== 0) {
      return { ok: false, reason: `PEM block ${begin} is not valid base64` };
    }
    const binary = atob(compact);
    blocks.push({ label: begin!, der: Uint8Array.from(binary, (c) => c.charCodeAt(0)) });
  }
  if (blocks.length === 0) return { ok: false, reason: "no PEM block found" };
  return { ok: true, value: blocks };
}

/**
 * Imports a PEM private key (SEC1 "EC PRIVATE KEY" or PKCS#8 "PRIVATE KEY"), refusing
 * anything but ECDSA P-256.
 *
 * @example
 * ```ts ignore
 * import { importPrivateKeyPem } from "./signatures.ts";
 * const keys = await importPrivateKeyPem(Deno.readTextFileSync("signer.key"));
 * ```
 */
export async function importPrivateKeyPem(pem: string): Promise<Checked<SigningKeys>> {
  let keyObject;
  try {
    keyObject = createPrivateKey({ key: pem, format: "pem" });
  } catch (error) {
    return { ok: false, reason: `cannot parse private key: ${(error as Error).message}` };
  }
  if (keyObject.asymmetricKeyType !== "ec") {
    return {
      ok: false,
      reason:
        `unsupported key algorithm '${keyObject.asymmetricKeyType}': only ECDSA P-256 is accepted`,
    };
  }
  const curve = keyObject.asymmetricKeyDetails?.namedCurve;
  if (curve !== "prime256v1") {
    return {
      ok: false,
      reason: `unsupported curve '${curve}': only P-256 (prime256v1) is accepted`,
    };
  }
  const pkcs8 = keyObject.export({ format: "der", type: "pkcs8" });
  const spki = createPublicKey(keyObject).export({ format: "der", type: "spki" });
  const privateKey = await crypto.subtle.importKey(
    "pkcs8",
    toArrayBuffer(pkcs8),
    ECDSA_P256,
    true,
    ["sign"],
  );
  const publicKey = await crypto.subtle.importKey("spki", toArrayBuffer(spki), ECDSA_P256, true, [
    "verify",
  ]);
  return { ok: true, value: { privateKey, publicKey } };
}

/** Reads one DER length at `at`; strict (minimal, definite). */
function readDerLength(der: Uint8Array, at: number): { length: number; next: number } | null {
  const first = der[at];
  if (first === undefined) return null;
  if (first < 0x80) return { length: first, next: at + 1 };
  if (first === 0x81) {
    const value = der[at + 1];
    if (value === undefined || value < 0x80) return null;
    return { length: value, next: at + 2 };
  }
  return null;
}

function readDerInteger(
  der: Uint8Array,
  at: number,
  size: number,
): { value: Uint8Array; next: number } | null {
  if (der[at] !== 0x02) return null;
  const len = readDerLength(der, at + 1);
  if (!len || len.length === 0 || len.next + len.length > der.length) return null;
  let body = der.subarray(len.next, len.next + len.length);
  if (body[0]! & 0x80) return null; // negative
  if (body.length > 1 && body[0] === 0 && !(body[1]! & 0x80)) return null; // not minimal
  if (body[0] === 0 && body.length > 1) body = body.subarray(1);
  if (body.length > size) return null;
  const value = new Uint8Array(size);
  value.set(body, size - body.length);
  return { value, next: len.next + len.length };
}

/**
 * Converts a DER ECDSA signature (SEQUENCE of two INTEGERs, as openssl and the AWS job document
 * carry it) to WebCrypto's raw r‖s form. Strict: any trailing byte or non-minimal encoding is
 * refused.
 *
 * @example
 * ```ts
 * import { derSignatureToRaw, rawSignatureToDer } from "./signatures.ts";
 * const raw = new Uint8Array(64).fill(1);
 * const back = derSignatureToRaw(rawSignatureToDer(raw));
 * back.ok && back.value.length; // 64
 * ```
 */
export function derSignatureToRaw(der: Uint8Array, size = 32): Checked<Uint8Array> {
  if (der[0] !== 0x30) return { ok: false, reason: "signature is not a DER SEQUENCE" };
  const seq = readDerLength(der, 1);
  if (!seq || seq.next + seq.length !== der.length) {
    return { ok: false, reason: "signature DER length does not match its size" };
  }
  const r = readDerInteger(der, seq.next, size);
  if (!r) return { ok: false, reason: "signature r is not a valid DER INTEGER" };
  const s = readDerInteger(der, r.next, size);
  if (!s) return { ok: false, reason: "signature s is not a valid DER INTEGER" };
  if (s.next !== der.length) return { ok: false, reason: "signature has trailing bytes" };
  return { ok: true, value: concatBytes([r.value, s.value]) };
}

function derInteger(unsigned: Uint8Array): Uint8Array {
  let start = 0;
  while (start < unsigned.length - 1 && unsigned[start] === 0) start++;
  let body = unsigned.subarray(start);
  if (body[0]! & 0x80) body = concatBytes([new Uint8Array([0]), body]);
  return concatBytes([new Uint8Array([0x02, body.length]), body]);
}

/**
 * Converts WebCrypto's raw r‖s signature to DER.
 *
 * @example
 * ```ts
 * import { rawSignatureToDer } from "./signatures.ts";
 * rawSignatureToDer(new Uint8Array(64).fill(1))[0]; // 0x30
 * ```
 */
export function rawSignatureToDer(raw: Uint8Array): Uint8Array {
  const half = raw.length / 2;
  const body = concatBytes([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))]);
  return concatBytes([new Uint8Array([0x30, body.length]), body]);
}

/**
 * Signs `data` with ECDSA P-256/SHA-256 and returns the DER signature.
 *
 * @example
 * ```ts
 * import { generateSigningKeys } from "../pki/certificate_issuer.ts";
import { signData } from "./signatures.ts";
 * const der = await signData((await generateSigningKeys()).privateKey, new Uint8Array([1]));
 * der[0]; // 0x30
 * ```
 */
export async function signData(privateKey: CryptoKey, data: Uint8Array): Promise<Uint8Array> {
  const raw = await crypto.subtle.sign(ECDSA_SHA256, privateKey, toArrayBuffer(data));
  return rawSignatureToDer(new Uint8Array(raw));
}

/**
 * Remembers ECDSA results by (key, SHA-256 of the message, signature). Verification is a pure
 * function of that triple, so thousands of simulated devices checking the same image pay for
 * one verification; each device still hashes its own flash, which is what catches a corrupted
 * or mixed image.
 */
export class VerificationCache {
  readonly #results: BoundedCache<string, Promise<boolean>>;
  /** Creates a cache holding up to `capacity` results. */
  constructor(capacity = 4096) {
    this.#results = new BoundedCache(capacity);
  }
  /**
   * The result for `key`, computed once: callers that ask while the first verification is still
   * running share it (a thousand devices booting the same image at once verified it a thousand
   * times while each one's await was pending).
   */
  result(key: string, verify: () => Promise<boolean>): Promise<boolean> {
    return this.#results.getOrAdd(key, verify);
  }
}

/** The process-wide cache used unless a caller passes its own. */
export const defaultVerificationCache: VerificationCache = new VerificationCache();

/** A public key with a stable identity (SHA-256 of its SubjectPublicKeyInfo). */
export interface VerifyingKey {
  /** WebCrypto key. */
  readonly key: CryptoKey;
  /** SHA-256 of the SPKI DER. */
  readonly keyHash: Uint8Array;
}

/**
 * Verifies a DER ECDSA P-256/SHA-256 signature over `message`, whose SHA-256 the caller has
 * already computed as `digest`. Malformed signatures verify as false, never throw. `message`
 * may be a function that reads it: it is called only when the cache does not know the answer.
 *
 * @example
 * ```ts
 * import { generateSigningKeys } from "../pki/certificate_issuer.ts";
import { sha256, signData, verifyingKey, verifySignature } from "./signatures.ts";
 * const keys = await generateSigningKeys();
 * const message = new Uint8Array([1, 2, 3]);
 * const signature = await signData(keys.privateKey, message);
 * await verifySignature(await verifyingKey(keys.publicKey), message, sha256(message), signature); // true
 * ```
 */
export async function verifySignature(
  signer: VerifyingKey,
  message: Uint8Array | (() => Uint8Array),
  digest: Uint8Array,
  derSignature: Uint8Array,
  cache: VerificationCache = defaultVerificationCache,
): Promise<boolean> {
  const cacheKey = `${toHex(signer.keyHash)}:${toHex(digest)}:${toHex(derSignature)}`;
  return await cache.result(cacheKey, () => {
    const raw = derSignatureToRaw(derSignature);
    if (!raw.ok) return Promise.resolve(false);
    // Read before anything is cached: a read that throws (power lost) is this caller's alone.
    const bytes = toArrayBuffer(typeof message === "function" ? message() : message);
    return crypto.subtle.verify(ECDSA_SHA256, signer.key, toArrayBuffer(raw.value), bytes)
      .catch(() => false);
  });
}

/**
 * Wraps a public key with its SPKI hash.
 *
 * @example
 * ```ts
 * import { generateSigningKeys } from "../pki/certificate_issuer.ts";
import { verifyingKey } from "./signatures.ts";
 * (await verifyingKey((await generateSigningKeys()).publicKey)).keyHash.length; // 32
 * ```
 */
export async function verifyingKey(publicKey: CryptoKey): Promise<VerifyingKey> {
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
  return { key: publicKey, keyHash: sha256(spki) };
}
