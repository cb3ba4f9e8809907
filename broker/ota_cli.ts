/**
 * `deno task ota`: the operator CLI over the operator API. Every command accepts `--json`.
 *
 *   create     --id ID (--image FILE --signature FILE --certificate FILE | --payload FILE --firmware-version X.Y.Z
 *              --security-counter N --profile NAME) --cert-file PATH (--group G | --thing T)...
 *              [--protocol MQTT|HTTP|both] [--max-per-minute N] [--abort-failed-percent P --abort-min N]
 *   list | describe ID | cancel ID [--force] | executions ID [--status S] | history THING | watch ID
 *
 * Connection: `--api URL` (or OTA_API, default http://127.0.0.1:8080/api) and `--token` (or
 * OTA_OPERATOR_TOKEN). Exit codes: 0 ok, 1 the API refused, 2 bad usage.
 *
 * @module
 */

import { toBase64 } from "../lib/base64.ts";
import { EXECUTION_STATUSES } from "./job_execution.ts";
import { type FlagSpec, parseFlags, usage } from "../lib/flags.ts";
// @ts-types="@types/cli-progress"
import cliProgress from "cli-progress";
import { UsageError } from "../lib/usage_error.ts";
import { standardFlags, usageLine } from "../lib/cli.ts";
import { explainReason } from "../protocol/job_status.ts";
import { type FailureGroup } from "./failure_groups.ts";

/** The flags of `deno task ota` (each command uses those it names in the help). */
export const OTA_FLAGS: readonly FlagSpec[] = [
  {
    name: "api",
    value: "URL",
    help: "the operator API (or OTA_API); a URL without a path means its /api",
    default: "http://127.0.0.1:8080/api",
  },
  { name: "token", value: "T", help: "the operator token (or OTA_OPERATOR_TOKEN)" },
  { name: "json", help: "print the API's JSON, for machines" },
  { name: "id", value: "ID", help: "create: the OTA update's id" },
  { name: "cert-file", value: "PATH", help: "create: where devices find the signer certificate" },
  { name: "group", value: "G", multiple: true, help: "create, thing add: a target group" },
  { name: "thing", value: "T", multiple: true, help: "create: a target thing" },
  { name: "payload", value: "FILE", help: "create: the firmware the cloud signs" },
  { name: "firmware-version", value: "X.Y.Z", help: "create: the payload's version" },
  {
    name: "security-counter",
    value: "N",
    help: "create: the payload's anti-rollback counter",
    range: [1, 0xffffffff],
  },
  { name: "profile", value: "NAME", help: "create: the signing profile that signs the payload" },
  { name: "image", value: "FILE", help: "create: an image signed elsewhere" },
  { name: "signature", value: "FILE", help: "create: its detached DER signature" },
  { name: "certificate", value: "FILE", help: "create: its signer's certificate (PEM)" },
  {
    name: "root",
    value: "FILE",
    help: "create: the root (PEM) the devices trust, which the signer must chain to (default: " +
      "the signing profiles' roots); profile create: the profile's root",
  },
  {
    name: "protocol",
    value: "P",
    help: "create: the data plane",
    choices: ["MQTT", "HTTP", "both"],
    default: "MQTT",
  },
  {
    name: "max-per-minute",
    value: "N",
    help: "create: rollout rate",
    range: [1, 1000],
  },
  {
    name: "document-ttl",
    value: "S",
    help: "create: how long devices may act on the job document, in seconds (its signed expiry)",
    range: [60, 31_536_000],
  },
  {
    name: "min-rate",
    value: "SIZE",
    help: "create: the slowest download devices accept, per second (e.g. 2KiB): one that stays " +
      "below it for a whole --min-rate-window is abandoned (slow retrieval)",
    sizeRange: [1, 1_000_000_000],
  },
  {
    name: "min-rate-window",
    value: "S",
    help: "create: the window --min-rate is measured over, in seconds",
    range: [1, 3600],
    default: "60",
  },
  {
    name: "abort-failed-percent",
    value: "P",
    help: "create: cancel when this share of the executed failed",
    range: [0, 100],
  },
  {
    name: "abort-min",
    value: "N",
    help: "create: executions before the abort criterion applies",
    range: [1, 1_000_000],
    default: "1",
  },
  { name: "timeout-minutes", value: "N", help: "create: in-progress timeout", range: [1, 10080] },
  {
    name: "retries",
    value: "N",
    help: "create: retries of a FAILED or TIMED_OUT execution",
    range: [0, 10],
  },
  {
    name: "wave-size",
    value: "N",
    help: "create: health-gated waves of N devices",
    range: [1, 1_000_000],
  },
  {
    name: "min-success-percent",
    value: "P",
    help: "create: the share of a wave that must succeed for the next one",
    range: [0, 100],
    default: "100",
  },
  {
    name: "on-gate-failure",
    value: "A",
    help: "create: what a failed wave does to the update",
    choices: ["pause", "cancel"],
    default: "pause",
  },
  {
    name: "file-type",
    value: "N",
    help: "create: 0 firmware, 1 second-stage bootloader",
    range: [0, 255],
    default: "0",
  },
  {
    name: "file",
    value: "TYPE:PATH[:SIG]",
    multiple: true,
    help: "create: another file of the update (a data file for the device's application, type " +
      "3..255; type 1, a signed second-stage bootloader image installed together with the " +
      "firmware, which depends on it; type 2, a trust-store update), signed by --profile, or " +
      "with SIG, its DER signature by the --image's signer",
  },
  {
    name: "hardware",
    value: "BOARD",
    help: "create: with --payload, the board the image is built for (HARDWARE_ID TLV): devices " +
      "of other boards refuse it before installing",
  },
  {
    name: "encrypt-to",
    value: "FILE",
    help: "create: with --payload, encrypt the image for the devices holding this P-256 " +
      "public key's private half (PEM; `deno task image encryption-keygen`)",
  },
  {
    name: "delta-base",
    value: "FILE",
    multiple: true,
    help: "create: also offer a delta patch from this image (one a device may run, e.g. the " +
      "factory image)",
  },
  {
    name: "delta-shipped",
    help: "create: also offer delta patches from the firmware earlier updates shipped",
  },
  { name: "force", help: "cancel: executions in progress too" },
  {
    name: "status",
    value: "S",
    help: "executions: only those in this status",
    choices: EXECUTION_STATUSES,
  },
  { name: "fail-on-failed", help: "watch: exit 1 when any execution failed" },
  {
    name: "secret",
    value: "S",
    help: "thing add: the thing's secret (default: one made, shown once)",
  },
  {
    name: "role",
    value: "R",
    help: "token create: what the token may do",
    choices: ["viewer", "operator", "admin"],
  },
  { name: "cert", value: "FILE", help: "profile create: the signer's certificate" },
  { name: "key", value: "FILE", help: "profile create: the signer's key" },
];

