/**
 * A test job and stream responder: just enough of AWS IoT Jobs (the device MQTT API) and
 * MQTT-based file delivery to drive the agent end to end, as an ordinary MQTT client (so it works
 * against aedes and mosquitto alike), plus an HTTP file server with pre-signed URLs that expire.
 * The real cloud services are issue #4; this one exists for the agent's tests and has fault hooks.
 */

import mqtt, { type MqttClient } from "mqtt";
import {
  decodeGetStreamRequest,
  decodeStreamBlock,
  encodeStreamBlock,
} from "../../protocol/stream_codec.ts";
import { StreamService } from "../../broker/stream_service.ts";

/** One job execution as the cloud sees it. */
export interface Execution {
  readonly thing: string;
  readonly jobId: string;
  status: string;
  statusDetails: Record<string, string>;
  versionNumber: number;
  document: Record<string, unknown>;
  readonly history: { status: string; statusDetails: Record<string, string> }[];
}

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED"]);

/** Fault hooks. */
export interface CloudFaults {
  /** `$next/get` requests to ignore (reply lost). */
  dropNextGet: number;
  /** Block ids whose next delivery is corrupted in transit (after the hash was computed). */
  corruptOnce: Set<number>;
  /** Block ids never delivered (until removed). */
  withhold: Set<number>;
  /** Status updates whose acknowledgement is lost. */
  dropUpdateAcks: number;
  /** DescribeJobExecution (`<jobId>/get`) requests to ignore (reply lost). */
  dropDescribes: number;
}

export class TestOtaCloud {
  readonly client: MqttClient;
  readonly executions: Execution[] = [];
  readonly faults: CloudFaults = {
    dropNextGet: 0,
    corruptOnce: new Set(),
    withhold: new Set(),
    dropUpdateAcks: 0,
    dropDescribes: 0,
  };
  readonly streamRequests: { thing: string; stream: string; blocks: number[] }[] = [];
  /** `$next/get` requests received (answered or not). */
  nextGetRequests = 0;
  /** Blocks published, by thing. */
  blocksSent = 0;
  readonly streams: StreamService;
  readonly #streams = new Map<string, Map<number, Uint8Array>>();
  readonly #listeners = new Set<() => void>();
  /** Rewrites a job document each time it is served (fresh pre-signed URLs). */
  documentFor: (execution: Execution) => Record<string, unknown> = (e) => e.document;

