/**
 * The flags of `deno task broker`, parsed and validated apart from starting anything, so every
 * bad value is a {@linkcode UsageError} naming the flag (and tests can reach every branch).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { UsageError } from "../lib/usage_error.ts";

/** Help text of `deno task broker`. */
export const BROKER_USAGE =
  `Usage: deno task broker [--port 1883] [--http-port 8080] [--data DIR] [--time-scale N]

  --port          MQTT port for devices (0 = any free port)          default 1883
  --http-port     operator API port (0 = any free port)              default 8080
  --host ADDRESS  address the MQTT and HTTP listeners bind to         default 127.0.0.1
                  (0.0.0.0: every interface, for devices on other machines)
  --public-url URL  how others reach the HTTP port (pre-signed file links, the dashboard
                  URL printed at start), e.g. http://ota.example.net:8080
                                                                     default http://HOST:PORT
  --data          directory of the SQLite state (created if missing) default ./data
  --time-scale    run the cloud's clock N times faster (rollout rates and timeouts)  default 1
  --token         operator API token (or OTA_OPERATOR_TOKEN); generated and printed if absent
  --service-secret  the cloud services' MQTT secret (or OTA_SERVICE_SECRET)
  --external URL  run the services as clients of an external MQTT broker (mqtt://HOST:PORT);
                  authentication and ACLs are then that broker's job
  --tls-port N --tls-key FILE --tls-cert FILE [--tls-ca FILE]
                  an MQTT over TLS listener; with --tls-ca (the fleet CA) devices log in with
                  client certificates whose CN is their thing name
  --log-format text|json  operator log lines on stderr: words, or one JSON object a line
                                                                     default text
  --power-loss-durable  fsync every commit: state survives the host losing power, not only the
                  broker process dying (costs one fsync per device status update)
  --help          this text`;

export { UsageError };

/** What the flags ask for. */
export interface BrokerOptions {
  readonly help: boolean;
  readonly mqttPort: number;
  /** Listen address. */
  readonly host: string;
  /** How the operator log is written. */
  readonly logFormat: "text" | "json";
  /** Base URL others reach the HTTP port at, when not http://host:port. */
  readonly publicUrl?: string;
  readonly httpPort: number;
  readonly dataDir: string;
  readonly timeScale: number;
  readonly token: string;
  /** Whether the token was generated (then it is printed). */
  readonly tokenGenerated: boolean;
  readonly serviceSecret?: string;
  readonly external?: string;
  readonly tls?: { port: number; key: string; cert: string; ca?: string };
  readonly powerLossDurable: boolean;
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
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        port: { type: "string" },
        host: { type: "string" },
        "public-url": { type: "string" },
        "log-format": { type: "string" },
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
    throw new UsageError((error as Error).message);
  }
  const port = (name: string, text: string | undefined, fallback: number) => {
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!/^\d+$/.test(text) || value > 65535) {
      throw new UsageError(
        `Invalid --${name}: expected a port 0..65535: current value is '${text}'`,
      );
    }
    return value;
  };
  const timeScale = Number(values["time-scale"] ?? "1");
  if (!(timeScale > 0) || !Number.isFinite(timeScale)) {
    throw new UsageError(
      `Invalid --time-scale: expected a positive number: current value is '${
        values["time-scale"]
      }'`,
    );
  }
  if (values.external !== undefined && !/^mqtts?:\/\/[^\s/]+(:\d+)?\/?$/.test(values.external)) {
    throw new UsageError(
      `Invalid --external: expected mqtt://HOST:PORT: current value is '${values.external}'`,
    );
  }
  const logFormat = values["log-format"] ?? "text";
  if (logFormat !== "text" && logFormat !== "json") {
    throw new UsageError(
      `Invalid --log-format: expected text or json: current value is '${logFormat}'`,
    );
  }
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
    const key = readPem("tls-key", values["tls-key"]);
    const cert = readPem("tls-cert", values["tls-cert"]);
    if (!key || !cert) throw new UsageError("--tls-port needs --tls-key and --tls-cert");
    const ca = readPem("tls-ca", values["tls-ca"]);
    tls = { port: port("tls-port", values["tls-port"], 8883), key, cert, ...(ca ? { ca } : {}) };
  } else if (values["tls-key"] ?? values["tls-cert"] ?? values["tls-ca"]) {
    throw new UsageError("--tls-key, --tls-cert and --tls-ca need --tls-port");
  }
  const serviceSecret = values["service-secret"] ?? env("OTA_SERVICE_SECRET");
  return {
    help: values.help ?? false,
    mqttPort: port("port", values.port, 1883),
    host,
    logFormat,
    ...(publicUrl ? { publicUrl: publicUrl.replace(/\/+$/, "") } : {}),
    httpPort: port("http-port", values["http-port"], 8080),
    dataDir: values.data ?? "data",
    timeScale,
    token,
    tokenGenerated: given === undefined,
    ...(serviceSecret ? { serviceSecret } : {}),
    ...(values.external ? { external: values.external } : {}),
    ...(tls ? { tls } : {}),
    powerLossDurable: values["power-loss-durable"] ?? false,
  };
}
