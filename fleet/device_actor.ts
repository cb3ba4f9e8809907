/**
 * A device actor: one simulated device (flash + bootloader + agent + simulated firmware + its own
 * MQTT connection) and a mailbox of typed messages handled one at a time. A handler that throws
 * gets the device power-cycled (flash survives, RAM does not); nothing leaves the actor.
 *
 * @module
 */

import { DeviceRuntime } from "../agent/device_runtime.ts";
import { ResumeStore } from "../agent/resume_record.ts";
import { AgentStateStore } from "../bootloader/agent_store.ts";
import { fetchHttpPort } from "../agent/http_fetch.ts";
import type { AgentCallbackEvent, AgentConfig } from "../agent/agent_config.ts";
import type { BootRecord, BootRom } from "../bootloader/bootloader.ts";
import { SecureElement, type SecureElementChip } from "../bootloader/secure_element.ts";
import type { Behavior } from "../bootloader/firmware.ts";
import { Device, flashFactoryImage, provisionBootChain } from "../bootloader/device.ts";
import { fwuStateName } from "../bootloader/fwu.ts";
import { type FlashChanges, isPowerCut, type NorFlash } from "../bootloader/flash.ts";
import { createFlash, type DeviceLayout } from "../bootloader/layout.ts";
import type { Clock } from "../lib/clock.ts";
import type { Random } from "../lib/random.ts";
import type { Packet } from "mqtt";
import {
  type MqttPacketLike,
  type WireDirection,
  type WireRecord,
  wireRecord,
} from "./wire_log.ts";
import {
  bootsTrustedImage,
  eraseApplicationSlots,
  restoreFactorySlots,
} from "../bootloader/bootability.ts";

/** Messages a device actor handles. */
export type ActorMessage =
  | { readonly type: "power-on" }
  | { readonly type: "power-off" }
  | { readonly type: "cut-power"; readonly atOperation: number; readonly torn: boolean }
  | { readonly type: "disconnect" }
  | { readonly type: "corrupt-blocks"; readonly count: number }
  /** The next `count` stream data blocks the device receives are lost, doubled or late. */
  | {
    readonly type: "block-faults";
    readonly fault: "drop" | "duplicate" | "reorder";
    readonly count: number;
  }
  | { readonly type: "throw"; readonly message: string }
  /** Both application slots erased (a flash failure), then the power cycled. */
  | { readonly type: "wipe-slots" }
  /** The factory image restored to the primary slot, the secondary erased, the power cycled. */
  | { readonly type: "factory-reset" };

/**
 * When (epoch ms, comparable across Workers and processes) a device passed each stage of its
 * latest job: the agent accepted it, activated the downloaded image (download and signature
 * check done, reboot next), started the self-test on the new image, and completed the update.
 */
export interface UpdateMarks {
  readonly jobId: string;
  received: number;
  /** Image bytes received for this job (re-sent blocks included). */
  bytes?: number;
  /** When the last image bytes arrived before the image was activated. */
  lastBytes?: number;
  activated?: number;
  /** The first boot of an application after the activation (the bootloader's work done). */
  booted?: number;
  /** The first MQTT connection up after that boot. */
  connected?: number;
  selfTest?: number;
  complete?: number;
}

/** What the supervisor learns about a device. */
export interface DeviceTelemetry {
  readonly thing: string;
  readonly state: string;
  readonly version: string | null;
  readonly trial: boolean;
  readonly updateState: string | null;
  /**
   * The device reported SUCCEEDED and has not confirmed the image yet (the agent's intent is in
   * its flash): a reset now reverts it, and the agent installs the update again. Only looked at
   * when the device otherwise seems done with its update (running, no trial, nothing staged).
   */
  readonly unconfirmedSuccess: boolean;
  readonly marks: UpdateMarks | null;
}

/** Update states in which a device has nothing of an update left to do. */
const RESTING_STATES: ReadonlySet<string | null> = new Set(["READY", "UPDATED", "FAILED"]);

/** Running, no trial, nothing staged or being written: how a device looks between updates. */
function looksSettled(t: Pick<DeviceTelemetry, "state" | "trial" | "updateState">): boolean {
  return t.state === "running" && !t.trial && RESTING_STATES.has(t.updateState);
}