  private constructor(client: MqttClient) {
    this.client = client;
    // The real stream service answers; the faults act on its messages on their way out.
    this.streams = new StreamService({
      publish: (topic, payload, qos) =>
        this.client.publishAsync(
          topic,
          typeof payload === "string" ? payload : Buffer.from(payload),
          { qos },
        ).then(() => {}),
    });
    this.streams.blockFilter = (_thing, blockId, encoded) => {
      if (this.faults.withhold.has(blockId)) return null;
      this.blocksSent++;
      if (!this.faults.corruptOnce.delete(blockId)) return encoded;
      const block = decodeStreamBlock(encoded);
      if (!block.ok) return encoded;
      const payload = block.value.payload.slice();
      payload[0]! ^= 0xff;
      return encodeStreamBlock({ ...block.value, payload });
    };
    client.on("message", (topic, payload) => this.#onMessage(topic, new Uint8Array(payload)));
  }

  static async connect(url: string): Promise<TestOtaCloud> {
    const client = await mqtt.connectAsync(url, {
      clientId: `test-cloud-${crypto.randomUUID()}`,
      reconnectPeriod: 100,
    });
    const cloud = new TestOtaCloud(client);
    await client.subscribeAsync([
      "$aws/things/+/jobs/$next/get",
      "$aws/things/+/jobs/+/update",
      "$aws/things/+/jobs/+/get",
      "$aws/things/+/streams/+/get/cbor",
    ], { qos: 1 });
    return cloud;
  }

  addStream(name: string, files: Map<number, Uint8Array>): void {
    this.#streams.set(name, files);
    this.streams.addStream(name, files);
  }

  async createJob(
    thing: string,
    jobId: string,
    document: Record<string, unknown>,
  ): Promise<Execution> {
    const execution: Execution = {
      thing,
      jobId,
      status: "QUEUED",
      statusDetails: {},
      versionNumber: 1,
      document,
      history: [],
    };
    this.executions.push(execution);
    await this.#notifyNext(thing);
    this.#changed();
    return execution;
  }

  async cancelJob(thing: string, jobId: string): Promise<void> {
    const execution = this.execution(thing, jobId);
    execution.status = "CANCELED";
    execution.history.push({ status: "CANCELED", statusDetails: {} });
    await this.#notifyNext(thing);
    this.#changed();
  }

  execution(thing: string, jobId: string): Execution {
    const found = this.executions.find((e) => e.thing === thing && e.jobId === jobId);
    if (!found) throw new Error(`no execution ${jobId} for ${thing}`);
    return found;
  }

  /** Waits until `predicate` holds (checked on every cloud event), or fails after `timeoutMs`. */
  waitFor(predicate: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (predicate()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#listeners.delete(check);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      const check = () => {
        if (!predicate()) return;
        clearTimeout(timer);
        this.#listeners.delete(check);
        resolve();
      };
      this.#listeners.add(check);
    });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }

  #changed(): void {
    for (const listener of [...this.#listeners]) listener();
  }

  #next(thing: string): Execution | undefined {
    const mine = this.executions.filter((e) => e.thing === thing);
    return mine.find((e) => e.status === "IN_PROGRESS") ?? mine.find((e) => e.status === "QUEUED");
  }

  #executionPayload(execution: Execution) {
    return {
      jobId: execution.jobId,
      thingName: execution.thing,
      status: execution.status,
      statusDetails: execution.statusDetails,
      versionNumber: execution.versionNumber,
      jobDocument: this.documentFor(execution),
    };
  }

  async #notifyNext(thing: string): Promise<void> {
    const next = this.#next(thing);
    const body = next
      ? { timestamp: Date.now(), execution: this.#executionPayload(next) }
      : { timestamp: Date.now() };
    await this.client.publishAsync(`$aws/things/${thing}/jobs/notify-next`, JSON.stringify(body), {
      qos: 1,
    });
  }

  #onMessage(topic: string, payload: Uint8Array): void {
    const parts = topic.split("/");
    const thing = parts[2]!;
    if (parts[3] === "jobs" && parts[4] === "$next" && parts[5] === "get") {
      void this.#onNextGet(thing, payload);
    } else if (parts[3] === "jobs" && parts[5] === "get" && parts.length === 6) {
      void this.#onDescribe(thing, parts[4]!, payload);
    } else if (parts[3] === "jobs" && parts[5] === "update") {
      void this.#onUpdate(thing, parts[4]!, payload);
    } else if (parts[3] === "streams" && parts[5] === "get") {
      void this.#onStreamGet(thing, parts[4]!, payload);
    }
  }

  async #onDescribe(thing: string, jobId: string, payload: Uint8Array): Promise<void> {
    if (this.faults.dropDescribes > 0) {
      this.faults.dropDescribes--;
      return;
    }
    let clientToken: unknown;
    try {
      clientToken = JSON.parse(new TextDecoder().decode(payload)).clientToken;
    } catch {
      clientToken = undefined;
    }
    const execution = this.executions.find((e) => e.thing === thing && e.jobId === jobId);
    const topic = `$aws/things/${thing}/jobs/${jobId}/get`;
    if (!execution) {
      await this.client.publishAsync(
        `${topic}/rejected`,
        JSON.stringify({ clientToken, code: "ResourceNotFound" }),
        { qos: 1 },
      );
      return;
    }
    const body = {
      clientToken,
      timestamp: Date.now(),
      execution: {
        jobId,
        status: execution.status,
        statusDetails: execution.statusDetails,
        versionNumber: execution.versionNumber,
      },
    };
    await this.client.publishAsync(`${topic}/accepted`, JSON.stringify(body), { qos: 1 });
  }

  async #onNextGet(thing: string, payload: Uint8Array): Promise<void> {
    this.nextGetRequests++;
    if (this.faults.dropNextGet > 0) {
      this.faults.dropNextGet--;
      this.#changed();
      return;
    }
    let clientToken: unknown;
    try {
      clientToken = JSON.parse(new TextDecoder().decode(payload)).clientToken;
    } catch {
      clientToken = undefined;
    }
    const next = this.#next(thing);
    const body = next
      ? { clientToken, timestamp: Date.now(), execution: this.#executionPayload(next) }
      : { clientToken, timestamp: Date.now() };
    await this.client.publishAsync(
      `$aws/things/${thing}/jobs/$next/get/accepted`,
      JSON.stringify(body),
      { qos: 1 },
    );
    this.#changed();
  }

  async #onUpdate(thing: string, jobId: string, payload: Uint8Array): Promise<void> {
    const reply = (outcome: "accepted" | "rejected", body: Record<string, unknown>) =>
      this.client.publishAsync(
        `$aws/things/${thing}/jobs/${jobId}/update/${outcome}`,
        JSON.stringify(body),
        { qos: 1 },
      );
    let request: Record<string, unknown>;
    try {
      request = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      await reply("rejected", { code: "InvalidJson", message: "not JSON" });
      return;
    }
    const execution = this.executions.find((e) => e.thing === thing && e.jobId === jobId);
    if (!execution) {
      await reply("rejected", { code: "ResourceNotFound", clientToken: request.clientToken });
      return;
    }
    if (
      typeof request.expectedVersion === "number" &&
      request.expectedVersion !== execution.versionNumber
    ) {
      await reply("rejected", { code: "VersionMismatch", clientToken: request.clientToken });
      return;
    }
    if (TERMINAL.has(execution.status)) {
      await reply("rejected", { code: "InvalidStateTransition", clientToken: request.clientToken });
      return;
    }
    execution.status = String(request.status);
    execution.statusDetails = (request.statusDetails ?? {}) as Record<string, string>;
    execution.versionNumber++;
    execution.history.push({ status: execution.status, statusDetails: execution.statusDetails });
    this.#changed();
    if (this.faults.dropUpdateAcks > 0 && request.status !== "IN_PROGRESS") {
      this.faults.dropUpdateAcks--;
      return;
    }
    await reply("accepted", {
      clientToken: request.clientToken,
      timestamp: Date.now(),
      executionState: {
        status: execution.status,
        statusDetails: execution.statusDetails,
        versionNumber: execution.versionNumber,
      },
    });
    if (TERMINAL.has(execution.status)) await this.#notifyNext(thing);
  }

  async #onStreamGet(thing: string, stream: string, payload: Uint8Array): Promise<void> {
    const request = decodeGetStreamRequest(payload);
    const file = this.#streams.get(stream)?.get(request.ok ? request.value.fileId : -1);
    if (!request.ok || !file) return;
    const { blockSize, offset, numberOfBlocks, bitmap } = request.value;
    const blockCount = Math.ceil(file.length / blockSize);
    const blocks: number[] = [];
    for (let bit = 0; bit < bitmap.length * 8 && blocks.length < numberOfBlocks; bit++) {
      const blockId = offset + bit;
      if (blockId >= blockCount) break;
      if (bitmap[bit >> 3]! & (1 << (bit & 7))) blocks.push(blockId);
    }
    this.streamRequests.push({ thing, stream, blocks });
    this.#changed();
    await this.streams.handleRequest(thing, stream, payload);
  }
}

