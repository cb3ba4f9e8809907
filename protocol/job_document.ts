/**
 * The `afr_ota` job document both ways: {@linkcode buildOtaDocument} (what the cloud puts in a
 * job) and the parser of AWS IoT Jobs messages carrying `afr_ota` job documents (`$next/get/accepted` and
 * `notify-next` payloads). Strict and total: any input gives a typed result, never an exception.
 *
 * Unlike the AWS agent, a job may carry several files (processed one after the other, firmware
 * last), numbers must be JSON numbers, and every file is checked against the device before any
 * byte is downloaded.
 *
 * @module
 */

import { fromBase64, toBase64 } from "../lib/base64.ts";
import { failedReason, JobParseErr } from "./job_status.ts";
import { OtaPalMainStatus } from "./ota_pal_status.ts";
import { duplicateKey } from "./strict_json.ts";
import { derSignatureToRaw } from "./signatures.ts";
import { type JobMetadata, parseJobMetadata } from "./job_metadata.ts";

/** Data protocols a job can offer. */
export type DataProtocol = "MQTT" | "HTTP";

/** One file of an OTA job. */
export interface OtaFileSpec {
  readonly filePath: string;
  readonly fileSize: number;
  readonly fileId: number;
  /**
   * The signer certificate the document names (`certfile`), or null when it names none: the
   * device then uses its own code-verification certificate ({@linkcode CODE_VERIFY_KEY}).
   */
  readonly certFile: string | null;
  /** Detached DER ECDSA signature (base64-decoded `sig-sha256-ecdsa`). */
  readonly signature: Uint8Array;
  /** 0 = firmware (goes through the PAL and the bootloader); others are data files. */
  readonly fileType: number;
  readonly updateDataUrl: string | null;
  readonly authScheme: string | null;
  readonly attributes: number | null;
  /**
   * Patches to this file from images a device may run (firmware only; extension `deltas`): a
   * device running one of their bases may fetch the patch instead and build the file from it.
   */
  readonly deltas: readonly DeltaOffer[];
}

/**
 * A patch offered for a firmware file (extension of the AWS document): the Fossil delta from the
 * image whose bytes hash to `baseSha256` (the whole image as it sits in a slot: header, payload,
 * both TLV areas) to the file. The file's signature covers the file, never the patch.
 */
export interface DeltaOffer {
  /** SHA-256 of the whole base image (`base_sha256`, hex in the document). */
  readonly baseSha256: Uint8Array;
  /** The patch's stream file id and size. */
  readonly fileId: number;
  readonly fileSize: number;
  /** HTTP: where the patch is (or a placeholder the cloud fills in per device). */
  readonly updateDataUrl: string | null;
}

/** Most patches one file may offer. */
export const MAX_DELTA_OFFERS = 8;

/** A valid OTA job. */
export interface OtaJob {
  readonly jobId: string;
  readonly versionNumber: number | null;
  readonly executionStatus: string | null;
  readonly statusDetails: Readonly<Record<string, string>>;
  /** `statusDetails.self_test`, present after the device activated the image. */
  readonly selfTest: string | null;
  readonly protocols: readonly DataProtocol[];
  readonly streamName: string | null;
  readonly files: readonly OtaFileSpec[];
  /** The slowest download the job accepts (extension `minimumRate`), or null: no floor. */
  readonly minimumRate: RateFloor | null;
  /** When the document was issued and until when it holds, signed (`signedMetadata`), or null. */
  readonly metadata: JobMetadata | null;
}

/**
 * A download-rate floor: a download whose rate stays below `bytesPerSecond` for a whole window of
 * `windowSeconds` is abandoned (slow retrieval). In a job document: `afr_ota.minimumRate` as
 * `{ "bytesPerSecond": N, "windowSeconds": W }` (our extension; AWS documents have none).
 */
export interface RateFloor {
  /** 1..1,000,000,000. */
  readonly bytesPerSecond: number;
  /** 1..3600. */
  readonly windowSeconds: number;
}

/** The largest `bytesPerSecond` and `windowSeconds` of a {@linkcode RateFloor}. */
export const RATE_FLOOR_LIMITS = { bytesPerSecond: 1_000_000_000, windowSeconds: 3600 } as const;

