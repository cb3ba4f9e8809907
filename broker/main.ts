/**
 * `deno task broker`: the cloud as a process — embedded aedes with device authentication and
 * ACLs on `--port`, the operator API on `--http-port`, state in `--data DIR` (SQLite) or `--db`
 * (PostgreSQL); with `--cluster`, one node of a cluster joined through Redis, the rollout
 * scheduler running on whichever node holds the database's scheduler lease.
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
import type { CloudStore } from "./store.ts";
import { PostgresStore } from "./postgres_store.ts";
import { type ClusterAedes, clusterAedesOptions } from "./cluster_aedes.ts";
import { SchedulerLease } from "./scheduler_lease.ts";
import { startCpuProfile } from "../lib/cpu_profiler.ts";

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
const stopProfile = options.cpuProfile ? await startCpuProfile() : null;
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

let store: CloudStore | undefined;
if (options.db) {
  store = await PostgresStore.open(options.db, { applicationName: `ota-${options.nodeId}` })
    .catch((error) => cannot("open the database", error));
} else {
  await Deno.mkdir(dataDir, { recursive: true }).catch((error) =>
    cannot(`create the data directory '${dataDir}'`, error)
  );
}
// Signing profiles' keys are stored sealed with this secret: given, or the data directory's own
// (made once, readable by this user only; keep it apart from the database's backups).
const profileKey = options.profileKey ??
  await dataDirProfileKey(dataDir).catch((error) =>
    cannot(`read or make the profile key in '${dataDir}'`, error)
  );
let cluster: ClusterAedes | undefined;
if (options.cluster) {
  try {
    cluster = clusterAedesOptions(options.cluster);
  } catch (error) {
    cannot(`join the cluster at ${options.cluster}`, error);
  }
}
const cloud = await startCloud({
  ...(store ? { store } : {}),
  ...(cluster ? { cluster: { aedes: { ...cluster.options, id: options.nodeId } } } : {}),
  // With a shared database the scheduler runs where the lease is (below), nowhere before.
  scheduling: store === undefined,
  port: options.mqttPort,
  // With TLS, devices elsewhere meet TLS only; plain MQTT stays for this machine unless asked.
  host: options.tls && !options.plainMqtt ? "127.0.0.1" : options.host,
  databasePath: `${dataDir}/cloud.db`,
  powerLossDurable: options.powerLossDurable,
  clock: scale === 1 ? systemClock : new ScaledClock(
    scale,
    options.timeOrigin !== undefined ? { origin: options.timeOrigin } : {},
  ),
  ...(options.serviceSecret ? { serviceSecret: options.serviceSecret } : {}),
  profileKey,
  serverNames: options.serverNames,
  // The cloud's own lines: refusals (already one line each, rate-limited) and trouble.
  log: (line) =>
    line.startsWith("refused: ")
      ? events("refused", { reason: line.slice("refused: ".length) })
      : events("problem", { message: line }),
  events,
  ...(options.external ? { external: options.external } : {}),
  ...(options.tls ? { tls: { ...options.tls, host: options.host } } : {}),
}).catch((error) => cannot(`start the MQTT broker on port ${options.mqttPort}`, error));
const lease = options.db
  ? await SchedulerLease.start(options.db, {
    onChange: (held) => {
      cloud.jobs.scheduling = held;
      events(held ? "scheduler-started" : "scheduler-stopped", { node: options.nodeId });
    },
    log: (line) => events("problem", { message: line }),
  })
  : null;
let server: Deno.HttpServer;
try {
  const https = options.tls && !options.plainHttp
    ? { cert: options.tls.cert, key: options.tls.key }
    : {};
  server = Deno.serve(
    { port: options.httpPort, hostname: options.host, onListen: () => {}, ...https },
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
const scheme = options.tls && !options.plainHttp ? "https" : "http";
const base = options.publicUrl ?? `${scheme}://${local}:${apiPort}`;
cloud.files.baseUrl = base;
console.log(
  JSON.stringify({
    mqtt: cloud.url,
    mqtts: cloud.broker?.tlsUrl ?? null,
    api: `${base}/api/`,
    dashboard: `${base}/dashboard/`,
    data: options.db ? null : dataDir,
    timeScale: scale,
    node: options.nodeId,
    cluster: options.cluster ?? null,
    scheduler: lease?.held ?? true,
  }),
);
events("started", {
  mqtt: cloud.url,
  api: `${base}/api/`,
  dashboard: `${base}/dashboard/`,
  ...(options.db ? { node: options.nodeId } : { data: dataDir }),
});
console.error(`dashboard: ${base}/dashboard/ (it asks for the operator token)`);
if (options.tokenGenerated) console.error(`operator token: ${token}`);

const stop = async () => {
  if (stopProfile) await stopProfile(options.cpuProfile!).catch(() => {});
  await server.shutdown();
  await lease?.stop();
  await cloud.close();
  await cluster?.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);

/** The data directory's profile key: read, or made at the first start (mode 0600). */
async function dataDirProfileKey(dir: string): Promise<string> {
  const path = `${dir}/profile-key`;
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const secret = crypto.getRandomValues(new Uint8Array(32)).toBase64();
  await Deno.writeTextFile(path, `${secret}\n`, { mode: 0o600, createNew: true });
  return secret;
}
