/**
 * `deno task broker`: the cloud as a process — embedded aedes with device authentication and
 * ACLs on `--port`, the operator API on `--http-port`, state in `--data DIR`.
 *
 * Exit codes: 0 after SIGINT/SIGTERM, 2 on bad flags.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ScaledClock, systemClock } from "../lib/clock.ts";
import { startCloud } from "./cloud.ts";
import { operatorApi } from "./operator_api.ts";

const USAGE =
  `Usage: deno task broker [--port 1883] [--http-port 8080] [--data DIR] [--time-scale N]

  --port          MQTT port for devices (0 = any free port)          default 1883
  --http-port     operator API port (0 = any free port)              default 8080
  --data          directory of the SQLite state (created if missing) default ./data
  --time-scale    run the cloud's clock N times faster (rollout rates and timeouts)  default 1
  --token         operator API token (or OTA_OPERATOR_TOKEN); generated and printed if absent
  --service-secret  the cloud services' MQTT secret (or OTA_SERVICE_SECRET)
  --external URL  run the services as clients of an external MQTT broker (mqtt://HOST:PORT);
                  authentication and ACLs are then that broker's job
  --tls-port N --tls-key FILE --tls-cert FILE [--tls-ca FILE]
                  an MQTT over TLS listener; with --tls-ca (the fleet CA) devices log in with
                  client certificates whose CN is their thing name
  --power-loss-durable  fsync every commit: state survives the host losing power, not only the
                  broker process dying (costs one fsync per device status update)`;

function usage(message: string): never {
  console.error(`${message}\n\n${USAGE}`);
  Deno.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string" },
      "http-port": { type: "string" },
      data: { type: "string" },
      "time-scale": { type: "string" },
      token: { type: "string" },
      "service-secret": { type: "string" },
      external: { type: "string" },
      "tls-port": { type: "string" },
      "tls-key": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-ca": { type: "string" },
      "power-loss-durable": { type: "boolean" },
      help: { type: "boolean" },
    },
    strict: true,
  }));
} catch (error) {
  usage((error as Error).message);
}
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const port = (name: string, text: string | undefined, fallback: number) => {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^\d+$/.test(text) || value > 65535) {
    usage(`Invalid --${name}: expected a port 0..65535: current value is '${text}'`);
  }
  return value;
};
const mqttPort = port("port", values.port, 1883);
const httpPort = port("http-port", values["http-port"], 8080);
const scale = Number(values["time-scale"] ?? "1");
if (!(scale > 0) || !Number.isFinite(scale)) {
  usage(
    `Invalid --time-scale: expected a positive number: current value is '${values["time-scale"]}'`,
  );
}
if (values.external !== undefined && !/^mqtts?:\/\/[^\s/]+(:\d+)?\/?$/.test(values.external)) {
  usage(`Invalid --external: expected mqtt://HOST:PORT: current value is '${values.external}'`);
}
const dataDir = values.data ?? "data";
const token = values.token ?? Deno.env.get("OTA_OPERATOR_TOKEN") ?? crypto.randomUUID();
if (token.length < 8) usage("Invalid --token: it must have at least 8 characters");

const readPem = (name: string, path: string | undefined) => {
  if (!path) return undefined;
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    return usage(`Cannot read --${name} '${path}': ${(error as Error).message}`);
  }
};
let tls: { port: number; key: string; cert: string; ca?: string } | undefined;
if (values["tls-port"] !== undefined) {
  const key = readPem("tls-key", values["tls-key"]);
  const cert = readPem("tls-cert", values["tls-cert"]);
  if (!key || !cert) usage("--tls-port needs --tls-key and --tls-cert");
  const ca = readPem("tls-ca", values["tls-ca"]);
  tls = { port: port("tls-port", values["tls-port"], 8883), key, cert, ...(ca ? { ca } : {}) };
}
await Deno.mkdir(dataDir, { recursive: true });
const cloud = await startCloud({
  port: mqttPort,
  databasePath: `${dataDir}/cloud.db`,
  powerLossDurable: values["power-loss-durable"] ?? false,
  clock: scale === 1 ? systemClock : new ScaledClock(scale),
  ...(values["service-secret"] ?? Deno.env.get("OTA_SERVICE_SECRET")
    ? { serviceSecret: values["service-secret"] ?? Deno.env.get("OTA_SERVICE_SECRET")! }
    : {}),
  log: (line) => console.error(line),
  ...(values.external ? { external: values.external } : {}),
  ...(tls ? { tls } : {}),
});
const server = Deno.serve(
  { port: httpPort, hostname: "127.0.0.1", onListen: () => {} },
  operatorApi(cloud, { token }),
);
const apiPort = (server.addr as Deno.NetAddr).port;
cloud.files.baseUrl = `http://127.0.0.1:${apiPort}`;
console.log(
  JSON.stringify({
    mqtt: cloud.url,
    mqtts: cloud.broker?.tlsUrl ?? null,
    api: `http://127.0.0.1:${apiPort}/api/`,
    data: dataDir,
    timeScale: scale,
  }),
);
if (!values.token && !Deno.env.get("OTA_OPERATOR_TOKEN")) console.error(`operator token: ${token}`);

const stop = async () => {
  await server.shutdown();
  await cloud.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