export const USAGE = usage(
  `Usage: deno task ota <command> [options]

Commands:
  create      --id ID --cert-file DEVICE_PATH (--group G | --thing T)...
              and either  --payload FILE --firmware-version X.Y.Z --security-counter N --profile NAME
                          [--encrypt-to FILE(PEM): encrypt it for the devices' image key]
                          [--hardware BOARD: the board it is built for]
              or          --image FILE --signature FILE(DER) --certificate FILE(PEM)
                          [--root FILE(PEM): the root the devices trust; default: the
                          signing profiles' roots]
              [--protocol MQTT|HTTP|both] [--max-per-minute N]
              [--min-rate SIZE [--min-rate-window S]]  abandon downloads slower than SIZE/s
              [--document-ttl S]  devices refuse the job document S seconds after it was made
                          (signed issue time and expiry; default 30 days)
              [--abort-failed-percent P --abort-min N] [--timeout-minutes N] [--retries N]
              [--wave-size N [--min-success-percent P] [--on-gate-failure pause|cancel]]
                          health-gated waves: the next wave only when P% (default 100) of
                          the last one succeeded; else the update pauses (or is canceled)
              [--file-type N]  0 firmware (default), 1 second-stage bootloader, 2 trust-store
                          update (a root-signed file: no --firmware-version or --security-counter)
              [--file TYPE:PATH[:SIG]]...  more files: data for the device's application
              [--delta-base FILE]... [--delta-shipped]
                          offer patches from these images / from earlier updates' firmware:
                          a device running one fetches a patch instead of the image
  list                       OTA updates with their status and counts
  describe ID                one OTA update
  cancel ID [--force]        cancel its job (force: executions in progress too)
  pause ID | resume ID       stop notifying new devices / go on (also after a health gate)
  executions ID [--status S] executions of its job, optionally by status
  failures ID                failed, rejected and timed-out executions grouped by reason
  history THING              a device's executions and every status update it sent
  thing add NAME [--secret S] [--group G]...   (no --secret: the cloud makes one, shown once)
  thing list | thing show NAME | thing remove NAME
  group list | group show GROUP | group add GROUP THING... | group remove GROUP THING...
  profile create NAME --root FILE --cert FILE --key FILE   | profile list
  token create NAME --role viewer|operator|admin   (the token is shown once)
  token list | token revoke ID                     (admin)
  whoami                     the operator the token names, and its role
  watch ID [--fail-on-failed]
                             live progress until the update ends; with --fail-on-failed the
                             exit code is 1 when any execution FAILED, was REJECTED or TIMED_OUT

Options:`,
  OTA_FLAGS,
);

