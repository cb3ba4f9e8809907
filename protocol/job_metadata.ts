/**
 * Signed job metadata (our extension, `afr_ota.signedMetadata`): when the cloud issued a job
 * document and until when it holds, signed by the update's code signer. A device refuses a
 * document past its expiry, so an attacker who replays an old document (or holds back every new
 * one: a freeze) cannot keep it on an old release forever. Its notion of now is trusted time: its
 * own clock, never earlier than the newest issue time it has accepted (a monotonic floor it keeps
 * in flash), so a device without a clock still moves forward with every fresh document.
 *
 * Format: `{ "body": base64(JSON { jobId, issued, expires }), "signature": base64(DER ECDSA) }`,
 * times in epoch milliseconds; the signer is the one the job's first file names (`certfile`).
 *
 * @example
 * ```ts ignore
 * const metadata = await signJobMetadata({ jobId, issued, expires }, (b) => signData(key, b));
 * const parsed = parseJobMetadata(metadata); // { ok: true, value: { body, bodyBytes, signature } }
 * ```
 *
 * @module
 */

import { fromBase64, toBase64 } from "../lib/base64.ts";

/** What the metadata says. */
export interface JobMetadataBody {
  readonly jobId: string;
  /** When the cloud issued the document (epoch ms, the cloud's clock). */
  readonly issued: number;
  /** Until when a device may act on it (epoch ms). */
  readonly expires: number;
}

/** Parsed metadata with the bytes its signature covers. */
export interface JobMetadata {
  readonly body: JobMetadataBody;
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
}

/** The default lifetime of a job document: 30 days. */
export const DEFAULT_DOCUMENT_TTL_SECONDS = 30 * 86_400;
/** The longest lifetime a document may be given: a year. */
export const MAX_DOCUMENT_TTL_SECONDS = 365 * 86_400;

/** The metadata object of a job document. */
export async function signJobMetadata(
  body: JobMetadataBody,
  sign: (bytes: Uint8Array) => Promise<Uint8Array>,
): Promise<{ body: string; signature: string }> {
  const bodyBytes = new TextEncoder().encode(JSON.stringify({
    jobId: body.jobId,
    issued: body.issued,
    expires: body.expires,
  }));
  return { body: toBase64(bodyBytes), signature: toBase64(await sign(bodyBytes)) };
}

/** Parses `afr_ota.signedMetadata`; never throws. */
export function parseJobMetadata(
  raw: unknown,
): { ok: true; value: JobMetadata } | { ok: false; reason: string } {
  const object = raw as Record<string, unknown> | null;
  const bodyBytes = fromBase64(object?.body);
  const signature = fromBase64(object?.signature);
  if (!bodyBytes || bodyBytes.length > 1024 || !signature || signature.length === 0) {
    return { ok: false, reason: "signedMetadata needs body and signature, base64" };
  }
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bodyBytes));
  } catch {
    return { ok: false, reason: "signedMetadata body is not JSON" };
  }
  const time = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  if (
    typeof body?.jobId !== "string" || !time(body.issued) || !time(body.expires) ||
    (body.expires as number) < (body.issued as number)
  ) {
    return {
      ok: false,
      reason: "signedMetadata body must be { jobId, issued, expires } with expires >= issued",
    };
  }
  return {
    ok: true,
    value: {
      body: { jobId: body.jobId, issued: body.issued as number, expires: body.expires as number },
      bodyBytes,
      signature,
    },
  };
}

/**
 * Why a device at trusted time `now` may not act on `metadata` of job `jobId`, or null.
 *
 * @example
 * ```ts
 * import { staleDocument } from "./job_metadata.ts";
 * staleDocument({ jobId: "j", issued: 0, expires: 1000 }, "j", 5000);
 * // "job document expired at 1970-01-01T00:00:01.000Z (trusted time 1970-01-01T00:00:05.000Z): stale or replayed"
 * ```
 */
export function staleDocument(body: JobMetadataBody, jobId: string, now: number): string | null {
  if (body.jobId !== jobId) {
    return `job document metadata names job '${body.jobId}', not '${jobId}'`;
  }
  if (body.expires < now) {
    return `job document expired at ${new Date(body.expires).toISOString()} (trusted time ${
      new Date(now).toISOString()
    }): stale or replayed`;
  }
  return null;
}
