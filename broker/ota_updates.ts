/**
 * Code-signing profiles and the OTA-update manager (the shape of AWS CreateOTAUpdate): from a
 * payload and a signing profile (or a file signed elsewhere, e.g. with openssl) it signs, stores
 * the file, creates the MQTT stream, builds the `afr_ota` job document (with a pre-signed URL
 * placeholder rendered fresh each time a device asks) and creates the job.
 *
 * @module
 */

import { fromBase64 } from "../lib/base64.ts";
import {
  type Certificate,
  checkCodeSigner,
  checkCodeSignerUnder,
  type CodeSigner,
  parseCertificate,
} from "../protocol/certificates.ts";
import { importPrivateKeyPem, sha256, signData, verifySignature } from "../protocol/signatures.ts";
import {
  bytesSource,
  decodeImage,
  formatVersion,
  HARDWARE_ID_PATTERN,
  ImageId,
  type ImageVersion,
  isEncrypted,
  parseVersion,
} from "../protocol/image_format.ts";
import { signImage } from "../protocol/image_sign.ts";
import { importImagePublicKeyPem } from "../protocol/image_encryption.ts";
import {
  bundledSecondStageVersion,
  type ExtraFileRequest,
  type ExtraFileSigning,
  prepareExtraFiles,
  secondStageBinding,
} from "./extra_files.ts";
import type { FileService } from "./file_service.ts";
import type { JobService } from "./job_service.ts";
import { type HealthGate, type JobSpec } from "./job_spec.ts";
import type { AbortCriterion, RetryCriterion, RolloutConfig } from "./rollout.ts";
import type { CloudStore } from "./store.ts";
import type { StreamService } from "./stream_service.ts";
import {
  buildOtaDocument,
  MAX_DELTA_OFFERS,
  RATE_FLOOR_LIMITS,
  type RateFloor,
} from "../protocol/job_document.ts";
import { makeDeltaOffers } from "./delta_offers.ts";
import { ProfileKeyVault, type SealedKey } from "./profile_keys.ts";
import {
  DEFAULT_DOCUMENT_TTL_SECONDS,
  MAX_DOCUMENT_TTL_SECONDS,
  signJobMetadata,
} from "../protocol/job_metadata.ts";
import { parseTrustUpdate, TRUST_STORE_FILE_TYPE } from "../protocol/trust_update.ts";

/**
 * A signing profile as an operator creates it: the device root, the code-signing certificate and
 * its key (PEM). The key is write-only: it is stored sealed (see broker/profile_keys.ts).
 */
