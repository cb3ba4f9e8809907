/**
 * The client side of the raw floor (see fleet_floor.ts): `devices` plain mqtt.js clients spread
 * over Workers, each fetching an image's worth of blocks by request/response. Runs in the
 * caller's process, or as its own process (`deno run -A bench/floor_clients.ts --broker URL ...`,
 * printing one JSON line) so that, as with the fleet, clients and broker do not share a process's
 * open files and thread.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { positiveIntegerOption } from "./processes.ts";
import { blocksPerRequestFor } from "../fleet/fleet_args.ts";
import type { FloorWorkerJob, FloorWorkerReport } from "./floor_worker.ts";

/** What the clients measured: from all connected to every image fetched. */
export interface FloorClientsResult {
  readonly seconds: number;
  readonly bytes: number;
}

/** Options of {@linkcode runFloorClients}. */
export interface FloorClientsOptions {
  readonly brokerUrl: string;
  readonly devices: number;
  readonly imageSize: number;
  readonly blockSize: number;
  readonly workers: number;
}

/**
 * Connects every client, then times the fetch of every image.
 *
 * @example
 * ```ts ignore
 * const { seconds, bytes } = await runFloorClients({ brokerUrl, devices: 100, imageSize: 262144, blockSize: 4096, workers: 2 });
 * ```
 */
export async function runFloorClients(options: FloorClientsOptions): Promise<FloorClientsResult> {
  const blocks = Math.ceil(options.imageSize / options.blockSize);
  const workers: Worker[] = [];
  try {
    const ask = (worker: Worker, message: unknown, type: FloorWorkerReport["type"]) =>
      new Promise<FloorWorkerReport>((resolve, reject) => {
        worker.onmessage = (event: MessageEvent<FloorWorkerReport>) => {
          if (event.data.type === type) resolve(event.data);
        };
        worker.onerror = (event) => reject(new Error(`floor worker: ${event.message}`));
        worker.postMessage(message);
      });
    const jobs: FloorWorkerJob[] = [];
    for (let w = 0; w < options.workers; w++) {
      const clientIds: string[] = [];
      for (let d = w; d < options.devices; d += options.workers) clientIds.push(`floor-${d}`);
      jobs.push({
        brokerUrl: options.brokerUrl,
        clientIds,
        blocks,
        blocksPerRequest: blocksPerRequestFor(options.blockSize),
      });
      workers.push(new Worker(new URL("./floor_worker.ts", import.meta.url), { type: "module" }));
    }
    await Promise.all(
      workers.map((w, i) => ask(w, { type: "connect", job: jobs[i] }, "connected")),
    );
    const started = performance.now();
    const reports = await Promise.all(workers.map((w) => ask(w, { type: "go" }, "done")));
    const seconds = (performance.now() - started) / 1000;
    const bytes = reports.reduce((sum, r) => sum + (r.type === "done" ? r.bytes : 0), 0);
    await Promise.all(workers.map((w) => ask(w, { type: "close" }, "closed")));
    return { seconds, bytes };
  } finally {
    for (const worker of workers) worker.terminate();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      broker: { type: "string" },
      devices: { type: "string" },
      "image-size": { type: "string" },
      "block-size": { type: "string" },
      workers: { type: "string" },
    },
  });
  const number = (name: "devices" | "image-size" | "block-size" | "workers") =>
    positiveIntegerOption(name, values[name]);
  if (!values.broker) {
    console.error(
      "Usage: floor_clients.ts --broker URL --devices N --image-size BYTES --block-size BYTES --workers N",
    );
    Deno.exit(2);
  }
  const result = await runFloorClients({
    brokerUrl: values.broker,
    devices: number("devices"),
    imageSize: number("image-size"),
    blockSize: number("block-size"),
    workers: number("workers"),
  });
  console.log(JSON.stringify(result));
}