/**
 * Whether a device is done with its updates as far as it can know: it looks settled and no
 * reported success waits for its confirmation (after a reset in that window it still looks
 * settled, on its old image, until it installs the update again).
 *
 * @example
 * ```ts
 * import { settledTelemetry } from "./device_actor.ts";
 * settledTelemetry({ thing: "t", state: "running", version: "1.0.0+0", trial: false,
 *   updateState: "READY", unconfirmedSuccess: true, marks: null }); // false
 * ```
 */
export function settledTelemetry(t: DeviceTelemetry): boolean {
  return looksSettled(t) && !t.unconfirmedSuccess;
}

/** Everything a Worker needs to build devices (structured-clone friendly). */
export interface FleetDeviceSpec {
  readonly thing: string;
  readonly secret: string;
  readonly seed: number;
  /** How this device behaves on any image other than the factory one (image behaviour mixes). */
  readonly badImage?: Behavior;
  /** Its flash's changes since the factory (a device that outlived its Worker). */
  readonly flash?: FlashChanges;
  /** Its secure element, when it logs in with one (the chip moves with the device). */
  readonly element?: SecureElementChip;
}

/** Shared by all devices of a Worker. */
export interface ActorEnvironment {
  readonly layout: DeviceLayout;
  readonly rom: BootRom;
  /** A chip already holding the factory image; each device starts from a copy-on-write clone. */
  readonly factory: NorFlash;
  /**
   * The brokers devices connect to: a device starts on one (spread by its seed) and fails over
   * to the others in turn.
   */
  readonly brokerUrls: readonly string[];
  /** Turns to open a connection, shared by the Worker's devices (none: connect at once). */
  readonly connectGate?: () => Promise<() => void>;
  readonly clock: Clock;
  readonly agentConfig: Partial<AgentConfig>;
  readonly random: Random;
  readonly log: (line: string) => void;
  /** The link every device of this Worker sees (incoming direction). */
  readonly network?: NetworkProfile;
  /** Send every device's own log lines (boot, agent) to `log` too, not only actor events. */
  readonly deviceLogs?: boolean;
  /** Devices whose log lines go to `log` even without `deviceLogs`. */
  readonly traceThings?: ReadonlySet<string>;
  /** Devices erase their previous image once a new one is confirmed. */
  readonly erasePreviousImage?: boolean;
  /** Devices whose every MQTT packet goes to `record` (the run's wire log). */
  readonly wireLog?: {
    readonly things: ReadonlySet<string>;
    readonly startedAt: number;
    readonly record: (record: WireRecord) => void;
  };
}

/**
 * A device's radio link, applied to what it receives over MQTT: latency (with +-25% jitter,
 * order kept), bandwidth (bytes queue behind each other) and loss (stream data blocks silently
 * dropped). The HTTP data plane is not shaped.
 *
 * @example
 * ```ts
 * const edgeLink: NetworkProfile = { latencyMs: 300, bandwidthBytesPerSecond: 32 * 1024, loss: 0.05 };
 * ```
 */
export interface NetworkProfile {
  readonly latencyMs: number;
  /** Bytes per second; 0 = unlimited. */
  readonly bandwidthBytesPerSecond: number;
  /** Probability of losing a message, 0..1. */
  readonly loss: number;
}

/** Counts of faults an actor injected or suffered. */
export interface ActorFaults {
  disconnects: number;
  corruptedBlocks: number;
  powerCuts: number;
  /** Power losses while the new image ran on trial (it reverts, as a crashed one would). */
  trialPowerCuts: number;
  crashes: number;
  /** Messages the simulated link lost. */
  lostMessages: number;
  /** Stream data blocks dropped, delivered twice or delivered after the next one on request. */
  droppedBlocks: number;
  duplicatedBlocks: number;
  reorderedBlocks: number;
  /** Times both application slots were erased (`wipe-slots`). */
  wipes: number;
  /** Factory resets (`factory-reset`). */
  factoryResets: number;
}