export interface SigningProfile {
  readonly name: string;
  readonly rootPem: string;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

/** A signing profile as stored: its key sealed (or in clear in records made before sealing). */
interface StoredSigningProfile {
  readonly name: string;
  readonly rootPem: string;
  readonly certificatePem: string;
  readonly sealedKey?: SealedKey;
  readonly privateKeyPem?: string;
}

/** A CreateOTAUpdate request. */
export interface OtaUpdateRequest {
  readonly otaUpdateId: string;
  /** Either a signed image (base64) with its detached signature and certificate... */
  readonly image?: string;
  readonly signature?: string;
  readonly certificatePem?: string;
  /**
   * The root CA the targets' devices trust, which an external signer certificate must chain to
   * (PEM). Without it, the roots of the cloud's signing profiles are those devices' roots.
   */
  readonly rootPem?: string;
  /** ...or an unsigned payload (base64) with version, security counter and a signing profile. */
  readonly payload?: string;
  readonly version?: string;
  readonly securityCounter?: number;
  readonly signingProfile?: string;
  /**
   * With a payload: encrypt it for the devices holding this P-256 key's private half (PEM
   * public key; MCUboot's ENC_EC256, see protocol/image_encryption.ts). An image signed
   * elsewhere comes encrypted already or not at all.
   */
  readonly encryptTo?: string;
  /**
   * With a payload: the board it is built for (a protected HARDWARE_ID TLV, 1..64 of
   * [A-Za-z0-9._-]); devices of other boards refuse it before installing. An image signed
   * elsewhere carries its own or none.
   */
  readonly hardwareId?: string;
  /**
   * Files the update carries besides the firmware (data files for the device's application; see
   * broker/extra_files.ts), signed like it.
   */
  readonly extraFiles?: readonly ExtraFileRequest[];
  /** Where devices find the signer certificate (job document `certfile`). */
  readonly certFile: string;
  /**
   * The job document `fileType` (0..255): 0, the application firmware; others are for the
   * device to route, e.g. 1 for its second-stage bootloader. @default {0}
   */
  readonly fileType?: number;
  readonly targets: JobSpec["targets"];
  readonly targetSelection?: "SNAPSHOT" | "CONTINUOUS";
  readonly protocols?: readonly ("MQTT" | "HTTP")[];
  readonly rollout?: RolloutConfig;
  readonly abort?: readonly AbortCriterion[];
  readonly timeout?: { readonly inProgressTimeoutInMinutes: number };
  readonly retry?: readonly RetryCriterion[];
  readonly healthGate?: HealthGate;
  /**
   * The slowest download devices accept (job document `minimumRate`): one whose rate stays below
   * `bytesPerSecond` for a whole `windowSeconds` is abandoned (slow retrieval). None: no floor.
   */
  readonly minimumRate?: RateFloor;
  /**
   * How long devices may act on the job document, 60 s..1 year: the cloud signs its issue time
   * and expiry (job document `signedMetadata`) with the signing profile, and a device refuses it
   * past that (a replayed or frozen document). Documents of images signed elsewhere carry none.
   * @default {2592000} (30 days)
   */
  readonly documentTtlSeconds?: number;
  /** Pre-signed URL lifetime, 60..3600 s. @default {1800} */
  readonly presignedUrlExpirySeconds?: number;
  /**
   * Offer patches to firmware (our extension): from each of `bases` (whole images, base64: the
   * factory image, say) and, with `shipped`, from every firmware image earlier OTA updates of
   * this cloud shipped, newest first; at most 8, each only when much smaller than the image.
   */
  readonly delta?: { readonly bases?: readonly string[]; readonly shipped?: boolean };
}

/** What is stored about an OTA update. */
export interface OtaUpdateRecord {
  readonly otaUpdateId: string;
  readonly jobId: string;
  readonly streamId: string;
  readonly fileKey: string;
  readonly fileSize: number;
  readonly sha256: string;
  /** The image's version as its header says (null: not a decodable image). */
  readonly version?: string | null;
  readonly protocols: readonly string[];
  readonly createdAt: number;
  /** The job document's `fileType` (absent in records made before it was kept: 0). */
  readonly fileType?: number;
  /** Set when the image's payload is encrypted (ENC_EC256): for the devices' key only. */
  readonly encrypted?: true;
  /** The board the image is built for (its HARDWARE_ID TLV), when it names one. */
  readonly hardwareId?: string;
  /** The files it carries besides the firmware, with their stream file ids. */
  readonly extraFiles?: readonly {
    readonly fileId: number;
    readonly fileKey: string;
    readonly fileType: number;
    readonly filePath: string;
    readonly fileSize: number;
  }[];
  /** Patches offered, by the SHA-256 of their base (hex), with their stream file ids. */
  readonly deltas?: readonly {
    readonly baseSha256: string;
    readonly fileId: number;
    readonly fileKey: string;
    readonly fileSize: number;
  }[];
}

/** Outcome. */
export type Created<T> = { readonly ok: true; readonly value: T } | {
  readonly ok: false;
  readonly reason: string;
};

const ID = /^[a-zA-Z0-9_-]{1,50}$/;
const PLACEHOLDER = /^\$\{ota:presigned-url:([a-zA-Z0-9_.-]{1,128}):(\d{1,5})\}$/;

/**
 * Replaces `${ota:presigned-url:<key>:<seconds>}` strings anywhere in a document with fresh URLs.
 *
 * @example
 * ```ts ignore
 * renderPresignedUrls(document, (key, seconds) => files.presign(key, seconds));
 * ```
 */
export function renderPresignedUrls(
  value: unknown,
  presign: (key: string, seconds: number) => string,
): unknown {
  if (typeof value === "string") {
    const match = PLACEHOLDER.exec(value);
    return match ? presign(match[1]!, Number(match[2])) : value;
  }
  if (Array.isArray(value)) return value.map((v) => renderPresignedUrls(v, presign));
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, renderPresignedUrls(v, presign)]),
    );
  }
  return value;
}

