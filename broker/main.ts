/**
 * `deno task broker`: the cloud as a process — embedded aedes with device authentication and
 * ACLs on `--port`, the operator API on `--http-port`, state in `--data DIR`.
 *
 * Exit codes: 0 after SIGINT/SIGTERM, 2 on bad flags.
 *
 * @module
 */

import { ScaledClock, systemClock } from "../lib/clock.ts";
import { BROKER_USAGE, parseBrokerArgs, UsageError } from "./broker_args.ts";
import { startCloud } from "./cloud.ts";
import { operatorApi } from "./operator_api.ts";

let options;
try {
  options = parseBrokerArgs(Deno.args, (name) => Deno.env.get(name));
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  console.error(`${error.message}\n\n${BROKER_USAGE}`);
  Deno.exit(2);
}
if (options.help) {
  console.log(BROKER_USAGE);
  Deno.exit(0);
}
const { dataDir, token } = options;
const scale = options.timeScale;
await Deno.mkdir(dataDir, { recursive: true });
const cloud = await startCloud({
  port: options.mqttPort,
  databasePath: `${dataDir}/cloud.db`,
  powerLossDurable: options.powerLossDurable,
  clock: scale === 1 ? systemClock : new ScaledClock(scale),
  ...(options.serviceSecret ? { serviceSecret: options.serviceSecret } : {}),
  log: (line) => console.error(line),
  ...(options.external ? { external: options.external } : {}),
  ...(options.tls ? { tls: options.tls } : {}),
});
const server = Deno.serve(
  { port: options.httpPort, hostname: "127.0.0.1", onListen: () => {} },
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
if (options.tokenGenerated) console.error(`operator token: ${token}`);

const stop = async () => {
  await server.shutdown();
  await cloud.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
