/**
 * Who may connect and what they may touch, as aedes hooks (authenticate, authorizePublish,
 * authorizeSubscribe): a device authenticates as its thing (client id = user name = thing
 * name, password = its secret) and may publish and subscribe only under its own
 * `$aws/things/<thing>/`; the cloud services have their own role. Oversized payloads and floods
 * get the client disconnected; nobody else notices.
 *
 * @module
 */

import { createHash, createHmac, randomBytes, scryptSync, timingSafeEqual } from "node:crypto";
import type { Clock } from "../lib/clock.ts";
import { thingPrefix } from "../protocol/topics.ts";

/** Who a connected client is. */
export type Principal = { readonly role: "device"; readonly thing: string } | {
  readonly role: "service";
};

/** Stored device credentials (the secret itself is never kept). */
export interface StoredSecret {
  readonly salt: string;
  readonly hash: string;
  /**
   * How `hash` derives from the secret: scrypt (absent, the default), or one salted SHA-256 for
   * the 256-bit random secrets the cloud generates itself ({@linkcode generateSecret}), where a
   * slow hash guards nothing a 2^256 search does not.
   */
  readonly kdf?: "sha256";
}

/**
 * scrypt cost for device secrets. Node's default (N = 16384) costs ~70 ms per check: 10,000
 * devices reconnecting would wait 12 minutes on it. Device secrets are machine-generated,
 * high-entropy tokens, not human passwords, so a low work factor (~1 ms) loses nothing.
 */
const SCRYPT_COST = { N: 1024, r: 8, p: 1 };

/**
 * Derives what to store for a secret (scrypt, random salt).
 *
 * @example
 * ```ts
 * import { hashSecret, secretMatches } from "./auth.ts";
 * secretMatches(hashSecret("s3cret"), "s3cret"); // true
 * ```
 */
export function hashSecret(secret: string): StoredSecret {
  const salt = randomBytes(16);
  return {
    salt: salt.toString("hex"),
    hash: scryptSync(secret, salt, 32, SCRYPT_COST).toString("hex"),
  };
}

/**
 * A fresh device secret made by the cloud (32 random bytes, base64url) and what to store for it:
 * one salted SHA-256, since nobody can guess 256 random bits however fast each guess is. At
 * 10,000 devices this spares the broker 10,000 scrypts (~17 s) at registration.
 *
 * @example
 * ```ts
 * import { generateSecret, secretMatches } from "./auth.ts";
 * const { secret, stored } = generateSecret();
 * secretMatches(stored, secret); // true
 * ```
 */
export function generateSecret(): { secret: string; stored: StoredSecret } {
  const secret = randomBytes(32).toString("base64url");
  const salt = randomBytes(16);
  return {
    secret,
    stored: { salt: salt.toString("hex"), hash: sha256Salted(salt, secret), kdf: "sha256" },
  };
}

function sha256Salted(salt: Buffer, secret: string): string {
  return createHash("sha256").update(salt).update(secret).digest("hex");
}

