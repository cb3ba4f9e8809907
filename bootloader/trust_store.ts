/**
 * The device's trust store in flash (two sectors, the agent store's power-safe A/B records): the
 * latest trust-store update it applied (protocol/trust_update.ts) and the chain of root links
 * from the root in its boot ROM to the current root. Nothing in it is taken on faith: every read
 * walks the links from the boot ROM's root and checks the update's signature again, so flash
 * altered by an attacker gives the factory trust (the boot ROM's root and certificates), never
 * theirs.
 *
 * What it changes: the root images chain to, the code-signer certificates the OTA PAL finds by
 * label (before the boot ROM's own), and the signing keys refused even with a valid signature.
 *
 * @example
 * ```ts ignore
 * const trust = await loadTrust(areas.trustStore, rom.root);
 * const rom2 = withTrust(rom, trust); // root, certificates and revoked keys as the store says
 * ```
 *
 * @module
 */

import { AgentStateStore } from "./agent_store.ts";
import type { BootRom } from "./bootloader.ts";
import type { FlashArea } from "./flash_area.ts";
import { concatBytes, viewOf } from "../lib/bytes.ts";
import { type Certificate, checkCodeSigner, parseCertificate } from "../protocol/certificates.ts";
import {
  linkRoot,
  parseTrustUpdate,
  type RootLink,
  rootSigned,
  type TrustUpdate,
} from "../protocol/trust_update.ts";

/** The trust a device applies. */
export interface Trust {
  /** The root images and signers chain to. */
  readonly root: Certificate;
  /** The version of the update applied; 0: the factory's trust. */
  readonly version: number;
  /** Code-signer certificates (DER) by label. */
  readonly signers: ReadonlyMap<string, Uint8Array>;
  /** Revoked signing keys (SHA-256 of SPKI, hex). */
  readonly revoked: ReadonlySet<string>;
  /** The root links walked from the boot ROM's root. */
  readonly links: readonly RootLink[];
  /** The roots before the current one, the boot ROM's first: their signers still verify. */
  readonly formerRoots: readonly Certificate[];
}

/** The factory's trust: the boot ROM's root, nothing added or revoked. */
export function factoryTrust(root: Certificate): Trust {
  return { root, version: 0, signers: new Map(), revoked: new Set(), links: [], formerRoots: [] };
}

/** `rom` as `trust` changes it: root, certificates by label (the store's first), revoked keys. */
export function withTrust(rom: BootRom, trust: Trust): BootRom {
  if (trust.version === 0) return rom;
  const certificates = new Map<string, string | Uint8Array>(rom.certificates ?? []);
  for (const [label, der] of trust.signers) certificates.set(label, der);
  return {
    ...rom,
    root: trust.root,
    certificates,
    revokedKeys: trust.revoked,
    formerRoots: trust.formerRoots,
  };
}

/** Encodes the record: link count, each link's certificate and signature, then the update. */
function encodeRecord(links: readonly RootLink[], update: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  const u16 = (n: number) => {
    const b = new Uint8Array(2);
    viewOf(b).setUint16(0, n, true);
    return b;
  };
  parts.push(u16(links.length));
  for (const link of links) {
    parts.push(u16(link.certificate.length), link.certificate);
    parts.push(u16(link.signature.length), link.signature);
  }
  parts.push(u16(update.length), update);
  return concatBytes(parts);
}

function decodeRecord(bytes: Uint8Array): { links: RootLink[]; update: Uint8Array } | null {
  let at = 0;
  const take = () => {
    if (at + 2 > bytes.length) return null;
    const length = viewOf(bytes).getUint16(at, true);
    at += 2;
    if (at + length > bytes.length) return null;
    const value = bytes.subarray(at, at + length);
    at += length;
    return value;
  };
  if (bytes.length < 2) return null;
  const count = viewOf(bytes).getUint16(0, true);
  at = 2;
  const links: RootLink[] = [];
  for (let i = 0; i < count; i++) {
    const certificate = take();
    const signature = certificate ? take() : null;
    if (!certificate || !signature) return null;
    links.push({ certificate, signature });
  }
  const update = take();
  return update ? { links, update } : null;
}

/** Walks `links` from `romRoot`: the current root, or why the chain breaks. */
async function walkLinks(
  romRoot: Certificate,
  links: readonly RootLink[],
): Promise<
  { ok: true; root: Certificate; former: Certificate[] } | { ok: false; reason: string }
