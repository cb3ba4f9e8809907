/**
 * The signed image format, modelled on MCUboot's: a 32-byte little-endian header, the payload,
 * a protected TLV area (security counter) and a TLV area with the SHA-256 hash, the signer's key
 * hash, the ECDSA signature and the signer's certificate.
 *
 * The decoder is strict and total: every length and offset is bounds-checked against the bytes
 * actually there, and a malformed image comes back as `{ ok: false, reason }`, never as an
 * exception.
 *
 * @module
 */

import { concatBytes, isFilledWith, viewOf } from "../lib/bytes.ts";

/** `ih_magic`. */
export const IMAGE_MAGIC = 0x96f3b83d;
/** Bytes of the fixed header fields. */
export const IMAGE_HEADER_SIZE = 32;
/** Magic of the protected TLV info header. */
export const TLV_PROTECTED_INFO_MAGIC = 0x6908;
/** Magic of the unprotected TLV info header. */
export const TLV_INFO_MAGIC = 0x6907;

/** TLV types used by this project (MCUboot numbering; 0xA0 is in the vendor range). */
export const TlvType = {
  /** SHA-256 of the signer's public key (SPKI DER). */
  KEYHASH: 0x01,
  /** SHA-256 of header + payload + protected TLVs. */
  SHA256: 0x10,
  /** DER ECDSA P-256 signature over the same region. */
  ECDSA_SIG: 0x22,
  /**
   * The payload's AES-128 key wrapped for the device's P-256 key (ECIES; see image_encryption.ts):
   * ephemeral public key, MAC, wrapped key. Present exactly when the header says ENCRYPTED_AES128.
   */
  ENC_EC256: 0x32,
  /**
   * A version of another image this one needs (protected; MCUboot's IMAGE_TLV_DEPENDENCY): image
   * id u8, flags u8 (0), padding u16, minimum version (major u8, minor u8, revision u16 LE, build
   * u32 LE). One per image depended on.
   */
  DEPENDENCY: 0x40,
  /** u32 security counter (protected). */
  SEC_CNT: 0x50,
  /** DER X.509 certificate of the signer (vendor type). */
  SIGNER_CERT: 0xa0,
  /**
   * The hardware the image is built for (protected, vendor type): a board id of 1..64 characters
   * of [A-Za-z0-9._-]. A device refuses an image built for another board before installing it.
   */
  HARDWARE_ID: 0xa1,
} as const;

/** What a board id (the HARDWARE_ID TLV) may be. */
export const HARDWARE_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

/** The images of a device, as dependencies name them (the job document's file types). */
export const ImageId = {
  /** The application firmware (primary/secondary slots). */
  APPLICATION: 0,
  /** The second-stage bootloader (slots A/B of a two-stage boot chain). */
  SECOND_STAGE: 1,
} as const;

/** A version of another image an image needs to run. */
export interface ImageDependency {
  readonly imageId: number;
  readonly minVersion: ImageVersion;
}

/** Header flags (`IMAGE_F_*`). */
export const ImageFlag = {
  PIC: 0x01,
  ENCRYPTED_AES128: 0x04,
  ENCRYPTED_AES256: 0x08,
  NON_BOOTABLE: 0x10,
  RAM_LOAD: 0x20,
  ROM_FIXED: 0x100,
  COMPRESSED_LZMA1: 0x200,
  COMPRESSED_LZMA2: 0x400,
  COMPRESSED_ARM_THUMB_FLT: 0x800,
} as const;

const UNSUPPORTED_FLAGS = ImageFlag.PIC | ImageFlag.ENCRYPTED_AES256 | ImageFlag.RAM_LOAD |
  ImageFlag.ROM_FIXED | ImageFlag.COMPRESSED_LZMA1 | ImageFlag.COMPRESSED_LZMA2 |
  ImageFlag.COMPRESSED_ARM_THUMB_FLT;
const KNOWN_FLAGS = UNSUPPORTED_FLAGS | ImageFlag.NON_BOOTABLE | ImageFlag.ENCRYPTED_AES128;

