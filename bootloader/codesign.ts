/**
 * Code signing with X.509: ECDSA P-256/SHA-256 keys, a root CA held in the device's boot ROM,
 * code-signing certificates issued by it, and openssl-compatible encodings (PEM keys in SEC1 or
 * PKCS#8, PEM/DER certificates, DER ECDSA signatures). WebCrypto's raw r‖s signatures are
 * converted here, at the edge.
 *
 * @module
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { AsnConvert } from "@peculiar/asn1-schema";
import { Certificate as AsnCertificate } from "@peculiar/asn1-x509";
import { createECDH, createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { bytesEqual, concatBytes, toArrayBuffer, toHex } from "../lib/bytes.ts";

x509.cryptoProvider.set(crypto);

/** WebCrypto parameters of the only key type accepted. */
export const ECDSA_P256: EcKeyImportParams = { name: "ECDSA", namedCurve: "P-256" };
/** WebCrypto parameters of the only signature algorithm accepted. */
export const ECDSA_SHA256: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };
/** OID of the code-signing extended key usage. */
export const EKU_CODE_SIGNING = "1.3.6.1.5.5.7.3.3";
/** ExtendedKeyUsage id-kp-clientAuth: a TLS client, here a device identity. */
export const EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
/** OID of ecdsa-with-SHA256. */
const OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2";

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
 * import { sha256 } from "./codesign.ts";
 * sha256(new Uint8Array()).length; // 32
 * ```
 */
export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

/**
 * Generates an ECDSA P-256 key pair.
 *
 * @example
 * ```ts
 * import { generateSigningKeys } from "./codesign.ts";
 * const keys = await generateSigningKeys();
 * keys.publicKey.type; // "public"
 * ```
 */
export async function generateSigningKeys(): Promise<SigningKeys> {
  return await crypto.subtle.generateKey(ECDSA_P256, true, ["sign", "verify"]) as CryptoKeyPair;
}

/**
 * Encodes DER bytes as PEM.
 *
 * @example
 * ```ts
 * import { pemEncode } from "./codesign.ts";
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
 * import { pemDecode, pemEncode } from "./codesign.ts";
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
 * import { importPrivateKeyPem } from "./codesign.ts";
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

/**
 * Exports a private key as PKCS#8 PEM (what `openssl genpkey` writes).
 *
 * @example
 * ```ts
 * import { exportPrivateKeyPem, generateSigningKeys } from "./codesign.ts";
 * const pem = await exportPrivateKeyPem((await generateSigningKeys()).privateKey);
 * pem.startsWith("-----BEGIN PRIVATE KEY-----"); // true
 * ```
 */