/** Constant-time check of a secret against what was stored. */
export function secretMatches(stored: StoredSecret, secret: string): boolean {
  const expected = Buffer.from(stored.hash, "hex");
  const salt = Buffer.from(stored.salt, "hex");
  const actual = stored.kdf === "sha256"
    ? Buffer.from(sha256Salted(salt, secret), "hex")
    : scryptSync(secret, salt, 32, SCRYPT_COST);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/**
 * {@linkcode secretMatches} that remembers what it verified: a device reconnecting with the
 * secret scrypt already accepted is checked against a keyed hash of it instead (a device
 * connects at least twice per update, before and after its reboot, and each scrypt costs ~1 ms
 * of the broker's only thread). The key is random per process and never stored; an entry is
 * tied to one stored record, so re-provisioning a secret invalidates it.
 *
 * @example
 * ```ts
 * import { hashSecret, SecretVerifier } from "./auth.ts";
 * const verifier = new SecretVerifier();
 * const stored = hashSecret("s3cret");
 * verifier.matches(stored, "s3cret"); // true (scrypt)
 * verifier.matches(stored, "s3cret"); // true (remembered)
 * verifier.matches(stored, "guess"); // false (scrypt)
 * ```
 */
export class SecretVerifier {
  readonly #key = randomBytes(32);
  /** Keyed hash of the accepted secret, by stored scrypt hash (unique: salts are random). */
  readonly #accepted = new Map<string, Buffer>();
  readonly #limit: number;

  /** Remembers at most `limit` accepted secrets (the oldest go first). */
  constructor(limit = 200_000) {
    this.#limit = limit;
  }

  /** Whether `secret` is the one `stored` was derived from. */
  matches(stored: StoredSecret, secret: string): boolean {
    const keyed = this.#keyed(secret);
    const known = this.#accepted.get(stored.hash);
    if (known && timingSafeEqual(known, keyed)) return true;
    if (!secretMatches(stored, secret)) return false;
    this.#remember(stored, keyed);
    return true;
  }

  /**
   * Remembers `secret` as already verified for `stored`, which the caller has just derived from
   * it (provisioning): the device's first login then costs a keyed hash, not a scrypt. At 10,000
   * devices booting that is 10,000 scrypts (~15 s) off the broker's only thread.
   */
  remember(stored: StoredSecret, secret: string): void {
    this.#remember(stored, this.#keyed(secret));
  }

  #keyed(secret: string): Buffer {
    return createHmac("sha256", this.#key).update(secret).digest();
  }

  #remember(stored: StoredSecret, keyed: Buffer): void {
    if (this.#accepted.size >= this.#limit) {
      this.#accepted.delete(this.#accepted.keys().next().value!);
    }
    this.#accepted.set(stored.hash, keyed);
  }
}

/** Where the hooks look credentials up. */
export interface CredentialSource {
  /** The stored secret of a thing, or null when the thing is unknown. */
  thingSecret(thing: string): Promise<StoredSecret | null>;
  /** The cloud services' shared secret. */
  readonly serviceSecret: StoredSecret;
  /** Checks a login token signed in a device's secure element (absent: no token logins). */
  verifyDeviceToken?(
    thing: string,
    token: string,
  ): Promise<{ ok: true } | { ok: false; reason: string }>;
  /** Whether a TLS client certificate the CA vouched for may log in as `thing` (registered one). */
  tlsCertificateAllowed?(thing: string, der: Uint8Array | undefined): Promise<boolean>;
}

/** Limits on what one client may send. */
export interface ClientLimits {
  /** Largest PUBLISH payload. @default {135168} (a 128 KiB block plus framing) */
  readonly maxPayloadBytes?: number;
  /** Messages per second a device may publish before it is disconnected. @default {200} */
  readonly maxMessagesPerSecond?: number;
  /**
   * Told every refused login and ACL violation as one line (reason, client id, remote address).
   * Pass a rate-limited sink (`lib/rate_limited_log.ts`): a client decides how often it is called.
   */
  readonly onRefusal?: (line: string) => void;
}

/** Where a client connected from, as far as its transport says. */
function remoteOf(client: HookClient): string {
  const conn = client.conn;
  if (!conn?.remoteAddress) return "an unknown address";
  return conn.remotePort ? `${conn.remoteAddress}:${conn.remotePort}` : conn.remoteAddress;
}

/** The user name of the cloud services. */
export const SERVICE_USER = "ota-cloud-service";
const THING_NAME = /^[a-zA-Z0-9:_-]{1,128}$/;
/** Reply and notification topics only the service may publish, even under a device's prefix. */
const SERVICE_ONLY = /\/(accepted|rejected|notify|notify-next)$|\/data\/(cbor|json)$/;

/** A client as the hooks see it (aedes' client object). */
export interface HookClient {
  readonly id: string;
  /** The connection; a TLS one carries the verified client certificate. */
  readonly conn?: {
    readonly authorized?: boolean;
    readonly remoteAddress?: string;
    readonly remotePort?: number;
    getPeerCertificate?(): { subject?: { CN?: string }; raw?: Uint8Array } | null;
  };
}

