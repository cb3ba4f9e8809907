/**
 * The PostgreSQL store against a real PostgreSQL server (Debian's `postgresql`, started on a free
 * port in a temporary directory): the store contract every backend passes, its migrations, and
 * two stores on one database standing for two broker nodes (locks, cached jobs, the version
 * semantics of an execution updated through both at once).
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { JobService } from "../../broker/job_service.ts";
import { MIGRATIONS, PostgresStore } from "../../broker/postgres_store.ts";
import { type LocalService, startPostgres } from "../../cluster/local_services.ts";
import { ManualClock } from "../../lib/clock.ts";
import { freePort } from "../../lib/free_port.ts";
import { systemProgram } from "../helpers/system_program.ts";
import { execution, jobRecord, STORE_CASES } from "./store_contract.ts";

const POSTGRES = systemProgram("pg_ctlcluster", "postgresql");

/** A fresh database on the server, and its URL. */
async function freshDatabase(server: LocalService, name: string): Promise<string> {
  const admin = postgres(server.url, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return server.url.replace(/\/[^/]+$/, `/${name}`);
}

Deno.test({
  name: "PostgreSQL store",
  ignore: POSTGRES.ignore,
  sanitizeResources: false, // the postgres client's sockets close after the test's last step
  async fn(t) {
    POSTGRES.require();
    const server = await startPostgres();
    let databases = 0;
    const database = () => freshDatabase(server, `case_${++databases}`);
    try {
      for (const { name, run } of STORE_CASES) {
        await t.step(`store contract (PostgreSQL): ${name}`, async () => {
          const store = await PostgresStore.open(await database());
          try {
            await run(store);
          } finally {
            await store.close();
          }
        });
      }

      await t.step(
        "schema versions are applied in order and recorded once; a newer database is refused",
        async () => {
          const url = await database();
          const first = await PostgresStore.open(url);
          assert.deepEqual(await first.appliedMigrations(), MIGRATIONS.map((m) => m.version));
          await first.putThing({ name: "kept", secret: { salt: "s", hash: "h" }, attributes: {} });
          await first.close();
          const again = await PostgresStore.open(url);
          assert.deepEqual(await again.appliedMigrations(), MIGRATIONS.map((m) => m.version));
          assert.equal((await again.getThing("kept"))?.name, "kept", "reopening keeps the data");
          await again.close();
          const admin = postgres(url, { max: 1, onnotice: () => {} });
          await admin`INSERT INTO schema_migrations (version, description) VALUES (999, 'future')`;
          await admin.end();
          await assert.rejects(
            PostgresStore.open(url),
            new RegExp(
              `schema version 999, newer than this broker knows \\(${
                MIGRATIONS.at(-1)!.version
              }\\): upgrade the broker`,
            ),
          );
        },
      );

      await t.step(
        "an unreachable database is one line naming it, without the password",
        async () => {
          const port = await freePort();
          await assert.rejects(PostgresStore.open(`postgres://ota:hunter2@127.0.0.1:${port}/ota`), (
            error: Error,
          ) => {
            assert.match(
              error.message,
              new RegExp(`^PostgreSQL at postgres://ota:\\*\\*\\*@127\\.0\\.0\\.1:${port}/ota: `),
            );
            assert.doesNotMatch(error.message, /hunter2|\n/);
            return true;
          });
        },
      );

      await t.step(
        "two nodes: locked read-modify-writes through both lose nothing; a job one node changes is seen by the other",
        async () => {
          const url = await database();
          const a = await PostgresStore.open(url);
          const b = await PostgresStore.open(url);
          try {
            await a.putExecution(execution("job-a", "t1", "IN_PROGRESS", { versionNumber: 0 }));
            const bump = (store: PostgresStore) =>
              store.transaction(async () => {
                await store.lockThing("t1");
                const current = (await store.getExecution("job-a", "t1"))!;
                await store.putExecution({ ...current, versionNumber: current.versionNumber + 1 });
              });
            await Promise.all(Array.from({ length: 40 }, (_, i) => bump(i % 2 ? a : b)));
            assert.equal((await b.getExecution("job-a", "t1"))?.versionNumber, 40);
            await a.putJob(jobRecord("job-a", { pending: ["t1", "t2"] }));
            assert.deepEqual((await b.getJob("job-a"))?.pending, ["t1", "t2"]);
            await b.putJob(jobRecord("job-a", { pending: ["t2"] }));
            assert.deepEqual(
              (await a.getJob("job-a"))?.pending,
              ["t2"],
              "a's cached copy is stale",
            );
            assert.deepEqual((await a.listJobs()).map((j) => j.pending), [["t2"]]);
            // A rolled-back write never leaves a cached revision another write could reuse.
            await assert.rejects(
              a.transaction(async () => {
                await a.putJob(jobRecord("job-a", { pending: ["rolled", "back"] }));
                assert.deepEqual((await a.getJob("job-a"))?.pending, ["rolled", "back"]);
                throw new Error("abandoned");
              }),
              /abandoned/,
            );
            await b.putJob(jobRecord("job-a", { pending: ["t3"] }));
            assert.deepEqual((await a.getJob("job-a"))?.pending, ["t3"]);
            // Reads on one node racing each other and another node's writes never lose the job
            // (a read answered "unchanged" while a concurrent read cached a newer revision).
            const reads: Promise<unknown>[] = [];
            for (let i = 0; i < 200; i++) {
              reads.push(a.getJob("job-a"));
              if (i % 6 === 0) reads.push(b.putJob(jobRecord("job-a", { pending: [`p${i}`] })));
            }
            const seen = (await Promise.all(reads)).filter((r) => r !== undefined);
            assert.ok(seen.every((job) => job !== null), "a job never reads as missing");
            // Readers that find their copy stale at once share one fetch and parse of the record
            // (100,000 shadow reports each parsed a 1.2 MB job): one object for them all.
            await b.putJob(
              jobRecord("job-a", { pending: Array.from({ length: 5000 }, (_, i) => `t${i}`) }),
            );
            const together = await Promise.all(
              Array.from(
                { length: 30 },
                (_, i) => i % 2 ? a.getJob("job-a") : a.listJobs().then((jobs) => jobs[0]),
              ),
            );
            assert.equal(together[0]?.pending.length, 5000);
            assert.equal(new Set(together).size, 1, "one parse shared by every reader");
          } finally {
            await a.close();
            await b.close();
          }
        },
      );

      await t.step(
        "two nodes: the same update with the same expectedVersion through both at once is accepted once",
        async () => {
          const url = await database();
          const clock = new ManualClock(Date.parse("2026-06-01T00:00:00Z"));
          const nodes = await Promise.all([0, 1].map(async () => {
            const store = await PostgresStore.open(url);
            const replies: { topic: string; body: Record<string, unknown> }[] = [];
            const jobs = new JobService({
              store,
              clock,
              publisher: {
                publish: (topic, payload) => {
                  replies.push({ topic, body: JSON.parse(String(payload)) });
                  return Promise.resolve();
                },
              },
            });
            return { store, jobs, replies };
          }));
          try {
            const [a, b] = nodes as [typeof nodes[0], typeof nodes[0]];
            await a.store.addToGroup("fleet", "dev-1");
            assert.ok(
              (await a.jobs.createJob({
                jobId: "job-1",
                document: { op: "update" },
                targets: { groups: ["fleet"] },
              })).ok,
            );
            const update = (node: typeof a, status: string, version: number) =>
              node.jobs.handleDeviceMessage(
                "dev-1",
                "$aws/things/dev-1/jobs/job-1/update",
                new TextEncoder().encode(JSON.stringify({ status, expectedVersion: version })),
              );
            for (let round = 0; round < 5; round++) {
              const version = (await a.store.getExecution("job-1", "dev-1"))!.versionNumber;
              await Promise.all([
                update(a, "IN_PROGRESS", version),
                update(b, "IN_PROGRESS", version),
              ]);
              await Promise.all(nodes.map((n) => n.jobs.flush()));
              const answers = nodes.flatMap((n) => n.replies.splice(0))
                .filter((r) => r.topic.startsWith("$aws/things/dev-1/jobs/job-1/update/"));
              assert.deepEqual(
                answers.map((r) => r.topic.split("/").at(-1)).sort(),
                ["accepted", "rejected"],
                `round ${round}: one accepted, one rejected`,
              );
              const rejected = answers.find((r) => r.topic.endsWith("/rejected"))!;
              assert.equal(rejected.body.code, "VersionMismatch");
              assert.equal(
                (await b.store.getExecution("job-1", "dev-1"))!.versionNumber,
                version + 1,
                "exactly one update was applied",
              );
            }
          } finally {
            for (const node of nodes) {
              await node.jobs.stop();
              await node.store.close();
            }
          }
        },
      );

      await t.step(
        "the scheduler's node acknowledges ended executions while the job's lock is held elsewhere, and reviews the job once after",
        async () => {
          const url = await database();
          const store = await PostgresStore.open(url, { applicationName: "review-test" });
          const replies: string[] = [];
          const jobs = new JobService({
            store,
            clock: new ManualClock(Date.parse("2026-06-01T00:00:00Z")),
            publisher: {
              publish: (topic) => {
                replies.push(topic);
                return Promise.resolve();
              },
            },
          });
          // Another session holding the job's lock, as the scheduler does while it writes a wave.
          const other = postgres(url, { max: 1, onnotice: () => {} });
          const holder = await other.reserve();
          try {
            const things = ["dev-1", "dev-2", "dev-3", "dev-4", "dev-5"];
            for (const thing of things) await store.addToGroup("fleet", thing);
            assert.ok(
              (await jobs.createJob({
                jobId: "job-1",
                document: { op: "update" },
                targets: { groups: ["fleet"] },
              })).ok,
            );
            const update = (thing: string, status: string) =>
              jobs.handleDeviceMessage(
                thing,
                `$aws/things/${thing}/jobs/job-1/update`,
                new TextEncoder().encode(JSON.stringify({ status })),
              );
            for (const thing of things) await update(thing, "IN_PROGRESS");
            await holder`SELECT pg_advisory_lock(3, hashtext('job-1'))`;
            // A bound for a reply held behind the lock (forever without the fix), not a speed limit.
            let bound: ReturnType<typeof setTimeout> | undefined;
            const answered = await Promise.race([
              Promise.all(things.map((thing) => update(thing, "SUCCEEDED"))).then(() => true),
              new Promise<false>((resolve) => bound = setTimeout(() => resolve(false), 30_000)),
            ]);
            clearTimeout(bound);
            assert.ok(answered, "every SUCCEEDED is answered while the job's lock is held");
            for (const thing of things) {
              assert.ok(replies.includes(`$aws/things/${thing}/jobs/job-1/update/accepted`), thing);
            }
            const waiting = async () =>
              Number(
                (await holder`SELECT count(*) AS n FROM pg_stat_activity
                  WHERE application_name = 'review-test' AND wait_event_type = 'Lock'`)[0]!.n,
              );
            while (await waiting() === 0) await new Promise((r) => setTimeout(r, 20));
            assert.equal(await waiting(), 1, "one review waits for the lock, not one per device");
            assert.equal((await store.getJob("job-1"))!.status, "IN_PROGRESS");
            await holder`SELECT pg_advisory_unlock(3, hashtext('job-1'))`;
            await jobs.flush();
            assert.equal((await store.getJob("job-1"))!.status, "COMPLETED");
          } finally {
            holder.release();
            await other.end();
            await jobs.stop();
            await store.close();
          }
        },
      );
    } finally {
      await server.stop();
    }
  },
});