/** Image version `major.minor.revision+build`. */
export interface ImageVersion {
  readonly major: number;
  readonly minor: number;
  readonly revision: number;
  readonly build: number;
}

/** The decoded fixed header. */
export interface ImageHeader {
  readonly loadAddress: number;
  readonly headerSize: number;
  readonly protectedTlvSize: number;
  readonly payloadSize: number;
  readonly flags: number;
  readonly version: ImageVersion;
}

/** One TLV entry. */
export interface Tlv {
  readonly type: number;
  readonly value: Uint8Array;
  readonly protected: boolean;
}

/** A structurally valid image (not yet authenticated). */
export interface DecodedImage {
  readonly header: ImageHeader;
  /** Offset of the payload (= header size). */
  readonly payloadOffset: number;
  /** End of the hashed region: header + payload + protected TLV area. */
  readonly hashedSize: number;
  /** Total size including both TLV areas. */
  readonly totalSize: number;
  readonly tlvs: readonly Tlv[];
  readonly securityCounter: number | null;
  readonly sha256: Uint8Array | null;
  readonly keyHash: Uint8Array | null;
  readonly signature: Uint8Array | null;
  readonly signerCertificate: Uint8Array | null;
  /**
   * The wrapped payload key (`ENC_EC256`) of an image whose header says ENCRYPTED_AES128, else
   * null. Such an image's payload is ciphertext in a secondary slot and on the wire, plaintext
   * once installed in the primary slot (as MCUboot keeps them).
   */
  readonly encryptedKey: Uint8Array | null;
  /** The versions of other images it needs (DEPENDENCY TLVs), none for most. */
  readonly dependencies: readonly ImageDependency[];
  /** The board it is built for (HARDWARE_ID TLV); null: any board. */
  readonly hardwareId: string | null;
}

/** Whether `image`'s header says its payload is encrypted (see `DecodedImage.encryptedKey`). */
export function isEncrypted(image: { readonly header: ImageHeader }): boolean {
  return (image.header.flags & ImageFlag.ENCRYPTED_AES128) !== 0;
}

/** A decode that failed, with the reason. */
export interface DecodeFailure {
  readonly ok: false;
  readonly reason: string;
}

/** Outcome of {@linkcode decodeImage}. */
export type DecodeResult = { readonly ok: true; readonly image: DecodedImage } | DecodeFailure;

/** Random-access bytes: a flash area or a file. */
export interface ByteSource {
  /** Bytes available. */
  readonly size: number;
  /** Reads `length` bytes at `offset` (never past `size`). */
  read(offset: number, length: number): Uint8Array;
  /** SHA-256 of the first `length` bytes (optional: hashed from `read` where absent). */
  digest?(length: number): Uint8Array;
}

/**
 * Wraps an array as a {@linkcode ByteSource}.
 *
 * @example
 * ```ts
 * import { bytesSource } from "./image_format.ts";
 * bytesSource(new Uint8Array(4)).size; // 4
 * ```
 */
export function bytesSource(bytes: Uint8Array): ByteSource {
  return { size: bytes.length, read: (offset, length) => bytes.subarray(offset, offset + length) };
}

/**
 * Parses `"1.2.3"` or `"1.2.3+4"`.
 *
 * @example
 * ```ts
 * import { parseVersion } from "./image_format.ts";
 * parseVersion("1.2.3+4"); // { major: 1, minor: 2, revision: 3, build: 4 }
 * ```
 */
export function parseVersion(text: string): ImageVersion | null {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,5})(?:\+(\d{1,10}))?$/.exec(text.trim());
  if (!match) return null;
  const version = {
    major: Number(match[1]),
    minor: Number(match[2]),
    revision: Number(match[3]),
    build: Number(match[4] ?? 0),
  };
  if (
    version.major > 0xff || version.minor > 0xff || version.revision > 0xffff ||
    version.build > 0xffffffff
  ) {
    return null;
  }
  return version;
}

