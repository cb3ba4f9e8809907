/**
 * An embedded aedes MQTT broker on a TCP port (port 0 picks a free one). The cloud services of
 * issue #4 grow on this; the agent's end-to-end tests use it as it is.
 *
 * @module
 */

import { Aedes, type AedesOptions } from "aedes";
import { createServer, type Server, type Socket } from "node:net";
import { setImmediate } from "node:timers";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";

/** A running broker. */
export interface EmbeddedBroker {
  readonly broker: Aedes;
  readonly port: number;
  readonly url: string;
  /** `mqtts://...` when a TLS listener was asked for. */
  readonly tlsUrl: string | null;
  close(): Promise<void>;
}

/** TLS listener settings (PEM); with `ca`, clients must present a certificate issued by it. */
export interface BrokerTls {
  readonly port?: number;
  /** The TLS listener's address. @default {the plain listener's} */
  readonly host?: string;
  readonly key: string;
  readonly cert: string;
  readonly ca?: string;
}

/**
 * aedes options with a `published` hook that always calls back on a later microtask.
 *
 * aedes reads a client's next bytes from inside the callback that ends the previous packet. A
 * QoS 0 publish that nobody defers (no subscriber, or only in-process listeners that call back
 * at once) ends synchronously, so that read re-enters mqtt-packet's parser in the middle of its
 * loop: the packet is emitted twice and the bytes read with it are lost. Under Deno a socket can
 * hand over data synchronously from that read, and about one connection in a few thousand lost
 * the SUBSCRIBEs sent right after its shadow update: the device waited for SUBACKs that never
 * came until a timer gave up (a 60 s stall, or a trial image reverted). Ending every publish on a
 * microtask lets the parser finish its loop first.
 *
 * @example
 * ```ts
 * import { Aedes } from "aedes";
 * import { withDeferredPublished } from "./embedded.ts";
 * const broker = await Aedes.createBroker(withDeferredPublished({}));
 * broker.close();
 * ```
 */
export function withDeferredPublished(options: AedesOptions): AedesOptions {
  const published = options.published;
  return {
    ...options,
    published(packet, client, callback) {
      const later = (error?: Error | null) => queueMicrotask(() => callback(error ?? null));
      if (published) published(packet, client, later);
      else later(null);
    },
  };
}

/**
 * Connections the kernel may hold for the broker to accept (it clamps this to
 * `net.core.somaxconn`, 4096 here). Node's default of 511 overflowed when 10,000 devices powered
 * on at once: the kernel dropped the rest (13.7 million ListenDrops in one run), and 56% of the
 * devices waited out their 30 s connect timeout before trying again.
 */
const LISTEN_BACKLOG = 65_535;

/**
 * Runs `handOver`, which starts aedes publishes to the client behind `conn`, with that socket
 * corked until the next setImmediate, by when aedes has written them: aedes writes each publish a
 * turn of the event loop after the previous one and mqtt-packet corks for one turn only, so a burst
 * went out one writev per message. A publish past the socket's high-water mark waits for 'drain',
 * which follows the uncork, so nothing waits on itself.
 *
 * @example
 * ```ts ignore
 * writeTogether(client.conn, () => blocks.forEach((b) => broker.publish(packetOf(b), noop)));
 * ```
 */
export function writeTogether(
  conn: { cork(): void; uncork(): void },
  handOver: () => void,
): void {
  conn.cork();
  try {
    handOver();
  } finally {
    setImmediate(() => conn.uncork());
  }
}

/**
 * Starts aedes on `host:port` (`127.0.0.1` unless asked: a device on another machine needs
 * `0.0.0.0` or the machine's address).
 *
 * @example
 * ```ts ignore
 * const { url, close } = await startEmbeddedBroker();
 * // ... mqtt.connect(url) ...
 * await close();
 * ```
 */
export async function startEmbeddedBroker(
  options: { port?: number; host?: string; aedes?: AedesOptions; tls?: BrokerTls } = {},
): Promise<EmbeddedBroker> {
  // No cap on deliveries in flight (aedes' default is 100): past the cap, mqemitter queues
  // messages and, whenever one completes synchronously (nobody subscribed), starts the next from
  // inside that completion; 10,000 devices each handed a request's blocks at once queued enough
  // of them to recurse past the stack and kill the broker. Backpressure stays where it works:
  // socket writes wait for drain, and the services await their publishes.
  const broker = await Aedes.createBroker(
    withDeferredPublished({ concurrency: 0, ...options.aedes }),
  );
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    broker.handle(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(
      { port: options.port ?? 0, host: options.host ?? "127.0.0.1", backlog: LISTEN_BACKLOG },
      () => resolve(),
    );
  });
  const port = (server.address() as { port: number }).port;
  let tlsServer: TlsServer | null = null;
  let tlsUrl: string | null = null;
  if (options.tls) {
    const { key, cert, ca } = options.tls;
    tlsServer = createTlsServer({
      key,
      cert,
      // A client without a certificate (or with one the CA did not issue) still gets a TLS
      // session and must then log in with a secret or a secure-element token: the
      // authenticate hook only takes a certificate the CA verified (socket.authorized).
      ...(ca ? { ca, requestCert: true, rejectUnauthorized: false } : {}),
    }, (socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      broker.handle(socket);
    });
    tlsServer.on("tlsClientError", () => {}); // a refused handshake concerns only that client
    await new Promise<void>((resolve, reject) => {
      tlsServer!.once("error", reject);
      tlsServer!.listen(
        {
          port: options.tls!.port ?? 0,
          host: options.tls!.host ?? options.host ?? "127.0.0.1",
          backlog: LISTEN_BACKLOG,
        },
        () => resolve(),
      );
    });
    const tlsHost = options.tls.host ?? options.host ?? "127.0.0.1";
    const reach = tlsHost === "0.0.0.0" || tlsHost === "::" ? "127.0.0.1" : tlsHost;
    tlsUrl = `mqtts://${reach}:${(tlsServer.address() as { port: number }).port}`;
  }
  return {
    broker,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    tlsUrl,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (tlsServer) await new Promise<void>((resolve) => tlsServer!.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    },
  };
}
