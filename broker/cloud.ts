/**
 * The cloud in one process: the embedded aedes broker with device authentication and per-thing
 * ACLs, the job service and the stream service listening on the device topics, and the durable
 * store under them. Services publish from inside the broker (no extra client hop, which the
 * performance floor measured at half the throughput).
 *
 * @module
 */

import type { AedesOptions, AedesPublishPacket } from "aedes";
import { type Clock, systemClock } from "../lib/clock.ts";
import mqtt from "mqtt";
import {
  createAuthHooks,
  generateSecret,
  hashSecret,
  SERVICE_USER,
  type StoredSecret,
} from "./auth.ts";
import { type BrokerTls, type EmbeddedBroker, startEmbeddedBroker } from "./embedded.ts";
import { FileService } from "./file_service.ts";
import { DeviceIdentity, type RegisteredCertificate } from "./device_identity.ts";
import type { Checked } from "../protocol/signatures.ts";
import { JobService } from "./job_service.ts";
import { OtaUpdateManager, renderPresignedUrls } from "./ota_updates.ts";
import type { CloudStore } from "./store.ts";
import { SqliteStore } from "./sqlite_store.ts";
import { ShadowService } from "./shadow_service.ts";
import { type Publisher, StreamService } from "./stream_service.ts";
import { aedesPublisher, bufferOf } from "./aedes_publisher.ts";
import { classifyRequest, SERVICE_SUBSCRIPTIONS } from "../protocol/topics.ts";
import { RateLimitedLog } from "../lib/rate_limited_log.ts";
import { type OperatorLog, rateLimited } from "./operator_log.ts";
import { ProfileKeyVault } from "./profile_keys.ts";

/** Options of {@linkcode startCloud}. */
export interface CloudOptions {
  /** MQTT port (0: any free one). @default {0} */
  readonly port?: number;
  /** Address the MQTT listeners bind to. @default {"127.0.0.1"} */
  readonly host?: string;
  /** SQLite file, or `:memory:`. @default {":memory:"} */
  readonly databasePath?: string;
  /** fsync every commit (survives power loss of the host, not only the process dying). */
  readonly powerLossDurable?: boolean;
  readonly clock?: Clock;
  /** The cloud services' secret (their MQTT role). @default {random} */
  readonly serviceSecret?: string;
  /** Job service tick, in the clock's time. @default {1000} */
  readonly tickMs?: number;
  readonly log?: (line: string) => void;
  /** Told what an operator follows: clients connecting (rate-limited) and job events. */
  readonly events?: OperatorLog;
  /**
   * Run the services as clients of this external MQTT broker (e.g. mosquitto or a cluster)
   * instead of the embedded aedes; authentication and ACLs are then that broker's job.
   */
  readonly external?: string;
  /** An additional TLS listener; with `ca` (the fleet CA), devices may log in with certificates. */
  readonly tls?: BrokerTls;
  /**
   * The fleet CA (PEM) that issues device certificates, for registering them and for secure-element
   * login tokens. @default {tls.ca}
   */
  readonly deviceCa?: string;
  /**
   * The store to keep the state in (e.g. PostgreSQL shared by a cluster) instead of the SQLite
   * file of `databasePath`; the cloud closes it with itself.
   */
  readonly store?: CloudStore;
  /**
   * This broker is one node of a cluster: aedes options that join it (`mq` and `persistence`
   * shared through Redis, the node's `id`). The services then answer only the devices connected
   * to this node, deliver stream blocks to them directly, and follow jobs other nodes change.
   */
  readonly cluster?: {
    readonly aedes: Partial<AedesOptions>;
    /** How often jobs watched here are looked at for changes made by other nodes (ms). */
    readonly changePollMs?: number;
  };
  /** Whether this cloud runs the rollout scheduler from the start. @default {true} */
  readonly scheduling?: boolean;
  /**
   * The secret signing-profile keys are sealed with (see broker/profile_keys.ts); absent: a key
   * of this process only, whose seals die with it (an in-memory cloud).
   */
  readonly profileKey?: string;
  /**
   * The names devices dial this broker by (host names, addresses): a secure-element login token
   * must be made for one of them. @default {["127.0.0.1", "localhost"]}
   */
  readonly serverNames?: readonly string[];
}

/** How the services meet the devices: the embedded aedes, or an external broker. */
interface Transport {
  readonly broker: EmbeddedBroker | null;
  readonly publisher: Publisher;
  readonly url: string;
  listen(route: (topic: string, payload: Uint8Array) => void): Promise<void>;
  close(): Promise<void>;
}

