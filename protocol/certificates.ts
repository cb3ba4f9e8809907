/**
 * X.509 certificates as the device and the cloud check them: parsing (PEM or DER, remembered by
 * content), and the checks of a code-signing certificate and of a device identity certificate
 * against the root CA a device trusts.
 *
 * @module
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { AsnConvert } from "@peculiar/asn1-schema";
import { Certificate as AsnCertificate } from "@peculiar/asn1-x509";
import { bytesEqual, toArrayBuffer, toHex } from "../lib/bytes.ts";
import { BoundedCache } from "../lib/bounded_cache.ts";
import {
  type Checked,
  derSignatureToRaw,
  ECDSA_P256,
  ECDSA_SHA256,
  EKU_CLIENT_AUTH,
  EKU_CODE_SIGNING,
  OID_ECDSA_SHA256,
  pemDecode,
  sha256,
  type VerifyingKey,
} from "./signatures.ts";

/** A parsed certificate. */
export type Certificate = x509.X509Certificate;

/**
 * Parses a certificate from PEM text or DER bytes; garbage gets a reason, never an exception.
 *
 * @example
 * ```ts
 * import { parseCertificate } from "./certificates.ts";
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
 * `cert` checked as a code signer under the first of `roots` it chains to (a device's current
 * root and those it rotated away from; a cloud's signing profiles' roots); the first root's
 * reason when none does.
 *
 * @example
 * ```ts ignore
 * const signer = await checkCodeSignerUnder(cert, [root, formerRoot], new Date());
 * ```
 */
export async function checkCodeSignerUnder(
  cert: Certificate,
  roots: readonly Certificate[],
  at?: Date,
): Promise<Checked<CodeSigner>> {
  let first: Checked<CodeSigner> | null = null;
  for (const root of roots) {
    const checked = await checkCodeSigner(cert, root, at ? { at } : {});
    if (checked.ok) return checked;
    first ??= checked;
  }
  return first ?? { ok: false, reason: "no root to check the certificate against" };
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
