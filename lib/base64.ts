/**
 * Base64 for byte arrays of any size (the runtime's native `Uint8Array` base64; `btoa` of a
 * character-per-byte string was 10x slower, and job documents are parsed several times per
 * device and update), and a strict decoder that returns null instead of throwing.
 *
 * @module
 */

/**
 * Encodes bytes as base64.
 *
 * @example
 * ```ts
 * import { toBase64 } from "./base64.ts";
 * toBase64(new Uint8Array([1, 2, 3])); // "AQID"
 * ```
 */
export function toBase64(bytes: Uint8Array): string {
  return bytes.toBase64();
}

/**
 * Decodes strict base64 (padded, standard alphabet); null for anything else.
 *
 * @example
 * ```ts
 * import { fromBase64 } from "./base64.ts";
 * fromBase64("AQID"); // Uint8Array [1, 2, 3]
 * fromBase64("not base64!"); // null
 * ```
 */
export function fromBase64(text: unknown): Uint8Array | null {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    return null;
  }
  try {
    // Padded, standard alphabet, no whitespace (checked above); like atob, pad bits are ignored.
    return Uint8Array.fromBase64(text);
  } catch {
    return null;
  }
}

/**
 * Encodes bytes as unpadded base64url (RFC 4648 §5), for tokens that travel in text fields.
 *
 * @example
 * ```ts
 * import { toBase64Url } from "./base64.ts";
 * toBase64Url(new Uint8Array([251, 255])); // "-_8"
 * ```
 */
export function toBase64Url(bytes: Uint8Array): string {
  return toBase64(bytes).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/**
 * Decodes unpadded base64url; null for anything else.
 *
 * @example
 * ```ts
 * import { fromBase64Url } from "./base64.ts";
 * fromBase64Url("-_8"); // Uint8Array [251, 255]
 * fromBase64Url("a+b"); // null
 * ```
 */
export function fromBase64Url(text: unknown): Uint8Array | null {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    return null;
  }
  const standard = text.replaceAll("-", "+").replaceAll("_", "/");
  return fromBase64(standard.padEnd(Math.ceil(standard.length / 4) * 4, "="));
}