/** A file server with pre-signed URLs that stop working after a number of requests. */
export class TestFileServer {
  readonly #server: Deno.HttpServer;
  readonly #files = new Map<string, Uint8Array>();
  readonly #tokens = new Map<string, { file: string; remaining: number }>();
  readonly port: number;
  requests = 0;
  expiredRequests = 0;

  constructor() {
    this.#server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      (request) => this.#handle(request),
    );
    this.port = (this.#server.addr as Deno.NetAddr).port;
  }

  addFile(name: string, bytes: Uint8Array): void {
    this.#files.set(name, bytes);
  }

  /** A URL for `name` valid for `requests` GETs. */
  presign(name: string, requests = Infinity): string {
    const token = crypto.randomUUID();
    this.#tokens.set(token, { file: name, remaining: requests });
    return `http://127.0.0.1:${this.port}/files/${name}?X-Amz-Signature=${token}`;
  }

  #handle(request: Request): Response {
    this.requests++;
    const url = new URL(request.url);
    const token = this.#tokens.get(url.searchParams.get("X-Amz-Signature") ?? "");
    if (!token || token.remaining <= 0) {
      this.expiredRequests++;
      return new Response("Request has expired", { status: 403 });
    }
    token.remaining--;
    const file = this.#files.get(token.file);
    if (!file) return new Response("not found", { status: 404 });
    const range = /^bytes=(\d+)-(\d+)$/.exec(request.headers.get("range") ?? "");
    if (!range) return new Response(file.slice(), { status: 200 });
    const start = Number(range[1]);
    const end = Math.min(Number(range[2]), file.length - 1);
    if (start > end) return new Response("bad range", { status: 416 });
    return new Response(file.slice(start, end + 1), {
      status: 206,
      headers: { "content-range": `bytes ${start}-${end}/${file.length}` },
    });
  }

  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}

/** An `afr_ota` job document for one firmware file. */
export function firmwareJobDocument(options: {
  stream?: string;
  url?: string;
  size: number;
  signature: Uint8Array;
  certFile: string;
  fileId?: number;
  protocols?: string[];
}): Record<string, unknown> {
  const file: Record<string, unknown> = {
    filepath: "firmware.bin",
    filesize: options.size,
    fileid: options.fileId ?? 0,
    certfile: options.certFile,
    "sig-sha256-ecdsa": btoa(String.fromCharCode(...options.signature)),
  };
  if (options.url) {
    file.update_data_url = options.url;
    file.auth_scheme = "aws.s3.presigned";
  }
  const ota: Record<string, unknown> = {
    protocols: options.protocols ?? (options.url ? ["HTTP"] : ["MQTT"]),
    files: [file],
  };
  if (options.stream) ota.streamname = options.stream;
  return { afr_ota: ota };
}