/**
 * Formats a version as `major.minor.revision+build`.
 *
 * @example
 * ```ts
 * import { formatVersion } from "./image_format.ts";
 * formatVersion({ major: 1, minor: 1, revision: 0, build: 0 }); // "1.1.0+0"
 * ```
 */
export function formatVersion(v: ImageVersion): string {
  return `${v.major}.${v.minor}.${v.revision}+${v.build}`;
}

/**
 * Compares versions by major, minor, revision (the build number is ignored, as in MCUboot).
 *
 * @example
 * ```ts
 * import { compareVersions, parseVersion } from "./image_format.ts";
 * compareVersions(parseVersion("1.1.0")!, parseVersion("1.0.9")!); // 1
 * ```
 */
export function compareVersions(a: ImageVersion, b: ImageVersion): -1 | 0 | 1 {
  for (const key of ["major", "minor", "revision"] as const) {
    if (a[key] !== b[key]) return a[key] < b[key] ? -1 : 1;
  }
  return 0;
}

/**
 * Encodes a header, zero-padded to `header.headerSize`.
 *
 * @example
 * ```ts
 * import { encodeHeader, parseVersion } from "./image_format.ts";
 * encodeHeader({ loadAddress: 0, headerSize: 32, protectedTlvSize: 0, payloadSize: 0, flags: 0,
 *   version: parseVersion("1.0.0")! }).length; // 32
 * ```
 */
export function encodeHeader(header: ImageHeader): Uint8Array {
  const out = new Uint8Array(header.headerSize);
  const view = viewOf(out);
  view.setUint32(0, IMAGE_MAGIC, true);
  view.setUint32(4, header.loadAddress, true);
  view.setUint16(8, header.headerSize, true);
  view.setUint16(10, header.protectedTlvSize, true);
  view.setUint32(12, header.payloadSize, true);
  view.setUint32(16, header.flags, true);
  view.setUint8(20, header.version.major);
  view.setUint8(21, header.version.minor);
  view.setUint16(22, header.version.revision, true);
  view.setUint32(24, header.version.build, true);
  return out;
}

/**
 * Encodes a TLV area with its info header.
 *
 * @example
 * ```ts
 * import { encodeTlvArea, TLV_INFO_MAGIC } from "./image_format.ts";
 * encodeTlvArea(TLV_INFO_MAGIC, [{ type: 0x10, value: new Uint8Array(32) }]).length; // 40
 * ```
 */
export function encodeTlvArea(
  magic: number,
  entries: readonly { type: number; value: Uint8Array }[],
): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 4;
  for (const entry of entries) {
    const head = new Uint8Array(4);
    viewOf(head).setUint16(0, entry.type, true);
    viewOf(head).setUint16(2, entry.value.length, true);
    parts.push(head, entry.value);
    total += 4 + entry.value.length;
  }
  if (total > 0xffff) throw new RangeError(`Cannot encode TLV area: ${total} bytes exceed 65535`);
  const info = new Uint8Array(4);
  viewOf(info).setUint16(0, magic, true);
  viewOf(info).setUint16(2, total, true);
  return concatBytes([info, ...parts]);
}

const fail = (reason: string): DecodeFailure => ({ ok: false, reason });

/** Allowed TLVs per area with their exact or maximum lengths. */
const TLV_RULES: Record<number, { name: string; protected: boolean; min: number; max: number }> = {
  [TlvType.SEC_CNT]: { name: "SEC_CNT", protected: true, min: 4, max: 4 },
  [TlvType.DEPENDENCY]: { name: "DEPENDENCY", protected: true, min: 12, max: 12 },
  [TlvType.KEYHASH]: { name: "KEYHASH", protected: false, min: 32, max: 32 },
  [TlvType.SHA256]: { name: "SHA256", protected: false, min: 32, max: 32 },
  [TlvType.ECDSA_SIG]: { name: "ECDSA_SIG", protected: false, min: 8, max: 72 },
  [TlvType.SIGNER_CERT]: { name: "SIGNER_CERT", protected: false, min: 64, max: 4096 },
  [TlvType.ENC_EC256]: { name: "ENC_EC256", protected: false, min: 113, max: 113 },
  [TlvType.HARDWARE_ID]: { name: "HARDWARE_ID", protected: true, min: 1, max: 64 },
};

