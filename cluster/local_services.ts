/**
 * The services a cluster shares, started on this machine for a run or a test: a redis-server and
 * a PostgreSQL server from the Debian packages, each in its own temporary directory on a free
 * loopback port, stopped and removed again at the end. PostgreSQL refuses to run as root, so as
 * root both `initdb` and the server run as the unprivileged user `nobody`.
 *
 * @example
 * ```ts ignore
 * const redis = await startRedis();
 * const db = await startPostgres();
 * // ... redis.url is redis://127.0.0.1:PORT, db.url postgres://ota@127.0.0.1:PORT/ota
 * await db.stop();
 * await redis.stop();
 * ```
 *
 * @module
 */

import { freePort } from "../lib/free_port.ts";

/** A service started here, and how to reach and stop it. */
export interface LocalService {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Stops the server and removes its directory (idempotent). */
  stop(): Promise<void>;
}

/** Where Debian puts PostgreSQL's server programs (the newest installed version). */
export function postgresBinDir(root = "/usr/lib/postgresql"): string | null {
  try {
    const versions = [...Deno.readDirSync(root)]
      .filter((entry) => entry.isDirectory && /^\d+$/.test(entry.name))
      .map((entry) => Number(entry.name))
      .sort((a, b) => b - a);
    return versions.length > 0 ? `${root}/${versions[0]}/bin` : null;
  } catch {
    return null;
  }
}

/** Waits until `ready()` holds, or throws with the service's own output after `ms`. */
async function waitReady(
  what: string,
  ready: () => Promise<boolean>,
  exited: Promise<Deno.CommandStatus>,
  output: () => string,
  ms = 30_000,
): Promise<void> {
  const gone: { status: Deno.CommandStatus | null } = { status: null };
  exited.then((status) => gone.status = status);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (gone.status) {
      throw new Error(`${what} exited with ${gone.status.code} before it was ready: ${output()}`);
    }
    if (await ready()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${what} was not ready within ${ms / 1000} s: ${output()}`);
}

/** Collects a child's output (the tail of it), so a failure to start can say why. */
function collect(stream: ReadableStream<Uint8Array>): () => string {
  let text = "";
  stream.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => void (text = (text + chunk).slice(-2000)) }),
  ).catch(() => {});
  return () => text.trim().split("\n").slice(-5).join(" | ");
}

/** Sends one line on a TCP connection and reads the start of the answer (null: no connection). */
async function ask(port: number, line: string): Promise<string | null> {
  let connection: Deno.TcpConn;
  try {
    connection = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch {
    return null;
  }
  try {
    await connection.write(new TextEncoder().encode(line));
    const buffer = new Uint8Array(64);
    const n = await connection.read(buffer);
    return n === null ? "" : new TextDecoder().decode(buffer.subarray(0, n));
  } catch {
    return null;
  } finally {
    connection.close();
  }
}

/** Starts a redis-server with nothing persisted, on a free loopback port. */
export async function startRedis(program = "redis-server"): Promise<LocalService> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "ota-redis-" });
  const child = new Deno.Command(program, {
    args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = collect(child.stdout);
  collect(child.stderr);
  let stopped: Promise<void> | null = null;
  const stop = () =>
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      await child.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();
  try {
    await waitReady(
      "redis-server",
      async () => (await ask(port, "PING\r\n"))?.startsWith("+PONG") ?? false,
      child.status,
      output,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: `redis://127.0.0.1:${port}`, host: "127.0.0.1", port, stop };
}

/** The uid and gid of `nobody`, when this process is root (null otherwise). */
function unprivilegedUser(): { uid: number; gid: number } | null {
  if (Deno.uid() !== 0) return null;
  const line = Deno.readTextFileSync("/etc/passwd").split("\n").find((l) =>
    l.startsWith("nobody:")
  );
  const [, , uid, gid] = line?.split(":") ?? [];
  if (uid === undefined || gid === undefined) throw new Error("no user 'nobody' to run PostgreSQL");
  return { uid: Number(uid), gid: Number(gid) };
}

/** Runs a PostgreSQL program, as `nobody` when this process is root. */
function asPostgresUser(program: string, args: string[], root: boolean): Deno.Command {
  return root
    ? new Deno.Command("runuser", {
      args: ["-u", "nobody", "--", program, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    })
    : new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped" });
}

/**
 * Starts a PostgreSQL server in a fresh cluster (user `ota`, database `ota`, trust authentication
 * on loopback only), on a free port.
 */
export async function startPostgres(bin = postgresBinDir()): Promise<LocalService> {
  if (bin === null) throw new Error("PostgreSQL is not installed (apt-get install postgresql)");
  const user = unprivilegedUser();
  const dir = await Deno.makeTempDir({ prefix: "ota-postgres-" });
  if (user) await Deno.chown(dir, user.uid, user.gid);
  const data = `${dir}/data`;
  const init = await asPostgresUser(`${bin}/initdb`, [
    "-D",
    data,
    "-U",
    "ota",
    "--auth=trust",
    "--no-sync",
    "-E",
    "UTF8",
  ], user !== null).output();
  if (!init.success) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(`initdb failed: ${new TextDecoder().decode(init.stderr).trim()}`);
  }
  const port = freePort();
  const child = asPostgresUser(`${bin}/postgres`, [
    "-D",
    data,
    "-p",
    String(port),
    "-k",
    dir,
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    "fsync=off",
  ], user !== null).spawn();
  const output = collect(child.stderr);
  collect(child.stdout);
  let stopped: Promise<void> | null = null;
  const stop = () =>
    stopped ??= (async () => {
      // pg_ctl's fast stop ends every session and the server cleanly (a signal to runuser
      // would have to be passed on).
      await asPostgresUser(`${bin}/pg_ctl`, ["stop", "-D", data, "-m", "fast", "-s"], user !== null)
        .output();
      await child.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();
  try {
    await waitReady(
      "PostgreSQL",
      async () =>
        (await asPostgresUser(`${bin}/pg_isready`, [
          "-h",
          "127.0.0.1",
          "-p",
          String(port),
          "-q",
        ], user !== null).output()).success,
      child.status,
      output,
    );
    const created = await asPostgresUser(`${bin}/createdb`, [
      "-h",
      "127.0.0.1",
      "-p",
      String(port),
      "-U",
      "ota",
      "ota",
    ], user !== null).output();
    if (!created.success) {
      throw new Error(`createdb failed: ${new TextDecoder().decode(created.stderr).trim()}`);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: `postgres://ota@127.0.0.1:${port}/ota`, host: "127.0.0.1", port, stop };
}
