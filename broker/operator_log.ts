/**
 * What `deno task broker` tells its operator, as events: one human-readable line each by default
 * (`2026-12-04T10:00:00.000Z update-created job=AFR_OTA-v2 targets=50`), or one JSON object per
 * line with `--log-format json` for a log collector.
 *
 * @example
 * ```ts
 * import { operatorLog } from "./operator_log.ts";
 * const lines: string[] = [];
 * const log = operatorLog("text", (l) => lines.push(l), () => 0);
 * log("client-connected", { client: "dev-1", remote: "127.0.0.1:50000" });
 * lines[0]; // "1970-01-01T00:00:00.000Z client-connected client=dev-1 remote=127.0.0.1:50000"
 * ```
 *
 * @module
 */

/** Writes one event with its fields. */
export type OperatorLog = (event: string, fields?: Readonly<Record<string, unknown>>) => void;

/** The formats `--log-format` takes. */
export const LOG_FORMATS = ["text", "json"] as const;

function text(value: unknown): string {
  const s = typeof value === "string" ? value : JSON.stringify(value);
  // A value with spaces or quotes is quoted, so that a line still splits into its fields.
  return /[\s"=]/.test(s) ? JSON.stringify(s) : s;
}

/** A log in `format` writing lines to `sink`, times from `now` (ms since the epoch). */
export function operatorLog(
  format: typeof LOG_FORMATS[number],
  sink: (line: string) => void,
  now: () => number = Date.now,
): OperatorLog {
  return (event, fields = {}) => {
    const time = new Date(now()).toISOString();
    if (format === "json") sink(JSON.stringify({ time, event, ...fields }));
    else {
      const rest = Object.entries(fields).map(([k, v]) => `${k}=${text(v)}`).join(" ");
      sink(`${time} ${event}${rest ? ` ${rest}` : ""}`);
    }
  };
}

/**
 * `log` at most `limit` events per `windowMs`; the first event of a later window says how many
 * were left out (`suppressed`). For events clients cause (connections), which they could flood.
 */
export function rateLimited(
  log: OperatorLog,
  options: { readonly limit?: number; readonly windowMs?: number; readonly now?: () => number } =
    {},
): OperatorLog {
  const limit = options.limit ?? 20;
  const windowMs = options.windowMs ?? 10_000;
  const now = options.now ?? Date.now;
  let windowStart = -Infinity;
  let written = 0;
  let suppressed = 0;
  return (event, fields = {}) => {
    const at = now();
    if (at - windowStart >= windowMs) {
      windowStart = at;
      written = 0;
    }
    if (written >= limit) {
      suppressed++;
      return;
    }
    written++;
    log(event, suppressed > 0 ? { ...fields, suppressed } : fields);
    suppressed = 0;
  };
}