/** What a jobs message says. */
export type JobMessage =
  | { readonly kind: "no-job" }
  | { readonly kind: "job"; readonly job: OtaJob }
  | {
    readonly kind: "invalid";
    /** The job to report against, when the message names one. */
    readonly jobId: string | null;
    readonly status: "FAILED" | "REJECTED";
    /** AWS-format reason for `statusDetails.reason`. */
    readonly reason: string;
    /** Human-readable explanation. */
    readonly detail: string;
  };

/** What the device accepts. */
export interface JobDocumentLimits {
  /** Largest firmware file (the update slot). */
  readonly maxFirmwareSize: number;
  /** Largest data (non-firmware) file, kept in RAM. @default {65536} */
  readonly maxDataFileSize?: number;
  /** Largest message. @default {32768} */
  readonly maxDocumentBytes?: number;
  /** Which file paths the device accepts. @default {safe relative names} */
  readonly isAllowedPath?: (path: string) => boolean;
  /** Most files per job. @default {8} */
  readonly maxFiles?: number;
}

/** One file of an `afr_ota` document, as the cloud describes it. */
export interface OtaDocumentFile {
  readonly filePath: string;
  readonly fileSize: number;
  readonly fileId: number;
  readonly certFile: string;
  /** Detached DER ECDSA signature (sent base64 as `sig-sha256-ecdsa`). */
  readonly signature: Uint8Array;
  /** 0 (firmware) is left out, as AWS does. */
  readonly fileType?: number;
  /** HTTP: the URL (or a `${ota:presigned-url:...}` placeholder) and its auth scheme. */
  readonly updateDataUrl?: string;
  readonly authScheme?: string;
  /** Patches to this firmware file from images devices run (sent as `deltas`). */
  readonly deltas?: readonly {
    readonly baseSha256: Uint8Array;
    readonly fileId: number;
    readonly fileSize: number;
    readonly updateDataUrl?: string;
  }[];
}

/**
 * Builds the job document of an OTA update: `{ afr_ota: { protocols, streamname?, files } }`,
 * with the keys AWS uses (`filepath`, `filesize`, `fileid`, `certfile`, `sig-sha256-ecdsa`,
 * `fileType`, `update_data_url`, `auth_scheme`). The parser below reads exactly this.
 *
 * @example
 * ```ts
 * import { buildOtaDocument } from "./job_document.ts";
 * const doc = buildOtaDocument({ protocols: ["MQTT"], streamName: "s1", files: [{
 *   filePath: "firmware.bin", fileSize: 1024, fileId: 0, certFile: "signer.pem",
 *   signature: new Uint8Array(70) }] });
 * Object.keys(doc); // ["afr_ota"]
 * ```
 */
export function buildOtaDocument(spec: {
  readonly protocols: readonly DataProtocol[];
  readonly streamName?: string;
  readonly files: readonly OtaDocumentFile[];
  readonly minimumRate?: RateFloor;
  /** Signed metadata (job_metadata.ts): issue time and expiry. */
  readonly signedMetadata?: { readonly body: string; readonly signature: string };
}): { afr_ota: Record<string, unknown> } {
  const files = spec.files.map((f) => {
    const file: Record<string, unknown> = {
      filepath: f.filePath,
      filesize: f.fileSize,
      fileid: f.fileId,
      certfile: f.certFile,
      "sig-sha256-ecdsa": toBase64(f.signature),
    };
    if (f.fileType !== undefined && f.fileType !== 0) file.fileType = f.fileType;
    if (f.updateDataUrl !== undefined) file.update_data_url = f.updateDataUrl;
    if (f.authScheme !== undefined) file.auth_scheme = f.authScheme;
    if (f.deltas !== undefined && f.deltas.length > 0) {
      file.deltas = f.deltas.map((d) => ({
        base_sha256: d.baseSha256.toHex(),
        fileid: d.fileId,
        filesize: d.fileSize,
        ...(d.updateDataUrl !== undefined ? { update_data_url: d.updateDataUrl } : {}),
      }));
    }
    return file;
  });
  const ota: Record<string, unknown> = { protocols: [...spec.protocols], files };
  if (spec.streamName !== undefined) ota.streamname = spec.streamName;
  if (spec.minimumRate !== undefined) ota.minimumRate = { ...spec.minimumRate };
  if (spec.signedMetadata !== undefined) ota.signedMetadata = { ...spec.signedMetadata };
  return { afr_ota: ota };
}