export async function exportPrivateKeyPem(privateKey: CryptoKey): Promise<string> {
  return pemEncode(
    "PRIVATE KEY",
    new Uint8Array(await crypto.subtle.exportKey("pkcs8", privateKey)),
  );
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
 * import { derSignatureToRaw, rawSignatureToDer } from "./codesign.ts";
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
 * import { rawSignatureToDer } from "./codesign.ts";
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
 * import { generateSigningKeys, signData } from "./codesign.ts";
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

/**
 * A map that keeps at most `capacity` entries (the oldest go first) and computes a missing
 * value once.
 */
class BoundedCache<K, V> {
  readonly #entries = new Map<K, V>();
  readonly #capacity: number;
  constructor(capacity: number) {
    this.#capacity = capacity;
  }
  /** The value of `key`, or what `compute` returns (if it throws, nothing is added). */
  getOrAdd(key: K, compute: () => V): V {
    if (this.#entries.has(key)) return this.#entries.get(key)!;
    const value = compute();
    if (this.#entries.size >= this.#capacity) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    this.#entries.set(key, value);
    return value;
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
 * import { generateSigningKeys, sha256, signData, verifyingKey, verifySignature } from "./codesign.ts";
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
 * import { generateSigningKeys, verifyingKey } from "./codesign.ts";
 * (await verifyingKey((await generateSigningKeys()).publicKey)).keyHash.length; // 32
 * ```
 */
export async function verifyingKey(publicKey: CryptoKey): Promise<VerifyingKey> {
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
  return { key: publicKey, keyHash: sha256(spki) };
}

/** A parsed certificate. */
export type Certificate = x509.X509Certificate;

/**
 * Parses a certificate from PEM text or DER bytes; garbage gets a reason, never an exception.
 *
 * @example
 * ```ts
 * import { parseCertificate } from "./codesign.ts";
 * parseCertificate(new Uint8Array([1, 2, 3])).ok; // false
 * ```
 */
export function parseCertificate(input: string | Uint8Array): Checked<Certificate> {
  // Every boot and every update parses the same few certificates again (the signer's, the
  // root): parsed once per process, by content (PEM text as it is, DER by its digest).
  if (typeof input === "string") return parsedPem.getOrAdd(input, () => parsePem(input));
  return parsedCertificates.getOrAdd(toHex(sha256(input)), () => parseDer(input));
}

const parsedCertificates = new BoundedCache<string, Checked<Certificate>>(256);
const parsedPem = new BoundedCache<string, Checked<Certificate>>(64);

function parsePem(text: string): Checked<Certificate> {
  const pem = pemDecode(text);
  if (!pem.ok) return pem;
  const block = pem.value.find((b) => b.label === "CERTIFICATE");
  if (!block) return { ok: false, reason: "no CERTIFICATE block in the PEM text" };
  return parseCertificate(block.der);
}

function parseDer(der: Uint8Array): Checked<Certificate> {
  try {
    // The ASN.1 parser is lenient (it takes, e.g., a BIT STRING with a wrong unused-bits count);
    // only canonical DER, which re-encodes to the same bytes, is accepted.
    const reencoded = new Uint8Array(
      AsnConvert.serialize(AsnConvert.parse(toArrayBuffer(der), AsnCertificate)),
    );
    if (!bytesEqual(reencoded, der)) {
      return { ok: false, reason: "certificate is not canonical DER" };
    }
    return { ok: true, value: new x509.X509Certificate(toArrayBuffer(der)) };
  } catch (error) {
    return { ok: false, reason: `cannot parse certificate: ${(error as Error).message}` };
  }
}

/** DER bytes of a certificate. */
export function certificateDer(cert: Certificate): Uint8Array {
  return new Uint8Array(cert.rawData);
}

/** Options for issuing certificates. */
export interface CertificateOptions {
  /** Distinguished name, e.g. "CN=OTA Root". */
  readonly subject: string;
  /** Start of validity. */
  readonly notBefore: Date;
  /** End of validity. */
  readonly notAfter: Date;
  /** Serial number as hex. @default {random} */
  readonly serialNumber?: string;
}

function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  bytes[0]! &= 0x7f;
  return toHex(bytes);
}

/**
 * Creates a self-signed root CA certificate (the device's boot-ROM trust anchor).
 *
 * @example
 * ```ts
 * import { createRootCertificate, generateSigningKeys } from "./codesign.ts";
 * const root = await createRootCertificate(await generateSigningKeys(), {
 *   subject: "CN=Root",
 *   notBefore: new Date("2026-01-01"),
 *   notAfter: new Date("2046-01-01"),
 * });
 * root.subject; // "CN=Root"
 * ```
 */
export async function createRootCertificate(
  keys: SigningKeys,
  options: CertificateOptions,
): Promise<Certificate> {
  return await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: options.serialNumber ?? randomSerial(),
    name: options.subject,
    notBefore: options.notBefore,
    notAfter: options.notAfter,
    signingAlgorithm: ECDSA_SHA256,
    keys: keys as CryptoKeyPair,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
}

/** Options for {@linkcode issueCodeSigningCertificate}. */
export interface CodeSigningCertificateOptions extends CertificateOptions {
  /** Extended key usages. @default {[EKU_CODE_SIGNING]} (tests pass others to prove refusal) */
  readonly extendedKeyUsages?: readonly string[];
  /** Key usage flags. @default {digitalSignature} */
  readonly keyUsage?: number;
}

/**
 * Issues a code-signing certificate for `subjectKey`, signed by the root.
 *
 * @example
 * ```ts
 * import { createRootCertificate, generateSigningKeys, issueCodeSigningCertificate } from "./codesign.ts";
 * const rootKeys = await generateSigningKeys();
 * const validity = { notBefore: new Date("2026-01-01"), notAfter: new Date("2036-01-01") };
 * const root = await createRootCertificate(rootKeys, { subject: "CN=Root", ...validity });
 * const signer = await issueCodeSigningCertificate(root, rootKeys.privateKey,
 *   (await generateSigningKeys()).publicKey, { subject: "CN=Signer", ...validity });
 * signer.issuer; // "CN=Root"
 * ```
 */
export async function issueCodeSigningCertificate(
  issuer: Certificate,
  issuerKey: CryptoKey,
  subjectKey: CryptoKey,
  options: CodeSigningCertificateOptions,
): Promise<Certificate> {
  return await issueLeafCertificate(issuer, issuerKey, subjectKey, options, [
    new x509.KeyUsagesExtension(options.keyUsage ?? x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(
      [...(options.extendedKeyUsages ?? [EKU_CODE_SIGNING])],
      false,
    ),
  ]);
}

/** An end-entity certificate (not a CA) carrying `usages` and its subject key identifier. */
async function issueLeafCertificate(
  issuer: Certificate,
  issuerKey: CryptoKey,
  subjectKey: CryptoKey,
  options: CertificateOptions,
  usages: readonly x509.Extension[],
): Promise<Certificate> {
  return await x509.X509CertificateGenerator.create({
    serialNumber: options.serialNumber ?? randomSerial(),
    subject: options.subject,
    issuer: issuer.subject,
    notBefore: options.notBefore,
    notAfter: options.notAfter,
    signingAlgorithm: ECDSA_SHA256,
    publicKey: subjectKey,
    signingKey: issuerKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      ...usages,
      await x509.SubjectKeyIdentifierExtension.create(subjectKey),
    ],
  });
}

/**
 * Issues a TLS certificate from the fleet CA: a device identity (`kind: "client"`, subject
 * CN = thing name, EKU clientAuth) or the broker's own (`kind: "server"`, SAN IP addresses and
 * DNS names, EKU serverAuth). X.509 v3 with KeyUsage digitalSignature, as TLS stacks require.
 *
 * @example
 * ```ts ignore
 * const deviceCert = await issueTlsCertificate(fleetCa, fleetKey, deviceKeys.publicKey, {
 *   kind: "client", subject: "CN=dev-1", notBefore, notAfter });
 * ```
 */
export async function issueTlsCertificate(
  issuer: Certificate,
  issuerKey: CryptoKey,
  subjectKey: CryptoKey,
  options: CertificateOptions & {
    kind: "client" | "server";
    ipAddresses?: string[];
    dnsNames?: string[];
  },
): Promise<Certificate> {
  const names = [
    ...(options.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
    ...(options.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
  ];
  return await issueLeafCertificate(issuer, issuerKey, subjectKey, options, [
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([
      options.kind === "client" ? EKU_CLIENT_AUTH : "1.3.6.1.5.5.7.3.1",
    ], false),
    ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names, false)] : []),
  ]);
}

/** Result of checking that a certificate may sign firmware for a device. */
export interface CodeSigner {
  /** The signer's key, ready to verify. */
  readonly verifier: VerifyingKey;
  /** The checked certificate. */
  readonly certificate: Certificate;
}

async function checkIssuedBy(cert: Certificate, root: Certificate): Promise<Checked<true>> {
  let result: Checked<true>;
  if (cert.issuer !== root.subject) {
    result = {
      ok: false,
      reason: `certificate issuer '${cert.issuer}' is not the trusted root '${root.subject}'`,
    };
  } else if (
    cert.signatureAlgorithm.name !== "ECDSA" ||
    (cert.signatureAlgorithm as EcdsaParams).hash === undefined
  ) {
    result = { ok: false, reason: `certificate is signed with an unsupported algorithm` };
  } else {
    // Verified here rather than with the library's verify(), whose DER-to-raw conversion of
    // the signature is lenient: only a canonical DER signature over the exact TBS bytes counts.
    let verified = false;
    try {
      const asn = AsnConvert.parse(cert.rawData, AsnCertificate);
      const raw = derSignatureToRaw(new Uint8Array(asn.signatureValue));
      if (raw.ok) {
        const rootKey = await root.publicKey.export(ECDSA_P256, ["verify"]);
        const tbs = AsnConvert.serialize(asn.tbsCertificate);
        verified = await crypto.subtle.verify(ECDSA_SHA256, rootKey, toArrayBuffer(raw.value), tbs);
      }
    } catch {
      verified = false;
    }
    result = verified ? { ok: true, value: true } : {
      ok: false,
      reason: `certificate signature does not verify against the trusted root '${root.subject}'`,
    };
  }
  return result;
}

function signatureOid(cert: Certificate): string | undefined {
  // The algorithm identifier as written in the certificate, so SHA-1 or RSA are named exactly.
  const tbsAlg = cert.signatureAlgorithm as Algorithm & { hash?: { name?: string } | string };
  const hash = typeof tbsAlg.hash === "string" ? tbsAlg.hash : tbsAlg.hash?.name;
  if (tbsAlg.name === "ECDSA" && hash === "SHA-256") return OID_ECDSA_SHA256;
  return `${tbsAlg.name}${hash ? `/${hash}` : ""}`;
}

/**
 * Checks that `cert` may sign firmware for a device whose ROM trusts `root`: issued and signed
 * by the root (ECDSA P-256/SHA-256), an end-entity certificate with KeyUsage digitalSignature
 * and ExtendedKeyUsage codeSigning, an ECDSA P-256 key, and (when `at` is given) within its
 * validity period at that time.
 *
 * @example
 * ```ts ignore
 * const signer = await checkCodeSigner(cert, root, { at: new Date() });
 * if (!signer.ok) console.log(signer.reason);
 * ```
 */
export async function checkCodeSigner(
  cert: Certificate,
  root: Certificate,
  options: { at?: Date } = {},
): Promise<Checked<CodeSigner>> {
  return await checkLeaf(cert, root, options, CODE_SIGNING);
}

/**
 * Checks a device's identity certificate against the fleet CA: issued and signed by it (ECDSA
 * P-256/SHA-256), an end entity with KeyUsage digitalSignature and ExtendedKeyUsage clientAuth,
 * an ECDSA P-256 key, and (when `at` is given) valid then. The thing it names is its subject CN.
 *
 * @example
 * ```ts ignore
 * const device = await checkDeviceCertificate(cert, fleetCa, { at: new Date() });
 * if (device.ok) await verifySignature(device.value.verifier, message, sha256(message), der);
 * ```
 */
export async function checkDeviceCertificate(
  cert: Certificate,
  ca: Certificate,
  options: { at?: Date } = {},
): Promise<Checked<CodeSigner>> {
  return await checkLeaf(cert, ca, options, DEVICE_IDENTITY);
}

/**
 * What a certificate is, by content, against a root and for a purpose, apart from the time:
 * computed once per process and shared by the callers that ask while it is being computed
 * (every device of a fleet checks the same signer at every boot, and parsing its extensions
 * and verifying its signature was a tenth of a device's CPU).
 */
const leafChecks = new BoundedCache<string, Promise<Checked<CodeSigner>>>(1024);
const fingerprints = new WeakMap<Certificate, string>();

function fingerprint(cert: Certificate): string {
  let known = fingerprints.get(cert);
  if (!known) {
    known = toHex(sha256(certificateDer(cert)));
    fingerprints.set(cert, known);
  }
  return known;
}

async function checkLeaf(
  cert: Certificate,
  root: Certificate,
  options: { at?: Date },
  purpose: LeafPurpose,
): Promise<Checked<CodeSigner>> {
  const checked = await leafChecks.getOrAdd(
    `${purpose.eku}:${fingerprint(cert)}:${fingerprint(root)}`,
    async () => {
      try {
        return await checkLeafUnguarded(cert, root, purpose);
      } catch (error) {
        // Fields are parsed lazily by the X.509 library: a malformed one surfaces only here.
        return {
          ok: false,
          reason: `cannot check ${purpose.role} certificate: ${(error as Error).message}`,
        };
      }
    },
  );
  if (!checked.ok || !options.at) return checked;
  const at = options.at.getTime();
  if (at < cert.notBefore.getTime()) {
    return {
      ok: false,
      reason: `${purpose.role} certificate is not valid before ${cert.notBefore.toISOString()}`,
    };
  }
  if (at > cert.notAfter.getTime()) {
    return {
      ok: false,
      reason: `${purpose.role} certificate expired at ${cert.notAfter.toISOString()}`,
    };
  }
  return checked;
}

/** What a leaf certificate is checked for: its ExtendedKeyUsage, and its role in reasons. */
interface LeafPurpose {
  readonly eku: string;
  readonly ekuName: string;
  readonly role: string;
}

const CODE_SIGNING: LeafPurpose = { eku: EKU_CODE_SIGNING, ekuName: "codeSigning", role: "signer" };
const DEVICE_IDENTITY: LeafPurpose = {
  eku: EKU_CLIENT_AUTH,
  ekuName: "clientAuth",
  role: "device",
};

async function checkLeafUnguarded(
  cert: Certificate,
  root: Certificate,
  purpose: LeafPurpose,
): Promise<Checked<CodeSigner>> {
  const role = purpose.role;
  const rootAlgorithm = root.publicKey.algorithm as EcKeyAlgorithm;
  if (rootAlgorithm.name !== "ECDSA" || rootAlgorithm.namedCurve !== "P-256") {
    return { ok: false, reason: `trusted root key is ${rootAlgorithm.name}, not ECDSA P-256` };
  }
  const algorithm = signatureOid(cert);
  if (algorithm !== OID_ECDSA_SHA256) {
    return {
      ok: false,
      reason:
        `unsupported certificate signature algorithm '${algorithm}': only ecdsa-with-SHA256 is accepted`,
    };
  }
  const keyAlgorithm = cert.publicKey.algorithm as EcKeyAlgorithm;
  if (keyAlgorithm.name !== "ECDSA" || keyAlgorithm.namedCurve !== "P-256") {
    return {
      ok: false,
      reason: `unsupported ${role} key '${keyAlgorithm.name}${
        keyAlgorithm.namedCurve ? ` ${keyAlgorithm.namedCurve}` : ""
      }': only ECDSA P-256 is accepted`,
    };
  }
  const issued = await checkIssuedBy(cert, root);
  if (!issued.ok) return issued;
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (basic?.ca) {
    return { ok: false, reason: `${role} certificate is a CA certificate, not an end entity` };
  }
  const keyUsage = cert.getExtension(x509.KeyUsagesExtension);
  if (!keyUsage || !(keyUsage.usages & x509.KeyUsageFlags.digitalSignature)) {
    return { ok: false, reason: `${role} certificate lacks KeyUsage digitalSignature` };
  }
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (!eku || !eku.usages.map(String).includes(purpose.eku)) {
    return {
      ok: false,
      reason: `${role} certificate lacks ExtendedKeyUsage ${purpose.ekuName}`,
    };
  }
  let key: CryptoKey;
  try {
    key = await cert.publicKey.export(ECDSA_P256, ["verify"]);
  } catch (error) {
    return { ok: false, reason: `cannot use the ${role} key: ${(error as Error).message}` };
  }
  return {
    ok: true,
    value: {
      certificate: cert,
      verifier: { key, keyHash: sha256(new Uint8Array(cert.publicKey.rawData)) },
    },
  };
}

/**
 * A P-256 key pair derived from `material` (SHA-256, re-hashed until it is a valid scalar), so
 * separate processes that share a secret build the same keys — how fleet shards agree on one
 * signing PKI without passing private keys around. Never use it for keys that must stay secret
 * from whoever knows `material`.
 *
 * @example
 * ```ts
 * import { deriveSigningKeys } from "./codesign.ts";
 * const a = await deriveSigningKeys("shared secret:root");
 * const b = await deriveSigningKeys("shared secret:root");
 * // a and b hold the same key
 * ```
 */
export async function deriveSigningKeys(material: string): Promise<SigningKeys> {
  const order = BigInt("0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
  let scalar = sha256(new TextEncoder().encode(material));
  while (BigInt(`0x${toHex(scalar)}`) === 0n || BigInt(`0x${toHex(scalar)}`) >= order) {
    scalar = sha256(scalar);
  }
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(scalar);
  const point = ecdh.getPublicKey();
  const b64url = (bytes: Uint8Array) =>
    btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const jwk = {
    kty: "EC",
    crv: "P-256",
    x: b64url(point.subarray(1, 33)),
    y: b64url(point.subarray(33, 65)),
    d: b64url(scalar),
    ext: true,
  };
  const privateKey = await crypto.subtle.importKey("jwk", jwk, ECDSA_P256, true, ["sign"]);
  const { d: _d, ...publicJwk } = jwk;
  const publicKey = await crypto.subtle.importKey("jwk", publicJwk, ECDSA_P256, true, ["verify"]);
  return { privateKey, publicKey };
}
