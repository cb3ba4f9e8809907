/**
 * A fleet Worker: hosts many device actors, batches their telemetry, answers report requests.
 * One device throwing is that device's problem (its actor power-cycles it); the Worker goes on.
 *
 * @module
 */

import { parseCertificate } from "../protocol/certificates.ts";
import type { FlashChanges } from "../bootloader/flash.ts";
import { deviceLayout } from "../bootloader/layout.ts";
import { ScaledClock, systemClock } from "../lib/clock.ts";
import { seededRandom } from "../lib/random.ts";
import {
  type ActorEnvironment,
  DeviceActor,
  type DeviceTelemetry,
  factoryChip,
} from "./device_actor.ts";
import type { FromWorker, ToWorker } from "./worker_messages.ts";
import type { WireRecord } from "./wire_log.ts";
import { startCpuProfile } from "../lib/cpu_profiler.ts";
import { startHeapProfile } from "../lib/heap_profiler.ts";
import { Semaphore } from "../lib/concurrency.ts";
import { addDevice, emptySummary } from "./fleet_summary.ts";
import { isEncrypted } from "../protocol/image_format.ts";

/** The board every fleet device is (its boot ROM's hardware id; images may name it). */
export const FLEET_BOARD = "ota-fleet-board";

const scope = self as unknown as {
  postMessage(message: FromWorker): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  close(): void;
};
const actors = new Map<string, DeviceActor>();
let environment: ActorEnvironment | null = null;
let telemetryTimer: ReturnType<typeof setTimeout> | undefined;
/**
 * A telemetry tick walks every actor of the Worker, so past 1,250 devices it comes less often (at
 * 5,000 devices once a second): at 250 ms it cost 5% of a 5,000-device Worker's time.
 */
const telemetryPeriod = (base: number) => Math.max(base, Math.min(1000, actors.size / 5));
let stopCpuProfile: (() => Promise<void>) | null = null;
let stopHeapProfile: (() => Promise<void>) | null = null;
/**
 * Connection attempts in flight per Worker: thousands of devices powering on at once overflowed
 * the broker's listen queue (the kernel drops what does not fit, and a dropped device waited out
 * its connect timeout). Two Workers at 1,024 stay well inside a 4,096-connection queue.
 */
const connectTurns = new Semaphore(1024);

const post = (message: FromWorker) => scope.postMessage(message);

/** What each device last told the supervisor: only news is sent again. */
const sent = new WeakMap<DeviceActor, DeviceTelemetry>();

/**
 * Device states that changed since the last batch; in a dying Worker's last words also every
 * flash sector its devices changed since the Worker started them. Streaming the sectors with
 * every batch instead kept each written sector in a SharedArrayBuffer, copied it again at the
 * next write after each batch and cloned it into the host: a quarter of a 10,000-device fleet's
 * CPU time, for a Worker death that always has last words (an uncaught error runs the handler
 * below; running out of memory ends the whole process).
 */
function postTelemetry(withFlash = false): void {
  const flash: [string, FlashChanges][] = [];
  const states: DeviceTelemetry[] = [];
  let bytes = 0;
  for (const actor of actors.values()) {
    bytes += actor.takeBytesReceived();
    if (withFlash) {
      const changes = actor.device.flash.takeChanges();
      if (changes.length > 0) flash.push([actor.thing, changes]);
    }
    const state = actor.telemetry();
    if (sent.get(actor) !== state) {
      sent.set(actor, state);
      states.push(state);
    }
  }
  if (states.length > 0 || flash.length > 0 || bytes > 0) {
    post({ type: "telemetry", states, flash, bytes });
  }
}

// A Worker dying of an uncaught error still gets its messages out: the devices' flash goes with
// them exactly as it is at the moment of death (copied into the message; a sector buffer devices
// share is copied once), and "dying" tells the host it has it all (the host may hear of the error
// before it has read the messages posted ahead of it).
const lastWords = () => {
  postTelemetry(true);
  post({ type: "dying" });
};
/** The message of the crash the fleet injects (`--worker-crashes`). */
const INJECTED_CRASH = "simulated Worker crash (fault injection)";
self.addEventListener("error", (event) => {
  lastWords();
  if (event.message?.includes(INJECTED_CRASH)) {
    // An expected death: the host says one line about it, not the runtime a stack trace.
    event.preventDefault();
    post({ type: "crashed", reason: "injected" });
    self.close();
  }
});
self.addEventListener("unhandledrejection", lastWords);

// Registered before any await, so no message is lost (Deno's Worker docs).
scope.onmessage = (event) => {
  void handle(event.data).catch((error) =>
    post({ type: "log", line: `worker error: ${(error as Error).stack ?? error}` })
  );
};

