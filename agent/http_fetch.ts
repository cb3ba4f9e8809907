/**
 * The agent's HTTP port over `fetch`: ranged GETs of pre-signed URLs.
 *
 * @module
 */

import type { HttpPort } from "./ports.ts";
import { concatBytes } from "../lib/bytes.ts";

/** A request that has not finished by then is given up (and the block asked for again). */
export const HTTP_REQUEST_TIMEOUT_MS = 10_000;

/**
 * Ranged GET with the platform's `fetch`. At most one byte more than the range is read: a server
 * that answers with more (a whole file, an endless body) is cut off there, and the agent drops
 * the block for its length, so a device never buffers what it did not ask for. A request that
 * does not finish within {@linkcode HTTP_REQUEST_TIMEOUT_MS} fails.
 *
 * @example
 * ```ts ignore
 * const { status, body } = await fetchHttpPort.getRange(url, 0, 4095);
 * ```
 */
export const fetchHttpPort: HttpPort = {
  async getRange(url, start, end) {
    const response = await fetch(url, {
      headers: { Range: `bytes=${start}-${end}` },
      signal: AbortSignal.timeout(HTTP_REQUEST_TIMEOUT_MS),
    });
    return { status: response.status, body: await readAtMost(response, end - start + 2) };
  },
};

/**
 * The HTTP port over HTTPS only, with `caPem` (the fleet's CA) as the only trust anchor: a server
 * whose certificate does not chain to it, or does not name the host the URL dials, fails the
 * handshake, and a plain `http://` URL is refused before anything is sent. `close` releases the
 * client's connections.
 *
 * @example
 * ```ts ignore
 * const https = httpsPort(fleetCaPem);
 * await https.getRange("https://ota.example.net/files/fw.bin?...", 0, 4095);
 * https.close();
 * ```
 */
export function httpsPort(caPem: string): HttpPort & { close(): void } {
  const client = Deno.createHttpClient({ caCerts: [caPem] });
  return {
    async getRange(url, start, end) {
      if (!url.startsWith("https://")) {
        throw new Error(`refused to fetch over plain HTTP: ${url.split("?")[0]}`);
      }
      const response = await fetch(url, {
        client,
        headers: { Range: `bytes=${start}-${end}` },
        signal: AbortSignal.timeout(HTTP_REQUEST_TIMEOUT_MS),
      });
      return { status: response.status, body: await readAtMost(response, end - start + 2) };
    },
    close() {
      client.close();
    },
  };
}

/** Reads up to `limit` bytes of the body and lets go of the rest (no connection leaks). */
async function readAtMost(response: Response, limit: number): Promise<Uint8Array> {
  if (!response.body) return new Uint8Array();
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (total < limit) {
      const { done, value } = await reader.read();
      if (done) return concatBytes(chunks);
      chunks.push(value);
      total += value.length;
    }
    return concatBytes(chunks).subarray(0, limit);
  } finally {
    await reader.cancel().catch(() => {});
  }
}