/** No fault yet. */
export function noFaults(): ActorFaults {
  return {
    disconnects: 0,
    corruptedBlocks: 0,
    powerCuts: 0,
    trialPowerCuts: 0,
    crashes: 0,
    lostMessages: 0,
    droppedBlocks: 0,
    duplicatedBlocks: 0,
    reorderedBlocks: 0,
    wipes: 0,
    factoryResets: 0,
  };
}

type BlockFault = "corrupt" | "drop" | "duplicate" | "reorder";

/** How long a block held back to arrive after the next one waits for that next one. */
const REORDER_HOLD_MS = 200;

/**
 * A device actor.
 *
 * @example
 * ```ts ignore
 * const actor = new DeviceActor(spec, environment);
 * actor.send({ type: "power-on" });
 * ```
 */
export class DeviceActor {
  readonly thing: string;
  readonly device: Device;
  readonly runtime: DeviceRuntime;
  /** The faults so far (a copy). */
  get faults(): ActorFaults {
    return { ...this.#faults, trialPowerCuts: this.device.trialsInterrupted };
  }
  readonly #faults: ActorFaults = noFaults();
  readonly #inFlight = new Set<ReturnType<typeof setTimeout>>();
  #linkFreeAt = 0;
  readonly #environment: ActorEnvironment;
  readonly #mailbox: ActorMessage[] = [];
  #running: Promise<void> | null = null;
  /** Faults planned for the next stream data blocks, in order. */
  readonly #blockFaults: BlockFault[] = [];
  /** A block held back to arrive after the next one, and the timer that lets it go anyway. */
  #heldBlock:
    | { readonly payload: Uint8Array; readonly timer: ReturnType<typeof setTimeout> }
    | null = null;
  #wantOn = false;
  #marks: UpdateMarks | null = null;
  /** The last telemetry and what it was derived from: rebuilding it reads flash. */
  #telemetry: {
    readonly key: string;
    readonly record: BootRecord | null;
    readonly value: DeviceTelemetry;
  } | null = null;
  #marksChanged = 0;
  #bytesReceived = 0;

  /** Builds a powered-off device from the factory chip (and the changes its flash went through). */
  constructor(spec: FleetDeviceSpec, environment: ActorEnvironment) {
    this.thing = spec.thing;
    this.#environment = environment;
    const flash = environment.factory.clone({ seed: spec.seed, trackChanges: true });
    if (spec.flash) flash.applyChanges(spec.flash);
    this.device = new Device({
      layout: environment.layout,
      rom: environment.rom,
      clock: environment.clock,
      flash,
      erasePreviousImage: environment.erasePreviousImage ?? false,
      ...(spec.element ? { secureElement: SecureElement.fromChip(spec.element) } : {}),
      ...(spec.badImage
        ? {
          behaviorOverride: (behavior: Behavior, version: string) =>
            version.startsWith("1.0.0") ? behavior : spec.badImage!,
        }
        : {}),
    });
    this.runtime = new DeviceRuntime({
      device: this.device,
      thingName: spec.thing,
      ...brokersFor(spec.seed, environment.brokerUrls),
      clock: environment.clock,
      agentConfig: environment.agentConfig,
      // 30 s to connect, as mqtt.js defaults to: with 10,000 devices rebooting at once the
      // broker's backlog outlasted 5 s, and every timed-out attempt was torn down and made
      // again (4% of a Worker's CPU on socket errors alone), which only lengthened the queue.
      mqttOptions: {
        username: spec.thing,
        password: spec.secret,
        reconnectPeriod: 500,
        connectTimeout: 30_000,
      },
      // An element with a certificate is the device's identity; one without holds keys only.
      ...(spec.element?.certificate ? { login: "secure-element" as const } : {}),
      ...(environment.connectGate ? { connectGate: environment.connectGate } : {}),
      // Fleet devices have both data planes; the job document says which to use.
      http: {
        getRange: async (url, start, end) => {
          const response = await fetchHttpPort.getRange(url, start, end);
          this.#received(response.body.length);
          return response;
        },
      },
      messageFilter: (topic, payload) => this.#filter(topic, payload),
      onEvent: (event) => this.#mark(event),
      onMilestone: (milestone) => this.#milestone(milestone),
      ...(environment.wireLog?.things.has(spec.thing)
        ? { wireTap: wireTapOf(spec.thing, environment.wireLog) }
        : {}),
      ...(environment.deviceLogs || environment.traceThings?.has(spec.thing)
        ? { log: environment.log }
        : {}),
    });
  }