async function embeddedTransport(
  port: number | undefined,
  hooks: object,
  tls?: BrokerTls,
  host?: string,
  cluster?: Partial<AedesOptions>,
): Promise<Transport> {
  const broker = await startEmbeddedBroker({
    ...(port !== undefined ? { port } : {}),
    ...(host !== undefined ? { host } : {}),
    ...(tls ? { tls } : {}),
    aedes: { ...hooks, ...cluster } as never,
  });
  return {
    broker,
    publisher: aedesPublisher(broker.broker),
    url: broker.url,
    async listen(route) {
      if (cluster) {
        // In a cluster a subscription inside aedes hears every node's devices (the messages
        // cross Redis); each node's services answer the devices connected to it, whose
        // publications aedes reports here with their client.
        broker.broker.on("publish", (packet, client) => {
          if (client) route(packet.topic, new Uint8Array(packet.payload as Uint8Array));
        });
        return;
      }
      const deliver = (packet: AedesPublishPacket, done: () => void) => {
        route(packet.topic, new Uint8Array(packet.payload as Uint8Array));
        done();
      };
      await Promise.all(
        SERVICE_SUBSCRIPTIONS.map((topic) =>
          new Promise<void>((resolve) =>
            broker.broker.subscribe(topic, deliver as never, () => resolve())
          )
        ),
      );
    },
    close: () => broker.close(),
  };
}

async function externalTransport(
  url: string,
  secret: string | undefined,
  log: (line: string) => void,
): Promise<Transport> {
  const client = await mqtt.connectAsync(url, {
    clientId: `${SERVICE_USER}-${crypto.randomUUID().slice(0, 8)}`,
    ...(secret ? { username: SERVICE_USER, password: secret } : {}),
    reconnectPeriod: 500,
  });
  client.on("error", (error) => log(`external broker: ${error.message}`));
  return {
    broker: null,
    url,
    publisher: {
      publish: async (topic, payload, qos) => {
        await client.publishAsync(
          topic,
          typeof payload === "string" ? payload : bufferOf(payload),
          { qos },
        );
      },
    },
    async listen(route) {
      client.on("message", (topic, payload) => route(topic, new Uint8Array(payload)));
      await client.subscribeAsync([...SERVICE_SUBSCRIPTIONS], { qos: 1 });
    },
    close: () => client.endAsync(true),
  };
}

/** A running cloud. */
export interface Cloud {
  /** The embedded broker, or null when the services run on an external one. */
  readonly broker: EmbeddedBroker | null;
  readonly store: CloudStore;
  readonly jobs: JobService;
  readonly streams: StreamService;
  /** Pre-signed file URLs; set `files.baseUrl` to where the HTTP server listens. */
  readonly files: FileService;
  readonly otaUpdates: OtaUpdateManager;
  /** What devices report about themselves (firmware, slots, counter, last boot). */
  readonly shadows: ShadowService;
  /** The cloud's clock (scaled in simulations): every timestamp it records is in its time. */
  readonly clock: Clock;
  readonly url: string;
  /**
   * Registers (or re-provisions) a thing with its secret, or (`secret` null) with one the cloud
   * generates, and returns the secret; its jobs stay.
   */
  provisionThing(
    name: string,
    secret: string | null,
    attributes?: Record<string, string>,
  ): Promise<string>;
  /**
   * Removes a thing: it can no longer log in, leaves its groups (its unfinished executions of
   * jobs it was targeted through become REMOVED), and its history stays.
   */
  removeThing(name: string): Promise<boolean>;
  /**
   * Registers a device certificate from the fleet CA for a provisioned thing (its CN must be the
   * thing), replacing the previous one: the thing keeps its jobs, the old certificate stops
   * logging in.
   */
  registerDeviceCertificate(
    thing: string,
    certificate: string | Uint8Array,
  ): Promise<Checked<RegisteredCertificate>>;
  /** Login refusals and ACL denials so far. */
  readonly refusals: readonly string[];
  /** MQTT traffic through the embedded broker (zeros with an external one). */
  readonly traffic: {
    readonly connections: number;
    readonly connected: number;
    /** Logins refused and ACL violations. */
    readonly refused: number;
    readonly messagesIn: number;
    readonly bytesIn: number;
  };
  /** Calls `listener` with the job id after every change of a job or its executions. */
  onJobChange(listener: (jobId: string) => void): () => void;
  close(): Promise<void>;
}

/**
 * Starts the cloud.
 *
 * @example
 * ```ts ignore
 * const cloud = await startCloud({ databasePath: "data/cloud.db" });
 * cloud.provisionThing("dev-1", "secret");
 * ```
 */