/**
 * The name of a device's own code-verification certificate (the AWS PKCS#11 label of the key
 * the OTA PAL verifies with): what a document without `certfile` means, and where an AWS PAL
 * falls back when the named certificate is not in its store.
 */
export const CODE_VERIFY_KEY = "Code Verify Key";

const JOB_ID = /^[a-zA-Z0-9_-]{1,64}$/;
const STREAM_NAME = /^[a-zA-Z0-9_-]{1,128}$/;
const SAFE_PATH = /^[A-Za-z0-9_.\-/]{1,128}$/;
const SIGNATURE_KEYS = /^sig-/;

/**
 * The default file-path rule for the name a file gets on the device (after
 * {@linkcode deviceFileName}): 1..128 characters of `[A-Za-z0-9_.-/]`, no `..` segment, not
 * absolute.
 *
 * @example
 * ```ts
 * import { defaultPathRule } from "./job_document.ts";
 * defaultPathRule("firmware.bin"); // true
 * defaultPathRule("../etc/passwd"); // false
 * ```
 */
export function defaultPathRule(path: string): boolean {
  return SAFE_PATH.test(path) && !path.startsWith("/") && !path.split("/").includes("..");
}

class Refusal {
  constructor(
    readonly status: "FAILED" | "REJECTED",
    readonly reason: string,
    readonly detail: string,
  ) {}
}

const malformed = (detail: string) =>
  new Refusal("FAILED", failedReason(12, JobParseErr.NonConformingJobDoc), detail);

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function stringField(
  obj: Record<string, unknown>,
  key: string,
  where: string,
  pattern?: RegExp,
): string {
  const value = obj[key];
  if (typeof value !== "string") throw malformed(`${where}.${key} must be a string`);
  if (pattern && !pattern.test(value)) {
    throw malformed(`${where}.${key} '${value.slice(0, 80)}' is not allowed`);
  }
  return value;
}

/** An optional field: absent and JSON null alike mean "not given" (AWS sends both). */
function optionalString(obj: Record<string, unknown>, key: string, where: string): string | null {
  return obj[key] === undefined || obj[key] === null ? null : stringField(obj, key, where);
}

/**
 * The name a file gets on this device. The document's path names the file; the device decides
 * where it goes (firmware to the update slot), as the AWS PALs of devices without a file system
 * do: a leading `/` is dropped (`/test/demo` is `test/demo`), and no path, `null` or `/` alone
 * gives the file its default name (`firmware.bin`, or `file-<fileid>.bin` for other types).
 *
 * @example
 * ```ts
 * import { deviceFileName } from "./job_document.ts";
 * deviceFileName("/test/demo", 0, 0); // "test/demo"
 * deviceFileName("/", 0, 0); // "firmware.bin"
 * deviceFileName(null, 7, 2); // "file-2.bin"
 * ```
 */
export function deviceFileName(path: string | null, fileType: number, fileId: number): string {
  const name = (path ?? "").replace(/^\/+/, "");
  if (name !== "") return name;
  return fileType === 0 ? "firmware.bin" : `file-${fileId}.bin`;
}

/** Control characters (C0, DEL, C1): never part of a name a device looks up. */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function optionalInteger(
  obj: Record<string, unknown>,
  key: string,
  where: string,
  max: number,
): number | null {
  return obj[key] === undefined || obj[key] === null ? null : integerField(obj, key, where, max);
}

function integerField(
  obj: Record<string, unknown>,
  key: string,
  where: string,
  max: number,
): number {
  const value = obj[key];
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    throw malformed(`${where}.${key} must be an integer 0..${max}`);
  }
  return value;
}