  #mark(event: AgentCallbackEvent): void {
    const now = Date.now();
    this.#marksChanged++;
    if (event.type === "ReceivedJob") {
      // A job received again after the reboot (self-test) is the same update going on.
      // A job again after it completed (a new execution of it, e.g. after a reset): new marks.
      if (this.#marks?.jobId !== event.jobId || this.#marks.complete !== undefined) {
        this.#marks = { jobId: event.jobId, received: now };
      }
    } else if (this.#marks && "jobId" in event && event.jobId === this.#marks.jobId) {
      if (event.type === "Activate") this.#marks.activated ??= now;
      else if (event.type === "StartTest") this.#marks.selfTest ??= now;
      else if (event.type === "UpdateComplete") this.#marks.complete ??= now;
    }
  }

  /** A boot or connection after the update's activation: where its reboot's time went. */
  #milestone(milestone: "booted" | "connected"): void {
    const marks = this.#marks;
    if (!marks || marks.activated === undefined || marks.complete !== undefined) return;
    if (milestone === "booted") marks.booted ??= Date.now();
    else if (marks.booted !== undefined) marks.connected ??= Date.now();
  }

  /** Counts image bytes that reached the device, in all and for the update under way. */
  #received(bytes: number): void {
    this.#bytesReceived += bytes;
    if (this.#marks && this.#marks.complete === undefined) {
      this.#marks.bytes = (this.#marks.bytes ?? 0) + bytes;
      if (this.#marks.activated === undefined) this.#marks.lastBytes = Date.now();
    }
  }

  /**
   * Image bytes that reached the device (stream blocks as they come off the network, before any
   * injected loss; HTTP range bodies) since the last call: how fast the fleet really downloads,
   * whichever cloud it talks to.
   */
  takeBytesReceived(): number {
    const bytes = this.#bytesReceived;
    this.#bytesReceived = 0;
    return bytes;
  }

  /** Queues a message; messages are handled in order, one at a time. */
  send(message: ActorMessage): void {
    this.#mailbox.push(message);
    if (!this.#running) this.#running = Promise.resolve().then(() => this.#drain());
  }

  /** Resolves when the mailbox is empty. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  /**
   * The device as the supervisor sees it. The same object as last time while nothing it is made
   * of changed (flash, power state, running image, update marks), so callers can send only news.
   */
  telemetry(): DeviceTelemetry {
    // Everything telemetry shows derives from the flash (trailers), the boot record and the
    // marks: while none of them moved, the last one stands without reading flash again (the
    // Worker asks every 250 ms for each of its devices).
    const record = this.device.bootRecord;
    const key = `${this.device.flash.generation}:${this.device.state}:${this.#marksChanged}`;
    if (this.#telemetry?.key === key && this.#telemetry.record === record) {
      return this.#telemetry.value;
    }
    const value = this.#buildTelemetry();
    this.#telemetry = { key, record, value };
    return value;
  }

  #buildTelemetry(): DeviceTelemetry {
    const running = this.device.running;
    let updateState: string | null = null;
    try {
      updateState = this.device.state === "running" && this.device.flash.poweredOn
        ? fwuStateName(this.device.fwu.state)
        : null;
    } catch {
      updateState = null;
    }
    const state = this.device.state;
    const trial = running?.trial ?? false;
    return {
      thing: this.thing,
      state,
      version: running?.version ?? null,
      trial,
      updateState,
      // Read from flash only when it can matter: during an update the intent is not looked at.
      unconfirmedSuccess: looksSettled({ state, trial, updateState }) &&
        new ResumeStore(new AgentStateStore(this.device.areas.agentState)).loadIntent() !== null,
      marks: this.#marks ? { ...this.#marks } : null,
    };
  }

  /**
   * Whether the flash still holds a bootable image from the trusted signer: a boot ROM run on a
   * copy-on-write clone, so the device itself is not touched.
   */
  bootable(): Promise<boolean> {
    const { layout, clock } = this.#environment;
    // The device's ROM: it reaches the device's own secure element (encrypted images).
    return bootsTrustedImage(this.device.flash, layout, this.device.rom, clock);
  }

  /** Keeps an unintended power loss (cut, crash loop) from being permanent: power comes back. */
  async watchdog(): Promise<void> {
    if (this.#wantOn && this.device.state === "off" && !this.#running) {
      this.send({ type: "power-on" });
    }
    await Promise.resolve();
  }

  /** Stops the device's software and connection (flash kept). */
  async stop(): Promise<void> {
    this.#wantOn = false;
    for (const timer of this.#inFlight) clearTimeout(timer);
    this.#inFlight.clear();
    await this.idle();
    await this.runtime.stop();
  }

  async #drain(): Promise<void> {
    try {
      for (let message = this.#mailbox.shift(); message; message = this.#mailbox.shift()) {
        try {
          await this.#handle(message);
        } catch (error) {
          if (!isPowerCut(error)) {
            // The actor's own fault: power-cycle the device, keep its flash, tell nobody else.
            this.#faults.crashes++;
            this.#environment.log(`${this.thing}: ${(error as Error).message}: power-cycling`);
          }
          this.device.powerOff();
        }
      }
    } finally {
      this.#running = null;
    }
  }

  async #handle(message: ActorMessage): Promise<void> {
    switch (message.type) {
      case "power-on":
        this.#wantOn = true;
        if (this.device.state === "off") await this.runtime.start();
        return;
      case "power-off":
        this.#wantOn = false;
        this.device.powerOff();
        return;
      case "cut-power":
        this.#faults.powerCuts++;
        this.device.cutPowerAt({ atOperation: message.atOperation, torn: message.torn });
        return;
      case "wipe-slots":
        this.#faults.wipes++;
        // The flash fails under power; the device notices at its next boot.
        eraseApplicationSlots(this.device.flash, this.#environment.layout);
        this.device.powerOff();
        if (this.#wantOn) await this.runtime.start();
        return;
      case "factory-reset":
        this.#faults.factoryResets++;
        restoreFactorySlots(this.device.flash, this.#environment.factory, this.#environment.layout);
        this.device.powerOff();
        if (this.#wantOn) await this.runtime.start();
        return;
      case "disconnect":
        this.#faults.disconnects++;
        this.runtime.dropConnection();
        return;
      case "corrupt-blocks":
        for (let i = 0; i < message.count; i++) this.#blockFaults.push("corrupt");
        return;
      case "block-faults":
        for (let i = 0; i < message.count; i++) this.#blockFaults.push(message.fault);
        return;
      case "throw":
        throw new Error(message.message);
    }
  }

  #filter(topic: string, payload: Uint8Array): Uint8Array | null {
    if (topic.endsWith("/data/cbor")) this.#received(payload.length);
    const damaged = topic.endsWith("/data/cbor") ? this.#blockFault(topic, payload) : payload;
    if (damaged === null) return null;
    const network = this.#environment.network;
    if (
      !network ||
      (network.latencyMs === 0 && network.bandwidthBytesPerSecond === 0 && network.loss === 0)
    ) {
      return damaged;
    }
    const random = this.#environment.random;
    // Only stream data is lost: AWS publishes it at QoS 0, while Jobs messages are QoS 1 and
    // survive a lossy radio as retransmissions, i.e. as latency.
    if (topic.endsWith("/data/cbor") && random.next() < network.loss) {
      this.#faults.lostMessages++;
      return null;
    }
    // Deliver later, in order: each message waits for the link to be free, then for its bytes.
    const now = performance.now();
    const transfer = network.bandwidthBytesPerSecond > 0
      ? (damaged.length * 1000) / network.bandwidthBytesPerSecond
      : 0;
    const latency = network.latencyMs * (0.75 + 0.5 * random.next());
    this.#linkFreeAt = Math.max(this.#linkFreeAt, now) + transfer;
    const deliverAt = Math.max(this.#linkFreeAt, now + latency);
    this.#deliverLater(topic, damaged, deliverAt - now);
    return null;
  }

  #deliverLater(
    topic: string,
    payload: Uint8Array,
    delayMs: number,
    onDelivered?: () => void,
  ): ReturnType<typeof setTimeout> {
    const agent = this.runtime.agent;
    const timer = setTimeout(() => {
      this.#inFlight.delete(timer);
      onDelivered?.();
      // A message that arrives after a reset finds a new agent that never asked for it: drop it.
      if (agent && this.runtime.agent === agent) agent.handleMessage(topic, payload);
    }, delayMs);
    this.#inFlight.add(timer);
    return timer;
  }

  /** Applies the next planned fault to a stream data block; null: it does not arrive now. */
  #blockFault(topic: string, payload: Uint8Array): Uint8Array | null {
    const held = this.#heldBlock;
    if (held) {
      // The block after a held one overtakes it; the held one follows right behind.
      this.#heldBlock = null;
      clearTimeout(held.timer);
      this.#inFlight.delete(held.timer);
      this.#deliverLater(topic, held.payload, 0);
    }
    switch (this.#blockFaults.shift()) {
      case undefined:
        return payload;
      case "corrupt": {
        if (payload.length <= 16) return payload;
        this.#faults.corruptedBlocks++;
        const corrupted = payload.slice();
        const at = 8 + this.#environment.random.below(corrupted.length - 8);
        corrupted[at]! ^= 0xff;
        return corrupted;
      }
      case "drop":
        this.#faults.droppedBlocks++;
        return null;
      case "duplicate":
        this.#faults.duplicatedBlocks++;
        this.#deliverLater(topic, payload, 0);
        return payload;
      case "reorder": {
        this.#faults.reorderedBlocks++;
        // No next block within the hold time (the last one, a stalled stream): it comes late.
        const timer = this.#deliverLater(topic, payload, REORDER_HOLD_MS, () => {
          this.#heldBlock = null;
        });
        this.#heldBlock = { payload, timer };
        return null;
      }
    }
  }
}

