/**
 * A loopback TCP port free right now, for a server about to be started on it (a child process,
 * a fixed dashboard port). Another program may take it in between: the server's start then
 * fails loudly rather than silently sharing it.
 *
 * @example
 * ```ts
 * import { freePort } from "./free_port.ts";
 * const port = freePort(); // e.g. 41237
 * ```
 *
 * @module
 */

/** A free port on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
