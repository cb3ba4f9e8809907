/**
 * The HTTP data plane's file service: pre-signed URLs (HMAC-SHA256 over the file key and expiry),
 * ranged GETs, and 403 for an expired or tampered URL.
 *
 * @module
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import type { Clock } from "../lib/clock.ts";

/** Where the service finds file bytes. */
export type FileSource = (key: string) => Promise<Uint8Array | null>;

const KEY = /^[a-zA-Z0-9_.-]{1,128}$/;

/**
 * Pre-signed file URLs.
 *
 * @example
 * ```ts ignore
 * const files = new FileService({ secret, clock, source: (key) => store.getFile(key), baseUrl });
 * const url = files.presign("fw-1.1.0", 1800);
 * Deno.serve((request) => files.handle(request));
 * ```
 */
export class FileService {
  readonly #secret: Uint8Array;
  readonly #clock: Clock;
  readonly #source: FileSource;
  /** Prefix of every URL, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** Requests refused, for tests and logs. */
  refused = 0;
  /** Requests answered with file bytes (whole or ranged). */
  served = 0;

  /** Builds the service. */
  constructor(options: { secret: Uint8Array; clock: Clock; source: FileSource; baseUrl: string }) {
    this.#secret = options.secret;
    this.#clock = options.clock;
    this.#source = options.source;
    this.baseUrl = options.baseUrl;
  }

  #sign(key: string, expires: number): string {
    return createHmac("sha256", this.#secret).update(`${key}\n${expires}`).digest("hex");
  }

  /** A URL for `key` valid for `expiresInSeconds` of the clock's time. */
  presign(key: string, expiresInSeconds: number): string {
    if (!KEY.test(key)) {
      throw new RangeError(`Cannot presign '${key}': keys are 1..128 characters of [a-zA-Z0-9_.-]`);
    }
    const expires = Math.floor(this.#clock.now() + expiresInSeconds * 1000);
    return `${this.baseUrl}/files/${key}?X-Ota-Expires=${expires}&X-Ota-Signature=${
      this.#sign(key, expires)
    }`;
  }

  /** Serves `GET /files/<key>?...` (with or without a Range header). */
  async handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    let key: string;
    try {
      key = decodeURIComponent(url.pathname.slice("/files/".length));
    } catch {
      this.refused++;
      return new Response("malformed percent-escape in the path", { status: 400 });
    }
    const expires = Number(url.searchParams.get("X-Ota-Expires"));
    const signature = url.searchParams.get("X-Ota-Signature") ?? "";
    const refuse = (status: number, message: string) => {
      this.refused++;
      return new Response(message, { status });
    };
    if (request.method !== "GET") return refuse(405, "method not allowed");
    if (!KEY.test(key) || !Number.isSafeInteger(expires)) {
      return refuse(403, "malformed pre-signed URL");
    }
    const expected = new TextEncoder().encode(this.#sign(key, expires));
    const given = new TextEncoder().encode(signature);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) {
      return refuse(403, "signature does not match");
    }
    if (this.#clock.now() > expires) return refuse(403, "Request has expired");
    const file = await this.#source(key);
    if (!file) return refuse(404, "no such file");
    const range = request.headers.get("range");
    if (range === null) {
      this.served++;
      return new Response(file.slice(), {
        status: 200,
        headers: { "content-length": String(file.length) },
      });
    }
    const match = /^bytes=(\d*)-(\d*)$/.exec(range);
    if (!match || (match[1] === "" && match[2] === "")) return refuse(416, "unsupported range");
    // "bytes=-N" is a suffix range: the last N bytes (RFC 9110 14.1.1).
    const suffix = match[1] === "";
    const start = suffix ? Math.max(0, file.length - Number(match[2])) : Number(match[1]);
    const end = suffix
      ? file.length - 1
      : Math.min(match[2] === "" ? file.length - 1 : Number(match[2]), file.length - 1);
    if (start > end || (suffix && Number(match[2]) === 0)) {
      return new Response("range not satisfiable", {
        status: 416,
        headers: { "content-range": `bytes */${file.length}` },
      });
    }
    this.served++;
    return new Response(file.slice(start, end + 1), {
      status: 206,
      headers: {
        "content-range": `bytes ${start}-${end}/${file.length}`,
        "content-length": String(end - start + 1),
      },
    });
  }
}