/** The flags as parsed: texts, lists for the repeatable ones, booleans. */
type OtaValues =
  & {
    readonly [
      K in
        | "api"
        | "token"
        | "id"
        | "cert-file"
        | "payload"
        | "firmware-version"
        | "security-counter"
        | "profile"
        | "image"
        | "signature"
        | "certificate"
        | "root"
        | "protocol"
        | "max-per-minute"
        | "min-rate"
        | "document-ttl"
        | "min-rate-window"
        | "abort-failed-percent"
        | "abort-min"
        | "timeout-minutes"
        | "retries"
        | "wave-size"
        | "min-success-percent"
        | "on-gate-failure"
        | "file-type"
        | "encrypt-to"
        | "hardware"
        | "status"
        | "secret"
        | "role"
        | "cert"
        | "key"
    ]?: string;
  }
  & {
    readonly group?: string[];
    readonly thing?: string[];
    readonly "delta-base"?: string[];
    readonly file?: string[];
    readonly json?: boolean;
    readonly force?: boolean;
    readonly "fail-on-failed"?: boolean;
  };

/** A usage error (exit code 2). */
export { UsageError };

type Output = (line: string) => void;

interface Io {
  readonly out: Output;
  readonly err: Output;
  readonly env: (name: string) => string | undefined;
  readonly isTerminal: boolean;
}

async function file(path: string | undefined, what: string): Promise<Uint8Array> {
  if (!path) throw new UsageError(`Missing required option --${what}`);
  try {
    return await Deno.readFile(path);
  } catch (error) {
    throw new UsageError(`Cannot read --${what} '${path}': ${(error as Error).message}`);
  }
}

function progressLine(body: { status?: string; counts?: Record<string, number> }): string {
  const c = body.counts ?? {};
  const total = [...EXECUTION_STATUSES, "pending", "neverNotified"]
    .reduce((sum, k) => sum + (c[k] ?? 0), 0);
  const done = (c.SUCCEEDED ?? 0) + (c.FAILED ?? 0) + (c.TIMED_OUT ?? 0) + (c.REJECTED ?? 0) +
    (c.REMOVED ?? 0) + (c.CANCELED ?? 0) + (c.neverNotified ?? 0);
  return `${body.status} ${done}/${total} done: succeeded ${c.SUCCEEDED ?? 0}, failed ${
    c.FAILED ?? 0
  }, rejected ${c.REJECTED ?? 0}, timed out ${c.TIMED_OUT ?? 0}, in progress ${
    c.IN_PROGRESS ?? 0
  }, queued ${c.QUEUED ?? 0}, not notified ${c.pending ?? 0}${
    c.neverNotified ? `, never notified ${c.neverNotified} (the rollout stopped)` : ""
  }`;
}

/**
 * The API's base URL: `--api http://host:8080` (no path) means its `/api`; a trailing slash is
 * dropped.
 */
export function apiBase(given: string): string {
  const trimmed = given.replace(/\/+$/, "");
  try {
    return new URL(trimmed).pathname === "/" ? `${trimmed}/api` : trimmed;
  } catch {
    return trimmed; // not a URL: fetch says so, in one line
  }
}

/** The API could not be reached at all (no answer, not an HTTP error). */
class Unreachable extends Error {}

/** What went wrong with a connection, in words (connection refused, host not found, ...). */
function reasonOf(error: Error): string {
  const cause = (error as { cause?: { message?: string; code?: string } }).cause;
  const text = cause?.message ?? error.message;
  if (/refused/i.test(text)) return "connection refused";
  if (/dns|lookup|not known/i.test(text)) return "host not found";
  return text.split("\n")[0]!;
}

/**
 * Runs the CLI; returns the exit code.
 *
 * @example
 * ```ts ignore
 * const code = await runOtaCli(["list", "--json"], { out: console.log, err: console.error, env: Deno.env.get, isTerminal: false });
 * ```
 */
