/**
 * The fleet supervisor (main thread): spreads device actors over Web Workers, routes messages to
 * them, keeps the latest telemetry (batched by the Workers, never one message per device event),
 * and restarts the devices of a Worker that dies, flash included (sent in its last words).
 *
 * @module
 */

import type { FlashChanges } from "../bootloader/flash.ts";
import type { ActorMessage, DeviceTelemetry, FleetDeviceSpec } from "./device_actor.ts";
import type { DeviceReport, FromWorker, ToWorker, WorkerInit } from "./worker_messages.ts";
import { type FleetSummary, mergeSummaries } from "./fleet_summary.ts";
import type { WireRecord } from "./wire_log.ts";

/** Options of {@linkcode FleetSupervisor}. */
export interface SupervisorOptions {
  /** Number of Workers. @default {navigator.hardwareConcurrency} */
  readonly workers?: number;
  /** Devices per Worker; when set, Workers = ceil(devices / this). */
  readonly devicesPerWorker?: number;
  readonly init: Omit<WorkerInit, "workerIndex">;
  readonly log?: (line: string) => void;
  /** Told of every packet of the devices in `init.wireLog`. */
  readonly wire?: (record: WireRecord) => void;
}

interface WorkerSlot {
  worker: Worker;
  readonly index: number;
  readonly devices: FleetDeviceSpec[];
  restarts: number;
}

/**
 * How long a dead Worker's last words are waited for. A Worker terminated without them says
 * nothing of its flash: its devices come back with the flash they had when it started them.
 */
const LAST_WORDS_MS = 5_000;

/**
 * Runs a fleet of device actors.
 *
 * @example
 * ```ts ignore
 * const fleet = new FleetSupervisor({ init });
 * await fleet.start(devices);
 * fleet.telemetry.get("dev-1")?.version;
 * await fleet.stop();
 * ```
 */
export class FleetSupervisor {
  /** Latest telemetry per thing. */
  readonly telemetry = new Map<string, DeviceTelemetry>();
  /** Worker deaths seen. */
  workerRestarts = 0;
  /** Image bytes the devices received, as of the Workers' last batches. */
  bytesReceived = 0;
  readonly #options: SupervisorOptions;
  readonly #slots: WorkerSlot[] = [];
  readonly #where = new Map<string, WorkerSlot>();
  /** Each device's flash sectors that differ from the factory chip, as of its Worker's last death. */
  readonly #flash = new Map<string, Map<number, FlashChanges[number]>>();
  /** Reports and summaries asked of the Workers, by request. */
  readonly #answers = new Map<number, (answer: unknown) => void>();
  /** Telemetry syncs waited for, by request, with the slot asked. */
  readonly #syncs = new Map<number, { readonly slot: WorkerSlot; readonly done: () => void }>();
  #nextRequest = 1;
  #stopping = false;

  /** Builds a supervisor; nothing runs until {@linkcode FleetSupervisor.start}. */
  constructor(options: SupervisorOptions) {
    this.#options = options;
  }

  /** Number of Workers in use. */
  get workerCount(): number {
    return this.#slots.length;
  }

