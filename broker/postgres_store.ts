/**
 * The cloud's state in PostgreSQL, shared by the broker nodes of a cluster. Every node reads and
 * writes the same rows, so nothing mutable is cached: a change that reads before it writes runs
 * in a transaction and first takes the lock of what it changes (transaction-scoped advisory
 * locks, one per thing and one per job), so two nodes never race a read-modify-write. Job
 * records (which hold the rollout's pending things, the whole fleet at first) are cached by a
 * revision drawn from a sequence, unique even across rolled-back writes, so reading one that did
 * not change costs a small query, not its parse.
 *
 * Schema versions are applied in order and recorded in `schema_migrations`; two nodes starting
 * together take turns (an advisory lock around the migration).
 *
 * @example
 * ```ts ignore
 * const store = await PostgresStore.open("postgres://ota@127.0.0.1:5432/ota");
 * await store.addToGroup("fleet", "dev-1");
 * await store.close();
 * ```
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import postgres from "postgres";
import {
  type AuditEntry,
  auditFromRow,
  type CloudStore,
  deepFreeze,
  type ExecutionRecord,
  type JobRecord,
  thingFromRow,
  type ThingRecord,
} from "./store.ts";

/** A migration: the schema version it brings the database to, and its statements. */
interface Migration {
  readonly version: number;
  readonly description: string;
  readonly statements: readonly string[];
}

/** Every schema version, in order. Add new ones at the end; never change an applied one. */
export const MIGRATIONS: readonly Migration[] = [{
  version: 1,
  description: "things, groups, jobs, executions, audit, files, streams, records",
  statements: [
    "CREATE SEQUENCE write_order",
    "CREATE SEQUENCE job_revisions",
    "CREATE TABLE things (name TEXT PRIMARY KEY, secret TEXT NOT NULL, attributes TEXT NOT NULL)",
    `CREATE TABLE group_members (grp TEXT NOT NULL, thing TEXT NOT NULL,
       joined BIGINT NOT NULL DEFAULT nextval('write_order'), PRIMARY KEY (grp, thing))`,
    "CREATE INDEX group_members_thing ON group_members (thing)",
    `CREATE TABLE jobs (job_id TEXT PRIMARY KEY, body TEXT NOT NULL, created_at BIGINT NOT NULL,
       revision BIGINT NOT NULL)`,
    `CREATE TABLE executions (job_id TEXT NOT NULL, thing TEXT NOT NULL, status TEXT NOT NULL,
       body TEXT NOT NULL, deadline BIGINT, written BIGINT NOT NULL, PRIMARY KEY (job_id, thing))`,
    "CREATE INDEX executions_thing ON executions (thing, written)",
    "CREATE INDEX executions_job_status ON executions (job_id, status, deadline)",
    `CREATE TABLE audit (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, job_id TEXT, thing TEXT,
       event TEXT NOT NULL, detail TEXT NOT NULL)`,
    "CREATE INDEX audit_job ON audit (job_id, id)",
    "CREATE INDEX audit_thing ON audit (thing, id)",
    "CREATE TABLE files (key TEXT PRIMARY KEY, bytes BYTEA NOT NULL)",
    "CREATE TABLE streams (stream_id TEXT PRIMARY KEY, files TEXT NOT NULL)",
    `CREATE TABLE records (kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
       written BIGINT NOT NULL, PRIMARY KEY (kind, id))`,
    "CREATE INDEX records_kind ON records (kind, written)",
  ],
}, {
  version: 2,
  description: "notifications sent, so a new scheduler tells the things an old one did not",
  statements: [
    `CREATE TABLE notified (job_id TEXT NOT NULL, thing TEXT NOT NULL,
       execution_number INTEGER NOT NULL, PRIMARY KEY (job_id, thing, execution_number))`,
  ],
}];

/** Advisory lock classes (the first key of the two-key form). */
const LOCK_MIGRATION = 1;
const LOCK_THING = 2;
const LOCK_JOB = 3;

/** PostgreSQL's codes for a transaction that lost to another and may simply run again. */
const RETRYABLE = new Set(["40001", "40P01"]);
const RETRIES = 5;

type Sql = postgres.Sql;
type Row = Record<string, unknown>;

/** A transaction of this store: its connection and what to run once it commits. */
interface Transaction {
  readonly sql: postgres.ReservedSql;
  readonly callbacks: (() => void)[];
}