> {
  let root = romRoot;
  const former: Certificate[] = [];
  for (const link of links) {
    if (!(await rootSigned(root, link.certificate, link.signature))) {
      return { ok: false, reason: "a root link is not signed by the root before it" };
    }
    const next = linkRoot(link);
    if (!next.ok) return next;
    former.push(root);
    root = next.value;
  }
  return { ok: true, root, former };
}

/**
 * The trust an update gives on top of `links` from `romRoot`, checked in full: the chain, the
 * update's signature by the (new) root, every signer certificate a code signer of that root.
 */
async function trustOf(
  romRoot: Certificate,
  links: readonly RootLink[],
  update: TrustUpdate,
  at: Date | undefined,
): Promise<{ ok: true; trust: Trust } | { ok: false; reason: string }> {
  const chain = await walkLinks(romRoot, links);
  if (!chain.ok) return chain;
  if (!(await rootSigned(chain.root, update.bodyBytes, update.signature))) {
    return { ok: false, reason: "the trust update is not signed by the device's root" };
  }
  const signers = new Map<string, Uint8Array>();
  for (const signer of update.body.signers) {
    const parsed = parseCertificate(signer.certificate);
    if (!parsed.ok) return { ok: false, reason: `signer '${signer.label}': ${parsed.reason}` };
    const checked = await checkCodeSigner(parsed.value, chain.root, at ? { at } : {});
    if (!checked.ok) return { ok: false, reason: `signer '${signer.label}': ${checked.reason}` };
    if (update.body.revoked.includes(checked.value.verifier.keyHash.toHex())) {
      return { ok: false, reason: `signer '${signer.label}' is also revoked by the update` };
    }
    signers.set(signer.label, signer.certificate);
  }
  return {
    ok: true,
    trust: {
      root: chain.root,
      version: update.body.version,
      signers,
      revoked: new Set(update.body.revoked),
      links,
      formerRoots: chain.former,
    },
  };
}

/**
 * The trust the store holds, checked from `romRoot`; the factory trust when it holds nothing or
 * nothing that checks (altered flash). Signer validity is checked at `at` only when applying.
 */
export async function loadTrust(area: FlashArea, romRoot: Certificate): Promise<Trust> {
  const bytes = new AgentStateStore(area).load();
  const record = bytes ? decodeRecord(bytes) : null;
  if (!record) return factoryTrust(romRoot);
  const update = parseTrustUpdate(record.update);
  if (!update.ok) return factoryTrust(romRoot);
  // Validity periods were checked when the update was applied (a boot may have no clock).
  const checked = await trustOf(romRoot, record.links, update.value, undefined);
  return checked.ok ? checked.trust : factoryTrust(romRoot);
}

/**
 * Applies a trust-store update: newer than the store's, signed by the device's current root (or,
 * rotating the root, linked from it and signed by the new one), every signer a code signer of that
 * root valid at `at`, and not revoking the key that signed the running firmware (which would leave
 * the device unable to boot what it runs). Returns the new trust, or why it was refused.
 */
export async function applyTrustUpdate(
  area: FlashArea,
  romRoot: Certificate,
  bytes: Uint8Array,
  options: { readonly at: Date; readonly runningKeyHash: string | null },
): Promise<{ ok: true; trust: Trust } | { ok: false; reason: string }> {
  const parsed = parseTrustUpdate(bytes);
  if (!parsed.ok) return parsed;
  const update = parsed.value;
  const current = await loadTrust(area, romRoot);
  if (update.body.version <= current.version) {
    return {
      ok: false,
      reason:
        `trust update version ${update.body.version} is not newer than the device's ${current.version}`,
    };
  }
  let links = current.links;
  if (update.body.rootLink) {
    if (
      !(await rootSigned(
        current.root,
        update.body.rootLink.certificate,
        update.body.rootLink.signature,
      ))
    ) {
      return { ok: false, reason: "the new root is not signed by the device's current root" };
    }
    links = [...links, update.body.rootLink];
  }
  const checked = await trustOf(romRoot, links, update, options.at);
  if (!checked.ok) return checked;
  if (options.runningKeyHash !== null && checked.trust.revoked.has(options.runningKeyHash)) {
    return {
      ok: false,
      reason: "the update revokes the key that signed the running firmware: update it first",
    };
  }
  const store = new AgentStateStore(area);
  const record = encodeRecord(links, bytes);
  if (record.length > store.capacity) {
    return {
      ok: false,
      reason: `the trust store holds ${store.capacity} bytes, this needs ${record.length}`,
    };
  }
  store.save(record);
  return checked;
}
