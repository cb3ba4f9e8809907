/**
 * Durable cloud state behind one interface: things and their credentials, thing groups, jobs,
 * job executions, files, streams, records and the audit log. Two backends implement it: an
 * embedded SQLite file (`sqlite_store.ts`, the default: one broker process is its only writer)
 * and PostgreSQL (`postgres_store.ts`, shared by the nodes of a cluster). The interface is
 * asynchronous because PostgreSQL is reached over the network; a change that reads before it
 * writes runs in {@linkcode CloudStore.transaction} and takes the lock of what it changes
 * first ({@linkcode CloudStore.lockThing}, {@linkcode CloudStore.lockJob}), so two nodes never
 * race a read-modify-write.
 *
 * @module
 */

import type { StoredSecret } from "./auth.ts";
import type { ExecutionStatus } from "./job_execution.ts";

/** A registered thing. */
export interface ThingRecord {
  readonly name: string;
  readonly secret: StoredSecret;
  readonly attributes: Readonly<Record<string, string>>;
}

/** A job as stored (the spec is kept whole, as JSON). */
export interface JobRecord {
  readonly jobId: string;
  readonly status: "SCHEDULED" | "IN_PROGRESS" | "PAUSED" | "COMPLETED" | "CANCELED";
  /** The job's creation request (document, targets, rollout, abort, timeout, retry...). */
  readonly spec: Readonly<Record<string, unknown>>;
  readonly createdAt: number;
  /** Things still to be rolled out to, in order (snapshot of the targets, then joiners). */
  readonly pending: readonly string[];
  /** When notifications went out (for the per-minute pacer). */
  readonly notifiedAt: readonly number[];
  readonly reason: string | null;
  /** With a health gate: the things notified in the current wave, in order. */
  readonly wave?: readonly string[];
  /** Things the rollout never reached: it stopped (cancel, abort, end of schedule) first. */
  readonly neverNotified?: readonly string[];
  /** When it completed or was canceled (cloud clock): where its charts end. */
  readonly endedAt?: number;
}

/** One execution of a job on a thing. */
export interface ExecutionRecord {
  readonly jobId: string;
  readonly thing: string;
  readonly status: ExecutionStatus;
  readonly statusDetails: Readonly<Record<string, string>>;
  readonly versionNumber: number;
  /** 1 + number of retries. */
  readonly executionNumber: number;
  readonly queuedAt: number;
  readonly startedAt: number | null;
  readonly updatedAt: number;
  /** Absolute time at which an execution in progress times out. */
  readonly deadline: number | null;
}

/** An entry of the audit log / execution history. */
export interface AuditEntry {
  readonly at: number;
  readonly jobId: string | null;
  readonly thing: string | null;
  readonly event: string;
  readonly detail: Readonly<Record<string, unknown>>;
}

