/** MQTT over WebSocket on the HTTP port: same authentication and ACLs as TCP. */
import assert from "node:assert/strict";
import { type IClientOptions, MqttClient } from "mqtt";
import { webSocketDuplex } from "../../broker/websocket.ts";
import { startCloud } from "../../broker/cloud.ts";
import { operatorApi } from "../../broker/operator_api.ts";

/** mqtt.js over the platform's WebSocket, as a browser would connect (mqtt.js' Node "ws" path does not complete its handshake under Deno). */
function connectOverWebSocket(url: string, options: IClientOptions): Promise<MqttClient> {
  const client = new MqttClient(() => webSocketDuplex(new WebSocket(url, "mqtt")) as never, {
    protocolVersion: 4,
    ...options,
  });
  return new Promise((resolve, reject) => {
    client.once("connect", () => resolve(client));
    client.once("error", (error) => {
      client.end(true);
      reject(error);
    });
  });
}

Deno.test("MQTT over WebSocket: an authenticated device gets its job over /mqtt; bad credentials are refused", async () => {
  const cloud = await startCloud();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: "token-12345" }),
  );
  const url = `ws://127.0.0.1:${(server.addr as Deno.NetAddr).port}/mqtt`;
  try {
    await cloud.provisionThing("web-1", "web-secret");
    await cloud.jobs.createJob({
      jobId: "job-ws",
      document: { afr_ota: {} },
      targets: { things: ["web-1"] },
    });
    const client = await connectOverWebSocket(url, {
      clientId: "web-1",
      username: "web-1",
      password: "web-secret",
      reconnectPeriod: 0,
    });
    const reply = new Promise<Record<string, unknown>>((resolve) =>
      client.on("message", (_t, p) => resolve(JSON.parse(p.toString())))
    );
    await client.subscribeAsync("$aws/things/web-1/jobs/$next/get/accepted", { qos: 1 });
    await client.publishAsync("$aws/things/web-1/jobs/$next/get", "{}", { qos: 1 });
    assert.equal(((await reply).execution as Record<string, unknown>).jobId, "job-ws");
    await client.endAsync();
    const refused = await connectOverWebSocket(url, {
      clientId: "web-1",
      username: "web-1",
      password: "nope",
      reconnectPeriod: 0,
    }).then(
      (c) => c.endAsync().then(() => 0),
      (error) => (error as { code?: number }).code ?? -1,
    );
    assert.equal(refused, 4);
  } finally {
    await server.shutdown();
    await cloud.close();
  }
});
