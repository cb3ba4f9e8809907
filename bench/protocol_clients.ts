/**
 * The client side of the protocol floor: `devices` bare mqtt.js clients in `workers` Workers, each
 * replaying a fleet device's update on the wire against a responder (protocol_responder.ts).
 * Runs in the caller's process, or as its own (`deno run -A bench/protocol_clients.ts --broker
 * URL --wire-log FILE --devices N --workers W`, printing one JSON line), as the fleet's devices
 * run in a process of their own in the benchmark.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { positiveIntegerOption } from "./processes.ts";
import type { WireTraffic } from "../agent/device_runtime.ts";
import { parseWireLog } from "../fleet/wire_log.ts";
import { type ProtocolScript, protocolScript } from "./protocol_script.ts";
import type { ProtocolWorkerReport, ProtocolWorkerTotals } from "./protocol_worker.ts";

/** What the clients did: from the first Worker started to the last client done. */
export interface ProtocolClientsResult {
  readonly seconds: number;
  /** What a client's connections carried, on average. */
  readonly wirePerDevice: WireTraffic & {
    readonly publishesSent: number;
    readonly publishesReceived: number;
  };
  readonly failed: number;
  readonly failures: readonly string[];
}

/** Options of {@linkcode runProtocolClients}. */
export interface ProtocolClientsOptions {
  readonly brokerUrl: string;
  readonly script: ProtocolScript;
  readonly devices: number;
  readonly workers: number;
}

/**
 * Replays `script` with `devices` clients named as the fleet names its devices (dev-00000...).
 *
 * @example
 * ```ts ignore
 * const result = await runProtocolClients({ brokerUrl, script, devices: 100, workers: 2 });
 * ```
 */
export async function runProtocolClients(
  options: ProtocolClientsOptions,
): Promise<ProtocolClientsResult> {
  const started = performance.now();
  const workers: Worker[] = [];
  try {
    const reports = await Promise.all(
      Array.from({ length: options.workers }, (_, w) => {
        const things: string[] = [];
        for (let d = w; d < options.devices; d += options.workers) {
          things.push(`dev-${String(d).padStart(5, "0")}`);
        }
        const worker = new Worker(new URL("./protocol_worker.ts", import.meta.url), {
          type: "module",
        });
        workers.push(worker);
        return new Promise<ProtocolWorkerTotals>((resolve, reject) => {
          worker.onmessage = (event: MessageEvent<ProtocolWorkerReport>) =>
            resolve(event.data.totals);
          worker.onerror = (event) => reject(new Error(`protocol worker: ${event.message}`));
          worker.postMessage({ brokerUrl: options.brokerUrl, things, script: options.script });
        });
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const mean = (pick: (t: ProtocolWorkerTotals) => number) =>
      Math.round(reports.reduce((n, t) => n + pick(t), 0) / options.devices * 10) / 10;
    return {
      seconds,
      wirePerDevice: {
        packetsSent: mean((t) => t.packetsSent),
        packetsReceived: mean((t) => t.packetsReceived),
        bytesSent: mean((t) => t.bytesSent),
        bytesReceived: mean((t) => t.bytesReceived),
        publishesSent: mean((t) => t.publishesSent),
        publishesReceived: mean((t) => t.publishesReceived),
      },
      failed: reports.reduce((n, t) => n + t.failed, 0),
      failures: reports.flatMap((t) => t.failures).slice(0, 5),
    };
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
      "wire-log": { type: "string" },
      devices: { type: "string" },
      workers: { type: "string" },
    },
  });
  const number = (name: "devices" | "workers") => positiveIntegerOption(name, values[name]);
  if (!values.broker || !values["wire-log"]) {
    console.error(
      "Usage: protocol_clients.ts --broker URL --wire-log FILE --devices N --workers N",
    );
    Deno.exit(2);
  }
  let script: ProtocolScript;
  try {
    script = protocolScript(parseWireLog(await Deno.readTextFile(values["wire-log"])));
  } catch (error) {
    console.error(`protocol_clients: ${(error as Error).message}`);
    Deno.exit(1);
  }
  const result = await runProtocolClients({
    brokerUrl: values.broker,
    script,
    devices: number("devices"),
    workers: number("workers"),
  });
  console.log(JSON.stringify(result));
}
