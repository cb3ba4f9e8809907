/**
 * One device with its software: the simulated device below, and above it, after every boot, a
 * fresh OTA agent on a fresh MQTT connection (RAM does not survive a reset). A device whose
 * firmware cannot reach the network gets an agent whose every network call fails.
 *
 * @module
 */

import mqtt, { type IClientOptions, type MqttClient, type Packet } from "mqtt";
import { AgentStateStore } from "../bootloader/agent_store.ts";
import type { Device } from "../bootloader/device.ts";
import { SECOND_STAGE_FILE_TYPE } from "../bootloader/first_stage.ts";
import { TRUST_STORE_FILE_TYPE } from "../protocol/trust_update.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import {
  type AgentCallbackEvent,
  type AgentConfig,
  type AgentStatistics,
  type OtaAgentOptions,
} from "./agent_config.ts";
import { type AgentPlatform, type HttpPort, type UpdatableComponent } from "./ports.ts";
import { OtaAgent } from "./agent.ts";
import { attachAgent, mqttPort, unreachableMqtt } from "./mqtt_transport.ts";
import { thingTopics } from "../protocol/topics.ts";
import { tokenServer } from "../protocol/login_token.ts";

/**
 * What the agent needs from a running device: its PAL, running version, self-test and update
 * state.
 *
 * @example
 * ```ts ignore
 * const platform = devicePlatform(device);
 * platform.runningVersion; // { major: 1, minor: 0, revision: 0, build: 0 }
 * ```
 */
export function devicePlatform(device: Device): AgentPlatform {
  if (device.state === "recovery") {
    // The boot ROM's OTA-only client: no application, no components, firmware jobs only.
    return {
      pal: device.pal,
      runningVersion: { major: 0, minor: 0, revision: 0, build: 0 },
      selfTest: () => ({ passed: false, reason: "recovery mode runs no application" }),
      updateState: () => device.fwu.state,
      updateFailure: () => null,
      firmwareOnly: true,
    };
  }
  return {
    pal: device.pal,
    runningVersion: device.bootRecord!.image.header.version,
    selfTest: () => device.selfTest(),
    updateState: () => device.fwu.state,
    updateFailure: () => {
      const info = device.fwu.query(0).info;
      return info?.errorDetail ? { code: info.error, detail: info.errorDetail } : null;
    },
    // A device booted through two stages updates its second stage as a component of its own.
    components: device.secondStage ? [secondStageComponent(device)] : [],
    // Its trust store takes root-signed updates of its own file type.
    installFile: (fileType, data) =>
      fileType === TRUST_STORE_FILE_TYPE ? device.applyTrustUpdate(data) : null,
  };
}

/**
 * The second-stage bootloader as an {@linkcode UpdatableComponent}: its jobs carry file type
 * {@linkcode SECOND_STAGE_FILE_TYPE}, and it goes through the first stage's trial and revert.
 *
 * @example
 * ```ts ignore
 * const component = secondStageComponent(device);
 * component.version(); // { major: 2, minor: 0, revision: 0, build: 0 }
 * ```
 */
export function secondStageComponent(device: Device): UpdatableComponent {
  const running = () => {
    const stage = device.secondStage;
    if (!stage) throw new Error("the device did not boot through two stages");
    return stage;
  };
  return {
    fileType: SECOND_STAGE_FILE_TYPE,
    name: "second-stage bootloader",
    version: () => running().imageVersion,
    install: (data) => device.installSecondStage(data),
    stage: (data) => device.stageSecondStage(data),
    cancel: () => device.cancelSecondStage(),
    onTrial: () => device.secondStage?.trial === true,
    confirm: () => device.confirmSecondStage(),
  };
}

