/**
 * A device trust-store update (job file type {@linkcode TRUST_STORE_FILE_TYPE}): the code-signing
 * certificates a device accepts by label, the signing keys it refuses (revoked, by the SHA-256 of
 * their SubjectPublicKeyInfo, as an image's KEYHASH TLV names them) and, optionally, a new root.
 * The whole store, not a change to it, with a version that only goes up, signed by the root the
 * device trusts: a code signer cannot revoke its revocation.
 *
 * Rotating the root: the update carries the new root certificate and, under it, the old root's
 * signature over that certificate (`rootLink`); the update itself is then signed by the new root.
 * A device keeps the links, so it can walk from the root in its boot ROM to the current one.
 *
 * On the wire, JSON (strict, bounded):
 * `{ "body": base64(JSON body), "signature": base64(DER ECDSA P-256/SHA-256 over the body bytes) }`
 * with body `{ "version": N, "signers": [{ "label": s, "certificate": base64 DER }],
 * "revoked": [hex], "rootLink"?: { "certificate": base64 DER, "signature": base64 DER } }`.
 *
 * @example
 * ```ts ignore
 * const bytes = await signTrustUpdate({ version: 2, signers, revoked: [keyHashHex] }, rootKey);
 * const parsed = parseTrustUpdate(bytes); // { ok: true, value: { body, bodyBytes, signature } }
 * ```
 *
 * @module
 */

import { fromBase64, toBase64 } from "../lib/base64.ts";
import { type Certificate, parseCertificate } from "./certificates.ts";
import { ECDSA_P256, sha256, signData, type VerifyingKey, verifySignature } from "./signatures.ts";

/** The job document file type of a trust-store update. */
export const TRUST_STORE_FILE_TYPE = 2;
/** The largest update accepted (what the device's store record holds, with room). */
export const MAX_TRUST_UPDATE_BYTES = 3 * 1024;
/** At most this many signers and revoked keys. */
export const MAX_TRUST_ENTRIES = 8;

/** A link from one root to the next: the new root, signed by the old one. */
export interface RootLink {
  readonly certificate: Uint8Array;
  readonly signature: Uint8Array;
}

/** What an update says. */
export interface TrustStoreBody {
  readonly version: number;
  /** Code-signer certificates (DER) by the label a job document's `certfile` names. */
  readonly signers: readonly { readonly label: string; readonly certificate: Uint8Array }[];
  /** Revoked signing keys: SHA-256 of their SPKI, lowercase hex. */
  readonly revoked: readonly string[];
  /** Present when the update rotates the root. */
  readonly rootLink?: RootLink;
}

/** A parsed update. */
export interface TrustUpdate {
  readonly body: TrustStoreBody;
  /** The bytes the signature covers. */
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
}

type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

const LABEL = /^[A-Za-z0-9 ._/-]{1,64}$/;
const KEY_HASH = /^[0-9a-f]{64}$/;

/**
 * The update's JSON: body and signature. The signer's `sign` makes a DER ECDSA signature.
 *
 * @example
 * ```ts ignore
 * await signTrustUpdate(body, (bytes) => signData(rootKeys.privateKey, bytes));
 * ```
 */
export async function signTrustUpdate(
  body: TrustStoreBody,
  sign: (bytes: Uint8Array) => Promise<Uint8Array>,
): Promise<Uint8Array> {
  const bodyBytes = new TextEncoder().encode(JSON.stringify({
    version: body.version,
    signers: body.signers.map((s) => ({ label: s.label, certificate: toBase64(s.certificate) })),
    revoked: body.revoked,
    ...(body.rootLink
      ? {
        rootLink: {
          certificate: toBase64(body.rootLink.certificate),
          signature: toBase64(body.rootLink.signature),
        },
      }
      : {}),
  }));
  return new TextEncoder().encode(JSON.stringify({
    body: toBase64(bodyBytes),
    signature: toBase64(await sign(bodyBytes)),
  }));
}

/** The old root's signature over a new root's certificate (DER), for a `rootLink`. */
export function signRootLink(
  newRoot: Uint8Array,
  oldRootKey: CryptoKey,
): Promise<Uint8Array> {
  return signData(oldRootKey, newRoot);
}