function parseTlvArea(
  source: ByteSource,
  start: number,
  expectedMagic: number,
  isProtected: boolean,
  out: Tlv[],
): { ok: true; end: number } | DecodeFailure {
  const areaName = isProtected ? "protected TLV area" : "TLV area";
  if (start + 4 > source.size) return fail(`${areaName} at ${start} runs past the end of the slot`);
  const info = viewOf(source.read(start, 4));
  const magic = info.getUint16(0, true);
  const total = info.getUint16(2, true);
  if (magic !== expectedMagic) {
    return fail(
      `${areaName} at ${start} has magic 0x${magic.toString(16)}, expected 0x${
        expectedMagic.toString(16)
      }`,
    );
  }
  if (total < 4) {
    return fail(`${areaName} at ${start} declares ${total} bytes, less than its own header`);
  }
  const end = start + total;
  if (end > source.size) {
    return fail(`${areaName} at ${start} declares ${total} bytes, past the end of the slot`);
  }
  // The whole area in one detached copy, its values views of it: a read or copy per TLV head and
  // value was most of a decode, and a device decodes its slots at every boot and state report.
  const bytes = source.read(start, total).slice();
  const view = viewOf(bytes);
  let at = start + 4;
  while (at < end) {
    if (at + 4 > end) return fail(`${areaName}: TLV header at ${at} crosses the end of the area`);
    const type = view.getUint16(at - start, true);
    const length = view.getUint16(at - start + 2, true);
    if (at + 4 + length > end) {
      return fail(
        `${areaName}: TLV 0x${
          type.toString(16)
        } at ${at} of ${length} bytes crosses the end of the area`,
      );
    }
    const rule = TLV_RULES[type];
    if (!rule) return fail(`${areaName}: unknown TLV type 0x${type.toString(16)} at ${at}`);
    if (rule.protected !== isProtected) {
      return fail(
        `${areaName}: TLV ${rule.name} must be in the ${
          rule.protected ? "protected" : "unprotected"
        } area`,
      );
    }
    if (length < rule.min || length > rule.max) {
      return fail(
        `${areaName}: TLV ${rule.name} has ${length} bytes, expected ${
          rule.min === rule.max ? rule.min : `${rule.min}..${rule.max}`
        }`,
      );
    }
    // One of each, but for dependencies: one per image depended on.
    const value = bytes.subarray(at + 4 - start, at + 4 - start + length);
    const duplicate = type === TlvType.DEPENDENCY
      ? out.some((tlv) => tlv.type === type && tlv.value[0] === value[0])
      : out.some((tlv) => tlv.type === type);
    if (duplicate) return fail(`${areaName}: duplicate TLV ${rule.name}`);
    out.push({ type, value, protected: isProtected });
    at += 4 + length;
  }
  return { ok: true, end };
}

/**
 * Decodes and bounds-checks an image from the start of `source`.
 *
 * @example
 * ```ts
 * import { bytesSource, decodeImage } from "./image_format.ts";
 * const result = decodeImage(bytesSource(new Uint8Array(64).fill(0xff)));
 * result.ok; // false ("slot is empty")
 * ```
 */
export function decodeImage(source: ByteSource): DecodeResult {
  try {
    return decodeUnchecked(source);
  } catch (error) {
    // The checks above should make this unreachable; a reader fault must still not escape.
    return fail(`cannot read image: ${(error as Error).message}`);
  }
}

/** A header read on its own: its fields, or why these bytes are not one. */
export type HeaderResult =
  | { readonly ok: true; readonly header: ImageHeader }
  | { readonly ok: false; readonly reason: string };

