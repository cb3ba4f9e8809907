/**
 * One Worker of the raw floor (see fleet_floor.ts): its share of plain mqtt.js clients each fetch
 * an image's worth of blocks by request/response, with no OTA logic at all.
 *
 * @module
 */
import mqtt, { type MqttClient } from "mqtt";

/** Main -> Worker. */
export interface FloorWorkerJob {
  readonly brokerUrl: string;
  readonly clientIds: readonly string[];
  readonly blocks: number;
  readonly blocksPerRequest: number;
}

/** Worker -> main. */
export type FloorWorkerReport =
  | { readonly type: "connected" }
  | { readonly type: "done"; readonly bytes: number }
  | { readonly type: "closed" };

const scope = self as unknown as Worker;
let clients: MqttClient[] = [];
let job: FloorWorkerJob | null = null;

function fetchImage(client: MqttClient, id: string, spec: FloorWorkerJob): Promise<number> {
  return new Promise((resolve) => {
    let received = 0;
    let bytes = 0;
    let outstanding = 0;
    const ask = () => {
      const count = Math.min(spec.blocksPerRequest, spec.blocks - received);
      outstanding = count;
      client.publish(`floor/${id}/get`, String(count), { qos: 0 });
    };
    client.on("message", (_topic, payload) => {
      received++;
      bytes += payload.length;
      outstanding--;
      if (received === spec.blocks) resolve(bytes);
      else if (outstanding === 0) ask();
    });
    ask();
  });
}

scope.onmessage = async (
  event: MessageEvent<
    { type: "connect"; job: FloorWorkerJob } | { type: "go" } | { type: "close" }
  >,
) => {
  const message = event.data;
  if (message.type === "connect") {
    job = message.job;
    clients = await Promise.all(job.clientIds.map(async (id) => {
      const client = await mqtt.connectAsync(job!.brokerUrl, { clientId: id, reconnectPeriod: 0 });
      await client.subscribeAsync(`floor/${id}/data`, { qos: 0 });
      return client;
    }));
    scope.postMessage({ type: "connected" } satisfies FloorWorkerReport);
  } else if (message.type === "go") {
    const spec = job!;
    const totals = await Promise.all(
      clients.map((c, i) => fetchImage(c, spec.clientIds[i]!, spec)),
    );
    scope.postMessage(
      { type: "done", bytes: totals.reduce((a, b) => a + b, 0) } satisfies FloorWorkerReport,
    );
  } else {
    await Promise.all(clients.map((c) => c.endAsync()));
    scope.postMessage({ type: "closed" } satisfies FloorWorkerReport);
  }
};
