/**
 * The issuing side of the PKI, which devices never hold: key generation, the root CA, code-signing
 * and TLS certificates, private keys exported as PEM, and keys derived from shared material.
 * Used by the image tool, the fleet and the tests; the device side only verifies
 * (`protocol/certificates.ts`).
 *
 * @module
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { createECDH } from "node:crypto";
import { toHex } from "../lib/bytes.ts";
import {
  ECDSA_P256,
  ECDSA_SHA256,
  EKU_CLIENT_AUTH,
  EKU_CODE_SIGNING,
  pemEncode,
  sha256,
  type SigningKeys,
} from "../protocol/signatures.ts";
import type { Certificate } from "../protocol/certificates.ts";

/**
 * Generates an ECDSA P-256 key pair.
 *
 * @example
 * ```ts
 * import { generateSigningKeys } from "./certificate_issuer.ts";
 * const keys = await generateSigningKeys();
 * keys.publicKey.type; // "public"
 * ```
 */
export async function generateSigningKeys(): Promise<SigningKeys> {
  return await crypto.subtle.generateKey(ECDSA_P256, true, ["sign", "verify"]) as CryptoKeyPair;
}

/**
 * Exports a private key as PKCS#8 PEM (what `openssl genpkey` writes).
 *
 * @example
 * ```ts
 * import { exportPrivateKeyPem, generateSigningKeys } from "./certificate_issuer.ts";
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
 * import { createRootCertificate, generateSigningKeys } from "./certificate_issuer.ts";
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
 * import { createRootCertificate, generateSigningKeys, issueCodeSigningCertificate } from "./certificate_issuer.ts";
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

/**
 * A P-256 key pair derived from `material` (SHA-256, re-hashed until it is a valid scalar), so
 * separate processes that share a secret build the same keys — how fleet shards agree on one
 * signing PKI without passing private keys around. Never use it for keys that must stay secret
 * from whoever knows `material`.
 *
 * @example
 * ```ts
 * import { deriveSigningKeys } from "./certificate_issuer.ts";
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

/** A code-signing PKI: a root CA (what devices trust) and a code signer it certified. */
export interface SigningPki {
  readonly rootKeys: SigningKeys;
  readonly root: Certificate;
  readonly signerKeys: SigningKeys;
  readonly signer: Certificate;
}

/**
 * Makes a root CA and a code-signing certificate under it, the one way the tools, the fleet, the
 * demo and the tests all build theirs. With `derivedFrom`, both keys are derived from that
 * material ({@linkcode deriveSigningKeys}), so separate processes build the same PKI.
 *
 * @example
 * ```ts
 * import { createSigningPki } from "./certificate_issuer.ts";
 * const pki = await createSigningPki({
 *   rootSubject: "CN=Root", signerSubject: "CN=Signer",
 *   validity: { notBefore: new Date("2026-01-01"), notAfter: new Date("2036-01-01") },
 * });
 * pki.signer.issuer; // "CN=Root"
 * ```
 */
export async function createSigningPki(options: {
  readonly rootSubject: string;
  readonly signerSubject: string;
  readonly validity: { readonly notBefore: Date; readonly notAfter: Date; serialNumber?: string };
  readonly derivedFrom?: string;
}): Promise<SigningPki> {
  const { derivedFrom, validity } = options;
  const rootKeys = derivedFrom === undefined
    ? await generateSigningKeys()
    : await deriveSigningKeys(`${derivedFrom}:root`);
  const root = await createRootCertificate(rootKeys, { subject: options.rootSubject, ...validity });
  const signerKeys = derivedFrom === undefined
    ? await generateSigningKeys()
    : await deriveSigningKeys(`${derivedFrom}:signer`);
  const signer = await issueCodeSigningCertificate(
    root,
    rootKeys.privateKey,
    signerKeys.publicKey,
    {
      subject: options.signerSubject,
      ...validity,
    },
  );
  return { rootKeys, root, signerKeys, signer };
}
