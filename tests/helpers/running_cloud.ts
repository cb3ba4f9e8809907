/**
 * A running cloud as `deno task broker` serves it, in the test's process: its MQTT listener and
 * its operator API on a free port, for fleets that join it with `--broker --api --token`.
 */
import { type Cloud, startCloud } from "../../broker/cloud.ts";
import { operatorApi } from "../../broker/operator_api.ts";

/** A cloud, its operator API, and the flags a fleet joins it with. */
export interface RunningCloud {
  readonly cloud: Cloud;
  /** `--broker URL --api URL --token T`. */
  readonly joinFlags: readonly string[];
  close(): Promise<void>;
}

/** Starts a cloud (ticking every 100 ms) with its operator API behind `token`. */
export async function runningCloud(token: string): Promise<RunningCloud> {
  const cloud = await startCloud({ tickMs: 100 });
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token }),
  );
  const api = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/api`;
  return {
    cloud,
    joinFlags: ["--broker", cloud.url, "--api", api, "--token", token],
    async close() {
      await server.shutdown();
      await cloud.close();
    },
  };
}
