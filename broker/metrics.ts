/**
 * `GET /metrics` in the Prometheus text format (version 0.0.4): MQTT connections and traffic,
 * refusals, stream blocks, executions by status, and the store's commits and their time.
 *
 * @module
 */

import type { Cloud } from "./cloud.ts";

/** One metric: its help text, type and samples (labels -> value). */
interface Metric {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge";
  readonly samples: readonly { readonly labels?: Record<string, string>; readonly value: number }[];
}

function render(metrics: readonly Metric[]): string {
  const lines: string[] = [];
  for (const m of metrics) {
    lines.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`);
    for (const sample of m.samples) {
      const labels = Object.entries(sample.labels ?? {})
        .map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, "_")}"`).join(",");
      lines.push(`${m.name}${labels ? `{${labels}}` : ""} ${sample.value}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** The OTA agents' counters summed over every device's last report. */
async function agentPackets(cloud: Cloud): Promise<[string, number][]> {
  const sums = { received: 0, queued: 0, processed: 0, dropped: 0 };
  for (const shadow of (await cloud.shadows.all()).values()) {
    const agent = shadow.reported.agent as Record<string, unknown> | undefined;
    if (!agent || typeof agent !== "object") continue;
    const n = (key: string) => typeof agent[key] === "number" ? agent[key] as number : 0;
    sums.received += n("packetsReceived");
    sums.queued += n("packetsQueued");
    sums.processed += n("packetsProcessed");
    sums.dropped += n("packetsDropped");
  }
  return Object.entries(sums);
}

/** The cloud's metrics as Prometheus text. */
export async function prometheusText(cloud: Cloud): Promise<string> {
  const { traffic } = cloud;
  const executions = await cloud.store.executionsByStatus();
  const { commits, seconds } = cloud.store.commitStats;
  const streams = cloud.streams.stats;
  return render([
    {
      name: "ota_mqtt_connections_total",
      help: "MQTT connections accepted.",
      type: "counter",
      samples: [{ value: traffic.connections }],
    },
    {
      name: "ota_mqtt_connected",
      help: "MQTT clients connected now.",
      type: "gauge",
      samples: [{ value: traffic.connected }],
    },
    {
      name: "ota_mqtt_refusals_total",
      help: "Logins refused and ACL violations.",
      type: "counter",
      samples: [{ value: traffic.refused }],
    },
    {
      name: "ota_mqtt_messages_received_total",
      help: "Messages clients published.",
      type: "counter",
      samples: [{ value: traffic.messagesIn }],
    },
    {
      name: "ota_mqtt_bytes_received_total",
      help: "Payload bytes clients published.",
      type: "counter",
      samples: [{ value: traffic.bytesIn }],
    },
    {
      name: "ota_stream_requests_total",
      help: "GetStream requests answered.",
      type: "counter",
      samples: [{ value: streams.requests }],
    },
    {
      name: "ota_stream_blocks_sent_total",
      help: "Stream data blocks sent.",
      type: "counter",
      samples: [{ value: streams.blocksSent }],
    },
    {
      name: "ota_job_executions",
      help: "Job executions by status.",
      type: "gauge",
      samples: Object.entries(executions).map(([status, value]) => ({ labels: { status }, value })),
    },
    {
      name: "ota_agent_packets_total",
      help: "Stream blocks the devices' OTA agents counted, as they report them (shadow).",
      type: "counter",
      samples: (await agentPackets(cloud)).map(([kind, value]) => ({ labels: { kind }, value })),
    },
    {
      name: "ota_store_commits_total",
      help: "Store commits.",
      type: "counter",
      samples: [{ value: commits }],
    },
    {
      name: "ota_store_commit_seconds_total",
      help: "Time spent committing.",
      type: "counter",
      samples: [{ value: Number(seconds.toFixed(6)) }],
    },
  ]);
}
