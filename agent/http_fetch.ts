/**
 * The agent's HTTP port over `fetch`: ranged GETs of pre-signed URLs.
 *
 * @module
 */

import type { HttpPort } from "./agent.ts";

/**
 * Ranged GET with the platform's `fetch`. The body is always read, so no connection leaks.
 *
 * @example
 * ```ts ignore
 * const { status, body } = await fetchHttpPort.getRange(url, 0, 4095);
 * ```
 */
export const fetchHttpPort: HttpPort = {
  async getRange(url, start, end) {
    const response = await fetch(url, { headers: { Range: `bytes=${start}-${end}` } });
    const body = new Uint8Array(await response.arrayBuffer());
    return { status: response.status, body };
  },
};