export async function runOtaCli(args: string[], io: Io): Promise<number> {
  const early = standardFlags(args, USAGE);
  if (early) {
    io.out(early.text);
    return 0;
  }
  let parsed;
  try {
    parsed = parseFlags(args, OTA_FLAGS, { allowPositionals: true });
  } catch (error) {
    io.err(usageLine((error as Error).message));
    return 2;
  }
  const flags = parsed;
  const { positionals } = parsed;
  const values = parsed.values as OtaValues;
  const [command, target, ...more] = positionals;
  if (!command) {
    io.err(
      usageLine("Missing the command (create, list, describe, cancel, executions, history, watch)"),
    );
    return 2;
  }
  const api = apiBase(values.api ?? io.env("OTA_API") ?? "http://127.0.0.1:8080/api");
  const token = values.token ?? io.env("OTA_OPERATOR_TOKEN");
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: { authorization: `Bearer ${token ?? ""}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    }).catch((error: Error) => {
      throw new Unreachable(`cannot reach the API at ${api}: ${reasonOf(error)}`);
    });
    const text = await response.text();
    let json: unknown = text;
    try {
      json = JSON.parse(text);
    } catch { /* not JSON: keep the text */ }
    return { status: response.status, json: json as Record<string, unknown> };
  };
  const show = (result: { status: number; json: unknown }, human: (json: never) => string[]) => {
    if (result.status >= 400) {
      io.err(
        `error ${result.status}: ${
          (result.json as { error?: string }).error ?? JSON.stringify(result.json)
        }`,
      );
      return 1;
    }
    if (values.json) io.out(JSON.stringify(result.json, null, 2));
    else for (const line of human(result.json as never)) io.out(line);
    return 0;
  };
  const need = (what: string) => {
    if (!target) throw new UsageError(`${command} needs ${what}`);
    return encodeURIComponent(target);
  };
  try {
    if (!token) {
      throw new UsageError("Missing operator token: pass --token or set OTA_OPERATOR_TOKEN");
    }
    switch (command) {
      case "create": {
        if (!values.id) throw new UsageError("Missing required option --id");
        if (!values["cert-file"]) throw new UsageError("Missing required option --cert-file");
        const targets = { things: values.thing ?? [], groups: values.group ?? [] };
        if (targets.things.length + targets.groups.length === 0) {
          throw new UsageError("Give at least one --group or --thing");
        }
        const protocol = flags.choice("protocol");
        const protocols = protocol === "both" ? ["MQTT", "HTTP"] : [protocol];
        const request: Record<string, unknown> = {
          otaUpdateId: values.id,
          certFile: values["cert-file"],
          targets,
          protocols,
        };
        if (flags.has("file-type")) request.fileType = flags.int("file-type");
        if (values.image) {
          request.image = toBase64(await file(values.image, "image"));
          request.signature = toBase64(await file(values.signature, "signature"));
          request.certificatePem = new TextDecoder().decode(
            await file(values.certificate, "certificate"),
          );
          if (values.root !== undefined) {
            request.rootPem = new TextDecoder().decode(await file(values.root, "root"));
          }
        } else {
          request.payload = toBase64(await file(values.payload, "payload"));
          // A trust-store update (file type 2) is no image: no version or counter of its own.
          const image = !flags.has("file-type") || flags.int("file-type") !== 2;
          if (image && !values["firmware-version"]) {
            throw new UsageError("Missing required option --firmware-version");
          }
          if (values["firmware-version"]) request.version = values["firmware-version"];
          if (image && !flags.has("security-counter")) {
            throw new UsageError("Missing required option --security-counter");
          }
          if (flags.has("security-counter")) {
            request.securityCounter = flags.int("security-counter");
          }
          if (!values.profile) throw new UsageError("Missing required option --profile");
          request.signingProfile = values.profile;
          if (values["encrypt-to"] !== undefined) {
            request.encryptTo = new TextDecoder().decode(
              await file(values["encrypt-to"], "encrypt-to"),
            );
          }
        }
        if (values.hardware !== undefined) {
          if (values.image) {
            throw new UsageError(
              "--hardware names the board of what the cloud signs (--payload): an --image carries its own",
            );
          }
          request.hardwareId = values.hardware;
        }
        if (values.image && values["encrypt-to"] !== undefined) {
          throw new UsageError(
            "--encrypt-to encrypts what the cloud signs (--payload): an --image is encrypted when signed",
          );
        }
        const extraFiles = [];
        for (const spec of values.file ?? []) {
          const match = /^(\d{1,3}):([^:]+)(?::(.+))?$/.exec(spec);
          if (!match) {
            throw new UsageError(
              `Invalid --file: expected TYPE:PATH[:SIGNATURE]: current value is '${spec}'`,
            );
          }
          const data = await file(match[2]!, "file");
          extraFiles.push({
            fileType: Number(match[1]),
            // Its name on the device: the file's own name.
            filePath: match[2]!.split("/").at(-1)!,
            data: toBase64(data),
            ...(match[3] ? { signature: toBase64(await file(match[3], "file signature")) } : {}),
          });
        }
        if (extraFiles.length > 0) request.extraFiles = extraFiles;
        const deltaBases = values["delta-base"] ?? [];
        if (deltaBases.length > 0 || flags.boolean("delta-shipped")) {
          const bases = [];
          for (const path of deltaBases) bases.push(toBase64(await file(path, "delta-base")));
          request.delta = {
            ...(bases.length > 0 ? { bases } : {}),
            ...(flags.boolean("delta-shipped") ? { shipped: true } : {}),
          };
        }
        if (flags.has("document-ttl")) request.documentTtlSeconds = flags.int("document-ttl");
        if (flags.has("min-rate")) {
          request.minimumRate = {
            bytesPerSecond: flags.size("min-rate"),
            windowSeconds: flags.int("min-rate-window"),
          };
        }
        if (flags.has("max-per-minute")) {
          request.rollout = { maximumPerMinute: flags.int("max-per-minute") };
        }
        if (flags.has("abort-failed-percent")) {
          request.abort = [{
            failureType: "ALL",
            action: "CANCEL",
            thresholdPercentage: flags.number("abort-failed-percent"),
            minNumberOfExecutedThings: flags.int("abort-min"),
          }];
        }
        const waveSize = flags.has("wave-size") ? flags.int("wave-size") : undefined;
        if (waveSize === undefined) {
          if (
            values["min-success-percent"] !== undefined || values["on-gate-failure"] !== undefined
          ) {
            throw new UsageError("--min-success-percent and --on-gate-failure need --wave-size");
          }
        } else {
          const minValue = flags.number("min-success-percent");
          const action = flags.choice("on-gate-failure").toUpperCase() as "PAUSE" | "CANCEL";
          request.healthGate = { waveSize, minSuccessPercent: minValue, onFailure: action };
        }
        if (flags.has("timeout-minutes")) {
          request.timeout = { inProgressTimeoutInMinutes: flags.int("timeout-minutes") };
        }
        if (flags.has("retries")) {
          request.retry = [{ failureType: "ALL", numberOfRetries: flags.int("retries") }];
        }
        return show(
          await call("POST", "/ota-updates", request),
          (
            u: { otaUpdateId: string; jobId: string; status: string },
          ) => [`created ${u.otaUpdateId} (job ${u.jobId}): ${u.status}`],
        );
      }
      case "list":
        return show(
          await call("GET", "/ota-updates"),
          (list: { otaUpdateId: string; status: string; counts: Record<string, number> }[]) =>
            list.length === 0 ? ["no OTA updates"] : table(
              [
                "update",
                "status",
                "done",
                "succeeded",
                "failed",
                "rejected",
                "timed out",
                "in progress",
                "queued",
                "not notified",
              ],
              list.map((u) => {
                const c = u.counts ?? {};
                const n = (k: string) => String(c[k] ?? 0);
                return [
                  u.otaUpdateId,
                  u.status,
                  progressLine(u).split(" ")[1]!,
                  n("SUCCEEDED"),
                  n("FAILED"),
                  n("REJECTED"),
                  n("TIMED_OUT"),
                  n("IN_PROGRESS"),
                  n("QUEUED"),
                  n("pending"),
                ];
              }),
            ),
        );
      case "describe":
        return show(
          await call("GET", `/ota-updates/${need("an OTA update id")}`),
          (u: Record<string, unknown> & { counts: Record<string, number> }) => [
            `OTA update ${u.otaUpdateId}: job ${u.jobId}, ${u.fileSize} bytes, sha256 ${u.sha256}, protocols ${
              (u.protocols as string[]).join("+")
            }`,
            progressLine(u),
            ...(typeof (u.job as { reason?: unknown } | undefined)?.reason === "string"
              ? [`reason: ${(u.job as { reason: string }).reason}`]
              : []),
          ],
        );
      case "cancel": {
        const update = await call("GET", `/ota-updates/${need("an OTA update id")}`);
        if (update.status >= 400) return show(update, () => []);
        return show(
          await call("POST", `/jobs/${encodeURIComponent(String(update.json.jobId))}/cancel`, {
            force: values.force === true,
          }),
          (
            r: { status: string; counts: Record<string, number> },
          ) => [`canceled: ${progressLine(r)}`],
        );
      }
      case "pause":
      case "resume": {
        const update = await call("GET", `/ota-updates/${need("an OTA update id")}`);
        if (update.status >= 400) return show(update, () => []);
        return show(
          await call(
            "POST",
            `/jobs/${encodeURIComponent(String(update.json.jobId))}/${command}`,
            {},
          ),
          (r: { status: string; counts: Record<string, number> }) => [
            `${command === "pause" ? "paused" : "resumed"}: ${progressLine(r)}`,
          ],
        );
      }
      case "failures": {
        const id = encodeURIComponent(need("an OTA update id"));
        return show(
          await call("GET", `/ota-updates/${id}/failures`),
          (report: { failed: number; groups: FailureGroup[] }) =>
            report.groups.length === 0 ? ["no failures"] : [
              ...table(
                ["count", "status", "reason", "meaning", "example"],
                report.groups.map((f) => [
                  String(f.count),
                  f.status,
                  f.reason ?? "",
                  f.meaning,
                  `${f.example.thing}${f.example.detail ? `: ${f.example.detail}` : ""}`,
                ]),
              ),
              `${report.failed} failed in ${report.groups.length} groups`,
            ],
        );
      }
      case "thing":
        return await thingCommand(target, more, values, call, show);
      case "group":
        return await groupCommand(target, more, call, show);
      case "profile":
        return await profileCommand(target, more, values, call, show);
      case "token":
        return await tokenCommand(target, more, values, call, show);
      case "whoami":
        return show(
          await call("GET", "/whoami"),
          (me: { name: string; role: string }) => [`${me.name} (${me.role})`],
        );
      case "executions": {
        const update = await call("GET", `/ota-updates/${need("an OTA update id")}`);
        if (update.status >= 400) return show(update, () => []);
        const query = flags.has("status") ? `?status=${flags.choice("status")}` : "";
        return show(
          await call(
            "GET",
            `/jobs/${encodeURIComponent(String(update.json.jobId))}/executions${query}`,
          ),
          (
            list: {
              thing: string;
              status: string;
              statusDetails: Record<string, string>;
              executionNumber: number;
            }[],
          ) =>
            table(
              ["thing", "status", "attempt", "reason", "detail"],
              list.map((e) => [
                e.thing,
                e.status,
                `attempt ${e.executionNumber}`,
                e.statusDetails?.reason ? explainReason(e.statusDetails.reason) : "",
                e.statusDetails?.detail ?? "",
              ]),
            ),
        );
      }
      case "history":
        return show(
          await call("GET", `/things/${need("a thing name")}/history`),
          (h: { history: { at: number; jobId: string; event: string; detail: unknown }[] }) =>
            table(
              // The cloud's clock: it runs faster under the broker's --time-scale.
              ["time (cloud clock)", "job", "event", "detail"],
              h.history.map((e) => [
                new Date(e.at).toISOString(),
                e.jobId ?? "-",
                e.event,
                readableDetail(e.detail),
              ]),
            ),
        );
      case "watch":
        return await watch(
          api,
          token,
          need("an OTA update id"),
          { json: values.json === true, failOnFailed: values["fail-on-failed"] === true },
          io,
        );
      default:
        throw new UsageError(`Unknown command '${command}'`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(usageLine(error.message));
      return 2;
    }
    if (error instanceof Unreachable) {
      io.err(error.message);
      return 1;
    }
    io.err(`cannot reach the API at ${api}: ${reasonOf(error as Error)}`);
    return 1;
  }
}

/** An audit row's detail as words: a status and its reason explained, else compact JSON. */
function readableDetail(detail: unknown): string {
  if (typeof detail !== "object" || detail === null) return String(detail ?? "");
  const d = detail as { status?: string; statusDetails?: Record<string, string> };
  if (typeof d.status === "string") {
    const details = d.statusDetails ?? {};
    const parts = [d.status];
    if (details.reason) parts.push(explainReason(details.reason));
    if (details.receive) parts.push(`received ${details.receive} blocks`);
    if (details.self_test) parts.push(`self-test ${details.self_test}`);
    if (details.detail) parts.push(details.detail);
    return parts.join(", ");
  }
  return JSON.stringify(detail);
}

/** Rows under a header, each column as wide as its widest cell. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, i) => i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)).join("  ")
      .trimEnd();
  return [line(header.map((h) => h.toUpperCase())), ...rows.map(line)];
}

type Call = (
  method: string,
  path: string,
  body?: unknown,
) => Promise<{ status: number; json: Record<string, unknown> }>;
type Show = (result: { status: number; json: unknown }, human: (json: never) => string[]) => number;

const enc = encodeURIComponent;

async function thingCommand(
  action: string | undefined,
  names: string[],
  values: { secret?: string | undefined; group?: string[] | undefined },
  call: Call,
  show: Show,
): Promise<number> {
  const name = names[0];
  const needName = () => {
    if (!name) throw new UsageError(`thing ${action} needs a thing name`);
    return name;
  };
  switch (action) {
    case "add": {
      const body = {
        ...(values.secret !== undefined ? { secret: values.secret } : { generateSecret: true }),
        groups: values.group ?? [],
      };
      return show(
        await call("PUT", `/things/${enc(needName())}`, body),
        (t: { name: string; groups: string[]; secret?: string }) => [
          `added ${t.name}${t.groups.length ? ` (groups ${t.groups.join(", ")})` : ""}`,
          ...(t.secret
            ? [`secret: ${t.secret}  (shown this once; the cloud keeps only its hash)`]
            : []),
        ],
      );
    }
    case "list":
      return show(
        await call("GET", "/things"),
        (list: { name: string; groups: string[] }[]) =>
          list.length === 0
            ? ["no things"]
            : table(["thing", "groups"], list.map((t) => [t.name, t.groups.join(", ")])),
      );
    case "show":
      return show(
        await call("GET", `/things/${enc(needName())}`),
        (
          t: {
            name: string;
            groups: string[];
            shadow: { reported?: Record<string, unknown> } | null;
            executions: { jobId: string; status: string; statusDetails: Record<string, string> }[];
          },
        ) => [
          `thing ${t.name}, groups: ${t.groups.join(", ") || "none"}`,
          `firmware: ${t.shadow?.reported?.firmware ?? "not reported"}, mode: ${
            t.shadow?.reported?.mode ?? "unknown"
          }`,
          ...(t.executions.length === 0 ? ["no executions"] : table(
            ["job", "status", "reason"],
            t.executions.map((e) => [
              e.jobId,
              e.status,
              e.statusDetails?.reason ? explainReason(e.statusDetails.reason) : "",
            ]),
          )),
        ],
      );
    case "remove":
      return show(
        await call("DELETE", `/things/${enc(needName())}`),
        (t: { name: string }) => [`removed ${t.name}`],
      );
    default:
      throw new UsageError(`Unknown thing action '${action ?? ""}' (add, list, show, remove)`);
  }
}

async function groupCommand(
  action: string | undefined,
  args: string[],
  call: Call,
  show: Show,
): Promise<number> {
  const [group, ...things] = args;
  const needGroup = () => {
    if (!group) throw new UsageError(`group ${action} needs a group name`);
    return group;
  };
  switch (action) {
    case "list":
      return show(
        await call("GET", "/groups"),
        (list: { group: string; members: number }[]) =>
          list.length === 0
            ? ["no groups"]
            : table(["group", "things"], list.map((g) => [g.group, String(g.members)])),
      );
    case "show":
      return show(
        await call("GET", `/groups/${enc(needGroup())}`),
        (g: { group: string; things: string[] }) => [
          `group ${g.group}: ${g.things.length} things`,
          ...g.things,
        ],
      );
    case "add":
    case "remove": {
      const name = needGroup();
      if (things.length === 0) throw new UsageError(`group ${action} needs at least one thing`);
      let last: { status: number; json: Record<string, unknown> } = { status: 200, json: {} };
      for (const thing of things) {
        last = await call(
          action === "add" ? "PUT" : "DELETE",
          `/groups/${enc(name)}/things/${enc(thing)}`,
        );
        if (last.status >= 400) break;
      }
      return show(
        last,
        (g: { group: string; things: string[] }) => [`group ${g.group}: ${g.things.length} things`],
      );
    }
    default:
      throw new UsageError(`Unknown group action '${action ?? ""}' (list, show, add, remove)`);
  }
}

async function tokenCommand(
  action: string | undefined,
  names: string[],
  values: { role?: string | undefined },
  call: Call,
  show: Show,
): Promise<number> {
  switch (action) {
    case "create": {
      const name = names[0];
      if (!name) throw new UsageError("token create needs the operator's name");
      if (!values.role) throw new UsageError("Missing required option --role");
      return show(
        await call("POST", "/tokens", { name, role: values.role }),
        (t: { id: string; name: string; role: string; token: string }) => [
          `created token ${t.id} for ${t.name} (${t.role}); it is shown this once:`,
          t.token,
        ],
      );
    }
    case "list":
      return show(
        await call("GET", "/tokens"),
        (
          list: {
            id: string;
            name: string;
            role: string;
            createdAt: number;
            createdBy: string;
            revokedAt?: number;
            revokedBy?: string;
          }[],
        ) =>
          list.length === 0 ? ["no tokens (the broker's --token is the bootstrap admin)"] : table(
            ["id", "name", "role", "created", "by", "revoked"],
            list.map((t) => [
              t.id,
              t.name,
              t.role,
              new Date(t.createdAt).toISOString(),
              t.createdBy,
              t.revokedAt !== undefined
                ? `${new Date(t.revokedAt).toISOString()} by ${t.revokedBy}`
                : "",
            ]),
          ),
      );
    case "revoke": {
      const id = names[0];
      if (!id) throw new UsageError("token revoke needs a token id (see token list)");
      return show(
        await call("DELETE", `/tokens/${encodeURIComponent(id)}`),
        () => [`revoked token ${id}`],
      );
    }
    default:
      throw new UsageError(`Unknown token action '${action ?? ""}' (create, list, revoke)`);
  }
}

async function profileCommand(
  action: string | undefined,
  names: string[],
  values: { root?: string | undefined; cert?: string | undefined; key?: string | undefined },
  call: Call,
  show: Show,
): Promise<number> {
  switch (action) {
    case "create": {
      const name = names[0];
      if (!name) throw new UsageError("profile create needs a profile name");
      const text = async (path: string | undefined, flag: string) =>
        new TextDecoder().decode(await file(path, flag));
      return show(
        await call("POST", "/signing-profiles", {
          name,
          rootPem: await text(values.root, "root"),
          certificatePem: await text(values.cert, "cert"),
          privateKeyPem: await text(values.key, "key"),
        }),
        (
          p: { name: string; subject: string },
        ) => [`created signing profile ${p.name} (${p.subject})`],
      );
    }
    case "list":
      return show(
        await call("GET", "/signing-profiles"),
        (
          list: {
            name: string;
            subject: string | null;
            issuer: string | null;
            notAfter: string | null;
          }[],
        ) =>
          list.length === 0 ? ["no signing profiles"] : table(
            ["profile", "signer", "issuer", "valid until"],
            list.map((p) => [p.name, p.subject ?? "?", p.issuer ?? "?", p.notAfter ?? "?"]),
          ),
      );
    default:
      throw new UsageError(`Unknown profile action '${action ?? ""}' (create, list)`);
  }
}
async function watch(
  api: string,
  token: string,
  id: string,
  options: { readonly json: boolean; readonly failOnFailed: boolean },
  io: Io,
): Promise<number> {
  const { json } = options;
  const headers = { authorization: `Bearer ${token}` };
  const update = await fetch(`${api}/ota-updates/${id}`, { headers });
  const body = await update.json();
  if (update.status >= 400) {
    io.err(`error ${update.status}: ${body.error}`);
    return 1;
  }
  const response = await fetch(`${api}/jobs/${encodeURIComponent(body.jobId)}/events`, { headers });
  if (!response.body) return 1;
  const bar = io.isTerminal && !json
    ? new cliProgress.SingleBar(
      { format: "{bar} {percentage}% | {value}/{total} done | {line}" },
      cliProgress.Presets.shades_classic,
    )
    : null;
  let started = false;
  let last: Record<string, unknown> = {};
  let buffer = "";
  for await (const chunk of response.body.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const message = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (\w+)/m.exec(message)?.[1];
      const data = /^data: (.*)$/m.exec(message)?.[1];
      if (!data) continue;
      last = JSON.parse(data);
      if (json) io.out(JSON.stringify({ event, ...last }));
      else if (bar) {
        const c = (last.counts ?? {}) as Record<string, number>;
        const total = Object.values(c).reduce((a, b) => a + b, 0);
        const done = total - (c.QUEUED ?? 0) - (c.IN_PROGRESS ?? 0) - (c.pending ?? 0);
        if (!started) bar.start(total, done, { line: progressLine(last) });
        else bar.update(done, { line: progressLine(last) });
        started = true;
      } else if (event === "progress") io.out(progressLine(last));
    }
  }
  bar?.stop();
  if (!json) io.out(`ended: ${progressLine(last)}`);
  if (last.status !== "COMPLETED") return 1;
  const counts = (last.counts ?? {}) as Record<string, number>;
  const failed = (counts.FAILED ?? 0) + (counts.REJECTED ?? 0) + (counts.TIMED_OUT ?? 0);
  if (options.failOnFailed && failed > 0) {
    io.err(`${failed} executions FAILED, were REJECTED or TIMED_OUT`);
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  Deno.exit(
    await runOtaCli(Deno.args, {
      out: (line) => console.log(line),
      err: (line) => console.error(line),
      env: (name) => Deno.env.get(name),
      isTerminal: Deno.stdout.isTerminal(),
    }),
  );
}
