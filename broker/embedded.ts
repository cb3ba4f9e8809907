/**
 * An embedded aedes MQTT broker on a TCP port (port 0 picks a free one). The cloud services of
 * issue #4 grow on this; the agent's end-to-end tests use it as it is.
 *
 * @module
 */

import { Aedes, type AedesOptions } from "aedes";
import { createServer, type Server, type Socket } from "node:net";

/** A running broker. */
export interface EmbeddedBroker {
  readonly broker: Aedes;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Starts aedes on `127.0.0.1:port`.
 *
 * @example
 * ```ts ignore
 * const { url, close } = await startEmbeddedBroker();
 * // ... mqtt.connect(url) ...
 * await close();
 * ```
 */
export async function startEmbeddedBroker(
  options: { port?: number; aedes?: AedesOptions } = {},
): Promise<EmbeddedBroker> {
  const broker = await Aedes.createBroker(options.aedes ?? {});
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    broker.handle(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    broker,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    },
  };
}