/** A PostgreSQL-backed {@linkcode CloudStore}. */
export class PostgresStore implements CloudStore {
  readonly #sql: Sql;
  readonly #context = new AsyncLocalStorage<Transaction>();
  /** Writes and transactions not settled yet (what `committed()` waits for). */
  #epoch: Epoch = newEpoch(null);
  /**
   * Connections kept reserved for transactions, idle ones here, and transactions waiting for
   * one: reserving a connection per transaction built a new postgres.js instance each time (a
   * tenth of a node's CPU), and one kept for transactions never carries anyone else's queries.
   */
  readonly #idleReserved: postgres.ReservedSql[] = [];
  readonly #waitingForReserved: ((sql: postgres.ReservedSql) => void)[] = [];
  #reservedCount = 0;
  readonly #maxReserved: number;
  /** Job records read so far, by revision. */
  readonly #jobs = new Map<string, { revision: string; job: JobRecord }>();
  /** Jobs being fetched, by `id@revision` (see `#load`). */
  readonly #loading = new Map<string, Promise<JobRecord | null>>();
  /** Commits so far and the seconds they took (transactions and single writes). */
  readonly commitStats = { commits: 0, seconds: 0 };

  private constructor(sql: Sql, maxReserved: number) {
    this.#sql = sql;
    this.#maxReserved = maxReserved;
  }

  /**
   * Connects (a pool of `connections`) and brings the schema up to date. Fails with a one-line
   * reason when the database cannot be reached.
   */
  static async open(
    url: string,
    options: { readonly connections?: number; readonly applicationName?: string } = {},
  ): Promise<PostgresStore> {
    const connections = Math.max(2, options.connections ?? 10);
    const sql = postgres(url, {
      max: connections,
      // Shown in pg_stat_activity, so an operator sees which node holds which session.
      connection: { application_name: options.applicationName ?? "ota-broker" },
      onnotice: () => {},
      // Idle connections are closed so a stopped node leaves no sessions behind for long.
      idle_timeout: 60,
      connect_timeout: 10,
    });
    try {
      await migrate(sql);
    } catch (error) {
      await sql.end({ timeout: 1 }).catch(() => {});
      throw new Error(`PostgreSQL at ${redacted(url)}: ${(error as Error).message}`);
    }
    // Most connections may be held by transactions; at least one always serves single queries.
    return new PostgresStore(sql, connections - Math.max(1, Math.floor(connections / 4)));
  }

  /** A connection reserved for one transaction at a time. */
  async #acquireReserved(): Promise<postgres.ReservedSql> {
    const idle = this.#idleReserved.pop();
    if (idle) return idle;
    if (this.#reservedCount < this.#maxReserved) {
      this.#reservedCount++;
      try {
        return await this.#sql.reserve();
      } catch (error) {
        this.#reservedCount--;
        throw error;
      }
    }
    return await new Promise((resolve) => this.#waitingForReserved.push(resolve));
  }

