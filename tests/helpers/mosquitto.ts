/** Starts a mosquitto broker (Debian package) on a free loopback port for one test. */
import { systemProgram } from "./system_program.ts";
import { freePort } from "../../lib/free_port.ts";

/** The mosquitto program, or why its tests are ignored. */
export const MOSQUITTO = systemProgram("mosquitto", "mosquitto");

/** A running mosquitto. */
export interface Mosquitto {
  readonly url: string;
  stop(): Promise<void>;
}

async function waitForPort(
  port: number,
  child: Deno.ChildProcess,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`mosquitto did not listen on ${port}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/** Starts mosquitto with anonymous access on 127.0.0.1 (a fresh config in a temp dir). */
export async function startMosquitto(): Promise<Mosquitto> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "ota-mosquitto-" });
  const config = `${dir}/mosquitto.conf`;
  await Deno.writeTextFile(
    config,
    `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`,
  );
  const child = new Deno.Command(MOSQUITTO.require(), {
    args: ["-c", config],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitForPort(port, child, 10_000);
  return {
    url: `mqtt://127.0.0.1:${port}`,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}