/** Options of {@linkcode DeviceRuntime}. */
export interface DeviceRuntimeOptions {
  readonly device: Device;
  readonly thingName: string;
  readonly brokerUrl: string;
  /**
   * Other brokers of the same cluster: when the connection to one goes away, the device
   * reconnects to the next in turn (`brokerUrl` first), and its agent resumes where it was.
   */
  readonly fallbackBrokerUrls?: readonly string[];
  readonly clock?: Clock;
  readonly agentConfig?: Partial<AgentConfig>;
  readonly http?: HttpPort;
  readonly mqttOptions?: IClientOptions;
  readonly log?: (line: string) => void;
  /** Told of every agent callback event as it happens (they are also kept in `events`). */
  readonly onEvent?: (event: AgentCallbackEvent) => void;
  /** Told when the device has booted an application and when its MQTT connection comes up. */
  readonly onMilestone?: (milestone: "booted" | "connected") => void;
  /** Damages or drops incoming messages (fault injection on the link). */
  readonly messageFilter?: (topic: string, payload: Uint8Array) => Uint8Array | null;
  /**
   * How the device logs in: with the secret in `mqttOptions` (default), or with a fresh login
   * token its secure element signs for every connection (user name = thing).
   */
  readonly login?: "secret" | "secure-element";
  /**
   * Waits for a turn to open the connection and returns the function that ends the turn (called
   * once it is up or has failed). A fleet that powers thousands of devices on at once uses it to
   * keep its connection attempts within what the broker's listen queue holds.
   */
  readonly connectGate?: () => Promise<() => void>;
  /** Told of every MQTT packet the device sends or receives (a wire log; for a few devices). */
  readonly wireTap?: (direction: "sent" | "received", packet: Packet) => void;
}

/** What a device's MQTT connections carried, every connection since it started. */
export interface WireTraffic {
  packetsSent: number;
  packetsReceived: number;
  /** Bytes its sockets wrote and read: MQTT packets with their headers. */
  bytesSent: number;
  bytesReceived: number;
}

/**
 * Runs a device and its agent.
 *
 * @example
 * ```ts ignore
 * const runtime = new DeviceRuntime({ device, thingName: "dev-1", brokerUrl });
 * await runtime.start();
 * ```
 */
export class DeviceRuntime {
  /** The device. */
  readonly device: Device;
  /** The callback events of the agents this device ran, oldest first (the last 1,000). */
  readonly events: AgentCallbackEvent[] = [];
  /** Log lines (the last 1,000). */
  readonly log: string[] = [];
  readonly #options: DeviceRuntimeOptions;
  #agent: OtaAgent | null = null;

  /** The thing this device is. */
  get thingName(): string {
    return this.#options.thingName;
  }
  #client: MqttClient | null = null;
  #detach: (() => void) | null = null;
  #stopped = false;

