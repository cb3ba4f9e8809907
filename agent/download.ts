/**
 * The download of one file, as far as it is pure: which protocol a job's file is fetched over,
 * the order of a job's files, the checks a block passes before it touches flash, the version
 * refusal read from an image's first block, and the resume record of a download in progress.
 *
 * @module
 */

import { decodeStreamBlock } from "../protocol/stream_codec.ts";
import { compareVersions, decodeHeader, type ImageVersion } from "../protocol/image_format.ts";
import type { DataProtocol, DeltaOffer, OtaFileSpec, OtaJob } from "../protocol/job_document.ts";
import { OtaErr, stateReason } from "../protocol/job_status.ts";
import { toBase64 } from "../lib/base64.ts";
import { bytesEqual } from "../lib/bytes.ts";
import { BlockBitmap } from "./bitmap.ts";
import { blockMatchesHash } from "./checked_blocks.ts";
import type { ResumeRecord } from "./resume_record.ts";
import { type PalFile } from "./ports.ts";

/** What choosing and sizing a download depends on. */
export interface DownloadOptions {
  readonly blockSize: number;
  readonly preferredProtocol: DataProtocol;
  /** Whether the device has an HTTP port. */
  readonly httpAvailable: boolean;
}

/** A block as it arrives: a CBOR stream message, or an HTTP range already cut out. */
export type BlockInput = { readonly cbor: Uint8Array } | {
  readonly blockId: number;
  readonly payload: Uint8Array;
};

/** A download in progress (RAM; its resumable part is persisted). */
export interface ActiveFile {
  readonly job: OtaJob;
  readonly index: number;
  readonly spec: OtaFileSpec;
  /**
   * The patch fetched instead of the file (the device runs its base), or null: the file itself.
   * The blocks, their file id and size are the patch's; what is staged and checked is the file.
   */
  readonly patch: DeltaOffer | null;
  /** Stream file id and size of what is downloaded (the patch's or the file's). */
  readonly fileId: number;
  readonly fileSize: number;
  /** Null when the job offers no data protocol this device can use. */
  readonly protocol: DataProtocol | null;
  readonly blockCount: number;
  bitmap: BlockBitmap;
  url: string | null;
  palFile: PalFile | null;
  data: Uint8Array | null;
  opened: boolean;
  momentum: number;
  toReceive: number;
  sincePersist: number;
  restarted: boolean;
  urlRefreshPending: boolean;
}

/**
 * Checks a received block against the file being downloaded before it touches flash: a stream
 * block's CBOR, file id, block size and (when the service sent it) SHA-256; any block's id and
 * length. A bad block is dropped and asked for again.
 */
export function checkBlock(
  active: ActiveFile,
  input: BlockInput,
  blockSize: number,
): { ok: true; blockId: number; payload: Uint8Array } | { ok: false; reason: string } {
  let blockId: number;
  let payload: Uint8Array;
  if ("cbor" in input) {
    const decoded = decodeStreamBlock(input.cbor);
    if (!decoded.ok) return decoded;
    const block = decoded.value;
    if (block.fileId !== active.fileId) {
      return { ok: false, reason: `file id ${block.fileId}, expected ${active.fileId}` };
    }
    if (block.blockSize !== blockSize) {
      return {
        ok: false,
        reason: `block size ${block.blockSize}, expected ${blockSize}`,
      };
    }
    if (block.hash && !blockMatchesHash(block.payload, block.hash)) {
      return { ok: false, reason: `block ${block.blockId} fails its SHA-256 check` };
    }
    blockId = block.blockId;
    payload = block.payload;
  } else {
    blockId = input.blockId;
    payload = input.payload;
  }
  if (blockId >= active.blockCount) {
    return {
      ok: false,
      reason: `block ${blockId} is past the file's ${active.blockCount} blocks`,
    };
  }
  const expected = blockId === active.blockCount - 1
    ? active.fileSize - blockId * blockSize
    : blockSize;
  if (payload.length !== expected) {
    return {
      ok: false,
      reason: `block ${blockId} has ${payload.length} bytes, expected ${expected}`,
    };
  }
  return { ok: true, blockId, payload };
}

