/**
 * The flags of `deno task broker`, parsed and validated apart from starting anything, so every
 * bad value is a {@linkcode UsageError} naming the flag (and tests can reach every branch).
 *
 * @module
 */

import { type FlagSpec, parseFlags, usage } from "../lib/flags.ts";
import { UsageError } from "../lib/usage_error.ts";
import { MIN_PROFILE_SECRET } from "./profile_keys.ts";

/** The flags of `deno task broker`: the parser's options, the help text and the checked ranges. */
export const BROKER_FLAGS: readonly FlagSpec[] = [
  {
    name: "port",
    value: "N",
    help: "MQTT port for devices (0: any free port)",
    range: [0, 65535],
    default: "1883",
  },
  {
    name: "http-port",
    value: "N",
    help: "operator API and dashboard port (0: any free port)",
    range: [0, 65535],
    default: "8080",
  },
  {
    name: "host",
    value: "ADDRESS",
    help: "address the MQTT and HTTP listeners bind to (0.0.0.0: every interface, for devices " +
      "on other machines)",
    default: "127.0.0.1",
  },
  {
    name: "public-url",
    value: "URL",
    help: "how others reach the HTTP port (pre-signed file links, the dashboard URL printed at " +
      "start), e.g. http://ota.example.net:8080",
    defaultText: "http://HOST:PORT",
  },
  {
    name: "data",
    value: "DIR",
    help: "directory of the SQLite state (created if missing)",
    default: "data",
  },
  {
    name: "time-scale",
    value: "N",
    help: "run the cloud's clock N times faster (rollout rates and timeouts)",
    range: [0.001, 1_000_000],
    default: "1",
  },
  {
    name: "time-origin",
    value: "MS",
    help: "with --time-scale: the real time (epoch milliseconds) at which the cloud's clock " +
      "reads real time, from which it runs faster; the nodes of a cluster need the same one " +
      "for their clocks to agree, as does a broker restarted mid-run",
    range: [0, 8_640_000_000_000],
    defaultText: "when the broker starts",
  },
  {
    name: "token",
    value: "T",
    help: "operator API token, 8 characters or more (or OTA_OPERATOR_TOKEN); generated and " +
      "printed if absent",
  },
  {
    name: "service-secret",
    value: "S",
    help: "the cloud services' MQTT secret (or OTA_SERVICE_SECRET)",
  },
  {
    name: "profile-key-file",
    value: "FILE",
    help: "a secret of 16 characters or more (or OTA_PROFILE_KEY) that signing profiles' private " +
      "keys are stored encrypted with; the same for every node of a cluster and every restart",
    defaultText: "DIR/profile-key, made at the first start (with --db: required)",
  },
  {
    name: "external",
    value: "URL",
    help: "run the services as clients of an external MQTT broker (mqtt://HOST:PORT); " +
      "authentication and ACLs are then that broker's job",
  },
  {
    name: "tls-port",
    value: "N",
    help: "with --tls-key and --tls-cert: an MQTT over TLS listener",
    range: [0, 65535],
  },
  {
    name: "tls-key",
    value: "FILE",
    help: "the TLS private key (PEM): of the MQTT TLS listener, and of the operator API, " +
      "dashboard, file links and MQTT over WebSocket, which then serve HTTPS and wss only",
  },
  { name: "tls-cert", value: "FILE", help: "the TLS certificate (PEM), for both listeners" },
  {
    name: "server-name",
    value: "NAME",
    multiple: true,
    help: "a host name devices dial this broker by (secure-element login tokens name it); " +
      "--host, --public-url's host, 127.0.0.1 and localhost are always in",
  },
  {
    name: "plain-http",
    help: "with TLS: keep the operator API, dashboard and file links on plain HTTP",
  },
  {
    name: "plain-mqtt",
    help: "with TLS: keep the plain MQTT listener on --host (otherwise it listens on " +
      "127.0.0.1 only, for tools on this machine)",
  },
  {
    name: "tls-ca",
    value: "FILE",
    help: "the fleet CA: devices log in with client certificates whose CN is their thing name",
  },
  {
    name: "log-format",
    value: "F",
    help: "operator log lines on stderr: words, or one JSON object a line",
    choices: ["text", "json"],
    default: "text",
  },
  {
    name: "cluster",
    value: "URL",
    help: "join a cluster of broker nodes through this Redis (redis://HOST:PORT): devices may " +
      "connect to any node; needs --db",
  },
  {
    name: "db",
    value: "URL",
    help:
      "keep the cloud's state in PostgreSQL (postgres://USER[:PASSWORD]@HOST:PORT/DB), shared " +
      "by the nodes of a cluster, instead of SQLite in --data",
  },
  {
    name: "node-id",
    value: "ID",
    help: "this node's name in the cluster (1..64 of [a-zA-Z0-9_.-])",
    defaultText: "node-<random>",
  },
  {
    name: "cpu-profile",
    value: "FILE",
    help: "sample this process's CPU and write a V8 profile (.cpuprofile) to FILE when it stops " +
      "(tools/cpu_profile.ts summarizes it)",
  },
  {
    name: "power-loss-durable",
    help: "fsync every commit: state survives the host losing power, not only the broker " +
      "process dying (costs one fsync per device status update)",
  },
];