/**
 * Reads the fixed image header at the start of `bytes` (magic and fields only: the bounds of the
 * rest are {@linkcode decodeImage}'s to check). What the agent reads from an image's first block.
 *
 * @example
 * ```ts
 * import { decodeHeader, encodeHeader, parseVersion } from "./image_format.ts";
 * const bytes = encodeHeader({ loadAddress: 0, headerSize: 32, protectedTlvSize: 0,
 *   payloadSize: 0, flags: 0, version: parseVersion("1.2.3")! });
 * const result = decodeHeader(bytes);
 * result.ok && result.header.version.minor; // 2
 * ```
 */
export function decodeHeader(bytes: Uint8Array): HeaderResult {
  if (bytes.length < IMAGE_HEADER_SIZE) {
    return { ok: false, reason: `${bytes.length} bytes are shorter than an image header` };
  }
  const raw = bytes.subarray(0, IMAGE_HEADER_SIZE);
  if (isFilledWith(raw, 0xff)) return { ok: false, reason: "slot is empty (erased header)" };
  const view = viewOf(raw);
  const magic = view.getUint32(0, true);
  if (magic !== IMAGE_MAGIC) {
    return { ok: false, reason: `bad header magic 0x${magic.toString(16).padStart(8, "0")}` };
  }
  const header: ImageHeader = {
    loadAddress: view.getUint32(4, true),
    headerSize: view.getUint16(8, true),
    protectedTlvSize: view.getUint16(10, true),
    payloadSize: view.getUint32(12, true),
    flags: view.getUint32(16, true),
    version: {
      major: view.getUint8(20),
      minor: view.getUint8(21),
      revision: view.getUint16(22, true),
      build: view.getUint32(24, true),
    },
  };
  return { ok: true, header };
}

function decodeUnchecked(source: ByteSource): DecodeResult {
  if (source.size < IMAGE_HEADER_SIZE) {
    return fail(`slot of ${source.size} bytes is smaller than an image header`);
  }
  const read = decodeHeader(source.read(0, IMAGE_HEADER_SIZE));
  if (!read.ok) return fail(read.reason);
  const header = read.header;
  if (header.headerSize < IMAGE_HEADER_SIZE) {
    return fail(`header size ${header.headerSize} is smaller than ${IMAGE_HEADER_SIZE}`);
  }
  if (header.flags & ~KNOWN_FLAGS) {
    return fail(`unknown header flags 0x${header.flags.toString(16)}`);
  }
  if (header.flags & UNSUPPORTED_FLAGS) {
    return fail(`unsupported header flags 0x${(header.flags & UNSUPPORTED_FLAGS).toString(16)}`);
  }
  const payloadEnd = header.headerSize + header.payloadSize;
  if (payloadEnd > source.size) {
    return fail(
      `header (${header.headerSize}) + payload (${header.payloadSize}) exceed the slot's ${source.size} bytes`,
    );
  }
  const tlvs: Tlv[] = [];
  let at = payloadEnd;
  if (header.protectedTlvSize > 0) {
    const area = parseTlvArea(source, at, TLV_PROTECTED_INFO_MAGIC, true, tlvs);
    if (!area.ok) return area;
    if (area.end - at !== header.protectedTlvSize) {
      return fail(
        `protected TLV area is ${
          area.end - at
        } bytes but the header says ${header.protectedTlvSize}`,
      );
    }
    at = area.end;
  }
  const hashedSize = at;
  const area = parseTlvArea(source, at, TLV_INFO_MAGIC, false, tlvs);
  if (!area.ok) return area;
  const find = (type: number) => tlvs.find((tlv) => tlv.type === type)?.value ?? null;
  const counter = find(TlvType.SEC_CNT);
  const encryptedKey = find(TlvType.ENC_EC256);
  const encrypted = (header.flags & ImageFlag.ENCRYPTED_AES128) !== 0;
  if (encrypted && !encryptedKey) return fail("encrypted image has no ENC_EC256 TLV (its key)");
  if (!encrypted && encryptedKey) {
    return fail("image carries an ENC_EC256 TLV but its header does not say it is encrypted");
  }
  const hardware = find(TlvType.HARDWARE_ID);
  const hardwareId = hardware ? new TextDecoder().decode(hardware) : null;
  if (hardwareId !== null && !HARDWARE_ID_PATTERN.test(hardwareId)) {
    return fail("HARDWARE_ID TLV is not a board id (1..64 of [A-Za-z0-9._-])");
  }
  const dependencies = tlvs.filter((tlv) => tlv.type === TlvType.DEPENDENCY).map((tlv) => {
    const view = viewOf(tlv.value);
    return {
      imageId: tlv.value[0]!,
      minVersion: {
        major: tlv.value[4]!,
        minor: tlv.value[5]!,
        revision: view.getUint16(6, true),
        build: view.getUint32(8, true),
      },
    };
  });
  return {
    ok: true,
    image: {
      header,
      payloadOffset: header.headerSize,
      hashedSize,
      totalSize: area.end,
      tlvs,
      securityCounter: counter ? viewOf(counter).getUint32(0, true) : null,
      sha256: find(TlvType.SHA256),
      keyHash: find(TlvType.KEYHASH),
      signature: find(TlvType.ECDSA_SIG),
      signerCertificate: find(TlvType.SIGNER_CERT),
      encryptedKey,
      dependencies,
      hardwareId,
    },
  };
}

