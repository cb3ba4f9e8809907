/**
 * Which node of a cluster runs the rollout scheduler: the one holding a PostgreSQL session-level
 * advisory lock on its own connection. PostgreSQL releases the lock when that session ends (the
 * node exits, is killed, or loses the database), so another node's next attempt takes it over;
 * a node that cannot reach the database any more stops scheduling at once, before its session is
 * known to be gone, so two schedulers never run side by side for long.
 *
 * @example
 * ```ts ignore
 * const lease = await SchedulerLease.start(dbUrl, {
 *   onChange: (held) => jobs.scheduling = held,
 * });
 * // ...
 * await lease.stop();
 * ```
 *
 * @module
 */

import postgres from "postgres";

/** The advisory lock's keys (class, id): one scheduler per database. */
const LOCK_CLASS = 100;
const LOCK_ID = 1;

/** Options of {@linkcode SchedulerLease.start}. */
export interface SchedulerLeaseOptions {
  /** Told when this node starts or stops holding the lease. */
  readonly onChange: (held: boolean) => void;
  /** How often to try to take the lease, or check it is still held (ms). @default {1000} */
  readonly intervalMs?: number;
  readonly log?: (line: string) => void;
}

/** A node's claim on the scheduler. */
export class SchedulerLease {
  readonly #url: string;
  readonly #options: SchedulerLeaseOptions;
  #sql: postgres.Sql | null = null;
  #held = false;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #stopped = false;
  #round: Promise<void> = Promise.resolve();

  private constructor(url: string, options: SchedulerLeaseOptions) {
    this.#url = url;
    this.#options = options;
  }

  /** Starts trying for the lease; resolves after the first try. */
  static async start(url: string, options: SchedulerLeaseOptions): Promise<SchedulerLease> {
    const lease = new SchedulerLease(url, options);
    await lease.#try();
    lease.#schedule();
    return lease;
  }

  /** Whether this node holds the lease now. */
  get held(): boolean {
    return this.#held;
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#round = this.#try().finally(() => this.#schedule());
    }, this.#options.intervalMs ?? 1000);
  }

  async #try(): Promise<void> {
    try {
      // One connection of its own: the lease lives exactly as long as this session.
      this.#sql ??= postgres(this.#url, {
        max: 1,
        onnotice: () => {},
        idle_timeout: 0,
        connect_timeout: 5,
      });
      if (this.#held) {
        await this.#sql`SELECT 1`;
        return;
      }
      const [row] = await this.#sql`SELECT pg_try_advisory_lock(${LOCK_CLASS}, ${LOCK_ID}) AS ok`;
      if (row?.ok === true) this.#set(true);
    } catch (error) {
      // The session (and with it the lock, if held) is gone or going: stop scheduling now and
      // start a new session at the next try.
      this.#options.log?.(`scheduler lease: ${(error as Error).message}`);
      const sql = this.#sql;
      this.#sql = null;
      this.#set(false);
      await sql?.end({ timeout: 0 }).catch(() => {});
    }
  }

  #set(held: boolean): void {
    if (held === this.#held) return;
    this.#held = held;
    this.#options.onChange(held);
  }

  /** Gives the lease up (another node takes it at its next try) and closes the connection. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    await this.#round;
    const sql = this.#sql;
    this.#sql = null;
    this.#set(false);
    await sql?.end({ timeout: 1 }).catch(() => {});
  }
}
