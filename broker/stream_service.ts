/**
 * MQTT-based file delivery (AWS IoT streams): answers CBOR GetStream requests on
 * `$aws/things/<thing>/streams/<stream>/get/cbor` with one message per block on `.../data/cbor`,
 * and refuses bad requests on `.../rejected/cbor` with the AWS error codes. Each block's encoded
 * message is built once and reused for every device that asks for it.
 *
 * @module
 */

import { encode } from "cborg";
import { sha256 } from "../protocol/signatures.ts";
import {
  decodeGetStreamRequest,
  encodeStreamBlock,
  type StreamErrorCode,
} from "../protocol/stream_codec.ts";
import { thingTopics } from "../protocol/topics.ts";

/** Where the service publishes. */
export interface Publisher {
  publish(topic: string, payload: Uint8Array | string, qos: 0 | 1): Promise<void>;
  /**
   * Runs `handOver`, which starts publishes to the client `clientId`, so that what it publishes
   * leaves in as few socket writes as the transport can manage (optional: without it the
   * publishes go out one by one, which is just as correct).
   */
  together?(clientId: string, handOver: () => void): void;
  /**
   * Publishes to the one client `clientId` if it is connected here and subscribed to `topic`,
   * else as {@linkcode Publisher.publish} (optional: a cluster node's shortcut past the bus).
   */
  publishTo?(
    clientId: string,
    topic: string,
    payload: Uint8Array | string,
    qos: 0 | 1,
  ): Promise<void>;
}

/** Finds a stream this service was not given (e.g. one another cluster node created). */
export type StreamSource = (streamId: string) => Promise<ReadonlyMap<number, Uint8Array> | null>;

/** How long a stream found nowhere is not looked for again (a device asking in a loop). */
const MISSING_STREAM_MS = 5_000;

/** Most data one request returns (AWS: 128 KB). */
export const MAX_DATA_PER_REQUEST = 128 * 1024;

/** Fault hook: replaces (or withholds, with null) a block on its way to one device. */
export type BlockFilter = (
  thing: string,
  blockId: number,
  encoded: Uint8Array,
) => Uint8Array | null;

/**
 * The stream service.
 *
 * @example
 * ```ts ignore
 * const streams = new StreamService(publisher);
 * streams.addStream("fw-1-1-0", new Map([[0, imageBytes]]));
 * // route "$aws/things/+/streams/+/get/cbor" messages to streams.handleRequest(...)
 * ```
 */
export class StreamService {
  readonly #publisher: Publisher;
  readonly #streams = new Map<string, Map<number, Uint8Array>>();
  /** Encoded block messages by stream, then by `fileId/blockSize`, indexed by block id. */
  readonly #encoded = new Map<string, Map<string, Uint8Array[]>>();
  /** Blocks sent and encodings built, for benchmarks and tests. */
  readonly stats = { requests: 0, rejected: 0, blocksSent: 0, blocksEncoded: 0 };
  /** Optional fault hook (tests, fault injection). */
  blockFilter: BlockFilter | null = null;

  readonly #source: StreamSource | null;
  /** Streams looked for and not found, and when. */
  readonly #missing = new Map<string, number>();

  /** Builds the service over a publisher; `source` finds streams it was not given. */
  constructor(publisher: Publisher, source: StreamSource | null = null) {
    this.#publisher = publisher;
    this.#source = source;
  }

