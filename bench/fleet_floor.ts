/**
 * The fleet against its raw floor: the same number of devices moving the same bytes in the same
 * blocks through the same aedes, once as plain mqtt.js request/response clients in Workers (no
 * OTA logic: the floor) and once as `deno task fleet`. Writes both figures and their ratio to
 * bench/results.json, so a change to the fleet shows how far it moved from what the broker and
 * sockets allow.
 *
 * ```sh
 * deno task bench:fleet --devices 1000 --image-size 256KiB
 * ```
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { parseArgs } from "node:util";
import type { AedesPublishPacket } from "aedes";
import { startEmbeddedBroker } from "../broker/embedded.ts";
import { blocksPerRequestFor, parseFleetArgs, runFleet } from "../fleet/fleet.ts";
import { parseSize } from "../lib/units.ts";
import type { FloorWorkerJob, FloorWorkerReport } from "./floor_worker.ts";

/** What one floor run measured. */
export interface FloorResult {
  readonly seconds: number;
  readonly bytes: number;
  readonly mbPerSecond: number;
}

/** Runs the floor: `devices` clients in `workers` Workers each fetch `imageSize` bytes. */
export async function measureFloor(
  options: { devices: number; imageSize: number; blockSize: number; workers: number },
): Promise<FloorResult> {
  const embedded = await startEmbeddedBroker();
  const block = Buffer.alloc(options.blockSize, 0xa5);
  const requestTopic = /^floor\/([^/]+)\/get$/;
  embedded.broker.on("publish", (packet: AedesPublishPacket, client: unknown) => {
    const match = client ? requestTopic.exec(packet.topic) : null;
    if (!match) return;
    const count = Number(packet.payload.toString());
    for (let i = 0; i < count; i++) {
      embedded.broker.publish({
        cmd: "publish",
        topic: `floor/${match[1]}/data`,
        payload: block,
        qos: 0,
        retain: false,
        dup: false,
      }, () => {});
    }
  });
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
        brokerUrl: embedded.url,
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
    return { seconds, bytes, mbPerSecond: bytes / 1e6 / seconds };
  } finally {
    for (const worker of workers) worker.terminate();
    await embedded.close();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      devices: { type: "string", default: "1000" },
      "image-size": { type: "string", default: "256KiB" },
      "block-size": { type: "string", default: "4KiB" },
      workers: { type: "string", default: String(navigator.hardwareConcurrency) },
      out: { type: "string", default: "bench/results.json" },
      "floor-only": { type: "boolean", default: false },
    },
  });
  const devices = Number(values.devices);
  const workers = Number(values.workers);
  const imageSize = parseSize(values["image-size"]);
  const blockSize = parseSize(values["block-size"]);
  if (!(devices >= 1) || !(workers >= 1) || imageSize === null || blockSize === null) {
    console.error(
      "Usage: deno task bench:fleet [--devices N] [--image-size SIZE] [--block-size SIZE] [--workers N] [--out FILE] [--floor-only]",
    );
    Deno.exit(2);
  }
  const floor = await measureFloor({ devices, imageSize, blockSize, workers });
  console.log(
    `floor: ${floor.bytes / 1e6} MB in ${floor.seconds.toFixed(1)} s (${
      floor.mbPerSecond.toFixed(1)
    } MB/s)`,
  );
  let fleet = null;
  if (!values["floor-only"]) {
    const report = await runFleet(
      parseFleetArgs([
        "--devices",
        String(devices),
        "--image-size",
        values["image-size"],
        "--block-size",
        values["block-size"],
        "--workers",
        String(workers),
        "--report",
        `${Deno.makeTempDirSync()}/fleet-report.json`,
      ]),
      () => {},
    );
    fleet = {
      seconds: report.wallSeconds,
      bytes: report.bytesDelivered,
      mbPerSecond: report.bytesDelivered / 1e6 / report.wallSeconds,
      asExpected: report.asExpected,
      peakRssBytes: report.peakRssBytes,
      phases: report.phases,
      // The part comparable to the floor: from creating the update to every device settled.
      updateSeconds: Object.entries(report.phases)
        .filter(([name]) => name.startsWith("update "))
        .reduce((sum, [, seconds]) => sum + seconds, 0),
    };
    console.log(
      `fleet: ${fleet.bytes / 1e6} MB in ${fleet.seconds} s (${
        fleet.mbPerSecond.toFixed(1)
      } MB/s), ${(fleet.seconds / floor.seconds).toFixed(1)}x the floor; the update alone ${
        fleet.updateSeconds.toFixed(1)
      } s, ${(fleet.updateSeconds / floor.seconds).toFixed(1)}x; phases ${
        JSON.stringify(fleet.phases)
      }`,
    );
  }
  const result = {
    at: new Date().toISOString(),
    cores: navigator.hardwareConcurrency,
    devices,
    imageBytes: imageSize,
    blockBytes: blockSize,
    workers,
    floor,
    fleet,
    fleetOverFloor: fleet ? fleet.seconds / floor.seconds : null,
    updateOverFloor: fleet ? fleet.updateSeconds / floor.seconds : null,
  };
  Deno.writeTextFileSync(values.out, JSON.stringify(result, null, 2) + "\n");
  console.log(`results: ${values.out}`);
}