/** Builds the factory chip every device of a fleet starts from. */
export function factoryChip(
  layout: DeviceLayout,
  factoryImage: Uint8Array,
  bootChain?: { readonly rootCertificateDer: Uint8Array; readonly secondStage: Uint8Array },
): NorFlash {
  const flash = createFlash(layout);
  flashFactoryImage(flash, layout, factoryImage);
  if (bootChain) provisionBootChain(flash, layout, bootChain);
  return flash;
}

/**
 * A device's broker and the ones it fails over to: the list turned to start at its share. The
 * share is drawn from a hash of the device's seed, not the seed itself: seeds are consecutive, so
 * `seed % nodes` put every device of a fleet process (every `processes`-th device) on one node
 * whenever the counts of nodes and processes shared a factor.
 *
 * @example
 * ```ts ignore
 * brokersFor(7, ["mqtt://a:1", "mqtt://b:1"]); // { brokerUrl: "mqtt://a:1", fallbackBrokerUrls: ["mqtt://b:1"] }
 * ```
 */
export function brokersFor(
  seed: number,
  urls: readonly string[],
): { brokerUrl: string; fallbackBrokerUrls?: readonly string[] } {
  const start = mixed(Math.trunc(seed)) % urls.length;
  const turned = [...urls.slice(start), ...urls.slice(0, start)];
  return turned.length > 1
    ? { brokerUrl: turned[0]!, fallbackBrokerUrls: turned.slice(1) }
    : { brokerUrl: turned[0]! };
}

/** A wire tap that turns a device's packets into wire log records. */
function wireTapOf(
  thing: string,
  log: NonNullable<ActorEnvironment["wireLog"]>,
): (direction: WireDirection, packet: Packet) => void {
  return (direction, packet) =>
    log.record(
      wireRecord(
        thing,
        direction,
        packet as unknown as MqttPacketLike,
        (Date.now() - log.startedAt) / 1000,
      ),
    );
}

/** A 32-bit integer hash (murmur3's finalizer): neighbouring inputs land far apart. */
function mixed(value: number): number {
  let h = value | 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