/** The thing a client proved with a certificate the broker's TLS layer verified, if any. */
function certificateThing(client: HookClient): { thing: string; der?: Uint8Array } | null {
  const conn = client.conn;
  if (!conn?.authorized || typeof conn.getPeerCertificate !== "function") return null;
  const peer = conn.getPeerCertificate();
  const cn = peer?.subject?.CN;
  if (typeof cn !== "string" || cn.length === 0) return null;
  return { thing: cn, ...(peer?.raw ? { der: new Uint8Array(peer.raw) } : {}) };
}

/** Whether a password is a secure-element login token rather than a secret. */
const LOGIN_TOKEN = /^se[12]\./;

type ConnectCallback = (error: (Error & { returnCode?: number }) | null, success?: boolean) => void;

/** The hooks to pass to `Aedes.createBroker`. */
export interface AuthHooks {
  authenticate(
    client: HookClient,
    username: string | undefined,
    password: Uint8Array | undefined,
    done: ConnectCallback,
  ): void;
  authorizePublish(
    client: HookClient | null,
    packet: { topic: string; payload: Uint8Array | string },
    done: (error?: Error | null) => void,
  ): void;
  authorizeSubscribe(
    client: HookClient,
    subscription: { topic: string; qos: number },
    done: (error: Error | null, subscription?: { topic: string; qos: number } | null) => void,
  ): void;
  /** The principal of a connected client. */
  principalOf(client: HookClient): Principal | undefined;
  /** Takes a secret just provisioned as verified (see {@linkcode SecretVerifier.remember}). */
  rememberSecret(stored: StoredSecret, secret: string): void;
  /** Refusals so far, for logs and tests. */
  readonly refusals: string[];
}

function refuseConnect(code: number, message: string): Error & { returnCode: number } {
  return Object.assign(new Error(message), { returnCode: code });
}

/** Whether `topic` (a filter when subscribing) stays under the thing's own prefix. */
export function isOwnTopic(thing: string, topic: string): boolean {
  const prefix = thingPrefix(thing);
  return topic.startsWith(prefix) && !topic.slice(0, prefix.length).includes("+") &&
    !topic.slice(0, prefix.length).includes("#");
}

/**
 * Builds the hooks.
 *
 * @example
 * ```ts ignore
 * const hooks = createAuthHooks(credentials, clock);
 * const broker = await Aedes.createBroker({ ...hooks });
 * ```
 */