/**
 * Signing profiles and OTA updates.
 *
 * @example
 * ```ts ignore
 * const manager = new OtaUpdateManager({ store, jobs, streams, files, clock });
 * await manager.createSigningProfile(profile);
 * await manager.createOtaUpdate({ otaUpdateId: "v1-1", payload, version: "1.1.0", ... });
 * ```
 */
export class OtaUpdateManager {
  readonly #store: CloudStore;
  readonly #jobs: JobService;
  readonly #streams: StreamService;
  readonly #now: () => number;
  readonly #vault: Promise<ProfileKeyVault>;
  /** Opened profile keys (non-extractable), by profile name and seal. */
  readonly #keys = new Map<string, { sealed: string; key: CryptoKey }>();

  /** Builds the manager; profile keys are sealed by `vault` (default: one of this process). */
  constructor(
    options: {
      store: CloudStore;
      jobs: JobService;
      streams: StreamService;
      files: FileService;
      now: () => number;
      vault?: ProfileKeyVault;
    },
  ) {
    this.#store = options.store;
    this.#jobs = options.jobs;
    this.#streams = options.streams;
    this.#now = options.now;
    this.#vault = options.vault ? Promise.resolve(options.vault) : ProfileKeyVault.ephemeral();
  }

  /**
   * The signing key of a stored profile, non-extractable; a record from before sealing is sealed
   * now (its clear key removed from the store).
   */
  async #profileKey(profile: StoredSigningProfile): Promise<Created<CryptoKey>> {
    const vault = await this.#vault;
    if (profile.sealedKey) {
      const seal = profile.sealedKey.data;
      const cached = this.#keys.get(profile.name);
      if (cached?.sealed === seal) return { ok: true, value: cached.key };
      const key = await vault.open(profile.name, profile.sealedKey);
      if (!key) {
        return {
          ok: false,
          reason: `signing profile '${profile.name}': its key does not open with this broker's ` +
            "profile key (start it with the --profile-key-file it was made under, or create the " +
            "profile again)",
        };
      }
      this.#keys.set(profile.name, { sealed: seal, key });
      return { ok: true, value: key };
    }
    const keys = await importPrivateKeyPem(profile.privateKeyPem ?? "");
    if (!keys.ok) return { ok: false, reason: `signing profile '${profile.name}' is unusable` };
    const sealed = await this.#storeSealed(profile, keys.value.privateKey);
    return await this.#profileKey(sealed);
  }

  /** Stores `profile` with `privateKey` sealed (the only way a profile's key is stored). */
  async #storeSealed(
    profile: { name: string; rootPem: string; certificatePem: string },
    privateKey: CryptoKey,
  ): Promise<StoredSigningProfile> {
    const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", privateKey));
    let sealedKey: SealedKey;
    try {
      sealedKey = await (await this.#vault).seal(profile.name, pkcs8);
    } finally {
      pkcs8.fill(0);
    }
    const record: StoredSigningProfile = {
      name: profile.name,
      rootPem: profile.rootPem,
      certificatePem: profile.certificatePem,
      sealedKey,
    };
    await this.#store.putRecord("signing-profile", profile.name, record);
    this.#keys.delete(profile.name);
    return record;
  }

  /** Checks and stores a signing profile: the key must match a code-signing certificate issued by the root. */
  async createSigningProfile(
    profile: SigningProfile,
  ): Promise<Created<{ name: string; subject: string }>> {
    if (!ID.test(profile.name ?? "")) {
      return { ok: false, reason: "name must be 1..50 characters of [a-zA-Z0-9_-]" };
    }
    const root = parseCertificate(profile.rootPem ?? "");
    if (!root.ok) return { ok: false, reason: `root: ${root.reason}` };
    const cert = parseCertificate(profile.certificatePem ?? "");
    if (!cert.ok) return { ok: false, reason: `certificate: ${cert.reason}` };
    const signer = await checkCodeSigner(cert.value, root.value, { at: new Date(this.#now()) });
    if (!signer.ok) return { ok: false, reason: `certificate: ${signer.reason}` };
    const keys = await importPrivateKeyPem(profile.privateKeyPem ?? "");
    if (!keys.ok) return { ok: false, reason: `private key: ${keys.reason}` };
    const probe = new TextEncoder().encode("signing profile check");
    const signature = await signData(keys.value.privateKey, probe);
    if (!(await verifySignature(signer.value.verifier, probe, sha256(probe), signature))) {
      return { ok: false, reason: "the private key does not belong to the certificate" };
    }
    // The key is kept sealed, and opened only as a key that signs and cannot be read back.
    await this.#storeSealed(profile, keys.value.privateKey);
    return { ok: true, value: { name: profile.name, subject: cert.value.subject } };
  }

  /** Creates an OTA update: signs (or checks an external signature), stores, streams, creates the job. */
  async createOtaUpdate(request: OtaUpdateRequest): Promise<Created<OtaUpdateRecord>> {
    if (!ID.test(request.otaUpdateId ?? "")) {
      return { ok: false, reason: "otaUpdateId must be 1..50 characters of [a-zA-Z0-9_-]" };
    }
    if (await this.#store.getRecord("ota-update", request.otaUpdateId)) {
      return { ok: false, reason: `OTA update '${request.otaUpdateId}' already exists` };
    }
    if (typeof request.certFile !== "string" || request.certFile.length === 0) {
      return { ok: false, reason: "certFile is required" };
    }
    const protocols = request.protocols ?? ["MQTT"];
    if (protocols.length === 0 || protocols.some((p) => p !== "MQTT" && p !== "HTTP")) {
      return { ok: false, reason: "protocols must be MQTT, HTTP or both" };
    }
    const expiry = request.presignedUrlExpirySeconds ?? 1800;
    if (!Number.isInteger(expiry) || expiry < 60 || expiry > 3600) {
      return { ok: false, reason: "presignedUrlExpirySeconds must be 60..3600" };
    }
    const ttl = request.documentTtlSeconds ?? DEFAULT_DOCUMENT_TTL_SECONDS;
    if (!Number.isInteger(ttl) || ttl < 60 || ttl > MAX_DOCUMENT_TTL_SECONDS) {
      return {
        ok: false,
        reason: `documentTtlSeconds must be an integer 60..${MAX_DOCUMENT_TTL_SECONDS}`,
      };
    }
    const floor = request.minimumRate;
    if (floor !== undefined) {
      const within = (v: unknown, max: number) =>
        typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= max;
      if (
        typeof floor !== "object" || floor === null ||
        !within(floor.bytesPerSecond, RATE_FLOOR_LIMITS.bytesPerSecond) ||
        !within(floor.windowSeconds, RATE_FLOOR_LIMITS.windowSeconds)
      ) {
        return {
          ok: false,
          reason: `minimumRate must be { bytesPerSecond: 1..${RATE_FLOOR_LIMITS.bytesPerSecond}, ` +
            `windowSeconds: 1..${RATE_FLOOR_LIMITS.windowSeconds} }`,
        };
      }
    }
    const fileType = request.fileType ?? 0;
    if (!Number.isInteger(fileType) || fileType < 0 || fileType > 255) {
      return { ok: false, reason: "fileType must be an integer 0..255" };
    }
    if (fileType === 1 && request.extraFiles !== undefined) {
      return { ok: false, reason: "extraFiles: a second-stage bootloader update goes alone" };
    }
    const bundledStage = bundledSecondStageVersion(request.extraFiles);
    if (bundledStage && fileType !== 0) {
      return { ok: false, reason: "extraFiles: a second-stage bootloader goes with firmware" };
    }
    // Firmware the cloud signs depends on the second stage it comes with, as it must.
    const signed = await this.#signedFile(request, bundledStage);
    if (!signed.ok) return signed;
    const { image, signature } = signed.value;
    const id = request.otaUpdateId;
    const bases = await this.#deltaBases(request, fileType);
    if (!bases.ok) return bases;
    const extra = await prepareExtraFiles(request.extraFiles, signed.value.signing);
    if (!extra.ok) return extra;
    const unbound = secondStageBinding(image, extra.value);
    if (unbound) return { ok: false, reason: unbound };
    const patches = makeDeltaOffers(image, bases.value).map((offer, i) => ({
      ...offer,
      fileId: i + 1,
      fileKey: `ota-${id}-from-${offer.baseSha256.toHex().slice(0, 16)}.patch`,
    }));
    // Stream file ids after the patches'.
    const extraFiles = extra.value.map((file, i) => ({
      ...file,
      fileId: patches.length + 1 + i,
      fileKey: `ota-${id}-file-${patches.length + 1 + i}.bin`,
    }));
    const record: OtaUpdateRecord = {
      otaUpdateId: id,
      jobId: `AFR_OTA-${id}`,
      streamId: `AFR_OTA-${id}`,
      fileKey: `ota-${id}.bin`,
      fileSize: image.length,
      sha256: Array.from(sha256(image), (b) => b.toString(16).padStart(2, "0")).join(""),
      version: imageVersion(image),
      protocols,
      createdAt: this.#now(),
      fileType,
      ...(isEncryptedImage(image) ? { encrypted: true as const } : {}),
      ...(hardwareOf(image) ? { hardwareId: hardwareOf(image)! } : {}),
      ...(extraFiles.length > 0
        ? {
          extraFiles: extraFiles.map((f) => ({
            fileId: f.fileId,
            fileKey: f.fileKey,
            fileType: f.fileType,
            filePath: f.filePath,
            fileSize: f.data.length,
          })),
        }
        : {}),
      ...(patches.length > 0
        ? {
          deltas: patches.map((p) => ({
            baseSha256: p.baseSha256.toHex(),
            fileId: p.fileId,
            fileKey: p.fileKey,
            fileSize: p.patch.length,
          })),
        }
        : {}),
    };
    const presigned = (key: string) => `\${ota:presigned-url:${key}:${expiry}}`;
    const issued = this.#now();
    const signing = signed.value.signing;
    const signedMetadata = "sign" in signing
      ? await signJobMetadata(
        { jobId: record.jobId, issued, expires: issued + ttl * 1000 },
        signing.sign,
      )
      : undefined;
    const document = buildOtaDocument({
      protocols,
      ...(signedMetadata ? { signedMetadata } : {}),
      ...(floor !== undefined
        ? {
          minimumRate: { bytesPerSecond: floor.bytesPerSecond, windowSeconds: floor.windowSeconds },
        }
        : {}),
      ...(protocols.includes("MQTT") ? { streamName: record.streamId } : {}),
      files: [
        {
          filePath: fileType === 0 ? "firmware.bin" : `file-type-${fileType}.bin`,
          fileSize: image.length,
          fileId: 0,
          certFile: request.certFile,
          signature,
          fileType,
          ...(protocols.includes("HTTP")
            ? { updateDataUrl: presigned(record.fileKey), authScheme: "aws.s3.presigned" }
            : {}),
          deltas: patches.map((p) => ({
            baseSha256: p.baseSha256,
            fileId: p.fileId,
            fileSize: p.patch.length,
            ...(protocols.includes("HTTP") ? { updateDataUrl: presigned(p.fileKey) } : {}),
          })),
        },
        ...extraFiles.map((f) => ({
          filePath: f.filePath,
          fileSize: f.data.length,
          fileId: f.fileId,
          certFile: request.certFile,
          signature: f.signature,
          fileType: f.fileType,
          ...(protocols.includes("HTTP")
            ? { updateDataUrl: presigned(f.fileKey), authScheme: "aws.s3.presigned" }
            : {}),
        })),
      ],
    });
    const spec: JobSpec = {
      jobId: record.jobId,
      document,
      // A continuous update re-runs on a thing that runs older firmware again after a success.
      ...(record.version ? { firmwareVersion: record.version } : {}),
      targets: request.targets,
      ...(request.targetSelection ? { targetSelection: request.targetSelection } : {}),
      ...(request.rollout ? { rollout: request.rollout } : {}),
      ...(request.abort ? { abort: request.abort } : {}),
      ...(request.timeout ? { timeout: request.timeout } : {}),
      ...(request.retry ? { retry: request.retry } : {}),
      ...(request.healthGate ? { healthGate: request.healthGate } : {}),
      description: `OTA update ${id}`,
    };
    const stored = [
      { fileId: 0, fileKey: record.fileKey, bytes: image },
      ...patches.map((p) => ({ fileId: p.fileId, fileKey: p.fileKey, bytes: p.patch })),
      ...extraFiles.map((f) => ({ fileId: f.fileId, fileKey: f.fileKey, bytes: f.data })),
    ];
    for (const file of stored) await this.#store.putFile(file.fileKey, file.bytes);
    await this.#store.putStream(
      record.streamId,
      Object.fromEntries(stored.map((f) => [f.fileId, f.fileKey])),
    );
    this.#streams.addStream(record.streamId, new Map(stored.map((f) => [f.fileId, f.bytes])));
    const job = await this.#jobs.createJob(spec);
    if (!job.ok) return { ok: false, reason: job.reason };
    await this.#store.putRecord("ota-update", id, record);
    return { ok: true, value: record };
  }

  /** An OTA update with its job's status and counts. */
  async describe(
    otaUpdateId: string,
  ): Promise<(OtaUpdateRecord & { status: string; counts: Record<string, number> }) | null> {
    const record = await this.#store.getRecord<OtaUpdateRecord>("ota-update", otaUpdateId);
    if (!record) return null;
    return {
      ...record,
      status: (await this.#store.getJob(record.jobId))?.status ?? "UNKNOWN",
      counts: await this.#jobs.counts(record.jobId),
    };
  }

  /** All OTA updates. */
  list(): Promise<OtaUpdateRecord[]> {
    return this.#store.listRecords<OtaUpdateRecord>("ota-update");
  }

  /** The images patches are made from: the request's own bases, then what was shipped. */
  async #deltaBases(request: OtaUpdateRequest, fileType: number): Promise<Created<Uint8Array[]>> {
    const delta = request.delta;
    if (delta === undefined) return { ok: true, value: [] };
    if (request.encryptTo !== undefined) {
      // Ciphertext under a fresh key shares nothing with the plaintext a device runs.
      return {
        ok: false,
        reason: "delta: an encrypted image cannot be patched (not with encryptTo)",
      };
    }
    if (typeof delta !== "object" || delta === null) {
      return { ok: false, reason: "delta must be an object: { bases?, shipped? }" };
    }
    if (fileType !== 0) {
      return { ok: false, reason: "delta: only firmware (fileType 0) is patched" };
    }
    const given = delta.bases ?? [];
    if (!Array.isArray(given) || given.length > MAX_DELTA_OFFERS) {
      return { ok: false, reason: `delta.bases must be at most ${MAX_DELTA_OFFERS} images` };
    }
    const bases: Uint8Array[] = [];
    for (const [i, text] of given.entries()) {
      const base = fromBase64(text);
      if (!base || !decodeImage(bytesSource(base)).ok) {
        return { ok: false, reason: `delta.bases[${i}] is not a base64 image` };
      }
      bases.push(base);
    }
    if (delta.shipped === true) {
      const shipped = (await this.#store.listRecords<OtaUpdateRecord>("ota-update"))
        .filter((r) => (r.fileType ?? 0) === 0)
        .sort((a, b) => b.createdAt - a.createdAt)
        .slice(0, MAX_DELTA_OFFERS);
      for (const record of shipped) {
        const image = await this.#store.getFile(record.fileKey);
        if (image) bases.push(image);
      }
    }
    return { ok: true, value: bases };
  }

  /** An external signer certificate, checked against `rootPem` or the signing profiles' roots. */
  async #checkExternalSigner(
    certificate: Certificate,
    rootPem: string | undefined,
  ): Promise<Created<CodeSigner>> {
    const roots: Certificate[] = [];
    if (rootPem !== undefined) {
      const root = parseCertificate(rootPem);
      if (!root.ok) return { ok: false, reason: `rootPem: ${root.reason}` };
      roots.push(root.value);
    } else {
      for (const profile of await this.#store.listRecords<SigningProfile>("signing-profile")) {
        const root = parseCertificate(profile.rootPem);
        if (root.ok && !roots.some((r) => r.equal(root.value))) roots.push(root.value);
      }
    }
    if (roots.length === 0) {
      return {
        ok: false,
        reason:
          "certificatePem: no root to check it against: give rootPem (the root the devices trust) or create a signing profile",
      };
    }
    const checked = await checkCodeSignerUnder(certificate, roots, new Date(this.#now()));
    return checked.ok ? checked : { ok: false, reason: `certificatePem: ${checked.reason}` };
  }

  async #signedFile(
    request: OtaUpdateRequest,
    secondStage: ImageVersion | null,
  ): Promise<Created<{ image: Uint8Array; signature: Uint8Array; signing: ExtraFileSigning }>> {
    if (request.image !== undefined) {
      if (request.hardwareId !== undefined) {
        return { ok: false, reason: "hardwareId: an image signed elsewhere carries its own" };
      }
      const image = fromBase64(request.image);
      const signature = fromBase64(request.signature);
      if (!image || image.length === 0) return { ok: false, reason: "image must be base64" };
      if (!signature) {
        return { ok: false, reason: "an externally signed image needs its signature (base64 DER)" };
      }
      const cert = parseCertificate(request.certificatePem ?? "");
      if (!cert.ok) return { ok: false, reason: `certificatePem: ${cert.reason}` };
      // The checks a signing profile's certificate passes, and a device applies at close: a code
      // signer (EKU), valid now, issued by the root the targets trust. Refused here, not after
      // every device has downloaded the image.
      const signer = await this.#checkExternalSigner(cert.value, request.rootPem);
      if (!signer.ok) return signer;
      const verifier = signer.value.verifier;
      if (!(await verifySignature(verifier, image, sha256(image), signature))) {
        return { ok: false, reason: "the signature does not verify with certificatePem" };
      }
      const verify = (data: Uint8Array, given: Uint8Array) =>
        verifySignature(verifier, data, sha256(data), given);
      return { ok: true, value: { image, signature, signing: { verify } } };
    }
    const payload = fromBase64(request.payload);
    if (!payload || payload.length === 0) {
      return {
        ok: false,
        reason:
          "give either image + signature + certificatePem, or payload + version + securityCounter + signingProfile",
      };
    }
    // A trust-store update is no image: it has no version or security counter of its own.
    const trustUpdate = request.fileType === TRUST_STORE_FILE_TYPE;
    const version = parseVersion(request.version ?? (trustUpdate ? "0.0.0" : ""));
    if (!version) return { ok: false, reason: "version must be X.Y.Z[+B]" };
    const counter = request.securityCounter ?? (trustUpdate ? 0 : undefined);
    if (!Number.isInteger(counter) || counter! < 0 || counter! > 0xffffffff) {
      return { ok: false, reason: "securityCounter must be a u32" };
    }
    const profile = await this.#store.getRecord<StoredSigningProfile>(
      "signing-profile",
      request.signingProfile ?? "",
    );
    if (!profile) {
      return { ok: false, reason: `no signing profile '${request.signingProfile ?? ""}'` };
    }
    const privateKey = await this.#profileKey(profile);
    if (!privateKey.ok) return privateKey;
    if (trustUpdate) {
      // Signed by the device's root already; the profile signs the file as it is.
      const update = parseTrustUpdate(payload);
      if (!update.ok) return { ok: false, reason: `payload: ${update.reason}` };
      const sign = (data: Uint8Array) => signData(privateKey.value, data);
      return {
        ok: true,
        value: { image: payload, signature: await sign(payload), signing: { sign } },
      };
    }
    const cert = parseCertificate(profile.certificatePem);
    if (!cert.ok) return { ok: false, reason: "the signing profile is unusable" };
    const hardwareId = request.hardwareId;
    if (
      hardwareId !== undefined &&
      (typeof hardwareId !== "string" || !HARDWARE_ID_PATTERN.test(hardwareId))
    ) {
      return { ok: false, reason: "hardwareId must be 1..64 of [A-Za-z0-9._-]" };
    }
    let encryptTo: CryptoKey | undefined;
    if (request.encryptTo !== undefined) {
      const key = typeof request.encryptTo === "string"
        ? await importImagePublicKeyPem(request.encryptTo)
        : { ok: false as const, reason: "expected a PEM public key" };
      if (!key.ok) return { ok: false, reason: `encryptTo: ${key.reason}` };
      encryptTo = key.value;
    }
    const image = await signImage(
      {
        payload,
        version,
        securityCounter: counter!,
        ...(hardwareId !== undefined ? { hardwareId } : {}),
        ...(secondStage
          ? { dependencies: [{ imageId: ImageId.SECOND_STAGE, minVersion: secondStage }] }
          : {}),
      },
      { privateKey: privateKey.value, certificate: cert.value },
      encryptTo ? { encryptTo } : {},
    );
    const sign = (data: Uint8Array) => signData(privateKey.value, data);
    return { ok: true, value: { image, signature: await sign(image), signing: { sign } } };
  }
}

function isEncryptedImage(image: Uint8Array): boolean {
  const decoded = decodeImage(bytesSource(image));
  return decoded.ok && isEncrypted(decoded.image);
}

function hardwareOf(image: Uint8Array): string | null {
  const decoded = decodeImage(bytesSource(image));
  return decoded.ok ? decoded.image.hardwareId : null;
}

function imageVersion(image: Uint8Array): string | null {
  const decoded = decodeImage(bytesSource(image));
  return decoded.ok ? formatVersion(decoded.image.header.version) : null;
}