  /** The stream's files: given, or found by the source (once, then kept). */
  async #filesOf(streamId: string): Promise<ReadonlyMap<number, Uint8Array> | undefined> {
    const known = this.#streams.get(streamId);
    if (known || !this.#source) return known;
    const missedAt = this.#missing.get(streamId);
    if (missedAt !== undefined && performance.now() - missedAt < MISSING_STREAM_MS) return;
    const found = await this.#source(streamId);
    if (!found) {
      if (this.#missing.size >= 1000) this.#missing.clear();
      this.#missing.set(streamId, performance.now());
      return;
    }
    this.#missing.delete(streamId);
    if (!this.#streams.has(streamId)) this.addStream(streamId, found);
    return this.#streams.get(streamId);
  }

  /** Adds (or replaces) a stream of files, by file id. */
  addStream(streamId: string, files: ReadonlyMap<number, Uint8Array>): void {
    this.#streams.set(streamId, new Map(files));
    this.#encoded.delete(streamId);
  }

  /** Removes a stream. */
  deleteStream(streamId: string): void {
    this.#streams.delete(streamId);
    this.#encoded.delete(streamId);
  }

  /** Answers one GetStream request. Never throws for a bad request. */
  async handleRequest(thing: string, streamId: string, payload: Uint8Array): Promise<void> {
    this.stats.requests++;
    const topics = thingTopics(thing);
    const decoded = decodeGetStreamRequest(payload);
    if (!decoded.ok) {
      return await this.#reject(topics.streamRejected(streamId), decoded.code, decoded.reason, "");
    }
    const request = decoded.value;
    const file = (await this.#filesOf(streamId))?.get(request.fileId);
    if (!file) {
      return await this.#reject(
        topics.streamRejected(streamId),
        "ResourceNotFound",
        `no file ${request.fileId} in stream '${streamId}'`,
        request.clientToken,
      );
    }
    const blockCount = Math.ceil(file.length / request.blockSize);
    if (request.offset >= blockCount) {
      return await this.#reject(
        topics.streamRejected(streamId),
        "OffsetOutOfBounds",
        `offset ${request.offset} is past the file's ${blockCount} blocks`,
        request.clientToken,
      );
    }
    const limit = Math.floor(MAX_DATA_PER_REQUEST / request.blockSize);
    if (request.numberOfBlocks > limit) {
      return await this.#reject(
        topics.streamRejected(streamId),
        "BlockCountLimitExceeded",
        `at most ${limit} blocks of ${request.blockSize} bytes per request`,
        request.clientToken,
      );
    }
    const blocks: number[] = [];
    const bitmap = request.bitmap;
    if (bitmap.length === 0) {
      for (let i = request.offset; i < blockCount && blocks.length < request.numberOfBlocks; i++) {
        blocks.push(i);
      }
    } else {
      for (let bit = 0; bit < bitmap.length * 8 && blocks.length < request.numberOfBlocks; bit++) {
        const blockId = request.offset + bit;
        if (blockId >= blockCount) break;
        if (bitmap[bit >> 3]! & (1 << (bit & 7))) blocks.push(blockId);
      }
    }
    // All of a request's blocks are handed over at once rather than each after the previous
    // one's callback (a turn of the event loop apart), and together: aedes wrote each in a
    // socket write of its own (8 writev calls per request; the broker's largest cost at 10,000
    // devices), the aedes transport now sends them in one.
    const sent: Promise<void>[] = [];
    const dataTopic = topics.streamData(streamId);
    const encoded = this.#encodedBlocks(streamId, request.fileId, request.blockSize);
    const handOver = () => {
      for (const blockId of blocks) {
        let message: Uint8Array | null = encoded[blockId] ??= this.#encode(
          request.fileId,
          request.blockSize,
          blockId,
          file,
        );
        if (this.blockFilter) message = this.blockFilter(thing, blockId, message);
        if (!message) continue;
        sent.push(
          this.#publisher.publishTo
            ? this.#publisher.publishTo(thing, dataTopic, message, 0)
            : this.#publisher.publish(dataTopic, message, 0),
        );
        this.stats.blocksSent++;
      }
    };
    if (this.#publisher.together) this.#publisher.together(thing, handOver);
    else handOver();
    await Promise.all(sent);
  }

  /** The encoded messages of one file at one block size, by block id (filled as asked). */
  #encodedBlocks(streamId: string, fileId: number, blockSize: number): Uint8Array[] {
    let ofStream = this.#encoded.get(streamId);
    if (!ofStream) this.#encoded.set(streamId, ofStream = new Map());
    const key = `${fileId}/${blockSize}`;
    let encoded = ofStream.get(key);
    if (!encoded) ofStream.set(key, encoded = []);
    return encoded;
  }

  #encode(fileId: number, blockSize: number, blockId: number, file: Uint8Array): Uint8Array {
    const payload = file.subarray(
      blockId * blockSize,
      Math.min(file.length, (blockId + 1) * blockSize),
    );
    this.stats.blocksEncoded++;
    return encodeStreamBlock({ fileId, blockId, blockSize, payload, hash: sha256(payload) });
  }

  async #reject(
    topic: string,
    code: StreamErrorCode,
    message: string,
    clientToken: string,
  ): Promise<void> {
    this.stats.rejected++;
    await this.#publisher.publish(
      topic,
      encode({ o: code, m: message, c: clientToken }),
      0,
    );
  }
}