async function handle(message: ToWorker): Promise<void> {
  switch (message.type) {
    case "init": {
      const init = message.init;
      const root = parseCertificate(init.rootCertificateDer);
      if (!root.ok) throw new Error(`root certificate: ${root.reason}`);
      const layout = deviceLayout({ slotSectors: init.slotSectors });
      environment = {
        layout,
        rom: {
          root: root.value,
          certificates: new Map(init.certificates),
          hardwareId: FLEET_BOARD,
        },
        factory: factoryChip(
          layout,
          init.factoryImage,
          init.secondStage
            ? { rootCertificateDer: init.rootCertificateDer, secondStage: init.secondStage }
            : undefined,
        ),
        brokerUrls: init.brokerUrls,
        connectGate: () => connectTurns.acquire(),
        clock: init.timeScale === 1 ? systemClock : new ScaledClock(init.timeScale),
        agentConfig: init.agentConfig,
        random: seededRandom(init.seed),
        log: (line) => post({ type: "log", line }),
        ...(init.network ? { network: init.network } : {}),
        ...(init.deviceLogs ? { deviceLogs: true } : {}),
        ...(init.traceThings ? { traceThings: new Set(init.traceThings) } : {}),
        ...(init.erasePreviousImage ? { erasePreviousImage: true } : {}),
        ...(init.wireLog
          ? {
            wireLog: {
              things: new Set(init.wireLog.things),
              startedAt: init.wireLog.startedAt,
              record: (record: WireRecord) => post({ type: "wire", record }),
            },
          }
          : {}),
      };
      if (init.cpuProfileDir) {
        const stop = await startCpuProfile();
        stopCpuProfile = () => stop(`${init.cpuProfileDir}/worker-${init.workerIndex}.cpuprofile`);
      }
      if (init.heapProfileDir) {
        await Deno.mkdir(init.heapProfileDir, { recursive: true });
        const stop = await startHeapProfile();
        stopHeapProfile = () =>
          stop(`${init.heapProfileDir}/worker-${init.workerIndex}.heapprofile`);
      }
      const scheduleTick = () => {
        telemetryTimer = setTimeout(() => {
          postTelemetry();
          for (const actor of actors.values()) void actor.watchdog();
          scheduleTick();
        }, telemetryPeriod(init.telemetryMs));
      };
      scheduleTick();
      post({ type: "ready" });
      return;
    }
    case "add":
      if (!environment) throw new Error("add before init");
      for (const spec of message.devices) {
        const actor = new DeviceActor(spec, environment);
        actors.set(spec.thing, actor);
        actor.send({ type: "power-on" });
      }
      return;
    case "send":
      actors.get(message.thing)?.send(message.message);
      return;
    case "report": {
      const devices = [];
      const limit = message.incompleteAtMost;
      for (const actor of actors.values()) {
        if (limit !== undefined) {
          if (devices.length >= limit) break;
          if (actor.telemetry().marks?.complete) continue;
        }
        await actor.idle();
        devices.push({
          telemetry: actor.telemetry(),
          bootable: await actor.bootable(),
          faults: actor.faults,
          device: actor.device.report(),
          lastLog: actor.runtime.log.slice(-12),
          wire: actor.runtime.wireTraffic(),
        });
      }
      post({ type: "report", requestId: message.requestId, devices });
      return;
    }
    case "summary": {
      // Device by device, so a Worker of thousands never holds more than one boot ROM run.
      const summary = emptySummary();
      for (const actor of actors.values()) {
        await actor.idle();
        addDevice(summary, {
          telemetry: actor.telemetry(),
          bootable: await actor.bootable(),
          runsEncrypted: actor.device.bootRecord !== null &&
            isEncrypted(actor.device.bootRecord.image),
          secondStage: actor.device.secondStage?.version ?? null,
          faults: actor.faults,
          wire: actor.runtime.wireTraffic(),
        }, message.expectedVersion);
      }
      post({ type: "summary", requestId: message.requestId, summary });
      return;
    }
    case "sync":
      postTelemetry();
      post({ type: "synced", requestId: message.requestId });
      return;
    case "crash":
      // Out of every handler and promise, so nothing catches it: the Worker dies as on a bug.
      setTimeout(() => {
        throw new Error(INJECTED_CRASH);
      });
      return;
    case "stop":
      clearTimeout(telemetryTimer);
      await Promise.all([...actors.values()].map((a) => a.stop()));
      await stopCpuProfile?.();
      await stopHeapProfile?.();
      post({ type: "stopped" });
      return;
  }
}
