/**
 * What makes aedes brokers one cluster: the aedes project's own Redis parts, `mqemitter-redis`
 * (messages published on one node reach subscribers on every node) and `aedes-persistence-redis`
 * (subscriptions, retained messages, sessions and their queued messages shared), so a device may
 * connect to any node and find its session there. Pass the result as the aedes options of a node.
 *
 * @example
 * ```ts ignore
 * const cluster = clusterAedesOptions("redis://127.0.0.1:6379");
 * const node = await startEmbeddedBroker({ aedes: cluster.options });
 * // ...
 * await node.close();
 * await cluster.close();
 * ```
 *
 * @module
 */

import type { AedesOptions } from "aedes";
import { Readable } from "node:stream";
import mqemitterRedis from "mqemitter-redis";
// The package's promise-based persistence: aedes 1.x awaits its persistence (the package's main
// export wraps it in callbacks for older aedes).
import AsyncRedisPersistence from "aedes-persistence-redis/asyncPersistence.js";

/** A node's aedes options for the cluster, and how to let go of its Redis connections. */
export interface ClusterAedes {
  readonly options: AedesOptions;
  /** Closes the node's Redis connections (after the broker itself is closed). */
  close(): Promise<void>;
}

/** Host and port of a `redis://HOST:PORT` URL (the persistence takes ioredis options). */
export function redisAddress(url: string): { host: string; port: number } {
  const match = /^redis:\/\/([^\s:/]+)(?::(\d{1,5}))?\/?$/.exec(url);
  const port = Number(match?.[2] ?? 6379);
  if (!match || port < 1 || port > 65535) {
    throw new Error(`expected redis://HOST:PORT: current value is '${url}'`);
  }
  return { host: match[1]!, port };
}

/** The aedes options of one node of the cluster whose Redis is at `redisUrl`. */
export function clusterAedesOptions(redisUrl: string): ClusterAedes {
  const address = redisAddress(redisUrl);
  // deno-lint-ignore no-explicit-any
  const mq = (mqemitterRedis as any)({ ...address });
  // deno-lint-ignore no-explicit-any
  const persistence = new (AsyncRedisPersistence as any)({ ...address });
  // aedes 1.2 pipes the retained messages it is given; this persistence yields them from an
  // async generator, which a Readable carries unchanged.
  const matching = persistence.createRetainedStreamCombi.bind(persistence);
  persistence.createRetainedStreamCombi = (patterns: string[]) => Readable.from(matching(patterns));
  persistence.createRetainedStream = (pattern: string) => Readable.from(matching([pattern]));
  let closed: Promise<void> | null = null;
  return {
    options: { mq, persistence } as AedesOptions,
    // aedes closes the emitter with the broker; the persistence's connection is ours to end.
    close: () =>
      closed ??= (async () => {
        await new Promise<void>((resolve) => mq.close(() => resolve()));
        await persistence.destroy();
      })(),
  };
}