export async function startCloud(options: CloudOptions = {}): Promise<Cloud> {
  const clock = options.clock ?? systemClock;
  const log = options.log ?? (() => {});
  const events: OperatorLog = options.events ?? (() => {});
  const store = options.store ?? new SqliteStore(options.databasePath ?? ":memory:", {
    powerLossDurable: options.powerLossDurable ?? false,
  });
  const serviceSecret: StoredSecret = hashSecret(options.serviceSecret ?? crypto.randomUUID());
  const secretCache = new Map<string, StoredSecret | null>();
  const deviceCa = options.deviceCa ?? options.tls?.ca ?? null;
  const identity = new DeviceIdentity({
    ca: deviceCa,
    ...(options.serverNames ? { serverNames: options.serverNames } : {}),
    // Wall time, not the (possibly scaled) cloud clock: a login token is stamped by the device's
    // real-time clock, and certificates expire in real time.
    clock: systemClock,
    registry: {
      get: (thing) => store.getRecord<RegisteredCertificate>("device-certificate", thing),
      put: (thing, record) => store.putRecord("device-certificate", thing, record),
    },
  });
  const refusalLog = new RateLimitedLog(log, systemClock);
  const refusalCount = { n: 0 };
  const hooks = createAuthHooks(
    {
      thingSecret: async (thing) => {
        if (!secretCache.has(thing)) {
          secretCache.set(thing, (await store.getThing(thing))?.secret ?? null);
        }
        return secretCache.get(thing)!;
      },
      serviceSecret,
      ...(identity.enabled
        ? {
          verifyDeviceToken: (thing: string, token: string) => identity.verifyToken(thing, token),
          tlsCertificateAllowed: (thing: string, der: Uint8Array | undefined) =>
            identity.allowsTlsCertificate(thing, der),
        }
        : {}),
    },
    clock,
    {
      // Refused logins and ACL violations reach the operator's log, at most 20 lines per 10 s.
      onRefusal: (line) => {
        refusalCount.n++;
        refusalLog.write(line);
      },
    },
  );
  const transport = options.external
    ? await externalTransport(options.external, options.serviceSecret, log)
    : await embeddedTransport(
      options.port,
      hooks,
      options.tls,
      options.host,
      options.cluster?.aedes,
    );
  const { broker, publisher } = transport;
  const traffic = {
    connections: 0,
    connected: 0,
    messagesIn: 0,
    bytesIn: 0,
    get refused() {
      return refusalCount.n;
    },
  };
  if (broker) {
    const clientEvents = rateLimited(events);
    const remote = (client: { conn?: unknown }) => {
      const conn = client.conn as { remoteAddress?: string; remotePort?: number } | undefined;
      return conn?.remoteAddress ? `${conn.remoteAddress}:${conn.remotePort ?? ""}` : "unknown";
    };
    broker.broker.on("client", (client) => {
      traffic.connections++;
      traffic.connected++;
      clientEvents("client-connected", { client: client.id, remote: remote(client) });
    });
    broker.broker.on("clientDisconnect", (client) => {
      traffic.connected--;
      clientEvents("client-disconnected", { client: client.id });
    });
    broker.broker.on("publish", (packet, client) => {
      if (!client) return; // the cloud's own publications
      traffic.messagesIn++;
      traffic.bytesIn += packet.payload.length;
    });
  }
  const listeners = new Set<(jobId: string) => void>();
  // A file is written once under its key: the ones served lately stay in memory (an image is
  // fetched by every device of a rollout).
  const recentFiles = new Map<string, Uint8Array>();
  const fileOf = async (key: string): Promise<Uint8Array | null> => {
    const cached = recentFiles.get(key);
    if (cached) return cached;
    const bytes = await store.getFile(key);
    if (bytes) {
      if (recentFiles.size >= 8) recentFiles.delete(recentFiles.keys().next().value!);
      recentFiles.set(key, bytes);
    }
    return bytes;
  };
  const files = new FileService({
    secret: crypto.getRandomValues(new Uint8Array(32)),
    clock,
    source: (key) => fileOf(key),
    baseUrl: "http://127.0.0.1:8080",
  });
  const jobs = new JobService({
    store,
    publisher,
    clock,
    log,
    onChange: (jobId) => {
      for (const listener of listeners) listener(jobId);
    },
    onJobEvent: (jobId, event, detail) => events(event, { job: jobId, ...detail }),
    renderDocument: (document) =>
      renderPresignedUrls(document, (key, seconds) => files.presign(key, seconds)) as Record<
        string,
        unknown
      >,
    ...(options.tickMs ? { tickMs: options.tickMs } : {}),
    scheduling: options.scheduling ?? true,
  });
  const filesOfStream = async (keys: Record<number, string>) => {
    const files = new Map<number, Uint8Array>();
    for (const [fileId, key] of Object.entries(keys)) {
      const bytes = await fileOf(key);
      if (bytes) files.set(Number(fileId), bytes);
    }
    return files;
  };
  // Streams created later by another node are found in the store when a device asks for them.
  const streams = new StreamService(
    publisher,
    options.cluster
      ? async (streamId) => {
        const stream = (await store.listStreams()).find((s) => s.streamId === streamId);
        return stream ? await filesOfStream(stream.files) : null;
      }
      : null,
  );
  for (const { streamId, files: keys } of await store.listStreams()) {
    streams.addStream(streamId, await filesOfStream(keys));
  }
  // In a cluster, devices on other nodes change jobs too: the jobs watched here (progress
  // streams) are compared every `changePollMs` and their listeners told of what changed.
  const seen = new Map<string, string>();
  let polling: Promise<void> = Promise.resolve();
  const pollChanges = async () => {
    if (listeners.size === 0) return;
    for (const job of await store.listJobs()) {
      const ended = job.status === "COMPLETED" || job.status === "CANCELED";
      if (ended && seen.get(job.jobId)?.startsWith(`${job.status} `)) continue;
      const now = `${job.status} ${JSON.stringify(await store.executionStatusCounts(job.jobId))}`;
      if (seen.get(job.jobId) === now) continue;
      // A job seen for the first time may have changed since a listener read it: tell them.
      seen.set(job.jobId, now);
      for (const listener of listeners) listener(job.jobId);
    }
  };
  const changePoll = options.cluster
    ? setInterval(() => {
      polling = polling.then(pollChanges).catch((error) =>
        log(`job change poll failed: ${(error as Error).message}`)
      );
    }, options.cluster.changePollMs ?? 1000)
    : null;
  const otaUpdates = new OtaUpdateManager({
    store,
    jobs,
    streams,
    files,
    now: () => clock.now(),
    vault: options.profileKey !== undefined
      ? await ProfileKeyVault.fromSecret(options.profileKey)
      : await ProfileKeyVault.ephemeral(),
  });
  const shadows = new ShadowService({
    store,
    publisher,
    clock,
    onFirmware: (thing, firmware) => jobs.thingReported(thing, firmware),
  });
  const route = (topic: string, payload: Uint8Array) => {
    const request = classifyRequest(topic);
    switch (request.kind) {
      case "shadow-update":
        void shadows.handleUpdate(request.thing, payload).catch((error) =>
          log(`shadow error: ${error}`)
        );
        return;
      case "stream-get":
        void streams.handleRequest(request.thing, request.stream, payload).catch((error) =>
          log(`stream error: ${error}`)
        );
        return;
      case "other":
        return;
      default:
        void jobs.handleDeviceMessage(request.thing, topic, payload);
    }
  };
  await transport.listen(route);
  jobs.start();
  return {
    broker,
    store,
    jobs,
    streams,
    files,
    otaUpdates,
    shadows,
    clock,
    url: transport.url,
    refusals: hooks.refusals,
    traffic,
    onJobChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async provisionThing(name, chosen, attributes = {}) {
      const { secret, stored } = chosen === null
        ? generateSecret()
        : { secret: chosen, stored: hashSecret(chosen) };
      const again = (await store.getThing(name)) !== null;
      await store.putThing({ name, secret: stored, attributes });
      if (again) await jobs.thingReprovisioned(name);
      secretCache.delete(name);
      hooks.rememberSecret(stored, secret);
      return secret;
    },
    async removeThing(name) {
      for (const group of await store.groupsOf(name)) await jobs.removeThingFromGroup(group, name);
      const removed = await store.deleteThing(name);
      secretCache.delete(name);
      return removed;
    },
    async registerDeviceCertificate(thing, certificate) {
      if (!(await store.getThing(thing))) return { ok: false, reason: `unknown thing '${thing}'` };
      const before = await store.getRecord<RegisteredCertificate>("device-certificate", thing);
      const registered = await identity.register(thing, certificate);
      // A new certificate under the same name: a replaced or re-provisioned device.
      if (registered.ok && before && before.sha256 !== registered.value.sha256) {
        await jobs.thingReprovisioned(thing);
      }
      return registered;
    },
    async close() {
      if (changePoll !== null) clearInterval(changePoll);
      await polling;
      await jobs.stop();
      await transport.close();
      await store.close();
    },
  };
}