/** Help text of `deno task broker`. */
export const BROKER_USAGE = usage("Usage: deno task broker [options]", BROKER_FLAGS);

export { UsageError };

/** What the flags ask for. */
export interface BrokerOptions {
  readonly mqttPort: number;
  /** Listen address. */
  readonly host: string;
  /** How the operator log is written. */
  readonly logFormat: "text" | "json";
  /** Base URL others reach the HTTP port at, when not http://host:port. */
  readonly publicUrl?: string;
  readonly httpPort: number;
  /** The secret signing-profile keys are sealed with (absent: the data directory's own). */
  readonly profileKey?: string;
  readonly dataDir: string;
  readonly timeScale: number;
  /** Where the scaled clock reads real time (epoch milliseconds); absent: at start. */
  readonly timeOrigin?: number;
  readonly token: string;
  /** Whether the token was generated (then it is printed). */
  readonly tokenGenerated: boolean;
  readonly serviceSecret?: string;
  readonly external?: string;
  /** With TLS: the operator API stays plain HTTP. */
  /** The names devices dial this broker by (a login token must name one). */
  readonly serverNames: readonly string[];
  readonly plainHttp: boolean;
  /** With TLS: the plain MQTT listener stays on the listen address (else loopback only). */
  readonly plainMqtt: boolean;
  readonly tls?: { port: number; key: string; cert: string; ca?: string };
  readonly powerLossDurable: boolean;
  /** The cluster's Redis (redis://HOST:PORT), when this broker is a node of one. */
  readonly cluster?: string;
  /** The PostgreSQL database of the state, instead of SQLite. */
  readonly db?: string;
  readonly nodeId: string;
  /** Where the CPU profile goes when the broker stops. */
  readonly cpuProfile?: string;
}

/**
 * Parses and validates the flags (`env` stands for `Deno.env.get`; TLS files are read here).
 *
 * @example
 * ```ts
 * import { parseBrokerArgs } from "./broker_args.ts";
 * parseBrokerArgs(["--port", "0", "--token", "operator-1"], () => undefined).mqttPort; // 0
 * ```
 */
