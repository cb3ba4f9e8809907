/**
 * Base64 for byte arrays of any size (`btoa(String.fromCharCode(...bytes))` overflows the call
 * stack past ~100 KiB), and a strict decoder that returns null instead of throwing.
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
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
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
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}
