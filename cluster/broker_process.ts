/**
 * `deno task broker` as a child process on given ports, with a data directory or as a cluster
 * node (`extraArgs`): the nodes of a local cluster, and the broker of restart tests.
 *
 * @example
 * ```ts ignore
 * const node = await startBrokerProcess({ mqttPort: 0, httpPort: 0, token, serviceSecret,
 *   extraArgs: ["--cluster", redisUrl, "--db", dbUrl, "--node-id", "node-1"] });
 * console.log(node.mqtt, node.api);
 * await node.stop();
 * ```
 *
 * @module
 */

import { V8_FLAGS } from "../lib/runtime_flags.ts";

/** A running broker process. */
export interface BrokerProcess {
  readonly api: string;
  readonly mqtt: string;
  readonly child: Deno.ChildProcess;
  /** The ready line the broker printed. */
  readonly ready: Record<string, unknown>;
  /** kill -9, and wait for the process to be gone. */
  kill(): Promise<void>;
  /** SIGTERM, and wait. */
  stop(): Promise<void>;
}

/** A free loopback port (for a process to listen on). */
export { freePort } from "../lib/free_port.ts";

/** Starts the broker and waits for its ready line. */
export async function startBrokerProcess(options: {
  /** SQLite's directory (absent: `extraArgs` name the store, e.g. `--db`). */
  readonly dataDir?: string;
  /** More flags (`--cluster`, `--db`, `--node-id`...). */
  readonly extraArgs?: readonly string[];
  /** Told each line of the broker's operator log (stderr); without it they are dropped. */
  readonly onLog?: (line: string) => void;
  readonly mqttPort: number;
  readonly httpPort: number;
  readonly token: string;
  readonly serviceSecret: string;
  /**
   * The secret signing-profile keys are sealed with (OTA_PROFILE_KEY): the same for every node and
   * restart. @default {derived from serviceSecret}
   */
  readonly profileKey?: string;
  readonly timeScale?: number;
  /** Where the scaled clocks read real time: the same for every node of a cluster. */
  readonly timeOrigin?: number;
}): Promise<BrokerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      V8_FLAGS,
      "--allow-all",
      new URL("../broker/main.ts", import.meta.url).pathname,
      "--port",
      String(options.mqttPort),
      "--http-port",
      String(options.httpPort),
      ...(options.dataDir !== undefined ? ["--data", options.dataDir] : []),
      ...(options.extraArgs ?? []),
      "--time-scale",
      String(options.timeScale ?? 60),
      ...(options.timeOrigin !== undefined ? ["--time-origin", String(options.timeOrigin)] : []),
      "--token",
      options.token,
      "--service-secret",
      options.serviceSecret,
    ],
    env: { OTA_PROFILE_KEY: options.profileKey ?? `profile-key:${options.serviceSecret}` },
    stdout: "piped",
    stderr: options.onLog ? "piped" : "null",
  }).spawn();
  if (options.onLog) void forwardLines(child.stderr, options.onLog);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  // A broker that never says it is ready (stuck, or its output lost) is given up on.
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the broker process exited before it was ready");
      text += value;
    }
  } catch (error) {
    await child.status;
    throw error;
  } finally {
    clearTimeout(timer);
  }
  reader.releaseLock();
  void child.stdout.cancel().catch(() => {});
  const ready = JSON.parse(text.split("\n")[0]!);
  return {
    ready,
    api: String(ready.api).replace(/\/$/, ""),
    mqtt: String(ready.mqtt),
    child,
    async kill() {
      child.kill("SIGKILL");
      await child.status;
    },
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** Calls `onLine` with each non-empty line of `stream` as it comes. */
export async function forwardLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let rest = "";
  try {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop()!;
      for (const line of lines) if (line.trim() !== "") onLine(line);
    }
  } catch {
    // the process went away mid-line
  }
  if (rest.trim() !== "") onLine(rest);
}
