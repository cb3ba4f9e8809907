/**
 * The protocol floor: what the fleet's MQTT conversation costs with nothing behind it. A responder
 * (the cloud's aedes, answering from memory) in one process and bare mqtt.js clients in Workers in
 * another, each client replaying on the wire what one fleet device did in its update, from that
 * device's wire log of the same benchmark run (see protocol_script.ts). Measured as the fleet is:
 * wall time, CPU of both processes, the peak of their memory together, packets and bytes per
 * device.
 *
 * @module
 */
import { cpuSeconds, sampleResidentMemory, spawnDeno, tenths } from "./processes.ts";
import type { ProtocolClientsResult } from "./protocol_clients.ts";

/** What one protocol floor run measured. */
export interface ProtocolFloorResult {
  /** From starting the clients' process to every client done. */
  readonly seconds: number;
  /** CPU seconds of the responder and client processes together. */
  readonly cpuSeconds: number;
  /** The same, process by process (`clients`, `responder`). */
  readonly cpuByProcess: Readonly<Record<string, number>>;
  /** Peak of the two processes' resident memory together. */
  readonly peakRssBytes: number;
  readonly wirePerDevice: ProtocolClientsResult["wirePerDevice"];
  /** Clients that did not finish, and client actions the responder found no step for. */
  readonly failed: number;
  readonly unmatched: number;
}

/**
 * Runs the responder and `devices` clients in `workers` Workers against it, replaying `wireLog`
 * (one device's `--wire-log`, as text).
 *
 * @example
 * ```ts ignore
 * const floor = await measureProtocolFloor({ devices: 1000, workers: 2, wireLog });
 * ```
 */
export async function measureProtocolFloor(
  options: { readonly devices: number; readonly workers: number; readonly wireLog: string },
): Promise<ProtocolFloorResult> {
  const dir = await Deno.makeTempDir({ prefix: "bench-protocol-" });
  const script = (path: string) => new URL(path, import.meta.url).pathname;
  const logPath = `${dir}/wire.jsonl`;
  await Deno.writeTextFile(logPath, options.wireLog);
  const cpuBefore = cpuSeconds().children;
  const responder = spawnDeno(script("./protocol_responder.ts"), ["--wire-log", logPath]);
  let clients: ReturnType<typeof spawnDeno> | null = null;
  const memory = sampleResidentMemory(() => [responder.pid, ...(clients ? [clients.pid] : [])]);
  try {
    const { mqtt } = JSON.parse(
      await responder.line((l) => l.startsWith('{"mqtt"'), "its address"),
    ) as { mqtt: string };
    const started = performance.now();
    clients = spawnDeno(script("./protocol_clients.ts"), [
      "--broker",
      mqtt,
      "--wire-log",
      logPath,
      "--devices",
      String(options.devices),
      "--workers",
      String(options.workers),
    ]);
    const result = JSON.parse(
      await clients.line((l) => l.startsWith("{"), "its result"),
    ) as ProtocolClientsResult;
    const seconds = (performance.now() - started) / 1000;
    await clients.status;
    // A child's CPU joins this process's count of children once it ends (the runtime reaps it at
    // once): read now and after the responder ends, the count splits exactly by process.
    const clientsCpu = cpuSeconds().children - cpuBefore;
    responder.kill("SIGTERM");
    const { unmatched } = JSON.parse(
      await responder.line((l) => l.startsWith('{"unmatched"'), "its count"),
    ) as { unmatched: number };
    await responder.status;
    const cpu = cpuSeconds().children - cpuBefore;
    return {
      seconds,
      cpuSeconds: cpu,
      cpuByProcess: { clients: tenths(clientsCpu), responder: tenths(cpu - clientsCpu) },
      peakRssBytes: memory.stop(),
      wirePerDevice: result.wirePerDevice,
      failed: result.failed,
      unmatched,
    };
  } finally {
    memory.stop();
    clients?.kill("SIGKILL");
    responder.kill("SIGKILL");
    await Promise.all([responder.status, clients?.status]);
    await Deno.remove(dir, { recursive: true });
  }
}
