/**
 * Device identity by certificate: the fleet CA issues each device a certificate for the key in
 * its secure element; the cloud registers it for the thing (re-provisioning replaces it, and the
 * replaced one stops working). A device then logs in either with mutual TLS (a key its TLS stack
 * can use) or with a login token signed inside its secure element (`bootloader/secure_element.ts`):
 * the token carries the certificate, a time and the signature; it is good once, within a few
 * minutes of the broker's clock.
 *
 * @module
 */

import {
  type Certificate,
  certificateDer,
  checkDeviceCertificate,
  type CodeSigner,
  parseCertificate,
} from "../protocol/certificates.ts";
import { type Checked, sha256, verifySignature } from "../protocol/signatures.ts";
import { LOGIN_TOKEN_PREFIX, loginTokenMessage } from "../protocol/login_token.ts";
import { fromBase64Url } from "../lib/base64.ts";
import { toHex } from "../lib/bytes.ts";
import type { Clock } from "../lib/clock.ts";

/** What is kept about a thing's registered certificate. */
export interface RegisteredCertificate {
  /** SHA-256 of the certificate DER, hex. */
  readonly sha256: string;
  readonly subject: string;
  readonly notAfter: string;
  readonly registeredAt: number;
}

/** Where registrations live (the cloud's store). */
export interface CertificateRegistry {
  get(thing: string): Promise<RegisteredCertificate | null>;
  put(thing: string, record: RegisteredCertificate): Promise<void>;
}

/** How far a token's time may be from the broker's. */
const MAX_SKEW_MS = 5 * 60_000;

/** The CN of a certificate's subject, or null. */
function commonName(cert: Certificate): string | null {
  try {
    return cert.subjectName.getField("CN")[0] ?? null;
  } catch {
    return null;
  }
}

/**
 * Registers device certificates and checks device logins against them.
 *
 * @example
 * ```ts ignore
 * const identity = new DeviceIdentity({ ca: fleetCaPem, clock, registry });
 * await identity.register("dev-1", deviceCertPem); // { ok: true, value: {...} }
 * await identity.verifyToken("dev-1", password); // { ok: true, value: true }
 * ```
 */
export class DeviceIdentity {
  readonly #ca: Certificate | null;
  readonly #clock: Clock;
  readonly #registry: CertificateRegistry;
  /** The time of each thing's last accepted token: an older or equal one is a replay. */
  readonly #lastLogin = new Map<string, number>();
  /** The names this broker answers to: a token must be made for one of them. */
  readonly #serverNames: ReadonlySet<string>;

  /**
   * `ca`: the fleet CA (PEM or DER); without one, nothing can be registered or log in so.
   * `serverNames`: the host names and addresses devices dial this broker by. @default
   * {["127.0.0.1", "localhost"]}
   */
  constructor(
    options: {
      ca: string | Uint8Array | null;
      clock: Clock;
      registry: CertificateRegistry;
      serverNames?: readonly string[];
    },
  ) {
    this.#serverNames = new Set(
      (options.serverNames ?? ["127.0.0.1", "localhost"]).map((name) => name.toLowerCase()),
    );
    const parsed = options.ca ? parseCertificate(options.ca) : null;
    if (parsed && !parsed.ok) throw new Error(`device CA: ${parsed.reason}`);
    this.#ca = parsed?.ok ? parsed.value : null;
    this.#clock = options.clock;
    this.#registry = options.registry;
  }

  /** Whether a fleet CA was configured. */
  get enabled(): boolean {
    return this.#ca !== null;
  }

  /**
   * Registers `certificate` (PEM or DER) for `thing`, replacing any earlier one: it must come
   * from the fleet CA, be a valid device certificate now, and name the thing as its CN.
   */
  async register(
    thing: string,
    certificate: string | Uint8Array,
  ): Promise<Checked<RegisteredCertificate>> {
    const checked = await this.#check(thing, certificate);
    if (!checked.ok) return checked;
    const cert = checked.value.certificate;
    const record: RegisteredCertificate = {
      sha256: toHex(sha256(certificateDer(cert))),
      subject: cert.subject,
      notAfter: cert.notAfter.toISOString(),
      registeredAt: this.#clock.now(),
    };
    await this.#registry.put(thing, record);
    this.#lastLogin.delete(thing);
    return { ok: true, value: record };
  }

  /**
   * Whether a certificate the TLS layer already verified against the CA may log in as `thing`:
   * when one is registered, only that one (a replaced certificate is refused).
   */
  async allowsTlsCertificate(thing: string, der: Uint8Array | undefined): Promise<boolean> {
    const registered = await this.#registry.get(thing);
    if (!registered) return true;
    return der !== undefined && toHex(sha256(der)) === registered.sha256;
  }

  /** Checks a login token for `thing`; the reason says what failed. */
  async verifyToken(thing: string, token: string): Promise<Checked<true>> {
    const parts = token.split(".");
    if (parts[0] === "se1" && parts.length === 4) {
      return { ok: false, reason: "login token names no server (se1): refused" };
    }
    if (parts.length !== 5 || parts[0] !== LOGIN_TOKEN_PREFIX) {
      return { ok: false, reason: "not a login token" };
    }
    const der = fromBase64Url(parts[1]);
    const serverBytes = fromBase64Url(parts[3]);
    const signature = fromBase64Url(parts[4]);
    if (!der || !signature || !serverBytes || !/^\d{1,15}$/.test(parts[2]!)) {
      return { ok: false, reason: "malformed login token" };
    }
    const at = Number(parts[2]);
    const server = new TextDecoder().decode(serverBytes);
    if (!this.#serverNames.has(server.toLowerCase())) {
      return {
        ok: false,
        reason: `token is for server '${server.slice(0, 64)}', not this one (${
          [...this.#serverNames].join(", ")
        })`,
      };
    }
    const registered = await this.#registry.get(thing);
    if (!registered) return { ok: false, reason: `no certificate is registered for '${thing}'` };
    if (toHex(sha256(der)) !== registered.sha256) {
      return { ok: false, reason: `not the certificate registered for '${thing}'` };
    }
    const checked = await this.#check(thing, der);
    if (!checked.ok) return checked;
    const now = this.#clock.now();
    if (Math.abs(now - at) > MAX_SKEW_MS) {
      return {
        ok: false,
        reason: `token time is ${Math.round((at - now) / 1000)} s off the broker's clock`,
      };
    }
    if (at <= (this.#lastLogin.get(thing) ?? -1)) {
      return { ok: false, reason: "token replayed (not newer than the last login)" };
    }
    const message = loginTokenMessage(thing, at, server);
    const valid = await verifySignature(
      checked.value.verifier,
      message,
      sha256(message),
      signature,
    );
    if (!valid) return { ok: false, reason: "token signature does not verify" };
    this.#lastLogin.set(thing, at);
    return { ok: true, value: true };
  }

  /** The certificate checked for `thing`, with its key ready to verify. */
  async #check(thing: string, certificate: string | Uint8Array): Promise<Checked<CodeSigner>> {
    if (!this.#ca) return { ok: false, reason: "no device CA is configured" };
    const parsed = parseCertificate(certificate);
    if (!parsed.ok) return parsed;
    const device = await checkDeviceCertificate(parsed.value, this.#ca, {
      at: new Date(this.#clock.now()),
    });
    if (!device.ok) return device;
    const cn = commonName(parsed.value);
    if (cn !== thing) {
      return { ok: false, reason: `the certificate names '${cn}', not '${thing}'` };
    }
    return device;
  }
}
