/**
 * The login token a device's secure element makes and the cloud checks: the MQTT password of a
 * device without a client certificate in its TLS stack. Its signed bytes are
 * `se1|<thing>|<ms since the epoch>`; the token is `se1.<certificate>.<time>.<signature>`.
 *
 * @module
 */

/** Prefix of a login token, and its version. */
export const LOGIN_TOKEN_PREFIX = "se1";

/**
 * The bytes a login token signs: its version, the thing and the time (ms since the epoch).
 *
 * @example
 * ```ts
 * import { loginTokenMessage } from "./secure_element.ts";
 * new TextDecoder().decode(loginTokenMessage("dev-1", 1700000000000)); // "se1|dev-1|1700000000000"
 * ```
 */
export function loginTokenMessage(thing: string, at: number): Uint8Array {
  return new TextEncoder().encode(`${LOGIN_TOKEN_PREFIX}|${thing}|${at}`);
}