  /** Wires the device's boot and power-loss hooks. */
  constructor(options: DeviceRuntimeOptions) {
    this.device = options.device;
    this.#options = options;
    this.device.setHooks({ onBoot: () => this.#onBoot(), onPowerOff: () => this.#onPowerOff() });
  }

  /** The agent of the current boot. */
  get agent(): OtaAgent | null {
    return this.#agent;
  }

  /** The MQTT client of the current boot. */
  get client(): MqttClient | null {
    return this.#client;
  }

  /** Powers the device on (it boots, then the agent starts). */
  async start(): Promise<void> {
    this.#stopped = false;
    await this.device.powerOn();
  }

  /** Breaks the TCP connection (mqtt.js reconnects by itself). */
  dropConnection(): void {
    this.#client?.stream?.destroy();
  }

  /** Waits until the device has finished any reset it scheduled and the agent is idle. */
  async settle(): Promise<void> {
    await this.device.settle();
    await this.#agent?.idle();
  }

  /** Stops the agent and closes the connection; the device keeps its flash. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.device.settle().catch(() => {});
    const agent = this.#agent;
    if (agent) {
      await agent.shutdown().catch(() => {});
      agent.halt();
      this.#retire(agent);
    }
    await this.#closeClient();
  }

  #record(line: string): void {
    keepLast(this.log, line);
    this.#options.log?.(`[${this.#options.thingName}] ${line}`);
  }

  #onBoot(): void {
    this.#boot++;
    if (this.#stopped) return;
    const { device, thingName } = this.#options;
    if (device.state !== "recovery") this.#options.onMilestone?.("booted");
    const running = device.running ?? { version: "none", trial: false, behavior: "ok" };
    this.#record(
      device.state === "recovery"
        ? `recovery mode (OTA only): ${device.recoveryReason}`
        : `booted ${running.version}${running.trial ? " (trial)" : ""}`,
    );
    const common = {
      thingName,
      platform: devicePlatform(device),
      store: new AgentStateStore(device.areas.agentState),
      clock: this.#options.clock ?? systemClock,
      config: { maxFirmwareSize: device.fwu.maxSize, ...this.#options.agentConfig },
      onEvent: (event: AgentCallbackEvent) => {
        keepLast(this.events, event);
        this.#options.onEvent?.(event);
        // The device's own facts change with these: tell the cloud (its shadow).
        if (event.type === "UpdateComplete" || event.type === "Fail") this.#reportState();
      },
      log: (line: string) => this.#record(line),
      ...(this.#options.http ? { http: this.#options.http } : {}),
    };
    if (running.behavior === "hang") {
      // A hung application runs nothing, the agent included; the watchdog will reset it.
      this.#record("application hangs");
      return;
    }
    if (running.behavior === "no-network") {
      this.#agent = new OtaAgent({ ...common, mqtt: unreachableMqtt });
      this.#agent.start();
      return;
    }
    if (this.#options.login === "secure-element") {
      // The token is signed inside the element (async); connect once it is there, unless the
      // device lost power or rebooted meanwhile.
      const boot = this.#boot;
      this.#loginToken().then((password) => {
        if (boot === this.#boot && !this.#stopped) this.#connectInTurn(common, password);
      }, (error) => this.#record(`login token: ${(error as Error).message}`));
      return;
    }
    this.#connectInTurn(common);
  }

  #connectInTurn(common: Omit<OtaAgentOptions, "mqtt">, password?: string): void {
    const gate = this.#options.connectGate;
    if (!gate) {
      this.#connect(common, password);
      return;
    }
    const boot = this.#boot;
    void gate().then((endTurn) => {
      if (boot !== this.#boot || this.#stopped) return endTurn();
      const client = this.#connect(common, password);
      client.once("connect", endTurn);
      client.once("close", endTurn);
    });
  }

  /** Counts boots and power losses, so that work started for one boot is dropped after it. */
  #boot = 0;

  #loginToken(): Promise<string> {
    const element = this.#options.device.secureElement;
    if (!element) return Promise.reject(new Error("the device has no secure element"));
    // Stamped with the device's real-time clock: the broker checks it against wall time, whatever
    // pace a simulation runs its other clocks at.
    // Made for the server the device dials: a relaying impostor cannot use it with another.
    return element.loginToken(
      this.#options.thingName,
      systemClock.now(),
      tokenServer(this.#options.brokerUrl),
    );
  }

  #connect(common: Omit<OtaAgentOptions, "mqtt">, password?: string): MqttClient {
    const thingName = this.#options.thingName;
    const reconnectPeriod = this.#options.mqttOptions?.reconnectPeriod ?? 100;
    const fallbacks = this.#options.fallbackBrokerUrls ?? [];
    const client = mqtt.connect(this.#options.brokerUrl, {
      clientId: thingName,
      // mqtt.js takes the next of `servers` at every (re)connection, from the first.
      ...(fallbacks.length > 0
        ? { servers: [this.#options.brokerUrl, ...fallbacks].map(serverOf) }
        : {}),
      reconnectPeriod,
      // A refused login (a node that cannot reach its database answers "server unavailable")
      // must not leave the device offline for good: mqtt.js stops reconnecting after a refused
      // CONNACK unless told otherwise.
      reconnectOnConnackError: true,
      connectTimeout: 5_000,
      // mqtt.js logs every packet through `debug` even when it is off: 1.4% of a Worker's time.
      log: noLog,
      ...this.#options.mqttOptions,
      // A token is good for one login: reconnecting is ours, each time with a new token.
      ...(password ? { username: thingName, password, reconnectPeriod: 0 } : {}),
    });
    this.#client = client;
    this.#countTraffic(client);
    if (password) {
      client.on("close", () => {
        if (client !== this.#client) return; // closed on purpose (power loss, stop)
        this.#loginToken().then((next) => {
          if (client !== this.#client) return;
          client.options.password = next;
          if (this.#reconnectTimer !== null) clearTimeout(this.#reconnectTimer);
          this.#reconnectTimer = setTimeout(() => {
            this.#reconnectTimer = null;
            if (client !== this.#client || client.connected) return;
            // The stores carry unacknowledged QoS 1 messages over, as mqtt.js's own reconnect.
            client.reconnect({
              incomingStore: client.incomingStore,
              outgoingStore: client.outgoingStore,
            });
          }, reconnectPeriod);
        }, (error) => this.#record(`login token: ${(error as Error).message}`));
      });
    }
    client.on("close", () => this.#record("mqtt: connection closed"));
    client.on("reconnect", () => this.#record("mqtt: reconnecting"));
    client.on("error", (error) => {
      this.#record(`mqtt: ${error.message}`);
      // mqtt.js reconnects when its socket closes; under Deno a socket that failed a write to a
      // peer that had ended it (EPIPE after a session takeover) may never emit 'close', which
      // left the device offline until the keepalive noticed. Closing it ourselves is idempotent.
      if (client.stream && !client.stream.destroyed) client.stream.destroy();
    });
    const agent = new OtaAgent({ ...common, mqtt: mqttPort(client) });
    this.#agent = agent;
    this.#detach = attachAgent(client, agent, this.#options.messageFilter);
    client.once("connect", () => {
      agent.start();
      this.#reportState();
    });
    if (this.#options.onMilestone) {
      client.on("connect", () => this.#options.onMilestone?.("connected"));
    }
    return client;
  }

  readonly #wire: WireTraffic = {
    packetsSent: 0,
    packetsReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
  };
  /** Sockets whose bytes are in `#wire` already. */
  readonly #countedSockets = new WeakSet<object>();

  #countTraffic(client: MqttClient): void {
    const wire = this.#wire;
    const tap = this.#options.wireTap;
    // mqtt.js wrote its first CONNECT inside mqtt.connect(), before anyone could listen (its
    // `manualConnect` would let us listen first, but then its end() leaves a reconnect timer
    // behind): counted here, as mqtt.js builds it from the options.
    wire.packetsSent++;
    tap?.("sent", connectPacketOf(client.options));
    client.on("packetsend", (packet) => {
      wire.packetsSent++;
      tap?.("sent", packet);
    });
    client.on("packetreceive", (packet) => {
      wire.packetsReceived++;
      tap?.("received", packet);
    });
    // mqtt.js makes a new socket per (re)connection; a closed one's counts are final.
    client.on("close", () => this.#countSocket(client.stream as SocketCounts, wire));
  }

  #countSocket(socket: SocketCounts | undefined, into: WireTraffic): void {
    if (!socket || this.#countedSockets.has(socket)) return;
    this.#countedSockets.add(socket);
    into.bytesSent += socket.bytesWritten ?? 0;
    into.bytesReceived += socket.bytesRead ?? 0;
  }

  /** What this device's MQTT connections carried so far (its open socket's bytes included). */
  wireTraffic(): WireTraffic {
    const totals = { ...this.#wire };
    const open = this.#client?.stream as SocketCounts | undefined;
    if (open && !this.#countedSockets.has(open)) {
      totals.bytesSent += open.bytesWritten ?? 0;
      totals.bytesReceived += open.bytesRead ?? 0;
    }
    return totals;
  }

  /** The agent's counters (AWS `OtaAgentStatistics_t`) summed over every agent since start. */
  readonly #agentTotals: AgentStatistics = {
    packetsReceived: 0,
    packetsQueued: 0,
    packetsProcessed: 0,
    packetsDropped: 0,
  };

  readonly #retired = new WeakSet<OtaAgent>();

  /** This device's OTA agent statistics: every agent's since the runtime started. */
  agentStatistics(): AgentStatistics {
    const current = this.#agent && !this.#retired.has(this.#agent) ? this.#agent.statistics : null;
    const totals = { ...this.#agentTotals };
    if (current) {
      for (const key of Object.keys(totals) as (keyof typeof totals)[]) totals[key] += current[key];
    }
    return totals;
  }

  /** An agent ends (power off, stop): its counters go into the totals. */
  #retire(agent: OtaAgent): void {
    if (this.#retired.has(agent)) return;
    this.#retired.add(agent);
    for (const key of Object.keys(this.#agentTotals) as (keyof AgentStatistics)[]) {
      this.#agentTotals[key] += agent.statistics[key];
    }
  }

  /** Publishes the device's reported state (shadow update); fire and forget. */
  #reportState(): void {
    const client = this.#client;
    const state = this.#options.device.state;
    if (!client?.connected || (state !== "running" && state !== "recovery")) return;
    const topic = thingTopics(this.#options.thingName).shadowUpdate;
    // The agent's counters travel with the device's own facts, as the AWS agent keeps them.
    const reported = { ...this.#options.device.reportedState(), agent: this.agentStatistics() };
    client.publish(topic, JSON.stringify({ state: { reported } }), { qos: 0 }, () => {});
  }

  #onPowerOff(): void {
    this.#boot++;
    if (this.#agent) this.#retire(this.#agent);
    this.#agent?.halt();
    this.#agent = null;
    void this.#closeClient();
  }

  #reconnectTimer: ReturnType<typeof setTimeout> | null = null;

  async #closeClient(): Promise<void> {
    if (this.#reconnectTimer !== null) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#detach?.();
    this.#detach = null;
    const client = this.#client;
    this.#client = null;
    if (client) await client.endAsync(true).catch(() => {});
  }
}

/** The CONNECT packet mqtt.js (v5) makes from a client's options. */
function connectPacketOf(options: IClientOptions): Packet {
  return {
    cmd: "connect",
    protocolId: options.protocolId ?? "MQTT",
    protocolVersion: options.protocolVersion ?? 4,
    clean: options.clean ?? true,
    clientId: options.clientId ?? "",
    keepalive: options.keepalive ?? 60,
    ...(options.username !== undefined ? { username: options.username } : {}),
    ...(options.password !== undefined ? { password: options.password } : {}),
  } as Packet;
}

/** What a Node socket says it carried. */
type SocketCounts = { readonly bytesRead?: number; readonly bytesWritten?: number };

/** A device runs for as long as a soak lasts: its history is bounded (one event per block). */
const HISTORY = 1_000;

const noLog = () => {};

function keepLast<T>(history: T[], item: T): void {
  history.push(item);
  if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
}

/** An mqtt.js `servers` entry for a broker URL (mqtt://HOST:PORT or mqtts://HOST:PORT). */
function serverOf(url: string): { host: string; port: number; protocol: "mqtt" | "mqtts" } {
  const parsed = new URL(url);
  const protocol = parsed.protocol === "mqtts:" ? "mqtts" : "mqtt";
  return {
    host: parsed.hostname,
    port: Number(parsed.port || (protocol === "mqtts" ? 8883 : 1883)),
    protocol,
  };
}