export function createAuthHooks(
  credentials: CredentialSource,
  clock: Clock,
  limits: ClientLimits = {},
): AuthHooks {
  const principals = new WeakMap<HookClient, Principal>();
  const rates = new WeakMap<HookClient, { second: number; count: number }>();
  const refusals: string[] = [];
  const verifier = new SecretVerifier();
  const maxPayload = limits.maxPayloadBytes ?? 128 * 1024 + 4096;
  const maxRate = limits.maxMessagesPerSecond ?? 200;
  const onRefusal = limits.onRefusal ?? (() => {});
  const refuse = (line: string, client: HookClient) => {
    refusals.push(line);
    if (refusals.length > 1000) refusals.shift();
    // What a client sent (its id, a topic) is shown, never able to forge a line of its own.
    const shown = `refused: ${line} (client '${client.id.slice(0, 128)}' from ${remoteOf(client)})`;
    // deno-lint-ignore no-control-regex -- control characters are what must not reach the log
    onRefusal(shown.replace(/[\u0000-\u001f\u007f]/g, "?"));
  };
  /** Checks a connecting client's credentials: null when it may log in, else the refusal. */
  const login = async (
    client: HookClient,
    username: string | undefined,
    password: Uint8Array | undefined,
  ): Promise<Error | null> => {
    const secret = password ? new TextDecoder().decode(password) : "";
    if (username === SERVICE_USER) {
      if (verifier.matches(credentials.serviceSecret, secret)) {
        principals.set(client, { role: "service" });
        return null;
      }
      refuse(`service login refused for client ${client.id}`, client);
      return refuseConnect(4, "Bad user name or password");
    }
    const peer = certificateThing(client);
    const certified = peer?.thing ?? null;
    if (certified !== null) {
      // Mutual TLS: the certificate names the thing; client id (and user name, if any) must agree.
      if (client.id !== certified || (username !== undefined && username !== certified)) {
        refuse(
          `connect refused: certificate for '${certified}' used by client '${client.id}'`,
          client,
        );
        return refuseConnect(5, "Not authorized");
      }
      if (!(await credentials.thingSecret(certified))) {
        refuse(`connect refused: certificate for unknown thing '${certified}'`, client);
        return refuseConnect(5, "Not authorized");
      }
      if ((await credentials.tlsCertificateAllowed?.(certified, peer?.der)) === false) {
        refuse(
          `connect refused: '${certified}' presented a certificate no longer registered`,
          client,
        );
        return refuseConnect(5, "Not authorized");
      }
      principals.set(client, { role: "device", thing: certified });
      return null;
    }
    if (!username || !THING_NAME.test(username) || client.id !== username) {
      refuse(`connect refused: client id '${client.id}' must equal the thing name`, client);
      return refuseConnect(5, "Not authorized");
    }
    const stored = await credentials.thingSecret(username);
    if (stored && LOGIN_TOKEN.test(secret) && credentials.verifyDeviceToken) {
      const checked = await credentials.verifyDeviceToken(username, secret).catch(() => null);
      if (!checked?.ok) {
        if (checked) {
          refuse(`connect refused: login token for '${username}': ${checked.reason}`, client);
        }
        return refuseConnect(4, "Bad user name or password");
      }
      principals.set(client, { role: "device", thing: username });
      return null;
    }
    if (!stored || !verifier.matches(stored, secret)) {
      refuse(`connect refused: bad credentials for '${username}'`, client);
      return refuseConnect(4, "Bad user name or password");
    }
    principals.set(client, { role: "device", thing: username });
    return null;
  };
  return {
    refusals,
    principalOf: (client) => principals.get(client),
    rememberSecret: (stored, secret) => verifier.remember(stored, secret),
    authenticate(client, username, password, done) {
      // The credentials live in the store (a database a cluster shares): looked up
      // asynchronously; a lookup that fails refuses the login as the server's fault.
      login(client, username, password).then(
        (refusal) => refusal ? done(refusal, false) : done(null, true),
        (error) => {
          refuse(`connect refused: credentials unavailable: ${(error as Error).message}`, client);
          done(refuseConnect(3, "Server unavailable"), false);
        },
      );
    },
    authorizePublish(client, packet, done) {
      if (!client) return done(null); // the broker's own publications
      const principal = principals.get(client);
      const size = typeof packet.payload === "string"
        ? packet.payload.length
        : packet.payload.length;
      if (size > maxPayload) {
        refuse(`${client.id}: payload of ${size} bytes refused`, client);
        return done(new Error("payload too large"));
      }
      if (principal?.role === "service") return done(null);
      if (!principal) return done(new Error("not authenticated"));
      const second = Math.floor(clock.now() / 1000);
      const rate = rates.get(client);
      if (rate && rate.second === second) {
        if (++rate.count > maxRate) {
          refuse(`${client.id}: more than ${maxRate} messages per second`, client);
          return done(new Error("flood"));
        }
      } else {
        rates.set(client, { second, count: 1 });
      }
      if (!isOwnTopic(principal.thing, packet.topic) || SERVICE_ONLY.test(packet.topic)) {
        refuse(`${client.id}: publish to '${packet.topic}' refused`, client);
        return done(new Error("not authorized"));
      }
      done(null);
    },
    authorizeSubscribe(client, subscription, done) {
      const principal = principals.get(client);
      if (principal?.role === "service") return done(null, subscription);
      if (principal?.role === "device" && isOwnTopic(principal.thing, subscription.topic)) {
        return done(null, subscription);
      }
      refuse(`${client.id}: subscribe to '${subscription.topic}' refused`, client);
      done(null, null);
    },
  };
}