/**
 * Why an image built for `built` (its HARDWARE_ID, null: any board) may not run on board
 * `board`, or null.
 *
 * @example
 * ```ts
 * import { wrongHardware } from "./image_format.ts";
 * wrongHardware("board-b", "board-a"); // "built for hardware board-b, this device is board-a"
 * wrongHardware(null, "board-a"); // null
 * ```
 */
export function wrongHardware(built: string | null, board: string | null): string | null {
  if (built === null || built === board) return null;
  return `built for hardware ${built}, this device is ${board ?? "unnamed"}`;
}

/**
 * A DEPENDENCY TLV's value.
 *
 * @example
 * ```ts
 * import { encodeDependency, ImageId, parseVersion } from "./image_format.ts";
 * encodeDependency({ imageId: ImageId.SECOND_STAGE, minVersion: parseVersion("2.1.0")! }).length;
 * // 12
 * ```
 */
export function encodeDependency(dependency: ImageDependency): Uint8Array {
  const value = new Uint8Array(12);
  const view = viewOf(value);
  value[0] = dependency.imageId;
  value[4] = dependency.minVersion.major;
  value[5] = dependency.minVersion.minor;
  view.setUint16(6, dependency.minVersion.revision, true);
  view.setUint32(8, dependency.minVersion.build, true);
  return value;
}

/**
 * The first of `image`'s dependencies the images a device runs do not meet (`running`: each
 * image's version by id; absent: the device has no such image), as a reason; null when all are.
 *
 * @example
 * ```ts
 * import { ImageId, parseVersion, unmetDependency } from "./image_format.ts";
 * unmetDependency(
 *   [{ imageId: ImageId.SECOND_STAGE, minVersion: parseVersion("2.1.0")! }],
 *   new Map([[ImageId.SECOND_STAGE, parseVersion("2.0.0")!]]),
 * ); // "needs second-stage bootloader 2.1.0+0 or later, runs 2.0.0+0"
 * ```
 */
export function unmetDependency(
  dependencies: readonly ImageDependency[],
  running: ReadonlyMap<number, ImageVersion>,
): string | null {
  for (const dependency of dependencies) {
    const name = IMAGE_NAMES[dependency.imageId] ?? `image ${dependency.imageId}`;
    const version = running.get(dependency.imageId);
    const needed = formatVersion(dependency.minVersion);
    if (!version) return `needs ${name} ${needed} or later, has none`;
    if (compareVersions(version, dependency.minVersion) < 0) {
      return `needs ${name} ${needed} or later, runs ${formatVersion(version)}`;
    }
  }
  return null;
}

const IMAGE_NAMES: Record<number, string> = {
  [ImageId.APPLICATION]: "application",
  [ImageId.SECOND_STAGE]: "second-stage bootloader",
};
