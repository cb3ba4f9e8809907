/**
 * The cluster's shared services started here: a real redis-server and a real PostgreSQL server
 * (Debian packages), each on a free port in a temporary directory, answering, then stopped with
 * nothing left behind. Without the programs the tests are reported ignored with the package.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { postgresBinDir, startPostgres, startRedis } from "../../cluster/local_services.ts";
import { systemProgram } from "../helpers/system_program.ts";

const REDIS = systemProgram("redis-server", "redis-server");
const POSTGRES = systemProgram("pg_ctlcluster", "postgresql");

/** Whether a TCP connection to the port is accepted. */
async function listening(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "local services: a redis-server on a free port stores and answers, and is gone after stop",
  ignore: REDIS.ignore,
  async fn() {
    const redis = await startRedis(REDIS.require());
    try {
      assert.match(redis.url, /^redis:\/\/127\.0\.0\.1:\d+$/);
      const connection = await Deno.connect({ hostname: redis.host, port: redis.port });
      await connection.write(new TextEncoder().encode("SET k v\r\nGET k\r\n"));
      const buffer = new Uint8Array(64);
      let text = "";
      while (!text.includes("$1\r\nv\r\n")) {
        const n = await connection.read(buffer);
        if (n === null) break;
        text += new TextDecoder().decode(buffer.subarray(0, n));
      }
      connection.close();
      assert.equal(text, "+OK\r\n$1\r\nv\r\n");
    } finally {
      await redis.stop();
    }
    assert.equal(await listening(redis.port), false, "stopped");
    await redis.stop(); // a second stop is harmless
  },
});

Deno.test({
  name:
    "local services: a PostgreSQL cluster made for the run takes a schema and rows, and is removed after stop",
  ignore: POSTGRES.ignore,
  // The postgres client keeps a timer for idle connections until its pool ends.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    POSTGRES.require();
    assert.ok(postgresBinDir() !== null);
    const db = await startPostgres();
    try {
      assert.match(db.url, /^postgres:\/\/ota@127\.0\.0\.1:\d+\/ota$/);
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      try {
        await sql`CREATE TABLE things (name TEXT PRIMARY KEY, version INTEGER NOT NULL)`;
        await sql`INSERT INTO things ${sql([{ name: "dev-1", version: 1 }])}`;
        // A conditional update, the form expectedVersion takes across nodes.
        const moved = await sql`UPDATE things SET version = 2 WHERE name = 'dev-1' AND version = 1`;
        const stale = await sql`UPDATE things SET version = 3 WHERE name = 'dev-1' AND version = 1`;
        assert.deepEqual([moved.count, stale.count], [1, 0]);
        const [row] = await sql`SELECT version FROM things WHERE name = 'dev-1'`;
        assert.equal(row!.version, 2);
      } finally {
        await sql.end();
      }
    } finally {
      await db.stop();
    }
    assert.equal(await listening(db.port), false, "stopped");
  },
});