/** Same or older image than the one running, read from the header in block 0. */
export function versionRefusal(
  firstBlock: Uint8Array,
  running: ImageVersion,
): { reason: string; detail: string } | null {
  const read = decodeHeader(firstBlock);
  if (!read.ok) return null;
  const version = read.header.version;
  const order = compareVersions(version, running);
  if (order > 0) return null;
  const text = `${version.major}.${version.minor}.${version.revision}`;
  return order === 0
    ? {
      reason: stateReason("rejected", OtaErr.SameFirmwareVersion),
      detail: `image ${text} is the version already running`,
    }
    : {
      reason: stateReason("rejected", OtaErr.DowngradeNotAllowed),
      detail: `image ${text} is older than the running version`,
    };
}

/** Data files first, firmware last (activating the firmware resets the device). */
export function nextFileIndex(job: OtaJob, after: number): number | null {
  const order = job.files.map((f, i) => ({ f, i })).sort((a, b) =>
    Number(a.f.fileType === 0) - Number(b.f.fileType === 0) || a.i - b.i
  );
  const position = order.findIndex((e) => e.i === after);
  return order[position + 1]?.i ?? null;
}

/**
 * A fresh download of file `index` of `job`, over the protocol the device prefers if it can; of
 * `patch` instead of the file when given (one of the file's offers, over a protocol that has it).
 */
export function openFile(
  job: OtaJob,
  index: number,
  options: DownloadOptions,
  patch: DeltaOffer | null = null,
): ActiveFile {
  const spec = job.files[index]!;
  const preferred = options.preferredProtocol;
  const url = patch ? patch.updateDataUrl : spec.updateDataUrl;
  const usable = (p: DataProtocol) =>
    job.protocols.includes(p) &&
    (p === "MQTT" ? job.streamName !== null : url !== null && options.httpAvailable);
  const other: DataProtocol = preferred === "MQTT" ? "HTTP" : "MQTT";
  const protocol = usable(preferred) ? preferred : usable(other) ? other : null;
  const fileSize = patch ? patch.fileSize : spec.fileSize;
  const blockCount = Math.ceil(fileSize / options.blockSize);
  return {
    job,
    index,
    spec,
    patch,
    fileId: patch ? patch.fileId : spec.fileId,
    fileSize,
    protocol,
    blockCount,
    bitmap: new BlockBitmap(blockCount),
    url,
    palFile: null,
    data: null,
    opened: false,
    momentum: 0,
    toReceive: 0,
    sincePersist: 0,
    restarted: false,
    urlRefreshPending: false,
  };
}

/**
 * The patch of `spec` a device whose running image hashes to `runningSha256` can use over the
 * job's protocols, or null (no offer for its image: it fetches the file).
 */
export function usablePatch(
  job: OtaJob,
  spec: OtaFileSpec,
  runningSha256: Uint8Array | null,
  options: DownloadOptions,
): DeltaOffer | null {
  if (runningSha256 === null || spec.fileType !== 0) return null;
  for (const offer of spec.deltas) {
    if (!bytesEqual(offer.baseSha256, runningSha256)) continue;
    const mqtt = job.protocols.includes("MQTT") && job.streamName !== null;
    const http = job.protocols.includes("HTTP") && offer.updateDataUrl !== null &&
      options.httpAvailable;
    if (mqtt || http) return offer;
  }
  return null;
}

/** The resume record of a download in progress (what a reset must not lose). */
export function resumeRecordOf(active: ActiveFile, blockSize: number): ResumeRecord {
  return {
    v: 1,
    jobId: active.job.jobId,
    fileIndex: active.index,
    fileId: active.spec.fileId,
    fileSize: active.spec.fileSize,
    blockSize,
    signature: toBase64(active.spec.signature),
    bitmap: toBase64(active.bitmap.toBytes()),
  };
}

/** Whether `record` is this very download (same job, file, size, block size and signature). */
export function resumes(record: ResumeRecord, active: ActiveFile, blockSize: number): boolean {
  return record.jobId === active.job.jobId && record.fileIndex === active.index &&
    record.fileSize === active.spec.fileSize && record.blockSize === blockSize &&
    record.signature === toBase64(active.spec.signature);
}