function parseFile(raw: unknown, index: number, limits: JobDocumentLimits): OtaFileSpec {
  const where = `files[${index}]`;
  if (!isObject(raw)) throw malformed(`${where} must be an object`);
  const fileId = integerField(raw, "fileid", where, 255);
  const fileType = optionalInteger(raw, "fileType", where, 255) ?? 0;
  const filePath = deviceFileName(optionalString(raw, "filepath", where), fileType, fileId);
  if (!(limits.isAllowedPath ?? defaultPathRule)(filePath)) {
    throw new Refusal(
      "REJECTED",
      failedReason(OtaPalMainStatus.RxFileCreateFailed, 0),
      `${where}.filepath '${filePath.slice(0, 80)}' is outside the device's allowed names`,
    );
  }
  const fileSize = integerField(raw, "filesize", where, 0xffffffff);
  if (fileSize === 0) {
    throw new Refusal(
      "FAILED",
      failedReason(12, JobParseErr.ZeroFileSize),
      `${where}.filesize is 0`,
    );
  }
  const certFile = optionalString(raw, "certfile", where);
  if (certFile !== null && (certFile === "" || certFile.length > 256 || CONTROL.test(certFile))) {
    throw malformed(
      `${where}.certfile must name a certificate: 1..256 characters, no control characters`,
    );
  }
  const attributes = optionalInteger(raw, "attr", where, 0xffffffff);
  const signatureKeys = Object.keys(raw).filter((key) => SIGNATURE_KEYS.test(key));
  if (signatureKeys.length !== 1) {
    throw malformed(
      `${where} must carry exactly one signature (sig-sha256-ecdsa), found ${signatureKeys.length}`,
    );
  }
  const algorithm = signatureKeys[0]!;
  if (algorithm !== "sig-sha256-ecdsa") {
    throw new Refusal(
      "REJECTED",
      failedReason(OtaPalMainStatus.SignatureCheckFailed, 0),
      `${where}: unsupported signature algorithm '${algorithm}' (only sig-sha256-ecdsa)`,
    );
  }
  const signatureText = stringField(raw, algorithm, where);
  const signature = fromBase64(signatureText);
  if (!signature || signature.length < 8 || signature.length > 72) {
    throw malformed(`${where}.${algorithm} is not a base64 DER ECDSA signature`);
  }
  const limit = fileType === 0 ? limits.maxFirmwareSize : (limits.maxDataFileSize ?? 65536);
  if (fileSize > limit) {
    throw new Refusal(
      "REJECTED",
      failedReason(OtaPalMainStatus.RxFileTooLarge, 0),
      `${where}: ${fileSize} bytes exceed the device's ${limit}-byte limit`,
    );
  }
  const updateDataUrl = optionalString(raw, "update_data_url", where);
  if (updateDataUrl !== null && !/^https?:\/\/[^\s]+$/.test(updateDataUrl)) {
    throw malformed(`${where}.update_data_url is not an http(s) URL`);
  }
  const deltas = parseDeltas(raw, where, fileType, limit);
  // Last, so that what else is wrong with a file is said first: a DER signature is checked by
  // its structure (SEQUENCE of two minimal positive INTEGERs), not only by its length.
  const der = derSignatureToRaw(signature);
  if (!der.ok) throw malformed(`${where}.${algorithm} is not a DER ECDSA signature: ${der.reason}`);
  return {
    filePath,
    fileSize,
    fileId,
    certFile,
    signature,
    fileType,
    updateDataUrl,
    authScheme: optionalString(raw, "auth_scheme", where),
    attributes,
    deltas,
  };
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** A file's `deltas` (absent or null: none); only firmware may have them. */
function parseDeltas(
  raw: Record<string, unknown>,
  where: string,
  fileType: number,
  maxPatchSize: number,
): DeltaOffer[] {
  if (raw.deltas === undefined || raw.deltas === null) return [];
  const list = raw.deltas;
  if (!Array.isArray(list) || list.length > MAX_DELTA_OFFERS) {
    throw malformed(`${where}.deltas must be an array of at most ${MAX_DELTA_OFFERS} patches`);
  }
  if (list.length > 0 && fileType !== 0) {
    throw malformed(`${where}.deltas: only a firmware file (fileType 0) may offer patches`);
  }
  return list.map((entry, i) => {
    const at = `${where}.deltas[${i}]`;
    if (!isObject(entry)) throw malformed(`${at} must be an object`);
    const base = stringField(entry, "base_sha256", at);
    if (!SHA256_HEX.test(base)) {
      throw malformed(`${at}.base_sha256 must be 64 lowercase hex digits`);
    }
    const fileSize = integerField(entry, "filesize", at, maxPatchSize);
    if (fileSize === 0) throw malformed(`${at}.filesize is 0`);
    const updateDataUrl = optionalString(entry, "update_data_url", at);
    if (updateDataUrl !== null && !/^https?:\/\/[^\s]+$/.test(updateDataUrl)) {
      throw malformed(`${at}.update_data_url is not an http(s) URL`);
    }
    return {
      baseSha256: Uint8Array.fromHex(base),
      fileId: integerField(entry, "fileid", at, 255),
      fileSize,
      updateDataUrl,
    };
  });
}

function parseExecution(
  execution: Record<string, unknown>,
  jobId: string,
  limits: JobDocumentLimits,
): OtaJob {
  let versionNumber: number | null = null;
  if (execution.versionNumber !== undefined && execution.versionNumber !== null) {
    versionNumber = integerField(execution, "versionNumber", "execution", 0x7fffffff);
  }
  const executionStatus = optionalString(execution, "status", "execution");
  const statusDetails: Record<string, string> = {};
  if (execution.statusDetails !== undefined && execution.statusDetails !== null) {
    if (!isObject(execution.statusDetails)) {
      throw malformed("execution.statusDetails must be an object");
    }
    for (const [key, value] of Object.entries(execution.statusDetails)) {
      if (typeof value !== "string") {
        throw malformed(`execution.statusDetails.${key} must be a string`);
      }
      statusDetails[key] = value;
    }
  }
  const document = execution.jobDocument;
  if (!isObject(document)) throw malformed("execution.jobDocument must be an object");
  const ota = document.afr_ota;
  if (!isObject(ota)) {
    throw new Refusal(
      "REJECTED",
      failedReason(12, JobParseErr.NonConformingJobDoc),
      "not an afr_ota job: this device runs only OTA jobs",
    );
  }
  const protocolsRaw = ota.protocols;
  if (
    !Array.isArray(protocolsRaw) || protocolsRaw.length === 0 ||
    protocolsRaw.some((p) => typeof p !== "string")
  ) {
    throw malformed("afr_ota.protocols must be a non-empty array of strings");
  }
  const protocols = protocolsRaw.filter((p): p is DataProtocol => p === "MQTT" || p === "HTTP");
  if (protocols.length === 0) {
    throw new Refusal(
      "REJECTED",
      failedReason(13, 0),
      `no supported data protocol in ${JSON.stringify(protocolsRaw).slice(0, 80)}`,
    );
  }
  const streamName = ota.streamname === undefined || ota.streamname === null
    ? null
    : stringField(ota, "streamname", "afr_ota", STREAM_NAME);
  const filesRaw = ota.files;
  const maxFiles = limits.maxFiles ?? 8;
  if (!Array.isArray(filesRaw) || filesRaw.length === 0 || filesRaw.length > maxFiles) {
    throw malformed(`afr_ota.files must be an array of 1..${maxFiles} files`);
  }
  const files = filesRaw.map((raw, index) => parseFile(raw, index, limits));
  if (files.filter((f) => f.fileType === 0).length > 1) {
    throw new Refusal(
      "REJECTED",
      failedReason(12, JobParseErr.BadModelInitParams),
      "a job may carry at most one firmware file (fileType 0)",
    );
  }
  const allIds = files.flatMap((f) => [f.fileId, ...f.deltas.map((d) => d.fileId)]);
  if (new Set(allIds).size !== allIds.length) {
    throw malformed("afr_ota.files have duplicate fileid values (patches included)");
  }
  const usable = files.every((f) =>
    (protocols.includes("MQTT") && streamName !== null) ||
    (protocols.includes("HTTP") && f.updateDataUrl !== null)
  );
  if (!usable) {
    throw malformed(
      "a file can be fetched neither over MQTT (no streamname) nor over HTTP (no update_data_url)",
    );
  }
  return {
    jobId,
    versionNumber,
    executionStatus,
    statusDetails,
    selfTest: statusDetails.self_test ?? null,
    protocols,
    streamName,
    files,
    minimumRate: parseRateFloor(ota.minimumRate),
    metadata: parseMetadataField(ota.signedMetadata),
  };
}

/** `afr_ota.signedMetadata` (absent or null: none). */
function parseMetadataField(raw: unknown): JobMetadata | null {
  if (raw === undefined || raw === null) return null;
  const parsed = parseJobMetadata(raw);
  if (!parsed.ok) throw malformed(`afr_ota.${parsed.reason}`);
  return parsed.value;
}

/** `afr_ota.minimumRate` (absent or null: no floor). */
function parseRateFloor(raw: unknown): RateFloor | null {
  if (raw === undefined || raw === null) return null;
  const where = "afr_ota.minimumRate";
  if (!isObject(raw)) throw malformed(`${where} must be an object`);
  const bytesPerSecond = integerField(
    raw,
    "bytesPerSecond",
    where,
    RATE_FLOOR_LIMITS.bytesPerSecond,
  );
  const windowSeconds = integerField(raw, "windowSeconds", where, RATE_FLOOR_LIMITS.windowSeconds);
  if (bytesPerSecond < 1 || windowSeconds < 1) {
    throw malformed(`${where}: bytesPerSecond and windowSeconds must be at least 1`);
  }
  return { bytesPerSecond, windowSeconds };
}

/**
 * Parses a jobs message (`$next/get/accepted` or `notify-next` payload).
 *
 * @example
 * ```ts
 * import { parseJobMessage } from "./job_document.ts";
 * parseJobMessage(new TextEncoder().encode('{"clientToken":"t","timestamp":1}'), { maxFirmwareSize: 1 << 20 });
 * // { kind: "no-job" }
 * ```
 */
export function parseJobMessage(payload: Uint8Array, limits: JobDocumentLimits): JobMessage {
  const maxBytes = limits.maxDocumentBytes ?? 32 * 1024;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(payload);
  } catch {
    return {
      kind: "invalid",
      jobId: null,
      status: "FAILED",
      reason: failedReason(12, JobParseErr.NonConformingJobDoc),
      detail: "message is not UTF-8",
    };
  }
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch (error) {
    return {
      kind: "invalid",
      jobId: null,
      status: "FAILED",
      reason: failedReason(12, JobParseErr.NonConformingJobDoc),
      detail: `message is not JSON: ${(error as Error).message}`,
    };
  }
  if (!isObject(message)) {
    return {
      kind: "invalid",
      jobId: null,
      status: "FAILED",
      reason: failedReason(12, JobParseErr.NonConformingJobDoc),
      detail: "message is not a JSON object",
    };
  }
  if (message.execution === undefined || message.execution === null) return { kind: "no-job" };
  const execution = message.execution;
  const jobId =
    isObject(execution) && typeof execution.jobId === "string" && JOB_ID.test(execution.jobId)
      ? execution.jobId
      : null;
  try {
    if (!isObject(execution)) throw malformed("execution must be an object");
    if (jobId === null) {
      throw malformed("execution.jobId must be 1..64 characters of [a-zA-Z0-9_-]");
    }
    if (payload.length > maxBytes) {
      throw new Refusal(
        "REJECTED",
        failedReason(12, JobParseErr.NonConformingJobDoc),
        `job document of ${payload.length} bytes exceeds ${maxBytes}`,
      );
    }
    const twice = duplicateKey(text);
    if (twice !== null) {
      throw malformed(`key '${twice.slice(0, 64)}' appears twice in one object`);
    }
    return { kind: "job", job: parseExecution(execution, jobId, limits) };
  } catch (error) {
    // From QUEUED the Jobs service takes IN_PROGRESS or REJECTED from a device, not FAILED: a
    // document refused before any work began is declined, or the execution would stay QUEUED.
    const queued = isObject(execution) && execution.status === "QUEUED";
    if (error instanceof Refusal) {
      return {
        kind: "invalid",
        jobId,
        status: queued ? "REJECTED" : error.status,
        reason: error.reason,
        detail: error.detail,
      };
    }
    return {
      kind: "invalid",
      jobId,
      status: queued ? "REJECTED" : "FAILED",
      reason: failedReason(12, JobParseErr.NonConformingJobDoc),
      detail: `cannot parse job: ${(error as Error).message}`,
    };
  }
}
