/**
 * What makes aedes brokers one cluster: the aedes project's own Redis parts, `mqemitter-redis`
 * (messages published on one node reach subscribers on every node) and `aedes-persistence-redis`
 * (subscriptions, retained messages, sessions and their queued messages shared), so a device may
 * connect to any node and find its session there. Pass the result as the aedes options of a node.
 *
 * One setting of ours: the Redis channel a topic travels on. mqemitter-redis maps each topic to
 * a channel of the same name, and a subscription with a wildcard to a Redis pattern; Redis
 * matches every PUBLISH against every pattern, and devices subscribe with wildcards (`.../jobs/+
 * /update/+`), so at 10,000 devices each message was matched against some 60,000 patterns and
 * Redis fell behind while the nodes queued without bound. Every topic of a thing
 * (`$aws/things/<thing>/...`) now travels on one channel per thing, subscribed without a
 * pattern; the node's own matcher still matches the full topic against its clients'
 * subscriptions, wildcards and all.
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
  // No cap on deliveries in flight, as the embedded broker (embedded.ts): past mqemitter's
  // default of 100 every further delivery of the node queues behind the slowest client.
  // No ready check (an INFO at every connect) nor CLIENT SETINFO: ioredis 5.8.2 and later may
  // send them after the subscriptions it queued before connecting, and Redis refuses them on a
  // subscribed connection with an error nobody catches (ioredis#2037, open), which took a test's
  // node down.
  // deno-lint-ignore no-explicit-any
  const mq = (mqemitterRedis as any)({
    ...address,
    concurrency: 0,
    enableReadyCheck: false,
    disableClientInfo: true,
  });
  // The channel of a topic (see above): what mqemitter-redis subscribes and publishes to.
  mq._subTopic = redisChannel;
  mq._containsWildcard = (topic: string) => redisChannel(topic).includes("*");
  const publish = mq.pubConn.publish.bind(mq.pubConn);
  mq.pubConn.publish = (topic: string, payload: unknown) => publish(redisChannel(topic), payload);
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

/**
 * The Redis channel a topic travels on between nodes: `$aws/things/<thing>` for every topic of
 * a thing, the topic itself for others; MQTT wildcards become Redis's `*`.
 *
 * @example
 * ```ts
 * import { redisChannel } from "./cluster_aedes.ts";
 * redisChannel("$aws/things/dev-1/jobs/+/update/+"); // "$aws/things/dev-1"
 * redisChannel("$aws/things/+/jobs/get"); // "$aws/things/*"
 * ```
 */
export function redisChannel(topic: string): string {
  const levels = topic.split("/");
  if (levels[0] === "$aws" && levels[1] === "things" && levels.length >= 3) {
    const thing = levels[2]!;
    return `$aws/things/${thing === "+" || thing === "#" ? "*" : thing}`;
  }
  return topic.replace(/\+/g, "*").replace(/#/g, "*");
}
