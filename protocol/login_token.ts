/**
 * The login token a device's secure element makes and the cloud checks: the MQTT password of a
 * device without a client certificate in its TLS stack. Its signed bytes are
 * `se2|<thing>|<ms since the epoch>|<server>`, where server is the host name the device dialled
 * (the one its TLS check matched the certificate against); the token is
 * `se2.<certificate>.<time>.<server>.<signature>`, base64url parts. A broker takes only tokens
 * made for one of its own names, so a relaying impostor (which must hold a certificate for
 * another name to get the device's TLS session at all) cannot log in with what it relays.
 *
 * @module
 */

/** Prefix of a login token, and its version. */
export const LOGIN_TOKEN_PREFIX = "se2";

/**
 * The bytes a login token signs: its version, the thing, the time (ms since the epoch) and the
 * server it is for.
 *
 * @example
 * ```ts
 * import { loginTokenMessage } from "./login_token.ts";
 * new TextDecoder().decode(loginTokenMessage("dev-1", 1700000000000, "ota.example.net"));
 * // "se2|dev-1|1700000000000|ota.example.net"
 * ```
 */
export function loginTokenMessage(thing: string, at: number, server: string): Uint8Array {
  return new TextEncoder().encode(`${LOGIN_TOKEN_PREFIX}|${thing}|${at}|${server}`);
}

/** The server name of a broker URL as a login token names it: its host, lowercase. */
export function tokenServer(url: string): string {
  try {
    return new URL(url).hostname.toLowerCase().replace(/^\[|\]$/g, "");
  } catch {
    return "";
  }
}
