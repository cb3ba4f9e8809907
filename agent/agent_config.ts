/**
 * What the agent is built with: its tunables (AWS `otaconfig*` equivalents) and defaults, its
 * options, the callback events it raises and the counters it keeps.
 *
 * @module
 */

import type { AgentStateStore } from "../bootloader/agent_store.ts";
import type { Clock } from "../lib/clock.ts";
import { type DataProtocol, type OtaFileSpec } from "../protocol/job_document.ts";
import { type AgentPlatform, type HttpPort, type MqttPort } from "./ports.ts";

/** Application callback events (AWS `OtaJobEvent_t`). */
export type AgentCallbackEvent =
  | { readonly type: "Activate"; readonly jobId: string }
  | {
    readonly type: "Fail";
    readonly jobId: string;
    readonly reason: string;
    readonly detail: string;
  }
  | { readonly type: "StartTest"; readonly jobId: string }
  | { readonly type: "Processed" }
  | { readonly type: "SelfTestFailed"; readonly jobId: string; readonly reason: string }
  | { readonly type: "ReceivedJob"; readonly jobId: string }
  | {
    readonly type: "UpdateComplete";
    readonly jobId: string;
    readonly file: OtaFileSpec;
    readonly data: Uint8Array | null;
  }
  | { readonly type: "NoActiveJob" };

/** Tunables (AWS `otaconfig*` equivalents). */
export interface AgentConfig {
  /** Stream block size, a power of two 256..131072. @default {4096} */
  readonly blockSize: number;
  /** Blocks asked for per GetStream request (`n`). @default {8} */
  readonly blocksPerRequest: number;
  /** Idle time before a request is repeated. @default {10000} */
  readonly requestTimeoutMs: number;
  /** Unanswered requests before the job fails. @default {32} */
  readonly maxMomentum: number;
  /** Progress is reported every N blocks (and at the first). @default {64} */
  readonly statusFrequency: number;
  /** A trial image that has not passed its self-test by then resets. @default {16000} */
  readonly selfTestTimeoutMs: number;
  /** First and largest delay between `$next/get` retries. @default {2000, 60000} */
  readonly jobRequestBackoffMs: readonly [number, number];
  /** Wait for a status acknowledgement before retrying. @default {5000} */
  readonly statusAckTimeoutMs: number;
  /** Status retries before giving up. @default {10} */
  readonly maxStatusRetries: number;
  /** The download record is saved every N blocks. @default {16} */
  readonly persistEveryBlocks: number;
  /** Accept the same or an older version. @default {false} */
  readonly allowDowngrade: boolean;
  /**
   * Refuse job documents without signed metadata (issue time and expiry, see
   * protocol/job_metadata.ts). Documents that carry it are checked either way. @default {false}
   * (AWS IoT's documents have none)
   */
  readonly requireFreshDocuments: boolean;
  /** Preferred data protocol when a job offers both. @default {"MQTT"} */
  readonly preferredProtocol: DataProtocol;
  /** Largest firmware file (the update slot). */
  readonly maxFirmwareSize: number;
  /** Largest data file. @default {65536} */
  readonly maxDataFileSize: number;
}

/** Defaults for {@linkcode AgentConfig} (less `maxFirmwareSize`, which the device sets). */
export const DEFAULT_AGENT_CONFIG: Omit<AgentConfig, "maxFirmwareSize"> = {
  blockSize: 4096,
  blocksPerRequest: 8,
  requestTimeoutMs: 10_000,
  maxMomentum: 32,
  statusFrequency: 64,
  selfTestTimeoutMs: 16_000,
  jobRequestBackoffMs: [2_000, 60_000],
  statusAckTimeoutMs: 5_000,
  maxStatusRetries: 10,
  persistEveryBlocks: 16,
  allowDowngrade: false,
  requireFreshDocuments: false,
  preferredProtocol: "MQTT",
  maxDataFileSize: 65_536,
};

/** Counters (AWS `OtaAgentStatistics_t`). */
export interface AgentStatistics {
  packetsReceived: number;
  packetsQueued: number;
  packetsProcessed: number;
  packetsDropped: number;
}

/** Options of {@linkcode OtaAgent}. */
export interface OtaAgentOptions {
  readonly thingName: string;
  readonly mqtt: MqttPort;
  readonly http?: HttpPort;
  readonly platform: AgentPlatform;
  readonly store: AgentStateStore;
  readonly clock: Clock;
  readonly config: Partial<AgentConfig> & { maxFirmwareSize: number };
  readonly onEvent?: (event: AgentCallbackEvent) => void;
  readonly log?: (line: string) => void;
}
