/** One MQTT login against a broker: 0 when accepted, else the CONNACK code or error message. */
import mqtt from "mqtt";

export function mqttConnect(url: string, thing: string, secret: string): Promise<number | string> {
  return new Promise((resolve) => {
    const client = mqtt.connect(url, {
      clientId: thing,
      username: thing,
      password: secret,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    });
    const finish = (result: number | string) => {
      client.removeAllListeners();
      client.on("error", () => {});
      client.end(true, () => resolve(result));
    };
    client.once("connect", () => finish(0));
    client.once("error", (error) => finish((error as { code?: number }).code ?? error.message));
    client.once("close", () => finish("closed"));
  });
}