/** Parses an update strictly; never throws. */
export function parseTrustUpdate(bytes: Uint8Array): Parsed<TrustUpdate> {
  if (bytes.length === 0 || bytes.length > MAX_TRUST_UPDATE_BYTES) {
    return { ok: false, reason: `trust update must be 1..${MAX_TRUST_UPDATE_BYTES} bytes` };
  }
  const outer = json(bytes);
  if (!outer.ok) return outer;
  const bodyBytes = fromBase64(outer.value.body);
  const signature = fromBase64(outer.value.signature);
  if (!bodyBytes || !signature || signature.length === 0) {
    return { ok: false, reason: "trust update needs body and signature, base64" };
  }
  const inner = json(bodyBytes);
  if (!inner.ok) return inner;
  const raw = inner.value;
  if (
    !Number.isInteger(raw.version) || (raw.version as number) < 1 ||
    (raw.version as number) > 0xffffffff
  ) {
    return { ok: false, reason: "trust update version must be an integer 1..2^32-1" };
  }
  if (!Array.isArray(raw.signers) || raw.signers.length > MAX_TRUST_ENTRIES) {
    return {
      ok: false,
      reason: `trust update signers must be an array of at most ${MAX_TRUST_ENTRIES}`,
    };
  }
  const signers: { label: string; certificate: Uint8Array }[] = [];
  for (const entry of raw.signers) {
    const label = (entry as Record<string, unknown>)?.label;
    const certificate = fromBase64((entry as Record<string, unknown>)?.certificate);
    if (typeof label !== "string" || !LABEL.test(label) || !certificate) {
      return {
        ok: false,
        reason: "trust update signer: label 1..64 of [A-Za-z0-9 ._/-] and a base64 certificate",
      };
    }
    if (signers.some((s) => s.label === label)) {
      return { ok: false, reason: `trust update names signer '${label}' twice` };
    }
    signers.push({ label, certificate });
  }
  if (
    !Array.isArray(raw.revoked) || raw.revoked.length > MAX_TRUST_ENTRIES ||
    !raw.revoked.every((r) => typeof r === "string" && KEY_HASH.test(r))
  ) {
    return {
      ok: false,
      reason:
        `trust update revoked must be at most ${MAX_TRUST_ENTRIES} key hashes (64 hex digits)`,
    };
  }
  let rootLink: RootLink | undefined;
  if (raw.rootLink !== undefined) {
    const link = raw.rootLink as Record<string, unknown>;
    const certificate = fromBase64(link?.certificate);
    const linkSignature = fromBase64(link?.signature);
    if (!certificate || !linkSignature) {
      return { ok: false, reason: "trust update rootLink needs certificate and signature, base64" };
    }
    rootLink = { certificate, signature: linkSignature };
  }
  return {
    ok: true,
    value: {
      body: {
        version: raw.version as number,
        signers,
        revoked: raw.revoked as string[],
        ...(rootLink ? { rootLink } : {}),
      },
      bodyBytes,
      signature,
    },
  };
}

function json(bytes: Uint8Array): Parsed<Record<string, unknown>> {
  try {
    const value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return { ok: false, reason: "trust update is not a JSON object" };
    }
    return { ok: true, value };
  } catch (error) {
    return { ok: false, reason: `trust update is not JSON: ${(error as Error).message}` };
  }
}

/** A root certificate's own key, to check what it signed. */
export async function rootKey(root: Certificate): Promise<VerifyingKey> {
  const key = await root.publicKey.export(ECDSA_P256, ["verify"]);
  return { key, keyHash: sha256(new Uint8Array(root.publicKey.rawData)) };
}

/** Whether `root` signed `bytes` with `signature` (false, never a throw, for a key of another kind). */
export async function rootSigned(
  root: Certificate,
  bytes: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  let key: VerifyingKey;
  try {
    key = await rootKey(root);
  } catch {
    return false; // not an ECDSA P-256 key: it signs nothing a device accepts
  }
  return await verifySignature(key, bytes, sha256(bytes), signature);
}

/** The certificate of a root link, parsed. */
export function linkRoot(link: RootLink): Parsed<Certificate> {
  const parsed = parseCertificate(link.certificate);
  return parsed.ok ? parsed : { ok: false, reason: `rootLink certificate: ${parsed.reason}` };
}
