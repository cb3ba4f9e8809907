/**
 * What devices say about themselves: the reported half of an AWS IoT classic Device Shadow.
 * A device publishes `{"state":{"reported":{...}}}` on `$aws/things/<thing>/shadow/update`; the
 * service merges it into the stored document (a null deletes a key, as AWS does), bumps the
 * version and answers on `.../update/accepted`, or refuses on `.../update/rejected` with AWS's
 * numeric codes. The dashboard reads it to show a device's firmware, slots, security counter and
 * last boot log - facts only the device has.
 *
 * @module
 */

import type { Publisher } from "./stream_service.ts";
import type { CloudStore } from "./store.ts";
import type { Clock } from "../lib/clock.ts";
import { replyTopic, thingTopics } from "../protocol/topics.ts";

/** Largest update a device may send (AWS: 8 KB of state). */
export const MAX_SHADOW_BYTES = 8 * 1024;
/** Deepest nesting of reported state (AWS: 6 levels). */
const MAX_DEPTH = 6;

/** A thing's stored shadow. */
export interface ShadowDocument {
  readonly reported: Record<string, unknown>;
  readonly version: number;
  /** Epoch seconds of the last update. */
  readonly timestamp: number;
}

/**
 * The shadow service.
 *
 * @example
 * ```ts ignore
 * const shadows = new ShadowService({ store, publisher, clock });
 * // route "$aws/things/+/shadow/update" messages to shadows.handleUpdate(thing, payload)
 * shadows.get("dev-1")?.reported.firmware; // "1.1.0+0"
 * ```
 */
export class ShadowService {
  readonly #store: CloudStore;
  readonly #publisher: Publisher;
  readonly #clock: Clock;
  readonly #onFirmware: (thing: string, firmware: string | null) => void | Promise<void>;

  /** Builds the service. */
  constructor(
    options: {
      store: CloudStore;
      publisher: Publisher;
      clock: Clock;
      /** Told the firmware a thing reports running (null: none), after each accepted update. */
      onFirmware?: (thing: string, firmware: string | null) => void | Promise<void>;
    },
  ) {
    this.#store = options.store;
    this.#publisher = options.publisher;
    this.#clock = options.clock;
    this.#onFirmware = options.onFirmware ?? (() => {});
  }

  /** The stored shadow of `thing`, or null. */
  get(thing: string): Promise<ShadowDocument | null> {
    return this.#store.getRecord<ShadowDocument>("shadow", thing);
  }

  /** Every stored shadow, by thing. */
  async all(): Promise<Map<string, ShadowDocument>> {
    const shadows = new Map<string, ShadowDocument>();
    const stored = await this.#store.listRecords<ShadowDocument & { thing: string }>("shadow");
    for (const entry of stored) {
      shadows.set(entry.thing, entry);
    }
    return shadows;
  }

  /** Handles one `shadow/update` from `thing`; never throws. */
  async handleUpdate(thing: string, payload: Uint8Array): Promise<void> {
    const topic = thingTopics(thing).shadowUpdate;
    const timestamp = Math.floor(this.#clock.now() / 1000);
    const reject = (code: number, message: string, clientToken?: string) =>
      this.#publisher.publish(
        replyTopic(topic, "rejected"),
        JSON.stringify({ code, message, timestamp, ...(clientToken ? { clientToken } : {}) }),
        0,
      );
    if (payload.length > MAX_SHADOW_BYTES) {
      return await reject(413, `payload of ${payload.length} bytes exceeds ${MAX_SHADOW_BYTES}`);
    }
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
    } catch {
      return await reject(400, "payload is not UTF-8 JSON");
    }
    if (!isObject(body)) return await reject(400, "payload must be a JSON object");
    const clientToken = typeof body.clientToken === "string" && body.clientToken.length <= 64
      ? body.clientToken
      : undefined;
    const state = body.state;
    if (!isObject(state) || !isObject(state.reported)) {
      return await reject(400, "state.reported must be an object", clientToken);
    }
    if (depth(state.reported) > MAX_DEPTH) {
      return await reject(400, `state.reported nests deeper than ${MAX_DEPTH}`, clientToken);
    }
    const reportedNow = state.reported;
    // Merged under the thing's lock: two nodes never build a version from the same previous one.
    const document = await this.#store.transaction(async () => {
      await this.#store.lockThing(thing);
      const previous = await this.get(thing);
      const document: ShadowDocument = {
        reported: merge(previous?.reported ?? {}, reportedNow),
        version: (previous?.version ?? 0) + 1,
        timestamp,
      };
      await this.#store.putRecord("shadow", thing, { ...document, thing });
      return document;
    });
    await this.#store.committed();
    if ("firmware" in reportedNow) {
      const firmware = document.reported.firmware;
      await this.#onFirmware(thing, typeof firmware === "string" ? firmware : null);
    }
    await this.#publisher.publish(
      `${topic}/accepted`,
      JSON.stringify({
        state: { reported: state.reported },
        version: document.version,
        timestamp,
        ...(clientToken ? { clientToken } : {}),
      }),
      0,
    );
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function depth(value: unknown): number {
  if (!isObject(value)) return 0;
  let deepest = 0;
  for (const child of Object.values(value)) deepest = Math.max(deepest, depth(child));
  return deepest + 1;
}

/** AWS shadow merge: objects merge key by key, null deletes, anything else replaces. */
function merge(
  into: Record<string, unknown>,
  update: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...into };
  for (const [key, value] of Object.entries(update)) {
    if (value === null) delete out[key];
    else if (isObject(value) && isObject(out[key])) {
      out[key] = merge(out[key] as Record<string, unknown>, value);
    } else out[key] = value;
  }
  return out;
}
