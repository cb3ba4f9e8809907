/**
 * A local cluster for tests: a real redis-server and PostgreSQL (Debian packages) and broker
 * node processes (`deno task broker --cluster --db --node-id`) on free ports.
 */
import { type LocalService, startPostgres, startRedis } from "../../cluster/local_services.ts";
import { type BrokerProcess, startBrokerProcess } from "../../cluster/broker_process.ts";
import { systemProgram } from "./system_program.ts";

export const REDIS = systemProgram("redis-server", "redis-server");
export const POSTGRES = systemProgram("pg_ctlcluster", "postgresql");
/** Why cluster tests are ignored on this machine, or false. */
export const CLUSTER_IGNORE = REDIS.ignore || POSTGRES.ignore;
export const TOKEN = "cluster-test-token";
const SECRET = "cluster-service-secret";

/** A local cluster: Redis, PostgreSQL and broker node processes. */
export interface LocalCluster {
  readonly redis: LocalService;
  readonly db: LocalService;
  readonly nodes: BrokerProcess[];
  /** Starts a node process named `id` (its cloud clock `timeScale` times faster). */
  node(id: string, timeScale?: number): Promise<BrokerProcess>;
  close(): Promise<void>;
}

/** Starts Redis and PostgreSQL; nodes are started with {@linkcode LocalCluster.node}. */
export async function localCluster(): Promise<LocalCluster> {
  REDIS.require();
  POSTGRES.require();
  const redis = await startRedis();
  const db = await startPostgres().catch(async (error) => {
    await redis.stop();
    throw error;
  });
  const nodes: BrokerProcess[] = [];
  // The nodes' scaled clocks read the same time, however far apart they start.
  const timeOrigin = Date.now();
  return {
    redis,
    db,
    nodes,
    async node(id, timeScale = 1) {
      const node = await startBrokerProcess({
        // Port 0: the node takes free ports itself and says which (two free ports asked for
        // beforehand may be the same one, or taken by the time the node binds them).
        mqttPort: 0,
        httpPort: 0,
        token: TOKEN,
        serviceSecret: SECRET,
        timeScale,
        timeOrigin,
        extraArgs: ["--cluster", redis.url, "--db", db.url, "--node-id", id],
      });
      nodes.push(node);
      return node;
    },
    async close() {
      for (const node of nodes) await node.stop().catch(() => {});
      await db.stop();
      await redis.stop();
    },
  };
}

/** A node's Prometheus samples named `name`, summed over labels (0 when absent). */
export async function metric(node: BrokerProcess, name: string): Promise<number> {
  const text = await (await fetch(`${node.api.replace(/\/api$/, "")}/metrics`)).text();
  return text.split("\n").filter((line) => line.startsWith(name))
    .reduce((sum, line) => sum + Number(line.split(" ").at(-1)), 0);
}

/** GET on a node's operator API, as JSON. */
export async function api<T = Record<string, unknown>>(
  node: BrokerProcess,
  path: string,
): Promise<T> {
  const response = await fetch(`${node.api}${path}`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  return await response.json();
}

/** Whether the node runs the rollout scheduler now (its /healthz says). */
export async function schedules(node: BrokerProcess): Promise<boolean> {
  const response = await fetch(`${node.api.replace(/\/api$/, "")}/healthz`);
  return (await response.json()).scheduler === true;
}
