/**
 * Operator identities: bearer tokens with a name and a role (see operator_roles.ts), created,
 * listed and revoked through the API. The broker's `--token` is the bootstrap admin. A token is
 * `ota_<id>_<secret>`: the id finds its record, whose SHA-256 of the whole token is compared in
 * constant time; the token itself is shown once, at creation, and never stored. A revoked token's
 * record stays (revokedAt, revokedBy) for the audit trail and no longer authenticates.
 *
 * @example
 * ```ts ignore
 * const tokens = new OperatorTokens(store, bootstrapToken, () => Date.now());
 * const made = await tokens.create({ name: "alice", role: "operator" }, "bootstrap");
 * (await tokens.authenticate(`Bearer ${made.token}`))?.role; // "operator"
 * ```
 *
 * @module
 */

import { timingSafeEqual } from "node:crypto";
import type { CloudStore } from "./store.ts";
import { isOperatorRole, type OperatorRole } from "./operator_roles.ts";
import { sha256 } from "../protocol/signatures.ts";

/** Who is calling. */
export interface OperatorIdentity {
  readonly name: string;
  readonly role: OperatorRole;
  /** The token's id; null for the bootstrap admin (`--token`). */
  readonly tokenId: string | null;
}

/** The name the bootstrap token acts under. */
export const BOOTSTRAP_OPERATOR = "bootstrap-admin";

/** A token as listed: never its secret. */
export interface OperatorTokenInfo {
  readonly id: string;
  readonly name: string;
  readonly role: OperatorRole;
  readonly createdAt: number;
  readonly createdBy: string;
  readonly revokedAt?: number;
  readonly revokedBy?: string;
}

interface TokenRecord extends OperatorTokenInfo {
  /** SHA-256 of the whole token, hex. */
  readonly hash: string;
}

const KIND = "operator-token";
const NAME = /^[A-Za-z0-9._@-]{1,64}$/;
const TOKEN = /^ota_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$/;

/** The `Authorization: Bearer` credentials of `header` (the scheme in any case, RFC 9110). */
export function bearerToken(header: string | null): string {
  const match = /^bearer +(\S+) *$/i.exec(header ?? "");
  return match ? match[1]! : "";
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Issues, checks and revokes operator tokens. */
export class OperatorTokens {
  readonly #store: CloudStore;
  readonly #bootstrap: Uint8Array;
  readonly #now: () => number;

  /** `bootstrap`: the broker's `--token`, an admin that needs no record. */
  constructor(store: CloudStore, bootstrap: string, now: () => number) {
    this.#store = store;
    this.#bootstrap = new TextEncoder().encode(bootstrap);
    this.#now = now;
  }

  /** Who an `Authorization` header names, or null (missing, wrong, unknown or revoked). */
  async authenticate(header: string | null): Promise<OperatorIdentity | null> {
    const given = new TextEncoder().encode(bearerToken(header));
    if (given.length === 0) return null;
    if (sameBytes(given, this.#bootstrap)) {
      return { name: BOOTSTRAP_OPERATOR, role: "admin", tokenId: null };
    }
    const match = TOKEN.exec(new TextDecoder().decode(given));
    if (!match) return null;
    const record = await this.#store.getRecord<TokenRecord>(KIND, match[1]!);
    if (!record || record.revokedAt !== undefined || !isOperatorRole(record.role)) return null;
    const expected = Uint8Array.fromHex(record.hash);
    if (!sameBytes(sha256(given), expected)) return null;
    return { name: record.name, role: record.role, tokenId: record.id };
  }

  /** A new token for `name` with `role`, made by `by`: the only time its secret is seen. */
  async create(
    request: { name: unknown; role: unknown },
    by: string,
  ): Promise<
    { ok: true; value: OperatorTokenInfo & { token: string } } | {
      ok: false;
      reason: string;
    }
  > {
    if (typeof request.name !== "string" || !NAME.test(request.name)) {
      return { ok: false, reason: "name must be 1..64 of [A-Za-z0-9._@-]" };
    }
    if (!isOperatorRole(request.role)) {
      return { ok: false, reason: "role must be viewer, operator or admin" };
    }
    const id = crypto.getRandomValues(new Uint8Array(8)).toHex();
    const secret = crypto.getRandomValues(new Uint8Array(32)).toBase64({
      alphabet: "base64url",
      omitPadding: true,
    });
    const token = `ota_${id}_${secret}`;
    const info: OperatorTokenInfo = {
      id,
      name: request.name,
      role: request.role,
      createdAt: this.#now(),
      createdBy: by,
    };
    const record: TokenRecord = {
      ...info,
      hash: sha256(new TextEncoder().encode(token)).toHex(),
    };
    await this.#store.putRecord(KIND, id, record);
    return { ok: true, value: { ...info, token } };
  }

  /** Every token ever made, revoked ones included, without their hashes. */
  async list(): Promise<OperatorTokenInfo[]> {
    return (await this.#store.listRecords<TokenRecord>(KIND)).map(({ hash: _, ...info }) => info);
  }

  /** Revokes token `id` (by `by`); false when there is no such token or it is revoked already. */
  async revoke(id: string, by: string): Promise<boolean> {
    const record = await this.#store.getRecord<TokenRecord>(KIND, id);
    if (!record || record.revokedAt !== undefined) return false;
    await this.#store.putRecord(KIND, id, { ...record, revokedAt: this.#now(), revokedBy: by });
    return true;
  }
}