  /** Spawns the Workers and powers every device on. */
  async start(devices: readonly FleetDeviceSpec[]): Promise<void> {
    const perWorker = this.#options.devicesPerWorker;
    const count = Math.max(
      1,
      perWorker
        ? Math.ceil(devices.length / perWorker)
        : this.#options.workers ?? navigator.hardwareConcurrency,
    );
    for (let index = 0; index < count; index++) {
      this.#slots.push({ worker: null as unknown as Worker, index, devices: [], restarts: 0 });
    }
    devices.forEach((device, i) => {
      const slot = this.#slots[perWorker ? Math.floor(i / perWorker) : i % count]!;
      slot.devices.push(device);
      this.#where.set(device.thing, slot);
    });
    await Promise.all(this.#slots.map((slot) => this.#spawn(slot)));
  }

  /** Adds devices to the running fleet (spread over the existing Workers) and powers them on. */
  addDevices(devices: readonly FleetDeviceSpec[]): Promise<void> {
    const bySlot = new Map<WorkerSlot, FleetDeviceSpec[]>();
    devices.forEach((device, i) => {
      const slot = this.#slots[i % this.#slots.length]!;
      slot.devices.push(device);
      this.#where.set(device.thing, slot);
      bySlot.set(slot, [...(bySlot.get(slot) ?? []), device]);
    });
    for (const [slot, added] of bySlot) {
      slot.worker.postMessage({ type: "add", devices: added } satisfies ToWorker);
    }
    return Promise.resolve();
  }

  /** Sends a message to a device's actor. */
  send(thing: string, message: ActorMessage): void {
    this.#where.get(thing)?.worker.postMessage({ type: "send", thing, message } satisfies ToWorker);
  }

  /**
   * Makes a Worker die of an uncaught error (fault injection). Its devices come back in a fresh
   * Worker with their flash as it was at the crash; their RAM (agents, connections) is gone.
   */
  crashWorker(index: number): void {
    this.#slots[index]?.worker.postMessage({ type: "crash" } satisfies ToWorker);
  }

  /**
   * Final state of every device (waits for each actor's mailbox to drain); with
   * `incompleteAtMost`, only up to that many per Worker of those whose update is not over.
   */
  async report(options: { incompleteAtMost?: number } = {}): Promise<DeviceReport[]> {
    const parts = await this.#askEach<readonly DeviceReport[]>((requestId) => ({
      type: "report",
      requestId,
      ...options,
    }));
    return parts.flat();
  }

  /**
   * Every device's final state in figures, added up in the Workers (see fleet_summary.ts):
   * what a run of tens of thousands of devices reports, without their reports in this thread.
   */
  async summary(expectedVersion: string): Promise<FleetSummary> {
    const parts = await this.#askEach<FleetSummary>((requestId) => ({
      type: "summary",
      requestId,
      expectedVersion,
    }));
    return mergeSummaries(parts);
  }

  #askEach<T>(request: (requestId: number) => ToWorker): Promise<T[]> {
    return Promise.all(this.#slots.map((slot) => {
      const requestId = this.#nextRequest++;
      return new Promise<T>((resolve) => {
        this.#answers.set(requestId, resolve as (answer: unknown) => void);
        slot.worker.postMessage(request(requestId));
      });
    }));
  }

  /**
   * Waits until every Worker has sent the telemetry that changed up to now, so `telemetry` is at
   * least as fresh as this call (batches otherwise come every 250 ms to 1 s, later on a busy
   * machine). A Worker that dies meanwhile counts as synced: its devices' telemetry is dropped.
   */
  async syncTelemetry(): Promise<void> {
    await Promise.all(this.#slots.map((slot) => {
      const requestId = this.#nextRequest++;
      return new Promise<void>((resolve) => {
        this.#syncs.set(requestId, { slot, done: resolve });
        slot.worker.postMessage({ type: "sync", requestId } satisfies ToWorker);
      });
    }));
  }

  /** Stops every device and Worker. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#slots.map((slot) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10_000);
        slot.worker.addEventListener("message", (event: MessageEvent<FromWorker>) => {
          if (event.data.type === "stopped") {
            clearTimeout(timer);
            resolve();
          }
        });
        slot.worker.postMessage({ type: "stop" } satisfies ToWorker);
      })
    ));
    for (const slot of this.#slots) slot.worker.terminate();
  }

  async #spawn(slot: WorkerSlot): Promise<void> {
    const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    slot.worker = worker;
    const ready = new Promise<void>((resolve, reject) => {
      worker.addEventListener("message", (event: MessageEvent<FromWorker>) => {
        if (event.data.type === "ready") resolve();
      });
      // A Worker that fails before it is ready would otherwise be waited for forever.
      worker.addEventListener(
        "error",
        (event) => reject(new Error(`worker ${slot.index} failed to start: ${event.message}`)),
        { once: true },
      );
    });
    let heardLastWords: () => void = () => {};
    const lastWords = new Promise<void>((resolve) => heardLastWords = resolve);
    worker.addEventListener("message", (event: MessageEvent<FromWorker>) => {
      if (event.data.type === "dying") heardLastWords();
      else if (event.data.type === "crashed") {
        if (slot.worker !== worker) return;
        this.#options.log?.(`fault: Worker ${slot.index} crashed (injected)`);
        void this.#respawn(slot, "injected crash");
      } else this.#onMessage(event.data);
    });
    worker.addEventListener("error", (event) => {
      event.preventDefault();
      if (slot.worker !== worker) return;
      // Terminating drops the messages not yet read: its final flash changes must be in first.
      let timer: ReturnType<typeof setTimeout> | undefined;
      void Promise.race([
        lastWords,
        new Promise<void>((resolve) => timer = setTimeout(resolve, LAST_WORDS_MS)),
      ]).then(() => {
        clearTimeout(timer);
        return this.#respawn(slot, event.message);
      });
    });
    worker.postMessage(
      {
        type: "init",
        init: {
          ...this.#options.init,
          workerIndex: slot.index,
          seed: this.#options.init.seed + slot.index,
        },
      } satisfies ToWorker,
    );
    await ready;
    const devices = slot.devices.map((spec) => {
      const flash = this.#flash.get(spec.thing);
      return flash ? { ...spec, flash: [...flash.values()] } : spec;
    });
    worker.postMessage({ type: "add", devices } satisfies ToWorker);
  }

  async #respawn(slot: WorkerSlot, why: string): Promise<void> {
    if (this.#stopping) return;
    this.workerRestarts++;
    slot.restarts++;
    this.#options.log?.(
      `worker ${slot.index} died (${why}): restarting its ${slot.devices.length} devices`,
    );
    slot.worker.terminate();
    // What they said before dying is stale until the new Worker reports.
    for (const device of slot.devices) this.telemetry.delete(device.thing);
    for (const [requestId, sync] of this.#syncs) {
      if (sync.slot !== slot) continue;
      this.#syncs.delete(requestId);
      sync.done();
    }
    await this.#spawn(slot);
  }

  #onMessage(message: FromWorker): void {
    switch (message.type) {
      case "telemetry":
        for (const state of message.states) this.telemetry.set(state.thing, state);
        this.bytesReceived += message.bytes;
        for (const [thing, changes] of message.flash) {
          let sectors = this.#flash.get(thing);
          if (!sectors) this.#flash.set(thing, sectors = new Map());
          for (const change of changes) sectors.set(change[0], change);
        }
        return;
      case "log":
        this.#options.log?.(message.line);
        return;
      case "wire":
        this.#options.wire?.(message.record);
        return;
      case "report":
      case "summary":
        this.#answers.get(message.requestId)?.(
          message.type === "report" ? message.devices : message.summary,
        );
        this.#answers.delete(message.requestId);
        return;
      case "synced":
        this.#syncs.get(message.requestId)?.done();
        this.#syncs.delete(message.requestId);
        return;
      default:
        return;
    }
  }
}