/** The store interface every backend implements. */
export interface CloudStore {
  putThing(thing: ThingRecord): Promise<void>;
  getThing(name: string): Promise<ThingRecord | null>;
  listThings(): Promise<ThingRecord[]>;
  /** Forgets a thing and its group memberships (its executions stay, as history). */
  deleteThing(name: string): Promise<boolean>;
  /** Every group with its number of members, by name. */
  listGroups(): Promise<{ group: string; members: number }[]>;
  addToGroup(group: string, thing: string): Promise<boolean>;
  removeFromGroup(group: string, thing: string): Promise<boolean>;
  /** A group's things, in the order they joined. */
  groupMembers(group: string): Promise<string[]>;
  groupsOf(thing: string): Promise<string[]>;
  putJob(job: JobRecord): Promise<void>;
  /** The stored job, frozen: build a new record to change it. */
  getJob(jobId: string): Promise<JobRecord | null>;
  /** Every job, oldest first. */
  listJobs(): Promise<JobRecord[]>;
  putExecution(execution: ExecutionRecord): Promise<void>;
  getExecution(jobId: string, thing: string): Promise<ExecutionRecord | null>;
  executionsOfJob(jobId: string): Promise<ExecutionRecord[]>;
  /** A job's executions in progress whose deadline is at or before `now`. */
  overdueExecutions(jobId: string, now: number): Promise<ExecutionRecord[]>;
  /** How many of a job's executions are in each status (absent statuses are absent). */
  executionStatusCounts(jobId: string): Promise<Record<string, number>>;
  /** A thing's executions, in the order they were last written. */
  executionsOfThing(thing: string): Promise<ExecutionRecord[]>;
  /** Executions of every job by status. */
  executionsByStatus(): Promise<Record<string, number>>;
  /** Records that a thing was told of its execution number `executionNumber` of a job. */
  markNotified(jobId: string, thing: string, executionNumber: number): Promise<void>;
  /**
   * A job's QUEUED executions whose thing was never told of them (a scheduler or broker that
   * died between committing them and publishing the notification): the next one tells them.
   */
  unnotifiedExecutions(jobId: string): Promise<ExecutionRecord[]>;
  audit(entry: AuditEntry): Promise<void>;
  /** Audit entries in the order they were written. */
  history(filter: { jobId?: string; thing?: string }): Promise<AuditEntry[]>;
  /** Stores a file's bytes under a key (images served over MQTT streams and HTTP). */
  putFile(key: string, bytes: Uint8Array): Promise<void>;
  getFile(key: string): Promise<Uint8Array | null>;
  /** A stream: file ids mapped to file keys. */
  putStream(streamId: string, files: Readonly<Record<number, string>>): Promise<void>;
  listStreams(): Promise<{ streamId: string; files: Record<number, string> }[]>;
  /** Any JSON record by kind and id (signing profiles, OTA updates, shadows). */
  putRecord(kind: string, id: string, value: unknown): Promise<void>;
  getRecord<T>(kind: string, id: string): Promise<T | null>;
  /** A kind's records in the order they were last written. */
  listRecords<T>(kind: string): Promise<T[]>;
  /**
   * Runs `work` in one transaction: all its writes or none. Store calls made while `work`
   * runs (in its async context) belong to it; a transaction begun inside another joins it.
   */
  transaction<T>(work: () => Promise<T>): Promise<T>;
  /**
   * Inside a transaction: waits until no other transaction holds the lock of this thing's
   * executions, then holds it until this one ends. Take job locks before thing locks.
   */
  lockThing(thing: string): Promise<void>;
  /** Inside a transaction: the same for a job's record. */
  lockJob(jobId: string): Promise<void>;
  /**
   * Runs `callback` once the writes made so far are committed (inside a transaction: once it
   * is); if they are rolled back it never runs. Replies and notifications leave through here,
   * so a device never hears of a change a crash could undo.
   */
  afterCommit(callback: () => void): void;
  /** Resolves once every write made so far is committed (or failed). */
  committed(): Promise<void>;
  /** Rejects unless the database answers a query now (readiness). */
  check(): Promise<void>;
  /** Commits so far and the seconds they took, for metrics. */
  readonly commitStats: { readonly commits: number; readonly seconds: number };
  close(): Promise<void>;
}

/**
 * Freezes a parsed JSON value all the way down, so a record a store caches cannot be changed in
 * place by whoever read it.
 */
export function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** A thing from its row (columns `name`, `secret`, `attributes`, the last two JSON). */
export function thingFromRow(row: Record<string, unknown>): ThingRecord {
  return {
    name: String(row.name),
    secret: JSON.parse(String(row.secret)),
    attributes: JSON.parse(String(row.attributes)),
  };
}

/** An audit entry from its row (columns `at`, `job_id`, `thing`, `event`, `detail` as JSON). */
export function auditFromRow(row: Record<string, unknown>): AuditEntry {
  return {
    at: Number(row.at),
    jobId: row.job_id === null ? null : String(row.job_id),
    thing: row.thing === null ? null : String(row.thing),
    event: String(row.event),
    detail: JSON.parse(String(row.detail)),
  };
}