  /** Hands the connection to the next transaction, or drops it when it broke. */
  #releaseReserved(sql: postgres.ReservedSql, broken: boolean): void {
    if (broken) {
      this.#reservedCount--;
      sql.release();
      // Someone waiting gets a fresh connection instead.
      const next = this.#waitingForReserved.shift();
      if (next) {
        void this.#acquireReserved().then(next, () => this.#waitingForReserved.unshift(next));
      }
      return;
    }
    const next = this.#waitingForReserved.shift();
    if (next) next(sql);
    else this.#idleReserved.push(sql);
  }

  /** The schema versions applied, in order. */
  async appliedMigrations(): Promise<number[]> {
    const rows = await this.#sql`SELECT version FROM schema_migrations ORDER BY version`;
    return rows.map((r) => Number(r.version));
  }

  /** The connection of the transaction this context runs in, else the pool. */
  #q(): Sql | postgres.ReservedSql {
    return this.#context.getStore()?.sql ?? this.#sql;
  }

  /** Runs a write, tracked until it settles (it commits on its own outside a transaction). */
  #write<T>(run: (sql: Sql | postgres.ReservedSql) => Promise<T>): Promise<T> {
    const inTransaction = this.#context.getStore() !== undefined;
    const started = performance.now();
    const writing = run(this.#q());
    if (inTransaction) return writing;
    return this.#track(writing.then((result) => {
      this.commitStats.commits++;
      this.commitStats.seconds += (performance.now() - started) / 1000;
      return result;
    }));
  }

  /** Counts `promise` in the current epoch until it settles. */
  #track<T>(promise: Promise<T>): Promise<T> {
    const epoch = this.#epoch;
    epoch.open++;
    const settled = () => {
      if (--epoch.open === 0 && epoch.closed) epoch.end();
    };
    promise.then(settled, settled);
    return promise;
  }

  async putThing(thing: ThingRecord): Promise<void> {
    await this.#write((sql) =>
      sql`INSERT INTO things (name, secret, attributes)
          VALUES (${thing.name}, ${JSON.stringify(thing.secret)},
                  ${JSON.stringify(thing.attributes)})
          ON CONFLICT (name) DO UPDATE SET secret = EXCLUDED.secret,
            attributes = EXCLUDED.attributes`
    );
  }

  async getThing(name: string): Promise<ThingRecord | null> {
    const [row] = await this.#q()`SELECT * FROM things WHERE name = ${name}`;
    return row ? thingFromRow(row) : null;
  }

  async listThings(): Promise<ThingRecord[]> {
    return (await this.#q()`SELECT * FROM things ORDER BY name`).map(thingFromRow);
  }

  deleteThing(name: string): Promise<boolean> {
    return this.transaction(async () => {
      await this.#q()`DELETE FROM group_members WHERE thing = ${name}`;
      return (await this.#q()`DELETE FROM things WHERE name = ${name}`).count > 0;
    });
  }

  async listGroups(): Promise<{ group: string; members: number }[]> {
    const rows = await this.#q()`SELECT grp, COUNT(*) AS members FROM group_members
                                  GROUP BY grp ORDER BY grp`;
    return rows.map((r) => ({ group: String(r.grp), members: Number(r.members) }));
  }

  async addToGroup(group: string, thing: string): Promise<boolean> {
    const result = await this.#write((sql) =>
      sql`INSERT INTO group_members (grp, thing) VALUES (${group}, ${thing})
          ON CONFLICT DO NOTHING`
    );
    return result.count > 0;
  }

  async removeFromGroup(group: string, thing: string): Promise<boolean> {
    const result = await this.#write((sql) =>
      sql`DELETE FROM group_members WHERE grp = ${group} AND thing = ${thing}`
    );
    return result.count > 0;
  }

  async groupMembers(group: string): Promise<string[]> {
    const rows = await this.#q()`SELECT thing FROM group_members WHERE grp = ${group}
                                  ORDER BY joined`;
    return rows.map((r) => String(r.thing));
  }

  async groupsOf(thing: string): Promise<string[]> {
    const rows = await this.#q()`SELECT grp FROM group_members WHERE thing = ${thing}
                                  ORDER BY grp`;
    return rows.map((r) => String(r.grp));
  }

  async putJob(job: JobRecord): Promise<void> {
    const body = JSON.stringify(job);
    const [row] = await this.#write((sql) =>
      sql`INSERT INTO jobs (job_id, body, created_at, revision)
          VALUES (${job.jobId}, ${body}, ${job.createdAt}, nextval('job_revisions'))
          ON CONFLICT (job_id) DO UPDATE SET body = EXCLUDED.body,
            created_at = EXCLUDED.created_at, revision = EXCLUDED.revision
          RETURNING revision::text AS revision`
    );
    // What was written is what this node reads next, without the body coming back: after a
    // release every getJob of the release's things fetched and parsed the whole record again
    // (1.1 MB with 100,000 things still to release: half the scheduler's time). A revision of a
    // transaction that rolls back is never committed (a sequence), so it never matches a read.
    if (row) this.#jobs.set(job.jobId, { revision: String(row.revision), job: deepFreeze(job) });
  }

  async getJob(jobId: string): Promise<JobRecord | null> {
    const [row] = await this.#q()`SELECT revision::text AS revision FROM jobs
                                    WHERE job_id = ${jobId}`;
    if (!row) {
      this.#jobs.delete(jobId);
      return null;
    }
    const cached = this.#jobs.get(jobId);
    if (cached?.revision === String(row.revision)) return cached.job;
    return await this.#load(jobId, String(row.revision));
  }

  /**
   * The job's record fetched and parsed once however many readers find their copy stale at the
   * same time: every thing's shadow report looks at the jobs (continuous ones re-run on a thing
   * that runs older firmware), and 100,000 devices reporting as they booted each fetched and
   * parsed the whole 1.2 MB record (a quarter of every node's time, the machine saturated).
   */
  #load(jobId: string, revision: string): Promise<JobRecord | null> {
    const key = `${jobId}@${revision}`;
    let loading = this.#loading.get(key);
    if (!loading) {
      loading = (async () => {
        const [row] = await this.#q()`SELECT revision::text AS revision, body FROM jobs
                                        WHERE job_id = ${jobId}`;
        if (!row) {
          this.#jobs.delete(jobId);
          return null;
        }
        return this.#jobFrom(jobId, row);
      })().finally(() => this.#loading.delete(key));
      this.#loading.set(key, loading);
    }
    return loading;
  }

  /** Parses a job row that has its body, and caches it. */
  #jobFrom(jobId: string, row: Row): JobRecord {
    const job = deepFreeze(JSON.parse(String(row.body))) as JobRecord;
    this.#jobs.set(jobId, { revision: String(row.revision), job });
    return job;
  }

  async listJobs(): Promise<JobRecord[]> {
    const rows = await this.#q()`SELECT job_id, revision::text AS revision FROM jobs
                                  ORDER BY created_at, job_id`;
    const jobs = await Promise.all(rows.map((r) => {
      const cached = this.#jobs.get(String(r.job_id));
      return cached?.revision === String(r.revision)
        ? cached.job
        : this.#load(String(r.job_id), String(r.revision));
    }));
    return jobs.filter((job): job is JobRecord => job !== null);
  }

  async putExecution(execution: ExecutionRecord): Promise<void> {
    const body = JSON.stringify(execution);
    await this.#write((sql) =>
      sql`INSERT INTO executions (job_id, thing, status, body, deadline, written)
          VALUES (${execution.jobId}, ${execution.thing}, ${execution.status}, ${body},
                  ${execution.deadline}, nextval('write_order'))
          ON CONFLICT (job_id, thing) DO UPDATE SET status = EXCLUDED.status,
            body = EXCLUDED.body, deadline = EXCLUDED.deadline, written = EXCLUDED.written`
    );
  }

  async getExecution(jobId: string, thing: string): Promise<ExecutionRecord | null> {
    const [row] = await this.#q()`SELECT body FROM executions
                                   WHERE job_id = ${jobId} AND thing = ${thing}`;
    return row ? JSON.parse(String(row.body)) : null;
  }

  async executionsOfJob(jobId: string): Promise<ExecutionRecord[]> {
    const rows = await this.#q()`SELECT body FROM executions WHERE job_id = ${jobId}
                                  ORDER BY written`;
    return rows.map((r) => JSON.parse(String(r.body)));
  }

  async overdueExecutions(jobId: string, now: number): Promise<ExecutionRecord[]> {
    const rows = await this.#q()`SELECT body FROM executions
      WHERE job_id = ${jobId} AND status = 'IN_PROGRESS' AND deadline <= ${now}
      ORDER BY written`;
    return rows.map((r) => JSON.parse(String(r.body)));
  }

  async executionStatusCounts(jobId: string): Promise<Record<string, number>> {
    const rows = await this.#q()`SELECT status, COUNT(*) AS n FROM executions
                                  WHERE job_id = ${jobId} GROUP BY status`;
    return Object.fromEntries(rows.map((r) => [String(r.status), Number(r.n)]));
  }

  async executionsOfThing(thing: string): Promise<ExecutionRecord[]> {
    const rows = await this.#q()`SELECT body FROM executions WHERE thing = ${thing}
                                  ORDER BY written`;
    return rows.map((r) => JSON.parse(String(r.body)));
  }

  async executionsByStatus(): Promise<Record<string, number>> {
    const rows = await this.#q()`SELECT status, COUNT(*) AS n FROM executions GROUP BY status`;
    return Object.fromEntries(rows.map((r) => [String(r.status), Number(r.n)]));
  }

  async markNotified(jobId: string, thing: string, executionNumber: number): Promise<void> {
    await this.#write((sql) =>
      sql`INSERT INTO notified (job_id, thing, execution_number)
          VALUES (${jobId}, ${thing}, ${executionNumber}) ON CONFLICT DO NOTHING`
    );
  }

  async unnotifiedExecutions(jobId: string): Promise<ExecutionRecord[]> {
    const rows = await this.#q()`SELECT body FROM executions e
      WHERE job_id = ${jobId} AND status = 'QUEUED' AND NOT EXISTS (
        SELECT 1 FROM notified n WHERE n.job_id = e.job_id AND n.thing = e.thing
          AND n.execution_number = (e.body::json->>'executionNumber')::int)
      ORDER BY written`;
    return rows.map((r) => JSON.parse(String(r.body)));
  }

  async audit(entry: AuditEntry): Promise<void> {
    await this.#write((sql) =>
      sql`INSERT INTO audit (at, job_id, thing, event, detail)
          VALUES (${entry.at}, ${entry.jobId}, ${entry.thing}, ${entry.event},
                  ${JSON.stringify(entry.detail)})`
    );
  }

  async history(filter: { jobId?: string; thing?: string }): Promise<AuditEntry[]> {
    const jobId = filter.jobId ?? null;
    const thing = filter.thing ?? null;
    const rows = await this.#q()`SELECT at, job_id, thing, event, detail FROM audit
      WHERE (${jobId}::text IS NULL OR job_id = ${jobId})
        AND (${thing}::text IS NULL OR thing = ${thing})
      ORDER BY id`;
    return rows.map(auditFromRow);
  }

  async putFile(key: string, bytes: Uint8Array): Promise<void> {
    await this.#write((sql) =>
      sql`INSERT INTO files (key, bytes) VALUES (${key}, ${bytes})
          ON CONFLICT (key) DO UPDATE SET bytes = EXCLUDED.bytes`
    );
  }

  async getFile(key: string): Promise<Uint8Array | null> {
    const [row] = await this.#q()`SELECT bytes FROM files WHERE key = ${key}`;
    return row ? new Uint8Array(row.bytes as Uint8Array) : null;
  }

  async putStream(streamId: string, files: Readonly<Record<number, string>>): Promise<void> {
    await this.#write((sql) =>
      sql`INSERT INTO streams (stream_id, files) VALUES (${streamId}, ${JSON.stringify(files)})
          ON CONFLICT (stream_id) DO UPDATE SET files = EXCLUDED.files`
    );
  }

  async listStreams(): Promise<{ streamId: string; files: Record<number, string> }[]> {
    const rows = await this.#q()`SELECT stream_id, files FROM streams ORDER BY stream_id`;
    return rows.map((r) => ({ streamId: String(r.stream_id), files: JSON.parse(String(r.files)) }));
  }

  async putRecord(kind: string, id: string, value: unknown): Promise<void> {
    await this.#write((sql) =>
      sql`INSERT INTO records (kind, id, body, written)
          VALUES (${kind}, ${id}, ${JSON.stringify(value)}, nextval('write_order'))
          ON CONFLICT (kind, id) DO UPDATE SET body = EXCLUDED.body, written = EXCLUDED.written`
    );
  }

  async getRecord<T>(kind: string, id: string): Promise<T | null> {
    const [row] = await this.#q()`SELECT body FROM records WHERE kind = ${kind} AND id = ${id}`;
    return row ? JSON.parse(String(row.body)) : null;
  }

  async listRecords<T>(kind: string): Promise<T[]> {
    const rows = await this.#q()`SELECT body FROM records WHERE kind = ${kind} ORDER BY written`;
    return rows.map((r) => JSON.parse(String(r.body)));
  }

  /**
   * Runs `work` in a transaction; one that lost a deadlock or a serialization conflict to
   * another node runs again (its callbacks from the lost attempt are dropped).
   */
  transaction<T>(work: () => Promise<T>): Promise<T> {
    if (this.#context.getStore()) return work();
    return this.#track(this.#runTransaction(work));
  }

  /**
   * One attempt after another until one commits or fails for good. Each runs on a connection
   * reserved for it before BEGIN is sent: postgres.js 3.4.9's `sql.begin` can send BEGIN on a
   * connection it has not reserved when the pool is busy (porsager/postgres#823, #1189), and then
   * other queries run inside that transaction; seen here as UNSAFE_TRANSACTION at 10,000 devices.
   */
  async #runTransaction<T>(work: () => Promise<T>): Promise<T> {
    for (let attempt = 1;; attempt++) {
      const started = performance.now();
      const sql = await this.#acquireReserved();
      const transaction: Transaction = { sql, callbacks: [] };
      let broken = false;
      try {
        // Sent with the work's first query in one write; its failure fails them both.
        const begun = sql`BEGIN`.execute();
        begun.catch(() => {});
        let result: T;
        try {
          result = await this.#context.run(transaction, work);
          await begun;
          await sql`COMMIT`;
        } catch (error) {
          await sql`ROLLBACK`.catch(() => {});
          throw error;
        }
        this.commitStats.commits++;
        this.commitStats.seconds += (performance.now() - started) / 1000;
        for (const callback of transaction.callbacks) callback();
        return result;
      } catch (error) {
        const code = (error as { code?: string }).code;
        // A connection that failed under us is not given to the next transaction.
        broken = typeof code === "string" && code.startsWith("CONNECTION_");
        if (attempt < RETRIES && code !== undefined && RETRYABLE.has(code)) continue;
        throw error;
      } finally {
        this.#releaseReserved(sql, broken);
      }
    }
  }

  async lockThing(thing: string): Promise<void> {
    await this.#lock(LOCK_THING, thing);
  }

  async lockJob(jobId: string): Promise<void> {
    await this.#lock(LOCK_JOB, jobId);
  }

  async #lock(kind: number, key: string): Promise<void> {
    const transaction = this.#context.getStore();
    if (!transaction) throw new Error("a lock is taken inside a transaction");
    await transaction.sql`SELECT pg_advisory_xact_lock(${kind}, hashtext(${key}))`;
  }

  /**
   * Inside a transaction: runs `callback` once it commits. Outside: at once, for every write
   * here commits when its promise resolves, and callers await theirs. (Waiting for every write
   * in flight on the node instead, as a group commit must, held every reply of the node behind
   * the slowest transaction of any other device.)
   */
  afterCommit(callback: () => void): void {
    const transaction = this.#context.getStore();
    if (transaction) transaction.callbacks.push(callback);
    else callback();
  }

  /**
   * Resolves once the writes begun so far have settled: the current epoch is closed (later
   * writes count in the next) and waited for with every earlier one, in O(1) however many
   * writes are in flight (a copy of them all per call, with thousands in flight and a call per
   * device message, was most of a node's CPU at 3,000 devices).
   */
  committed(): Promise<void> {
    const epoch = this.#epoch;
    this.#epoch = newEpoch(epoch);
    epoch.closed = true;
    if (epoch.open === 0) epoch.end();
    return epoch.done;
  }

  async check(): Promise<void> {
    await this.#sql`SELECT 1`;
  }

  async close(): Promise<void> {
    await this.committed();
    for (const sql of this.#idleReserved.splice(0)) sql.release();
    await this.#sql.end({ timeout: 5 });
  }
}

/**
 * Writes begun between two calls of `committed()`: how many are still open, and a promise that
 * resolves once they and every earlier epoch's have settled.
 */
interface Epoch {
  open: number;
  closed: boolean;
  readonly done: Promise<void>;
  readonly end: () => void;
}

function newEpoch(previous: Epoch | null): Epoch {
  let end!: () => void;
  const own = new Promise<void>((resolve) => end = resolve);
  return {
    open: 0,
    closed: false,
    done: previous ? Promise.all([previous.done, own]).then(() => {}) : own,
    end,
  };
}

/** Applies the migrations not applied yet, in order, one transaction each. */
async function migrate(sql: Sql): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${LOCK_MIGRATION}, 0)`;
    await tx`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY, description TEXT NOT NULL,
      applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`;
    const applied = new Set(
      (await tx`SELECT version FROM schema_migrations`).map((r) => Number(r.version)),
    );
    const newest = Math.max(0, ...applied);
    const known = Math.max(...MIGRATIONS.map((m) => m.version));
    if (newest > known) {
      throw new Error(
        `the database is at schema version ${newest}, newer than this broker knows (${known}): upgrade the broker`,
      );
    }
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      for (const statement of migration.statements) await tx.unsafe(statement);
      await tx`INSERT INTO schema_migrations (version, description)
               VALUES (${migration.version}, ${migration.description})`;
    }
  });
}

/** The URL without its password, for messages. */
function redacted(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable URL)";
  }
}