export function parseBrokerArgs(
  args: readonly string[],
  env: (name: string) => string | undefined,
): BrokerOptions {
  const flags = parseFlags(args, BROKER_FLAGS);
  const values = flags.texts;
  const timeScale = flags.number("time-scale");
  if (values.external !== undefined && !/^mqtts?:\/\/[^\s/]+(:\d+)?\/?$/.test(values.external)) {
    throw new UsageError(
      `Invalid --external: expected mqtt://HOST:PORT: current value is '${values.external}'`,
    );
  }
  const logFormat = flags.choice<"text" | "json">("log-format");
  const host = values.host ?? "127.0.0.1";
  if (!/^[a-zA-Z0-9.:-]{1,253}$/.test(host)) {
    throw new UsageError(
      `Invalid --host: expected an address or host name: current value is '${host}'`,
    );
  }
  const publicUrl = values["public-url"];
  if (publicUrl !== undefined && !/^https?:\/\/[^\s/]+(\/[^\s]*)?$/.test(publicUrl)) {
    throw new UsageError(
      `Invalid --public-url: expected http(s)://HOST[:PORT]: current value is '${publicUrl}'`,
    );
  }
  if (values.data === "") throw new UsageError("Invalid --data: expected a directory");
  const given = values.token ?? env("OTA_OPERATOR_TOKEN");
  const token = given ?? crypto.randomUUID();
  if (token.length < 8) throw new UsageError("Invalid --token: it must have at least 8 characters");
  const readPem = (name: string, path: string | undefined) => {
    if (!path) return undefined;
    try {
      return Deno.readTextFileSync(path);
    } catch (error) {
      throw new UsageError(`Cannot read --${name} '${path}': ${(error as Error).message}`);
    }
  };
  let tls: BrokerOptions["tls"];
  if (values["tls-port"] !== undefined) {
    const tlsPort = flags.int("tls-port");
    const key = readPem("tls-key", values["tls-key"]);
    const cert = readPem("tls-cert", values["tls-cert"]);
    if (!key || !cert) throw new UsageError("--tls-port needs --tls-key and --tls-cert");
    const ca = readPem("tls-ca", values["tls-ca"]);
    tls = { port: tlsPort, key, cert, ...(ca ? { ca } : {}) };
  } else if (values["tls-key"] ?? values["tls-cert"] ?? values["tls-ca"]) {
    throw new UsageError("--tls-key, --tls-cert and --tls-ca need --tls-port");
  } else if (flags.boolean("plain-http") || flags.boolean("plain-mqtt")) {
    throw new UsageError(
      "--plain-http and --plain-mqtt keep plain listeners next to TLS: give --tls-port",
    );
  }
  const serviceSecret = values["service-secret"] ?? env("OTA_SERVICE_SECRET");
  let profileKey: string | undefined = env("OTA_PROFILE_KEY");
  const profileKeyFile = values["profile-key-file"];
  if (profileKeyFile !== undefined) {
    try {
      profileKey = Deno.readTextFileSync(profileKeyFile).trim();
    } catch (error) {
      throw new UsageError(
        `Cannot read --profile-key-file '${profileKeyFile}': ${(error as Error).message}`,
      );
    }
  }
  if (profileKey !== undefined && profileKey.length < MIN_PROFILE_SECRET) {
    throw new UsageError(
      `Invalid profile key: it must have at least ${MIN_PROFILE_SECRET} characters`,
    );
  }
  const { cluster, db } = values;
  if (cluster !== undefined && !/^redis:\/\/[^\s:/]+(:\d{1,5})?\/?$/.test(cluster)) {
    throw new UsageError(
      `Invalid --cluster: expected redis://HOST:PORT: current value is '${cluster}'`,
    );
  }
  if (db !== undefined && !/^postgres(ql)?:\/\/\S+$/.test(db)) {
    throw new UsageError(
      "Invalid --db: expected postgres://USER[:PASSWORD]@HOST:PORT/DB",
    );
  }
  if (cluster !== undefined && db === undefined) {
    throw new UsageError(
      "--cluster needs --db: the nodes of a cluster share their state in PostgreSQL",
    );
  }
  if (cluster !== undefined && values.external !== undefined) {
    throw new UsageError("--cluster and --external exclude each other: a node is its own broker");
  }
  if (db !== undefined && profileKey === undefined) {
    throw new UsageError(
      "--db needs --profile-key-file (or OTA_PROFILE_KEY), the same for every node: signing " +
        "profiles' keys are stored encrypted with it",
    );
  }
  if (db !== undefined && values.data !== undefined) {
    throw new UsageError("--db and --data exclude each other: the state is in one of them");
  }
  if (db !== undefined && flags.boolean("power-loss-durable")) {
    throw new UsageError(
      "--power-loss-durable is SQLite's; PostgreSQL's durability is its own (fsync, synchronous_commit)",
    );
  }
  const nodeId = values["node-id"] ?? `node-${crypto.randomUUID().slice(0, 8)}`;
  if (!/^[a-zA-Z0-9_.-]{1,64}$/.test(nodeId)) {
    throw new UsageError(
      `Invalid --node-id: expected 1..64 of [a-zA-Z0-9_.-]: current value is '${
        nodeId.slice(0, 80)
      }'`,
    );
  }
  return {
    mqttPort: flags.int("port"),
    host,
    logFormat,
    ...(publicUrl ? { publicUrl: publicUrl.replace(/\/+$/, "") } : {}),
    httpPort: flags.int("http-port"),
    dataDir: values.data ?? "data",
    timeScale,
    ...(flags.has("time-origin") ? { timeOrigin: flags.int("time-origin") } : {}),
    token,
    tokenGenerated: given === undefined,
    ...(serviceSecret ? { serviceSecret } : {}),
    ...(profileKey !== undefined ? { profileKey } : {}),
    ...(values.external ? { external: values.external } : {}),
    ...(tls ? { tls } : {}),
    plainHttp: flags.boolean("plain-http"),
    serverNames: serverNamesOf(
      (flags.values["server-name"] as string[] | undefined) ?? [],
      host,
      publicUrl,
    ),
    plainMqtt: flags.boolean("plain-mqtt"),
    powerLossDurable: flags.boolean("power-loss-durable"),
    ...(cluster ? { cluster } : {}),
    ...(db ? { db } : {}),
    nodeId,
    ...(values["cpu-profile"] ? { cpuProfile: values["cpu-profile"] } : {}),
  };
}

/** The names a broker answers to: given ones, its address (unless a wildcard), its public host. */
function serverNamesOf(
  given: readonly string[],
  host: string,
  publicUrl: string | undefined,
): string[] {
  for (const name of given) {
    if (!/^[A-Za-z0-9.:-]{1,253}$/.test(name)) {
      throw new UsageError(
        `Invalid --server-name: expected a host name: current value is '${name}'`,
      );
    }
  }
  const names = new Set(["127.0.0.1", "localhost", ...given.map((n) => n.toLowerCase())]);
  if (host !== "0.0.0.0" && host !== "::") names.add(host.toLowerCase());
  if (publicUrl) names.add(new URL(publicUrl).hostname.toLowerCase());
  return [...names];
}
