/**
 * Messages between the fleet supervisor (main thread) and its Workers. Everything here is
 * structured-clone friendly.
 *
 * @module
 */

import type { AgentConfig } from "../agent/agent_config.ts";
import type { WireTraffic } from "../agent/device_runtime.ts";
import type { WireRecord } from "./wire_log.ts";
import type { DeviceReport as DeviceSnapshot } from "../bootloader/device.ts";
import type { FlashChanges } from "../bootloader/flash.ts";
import type { FleetSummary } from "./fleet_summary.ts";
import type {
  ActorFaults,
  ActorMessage,
  DeviceTelemetry,
  FleetDeviceSpec,
  NetworkProfile,
} from "./device_actor.ts";

/** What a Worker needs to build its devices. */
export interface WorkerInit {
  readonly workerIndex: number;
  readonly slotSectors: number;
  readonly rootCertificateDer: Uint8Array;
  readonly certificates: readonly (readonly [string, string])[];
  readonly factoryImage: Uint8Array;
  /** A signed second-stage bootloader: devices boot in two stages (none: single stage). */
  readonly secondStage?: Uint8Array;
  /** The brokers of the cloud (several: the nodes of a cluster). */
  readonly brokerUrls: readonly string[];
  readonly timeScale: number;
  readonly agentConfig: Partial<AgentConfig>;
  readonly seed: number;
  /** Telemetry batch period, real milliseconds. */
  readonly telemetryMs: number;
  /** The simulated radio link of every device (none: the loopback socket as is). */
  readonly network?: NetworkProfile;
  /** Forward the devices' own log lines (agent, boot) as `log` messages; for small runs. */
  readonly deviceLogs?: boolean;
  /** Devices erase their previous image once a new one is confirmed. */
  readonly erasePreviousImage?: boolean;
  /** Devices whose own log lines are forwarded as `log` messages (`[thing] line`). */
  readonly traceThings?: readonly string[];
  /** Sample the Worker's CPU and write `worker-<index>.cpuprofile` here when it stops. */
  readonly cpuProfileDir?: string;
  /** Sample the Worker's allocations and write `worker-<index>.heapprofile` here when it stops. */
  readonly heapProfileDir?: string;
  /** Devices whose every MQTT packet is sent as a `wire` message, timed from `startedAt`. */
  readonly wireLog?: { readonly things: readonly string[]; readonly startedAt: number };
}

/** Main -> Worker. */
export type ToWorker =
  | { readonly type: "init"; readonly init: WorkerInit }
  | { readonly type: "add"; readonly devices: readonly FleetDeviceSpec[] }
  | { readonly type: "send"; readonly thing: string; readonly message: ActorMessage }
  /** Every device's report; with `incompleteAtMost`, only the first N whose update is not over. */
  | { readonly type: "report"; readonly requestId: number; readonly incompleteAtMost?: number }
  /** The Worker's devices in figures (fleet_summary.ts). */
  | { readonly type: "summary"; readonly requestId: number; readonly expectedVersion: string }
  /** Send the telemetry that changed now, then `synced`. */
  | { readonly type: "sync"; readonly requestId: number }
  /** Die of an uncaught error (fault injection). */
  | { readonly type: "crash" }
  | { readonly type: "stop" };

/** One device's final state. */
export interface DeviceReport {
  readonly telemetry: DeviceTelemetry;
  readonly bootable: boolean;
  readonly faults: ActorFaults;
  /** What the device's flash says: slot trailers, security counter, update state, last boot log. */
  readonly device: DeviceSnapshot;
  /** The device's latest log lines (agent, connection), to tell why it is where it is. */
  readonly lastLog: readonly string[];
  /** What its MQTT connections carried. */
  readonly wire: WireTraffic;
}

/** Worker -> main. */
export type FromWorker =
  | { readonly type: "ready" }
  | {
    readonly type: "telemetry";
    /** The devices whose state changed since the last batch. */
    readonly states: readonly DeviceTelemetry[];
    /**
     * Empty except in a dying Worker's last words: the flash sectors each device changed since the
     * Worker started it, which the supervisor gives the device in the Worker that replaces it.
     */
    readonly flash: readonly (readonly [thing: string, changes: FlashChanges])[];
    /** Image bytes the Worker's devices received since the last batch. */
    readonly bytes: number;
  }
  | { readonly type: "log"; readonly line: string }
  /** One packet of a device named in `wireLog`. */
  | { readonly type: "wire"; readonly record: WireRecord }
  | {
    readonly type: "report";
    readonly requestId: number;
    readonly devices: readonly DeviceReport[];
  }
  | { readonly type: "summary"; readonly requestId: number; readonly summary: FleetSummary }
  /** Every telemetry change up to the `sync` request has been sent before this. */
  | { readonly type: "synced"; readonly requestId: number }
  | { readonly type: "stopped" }
  /** Sent by a Worker dying of an uncaught error, after its last telemetry: nothing follows. */
  | { readonly type: "dying" }
  /** Sent by a Worker ending itself on an injected crash (after "dying"). */
  | { readonly type: "crashed"; readonly reason: "injected" };
