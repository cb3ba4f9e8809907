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
import { standardFlags, usageLine } from "../lib/cli.ts";
import { operatorLog } from "./operator_log.ts";

const early = standardFlags(Deno.args, BROKER_USAGE);
if (early) {
  console.log(early.text);
  Deno.exit(0);
}
let options;
try {
  options = parseBrokerArgs(Deno.args, (name) => Deno.env.get(name));
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  console.error(usageLine(error.message));
  Deno.exit(2);
}
const { dataDir, token } = options;
// The operator's log: what happens, one event a line on stderr (stdout carries the ready line).
const events = operatorLog(options.logFormat, (line) => console.error(line));
const scale = options.timeScale;
/** An expected failure at start: one line for the operator, no stack, exit 1. */
function cannot(what: string, error: unknown): never {
  const e = error as Error & { code?: string };
  const why = e instanceof Deno.errors.AddrInUse || e.code === "EADDRINUSE"
    ? "the address is in use"
    : e instanceof Deno.errors.PermissionDenied || e.code === "EACCES"
    ? "permission denied"
    : e.message.split("\n")[0];
  console.error(`cannot ${what}: ${why}`);
  Deno.exit(1);
}

await Deno.mkdir(dataDir, { recursive: true }).catch((error) =>
  cannot(`create the data directory '${dataDir}'`, error)
);
const cloud = await startCloud({
  port: options.mqttPort,
  host: options.host,
  databasePath: `${dataDir}/cloud.db`,
  powerLossDurable: options.powerLossDurable,
  clock: scale === 1 ? systemClock : new ScaledClock(scale),
  ...(options.serviceSecret ? { serviceSecret: options.serviceSecret } : {}),
  // The cloud's own lines: refusals (already one line each, rate-limited) and trouble.
  log: (line) =>
    line.startsWith("refused: ")
      ? events("refused", { reason: line.slice("refused: ".length) })
      : events("problem", { message: line }),
  events,
  ...(options.external ? { external: options.external } : {}),
  ...(options.tls ? { tls: options.tls } : {}),
}).catch((error) => cannot(`start the MQTT broker on port ${options.mqttPort}`, error));
let server: Deno.HttpServer;
try {
  server = Deno.serve(
    { port: options.httpPort, hostname: options.host, onListen: () => {} },
    operatorApi(cloud, { token }),
  );
} catch (error) {
  await cloud.close();
  cannot(`serve the operator API on port ${options.httpPort}`, error);
}
const apiPort = (server.addr as Deno.NetAddr).port;
// What others are told to reach: the public URL when given, else this listener (every
// interface's is reached locally through loopback).
const local = options.host === "0.0.0.0" || options.host === "::" ? "127.0.0.1" : options.host;
const base = options.publicUrl ?? `http://${local}:${apiPort}`;
cloud.files.baseUrl = base;
console.log(
  JSON.stringify({
    mqtt: cloud.url,
    mqtts: cloud.broker?.tlsUrl ?? null,
    api: `${base}/api/`,
    dashboard: `${base}/dashboard/`,
    data: dataDir,
    timeScale: scale,
  }),
);
events("started", {
  mqtt: cloud.url,
  api: `${base}/api/`,
  dashboard: `${base}/dashboard/`,
  data: dataDir,
});
console.error(`dashboard: ${base}/dashboard/ (it asks for the operator token)`);
if (options.tokenGenerated) console.error(`operator token: ${token}`);

const stop = async () => {
  await server.shutdown();
  await cloud.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
