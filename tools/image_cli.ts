/**
 * `deno task image`: create signing keys and certificates, build simulated firmware, sign
 * images (and detached signatures for job documents), and inspect images.
 *
 * Exit codes: 0 success, 1 the operation failed (e.g. a signature does not verify), 2 bad usage.
 *
 * @module
 */

import { flagLines, type FlagSpec, parseFlags, wrapped } from "../lib/flags.ts";
import { toArrayBuffer, toHex } from "../lib/bytes.ts";
import {
  type Certificate,
  certificateDer,
  checkCodeSigner,
  parseCertificate,
} from "../protocol/certificates.ts";
import { createSigningPki, exportPrivateKeyPem } from "../pki/certificate_issuer.ts";
import {
  ECDSA_P256,
  importPrivateKeyPem,
  pemEncode,
  sha256,
  signData,
  type SigningKeys,
  verifyingKey,
  verifySignature,
} from "../protocol/signatures.ts";
import { type Behavior, BEHAVIORS, buildFirmware, readManifest } from "../bootloader/firmware.ts";
import {
  bytesSource,
  decodeImage,
  formatVersion,
  HARDWARE_ID_PATTERN,
  type ImageDependency,
  ImageId,
  isEncrypted,
  parseVersion,
  TlvType,
} from "../protocol/image_format.ts";
import { signImage } from "../protocol/image_sign.ts";
import { type ImageKeys, validateImage } from "../bootloader/image_validate.ts";
import {
  ECDH_P256 as ECDH_P256_AGREEMENT,
  imagePrivateKeyPkcs8,
  importImagePublicKeyPem,
  payloadCipher,
  unwrapImageKey,
} from "../protocol/image_encryption.ts";
import { UsageError } from "../lib/usage_error.ts";
import { standardFlags, usageLine } from "../lib/cli.ts";
import { parseTrustUpdate, signRootLink, signTrustUpdate } from "../protocol/trust_update.ts";

/** A usage error: message shown, exit code 2. */
export { UsageError };

/** Each command: its arguments, what it does, and its flags (the parser's and the help's). */
const COMMANDS: Record<string, { args: string; about: string; flags: readonly FlagSpec[] }> = {
  keygen: {
    args: "",
    about: "Create root.key/root.pem (the device ROM's trust anchor) and signer.key/signer.pem " +
      "(an ECDSA P-256 code-signing certificate issued by the root). Existing keys are never " +
      "overwritten without --force.",
    flags: [
      { name: "out-dir", value: "DIR", help: "where the keys and certificates go (required)" },
      {
        name: "days",
        value: "N",
        help: "how long the certificates are valid",
        range: [1, 36500],
        default: "3650",
      },
      { name: "force", help: "overwrite existing keys" },
    ],
  },
  "encryption-keygen": {
    args: "",
    about: "Create image-enc.key (the P-256 key a product's devices hold in their secure " +
      "element to decrypt images) and image-enc.pub (the public key `sign` encrypts for). " +
      "Keys made by openssl (prime256v1) work the same. Never overwritten without --force.",
    flags: [
      { name: "out-dir", value: "DIR", help: "where the keys go (required)" },
      { name: "force", help: "overwrite existing keys" },
    ],
  },
  "trust-update": {
    args: "",
    about: "Make a trust-store update for devices (job file type 2, shipped as an OTA update " +
      "of that file type): the whole store, signed by the root the devices trust. Rotating " +
      "the root: give the new root and its key; the old root signs the link, the new root " +
      "the update.",
    flags: [
      { name: "root-key", value: "FILE", help: "the devices' current root key, PEM (required)" },
      { name: "root-cert", value: "FILE", help: "its certificate, PEM (required)" },
      {
        name: "store-version",
        value: "N",
        help: "the store's version: higher than the devices' (required)",
        range: [1, 0xffffffff],
      },
      {
        name: "signer",
        value: "LABEL=CERT",
        multiple: true,
        help: "a code-signer certificate (PEM) the devices find by LABEL (a job's certfile)",
      },
      {
        name: "revoke",
        value: "CERT|HASH",
        multiple: true,
        help: "a signing key to refuse: its certificate (PEM) or SHA-256 of its SPKI (hex)",
      },
      { name: "new-root", value: "FILE", help: "rotate to this root certificate (PEM)" },
      { name: "new-root-key", value: "FILE", help: "the new root's key (PEM)" },
      { name: "out", value: "FILE", help: "where the update goes (required)" },
    ],
  },
  firmware: {
    args: "",
    about: "Build a simulated firmware payload that starts with a behaviour manifest.",
    flags: [
      { name: "firmware-version", value: "X.Y.Z", help: "its version (required)" },
      {
        name: "behavior",
        value: "B",
        help: "how it behaves once booted",
        choices: BEHAVIORS,
        default: "ok",
      },
      {
        name: "size",
        value: "SIZE",
        help: "payload size, e.g. 256KiB",
        required: true,
        sizeRange: [64, 16 * 1024 * 1024],
      },
      { name: "out", value: "FILE", help: "where it goes (required)" },
    ],
  },
  sign: {
    args: "",
    about: "Build and sign an image (keys: PEM, SEC1 or PKCS#8; certificates: PEM or DER); the " +
      "key must be the certificate's.",
    flags: [
      { name: "payload", value: "FILE", help: "the firmware (required)" },
      { name: "firmware-version", value: "X.Y.Z[+B]", help: "the image's version (required)" },
      {
        name: "security-counter",
        value: "N",
        help: "anti-rollback counter",
        required: true,
        range: [0, 0xffffffff],
      },
      { name: "key", value: "FILE", help: "the signer's private key (required)" },
      { name: "cert", value: "FILE", help: "the signer's certificate (required)" },
      { name: "out", value: "FILE", help: "where the image goes (required)" },
      {
        name: "header-size",
        value: "N",
        help: "bytes before the payload",
        range: [32, 0xffff],
        default: "32",
      },
      {
        name: "depends-on",
        value: "IMAGE:X.Y.Z",
        multiple: true,
        help: "the image needs this version or later of another image of the device " +
          "(application or second-stage; MCUboot's DEPENDENCY TLV): refused until it runs",
      },
      {
        name: "hardware",
        value: "BOARD",
        help: "the board the image is built for (1..64 of [A-Za-z0-9._-]; a protected TLV): " +
          "devices of other boards refuse it before installing it",
      },
      {
        name: "encrypt-to",
        value: "FILE",
        help: "encrypt the payload for the holder of this P-256 public key (PEM), as MCUboot's " +
          "ENC_EC256: AES-128-CTR under a fresh key, wrapped by ECIES; signed over the plaintext",
      },
    ],
  },
  "sign-detached": {
    args: "",
    about: "DER ECDSA-SHA256 signature of a whole file (the job document's sig-sha256-ecdsa); " +
      "prints it in base64.",
    flags: [
      { name: "key", value: "FILE", help: "the signer's private key (required)" },
      { name: "in", value: "FILE", help: "the file to sign (required)" },
      { name: "out", value: "FILE", help: "also write the DER signature here" },
    ],
  },
  inspect: {
    args: "FILE",
    about: "Print every header field and TLV, and whether the signature verifies against --root.",
    flags: [
      { name: "root", value: "FILE", help: "the root certificate to verify against" },
      {
        name: "decrypt-key",
        value: "FILE",
        help: "an encrypted image's decryption key (PEM), to check its signature and read its " +
          "manifest",
      },
      { name: "json", help: "as JSON" },
    ],
  },
  verify: {
    args: "FILE",
    about: "Exit 0 only if the image would boot on a device trusting --root (hash, signature, " +
      "signer certificate), else 1 with the reason.",
    flags: [
      { name: "root", value: "FILE", help: "the root the device trusts (required)" },
      {
        name: "decrypt-key",
        value: "FILE",
        help: "the key the device holds to decrypt an encrypted image (PEM)",
      },
    ],
  },
};

export const USAGE = [
  "Usage: deno task image <command> [options]",
  "",
  "Commands:",
  ...Object.entries(COMMANDS).flatMap(([name, command]) => [
    wrapped(`  ${name}${command.args ? ` ${command.args}` : ""}`, command.about),
    ...flagLines(command.flags, 4),
  ]),
  "",
  "  -h, --help".padEnd(27) + "this text",
  "  --version".padEnd(27) + "the project's version",
].join("\n");

/** Parses one command's flags against its declaration. */
function flagsOf(command: string, args: string[], allowPositionals = false) {
  return parseFlags(args, COMMANDS[command]!.flags, { allowPositionals });
}

type Output = (line: string) => void;

function required(values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== "string" || value.length === 0) {
    throw new UsageError(`Missing required option --${name}`);
  }
  return value;
}

async function readFile(path: string, what: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    throw new UsageError(`Cannot read ${what} '${path}': ${(error as Error).message}`);
  }
}

async function loadCertificate(path: string) {
  const bytes = await readFile(path, "certificate");
  const text = new TextDecoder().decode(bytes);
  const parsed = parseCertificate(text.includes("-----BEGIN") ? text : bytes);
  if (!parsed.ok) throw new UsageError(`Cannot use certificate '${path}': ${parsed.reason}`);
  return parsed.value;
}

async function loadKey(path: string) {
  const keys = await importPrivateKeyPem(
    new TextDecoder().decode(await readFile(path, "private key")),
  );
  if (!keys.ok) throw new UsageError(`Cannot use private key '${path}': ${keys.reason}`);
  return keys.value;
}

async function keygen(args: string[], out: Output): Promise<number> {
  const flags = flagsOf("keygen", args);
  const values = flags.values;
  const dir = required(values, "out-dir");
  const days = flags.int("days");
  // A key that exists may be the only copy of what a fleet trusts: never overwritten unasked.
  const existing = [];
  for (const name of ["root.key", "root.pem", "signer.key", "signer.pem"]) {
    if (await Deno.stat(`${dir}/${name}`).then(() => true, () => false)) existing.push(name);
  }
  if (existing.length > 0 && values.force !== true) {
    throw new UsageError(
      `${dir} already holds ${existing.join(", ")}: not overwritten (give --force to replace them)`,
    );
  }
  await Deno.mkdir(dir, { recursive: true });
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(notBefore.getTime() + days * 86_400_000);
  const { rootKeys, root, signerKeys, signer } = await createSigningPki({
    rootSubject: "CN=OTA Device Root CA",
    signerSubject: "CN=OTA Firmware Signer",
    validity: { notBefore, notAfter },
  });
  await Deno.writeTextFile(`${dir}/root.key`, await exportPrivateKeyPem(rootKeys.privateKey), {
    mode: 0o600,
  });
  await Deno.writeTextFile(`${dir}/root.pem`, pemEncode("CERTIFICATE", certificateDer(root)));
  await Deno.writeTextFile(`${dir}/signer.key`, await exportPrivateKeyPem(signerKeys.privateKey), {
    mode: 0o600,
  });
  await Deno.writeTextFile(`${dir}/signer.pem`, pemEncode("CERTIFICATE", certificateDer(signer)));
  out(
    `wrote ${dir}/root.key, ${dir}/root.pem, ${dir}/signer.key, ${dir}/signer.pem (valid ${days} days)`,
  );
  return 0;
}

async function trustUpdate(args: string[], out: Output): Promise<number> {
  const flags = flagsOf("trust-update", args);
  const values = flags.values;
  const key = async (path: string, what: string) => {
    const parsed = await importPrivateKeyPem(new TextDecoder().decode(await readFile(path, what)));
    if (!parsed.ok) throw new UsageError(`Cannot use --${what} '${path}': ${parsed.reason}`);
    return parsed.value.privateKey;
  };
  const rootKey = await key(required(values, "root-key"), "root-key");
  const rootCert = await loadCertificate(required(values, "root-cert"));
  if (!flags.has("store-version")) throw new UsageError("Missing required option --store-version");
  const signers = [];
  for (const spec of (values.signer as string[] | undefined) ?? []) {
    const at = spec.indexOf("=");
    if (at < 1) {
      throw new UsageError(`Invalid --signer: expected LABEL=CERT: current value is '${spec}'`);
    }
    const certificate = await loadCertificate(spec.slice(at + 1));
    signers.push({ label: spec.slice(0, at), certificate: certificateDer(certificate) });
  }
  const revoked = [];
  for (const spec of (values.revoke as string[] | undefined) ?? []) {
    if (/^[0-9a-fA-F]{64}$/.test(spec)) {
      revoked.push(spec.toLowerCase());
      continue;
    }
    const certificate = await loadCertificate(spec);
    revoked.push(sha256(new Uint8Array(certificate.publicKey.rawData)).toHex());
  }
  const newRootPath = values["new-root"] as string | undefined;
  const newRootKeyPath = values["new-root-key"] as string | undefined;
  if ((newRootPath === undefined) !== (newRootKeyPath === undefined)) {
    throw new UsageError("--new-root and --new-root-key go together");
  }
  let signer = rootKey;
  let rootLink;
  if (newRootPath !== undefined) {
    const newRoot = certificateDer(await loadCertificate(newRootPath));
    rootLink = { certificate: newRoot, signature: await signRootLink(newRoot, rootKey) };
    signer = await key(newRootKeyPath!, "new-root-key");
  }
  const body = {
    version: flags.int("store-version"),
    signers,
    revoked,
    ...(rootLink ? { rootLink } : {}),
  };
  const bytes = await signTrustUpdate(body, (data) => signData(signer, data));
  // What a device will check, checked here first: a tool must not make an update devices refuse.
  const parsed = parseTrustUpdate(bytes);
  if (!parsed.ok) throw new UsageError(`Cannot make the update: ${parsed.reason}`);
  const underRoot = rootLink
    ? parseCertificate(rootLink.certificate)
    : { ok: true as const, value: rootCert };
  if (!underRoot.ok) throw new UsageError(`--new-root: ${underRoot.reason}`);
  for (const s of signers) {
    const cert = parseCertificate(s.certificate);
    const checked = cert.ok
      ? await checkCodeSigner(cert.value, underRoot.value, { at: new Date() })
      : cert;
    if (!checked.ok) throw new UsageError(`--signer ${s.label}: ${checked.reason}`);
  }
  const path = required(values, "out");
  await Deno.writeFile(path, bytes);
  out(
    `wrote ${path}: trust store version ${body.version}, ${signers.length} signers, ` +
      `${revoked.length} revoked${rootLink ? ", root rotated" : ""} (${bytes.length} bytes)`,
  );
  return 0;
}

async function firmware(args: string[], out: Output): Promise<number> {
  const flags = flagsOf("firmware", args);
  const values = flags.values;
  const version = required(values, "firmware-version");
  if (!parseVersion(version)) {
    throw new UsageError(
      `Invalid --firmware-version: expected X.Y.Z[+B]: current value is '${version}'`,
    );
  }
  const behavior = flags.choice<Behavior>("behavior");
  required(values, "size");
  const size = flags.size("size");
  const path = required(values, "out");
  await Deno.writeFile(path, buildFirmware({ behavior, version }, size));
  out(`wrote ${path}: ${size} bytes, behavior ${behavior}, version ${version}`);
  return 0;
}

async function sign(args: string[], out: Output): Promise<number> {
  const flags = flagsOf("sign", args);
  const values = flags.values;
  const versionText = required(values, "firmware-version");
  const version = parseVersion(versionText);
  if (!version) {
    throw new UsageError(
      `Invalid --firmware-version: expected X.Y.Z[+B]: current value is '${versionText}'`,
    );
  }
  required(values, "security-counter");
  const securityCounter = flags.int("security-counter");
  const headerSize = flags.int("header-size");
  const payload = await readFile(required(values, "payload"), "payload");
  const keys = await loadKey(required(values, "key"));
  const certificate = await loadCertificate(required(values, "cert"));
  if (!(await keyBelongsTo(keys, certificate))) {
    throw new UsageError(
      `--key '${values.key}' does not belong to --cert '${values.cert}': the image would not verify`,
    );
  }
  const encryptTo = flags.string("encrypt-to");
  let recipient: CryptoKey | undefined;
  if (encryptTo !== undefined) {
    const key = await importImagePublicKeyPem(
      new TextDecoder().decode(await readFile(encryptTo, "public key")),
    );
    if (!key.ok) throw new UsageError(`Cannot use --encrypt-to '${encryptTo}': ${key.reason}`);
    recipient = key.value;
  }
  const dependencies: ImageDependency[] = [];
  for (const text of (values["depends-on"] as string[] | undefined) ?? []) {
    const match = /^(application|second-stage|0|1):(.+)$/.exec(text);
    const minVersion = match ? parseVersion(match[2]!) : null;
    if (!match || !minVersion) {
      throw new UsageError(
        `Invalid --depends-on: expected application|second-stage:X.Y.Z[+B]: current value is '${text}'`,
      );
    }
    const imageId = match[1] === "application" || match[1] === "0"
      ? ImageId.APPLICATION
      : ImageId.SECOND_STAGE;
    if (dependencies.some((d) => d.imageId === imageId)) {
      throw new UsageError(`Invalid --depends-on: '${match[1]}' is given twice`);
    }
    dependencies.push({ imageId, minVersion });
  }
  const hardwareId = values.hardware as string | undefined;
  if (hardwareId !== undefined && !HARDWARE_ID_PATTERN.test(hardwareId)) {
    throw new UsageError(
      `Invalid --hardware: expected 1..64 of [A-Za-z0-9._-]: current value is '${hardwareId}'`,
    );
  }
  const image = await signImage(
    {
      payload,
      version,
      securityCounter,
      headerSize,
      dependencies,
      ...(hardwareId !== undefined ? { hardwareId } : {}),
    },
    { privateKey: keys.privateKey, certificate },
    recipient ? { encryptTo: recipient } : {},
  );
  const path = required(values, "out");
  await Deno.writeFile(path, image);
  out(
    `wrote ${path}: ${image.length} bytes, version ${
      formatVersion(version)
    }, security counter ${securityCounter}${recipient ? ", payload encrypted (ENC_EC256)" : ""}`,
  );
  return 0;
}

async function encryptionKeygen(args: string[], out: Output): Promise<number> {
  const flags = flagsOf("encryption-keygen", args);
  const dir = required(flags.values, "out-dir");
  const existing = [];
  for (const name of ["image-enc.key", "image-enc.pub"]) {
    if (await Deno.stat(`${dir}/${name}`).then(() => true, () => false)) existing.push(name);
  }
  if (existing.length > 0 && flags.values.force !== true) {
    throw new UsageError(
      `${dir} already holds ${existing.join(", ")}: not overwritten (give --force to replace them)`,
    );
  }
  await Deno.mkdir(dir, { recursive: true });
  const pair = await crypto.subtle.generateKey(ECDH_P256_AGREEMENT, true, ["deriveBits"]);
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  await Deno.writeTextFile(`${dir}/image-enc.key`, pemEncode("PRIVATE KEY", pkcs8), {
    mode: 0o600,
  });
  await Deno.writeTextFile(`${dir}/image-enc.pub`, pemEncode("PUBLIC KEY", spki));
  out(`wrote ${dir}/image-enc.key, ${dir}/image-enc.pub (ECIES P-256)`);
  return 0;
}

/** The staged-check options for `--decrypt-key` (as a device with that key in its element). */
async function decryptionOf(path: string | undefined): Promise<{ staged?: { keys: ImageKeys } }> {
  if (path === undefined) return {};
  const pkcs8 = imagePrivateKeyPkcs8(
    new TextDecoder().decode(await readFile(path, "decryption key")),
  );
  if (!pkcs8.ok) throw new UsageError(`Cannot use --decrypt-key '${path}': ${pkcs8.reason}`);
  const key = await crypto.subtle.importKey(
    "pkcs8",
    toArrayBuffer(pkcs8.value),
    ECDH_P256_AGREEMENT,
    false,
    ["deriveBits"],
  );
  return { staged: { keys: { unwrapImageKey: (tlv) => unwrapImageKey(tlv, key) } } };
}

/** Whether `keys` holds the private key of `certificate`'s public key (a probe signature). */
async function keyBelongsTo(keys: SigningKeys, certificate: Certificate): Promise<boolean> {
  const publicKey = await certificate.publicKey.export(ECDSA_P256, ["verify"]).catch(() => null);
  if (!publicKey) return false;
  const probe = new TextEncoder().encode("image tool key check");
  const signature = await signData(keys.privateKey, probe);
  const verifier = await verifyingKey(publicKey);
  return await verifySignature(verifier, probe, sha256(probe), signature);
}

async function verify(args: string[], out: Output): Promise<number> {
  const { values, positionals } = flagsOf("verify", args, true);
  if (positionals.length !== 1) throw new UsageError("verify takes exactly one image file");
  const root = await loadCertificate(required(values, "root"));
  const decryption = await decryptionOf(values["decrypt-key"] as string | undefined);
  const bytes = await readFile(positionals[0]!, "image");
  const decoded = decodeImage(bytesSource(bytes));
  if (decoded.ok && isEncrypted(decoded.image) && !decryption.staged) {
    out(`${positionals[0]}: encrypted: give --decrypt-key FILE (the devices' key) to verify it`);
    return 1;
  }
  // Read as a download is: an encrypted image decrypted with the key given.
  const result = await validateImage(bytesSource(bytes), {
    root,
    at: new Date(),
    ...decryption,
  });
  if (!result.ok) {
    out(`${positionals[0]}: would not boot: ${result.reason}`);
    return 1;
  }
  out(
    `${positionals[0]}: would boot: version ${
      formatVersion(result.image.header.version)
    }, signed under "${root.subject}"`,
  );
  return 0;
}

async function signDetached(args: string[], out: Output): Promise<number> {
  const flags = flagsOf("sign-detached", args);
  const keys = await loadKey(required(flags.values, "key"));
  const data = await readFile(required(flags.values, "in"), "input");
  const signature = await signData(keys.privateKey, data);
  const file = flags.string("out");
  if (file) await Deno.writeFile(file, signature);
  out(btoa(String.fromCharCode(...signature)));
  return 0;
}

const TLV_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(TlvType).map(([name, type]) => [type, name]),
);

async function inspect(args: string[], out: Output): Promise<number> {
  const { values, positionals } = flagsOf("inspect", args, true);
  if (positionals.length !== 1) throw new UsageError("inspect takes exactly one image file");
  const bytes = await readFile(positionals[0]!, "image");
  const decoded = decodeImage(bytesSource(bytes));
  if (!decoded.ok) {
    out(
      values.json
        ? JSON.stringify({ valid: false, reason: decoded.reason })
        : `invalid image: ${decoded.reason}`,
    );
    return 1;
  }
  const { header } = decoded.image;
  const tlvs = decoded.image.tlvs.map((tlv) => {
    const name = TLV_NAMES[tlv.type] ?? `0x${tlv.type.toString(16)}`;
    let value = toHex(tlv.value);
    if (tlv.type === TlvType.SEC_CNT) value = String(decoded.image.securityCounter);
    if (tlv.type === TlvType.HARDWARE_ID) value = `built for ${decoded.image.hardwareId}`;
    if (tlv.type === TlvType.DEPENDENCY) {
      const dependency = decoded.image.dependencies.find((d) => d.imageId === tlv.value[0])!;
      value = `${dependency.imageId === ImageId.APPLICATION ? "application" : "second-stage"} ${
        formatVersion(dependency.minVersion)
      } or later`;
    }
    if (tlv.type === TlvType.SIGNER_CERT) {
      const cert = parseCertificate(tlv.value);
      value = cert.ok
        ? `subject "${cert.value.subject}", issuer "${cert.value.issuer}", valid ${cert.value.notBefore.toISOString()} .. ${cert.value.notAfter.toISOString()}`
        : `unparsable: ${cert.reason}`;
    }
    return { name, protected: tlv.protected, length: tlv.value.length, value };
  });
  const encrypted = isEncrypted(decoded.image);
  const decryption = await decryptionOf(values["decrypt-key"] as string | undefined);
  let payload: Uint8Array | null = bytes.subarray(
    header.headerSize,
    header.headerSize + header.payloadSize,
  );
  let encryption = encrypted
    ? "AES-128-CTR payload, its key wrapped for a P-256 key (ENC_EC256)"
    : "none";
  if (encrypted) {
    const unwrapped = decryption.staged
      ? await decryption.staged.keys.unwrapImageKey(decoded.image.encryptedKey!)
      : null;
    payload = unwrapped?.ok ? payloadCipher(unwrapped.key, 0, payload) : null;
    encryption += unwrapped
      ? unwrapped.ok ? "; decrypted with --decrypt-key" : `; cannot decrypt: ${unwrapped.reason}`
      : "";
  }
  const manifest = payload
    ? readManifest(payload)
    : { source: "encrypted (give --decrypt-key to read it)" as const };
  let signature: { checked: boolean; verifies?: boolean; root?: string; reason?: string } = {
    checked: false,
  };
  // An encrypted image's signature covers its plaintext: without the key it cannot be checked.
  const checkable = !encrypted || decryption.staged !== undefined;
  if (typeof values.root === "string" && checkable) {
    const root = await loadCertificate(values.root);
    const result = await validateImage(bytesSource(bytes), {
      root,
      at: new Date(),
      ...decryption,
    });
    signature = result.ok
      ? { checked: true, verifies: true, root: root.subject }
      : { checked: true, verifies: false, root: root.subject, reason: result.reason };
  }
  if (values.json) {
    out(JSON.stringify(
      {
        valid: true,
        file: positionals[0],
        bytes: bytes.length,
        header: { ...header, version: formatVersion(header.version) },
        imageSize: decoded.image.totalSize,
        securityCounter: decoded.image.securityCounter,
        encrypted,
        tlvs,
        manifest: manifest.source === "manifest" ? manifest.manifest : manifest.source,
        signature,
      },
      null,
      2,
    ));
    return signature.verifies === false ? 1 : 0;
  }
  out(`file:               ${positionals[0]} (${bytes.length} bytes)`);
  out(`magic:              0x96f3b83d`);
  out(`load address:       0x${header.loadAddress.toString(16)}`);
  out(`header size:        ${header.headerSize}`);
  out(`protected TLV size: ${header.protectedTlvSize}`);
  out(`payload size:       ${header.payloadSize}`);
  out(`flags:              0x${header.flags.toString(16)}`);
  out(`version:            ${formatVersion(header.version)}`);
  out(`image size:         ${decoded.image.totalSize}`);
  out(`encryption:         ${encryption}`);
  for (const tlv of tlvs) {
    out(`TLV ${tlv.protected ? "(protected) " : ""}${tlv.name} [${tlv.length}]: ${tlv.value}`);
  }
  out(
    `firmware manifest:  ${
      manifest.source === "manifest" ? JSON.stringify(manifest.manifest) : manifest.source
    }`,
  );
  if (!signature.checked) {
    out(
      `signature:          not checked (pass --root FILE${
        checkable ? "" : " and, the image being encrypted, --decrypt-key FILE"
      })`,
    );
    return 0;
  }
  if (signature.verifies) {
    out(`signature:          verifies against root "${signature.root}"`);
    return 0;
  }
  out(`signature:          DOES NOT VERIFY: ${signature.reason}`);
  return 1;
}

/**
 * Runs the tool with `args`, writing to `out` and `err`; returns the exit code.
 *
 * @example
 * ```ts ignore
 * const code = await runImageCli(["inspect", "app.img"], console.log, console.error);
 * ```
 */
export async function runImageCli(args: string[], out: Output, err: Output): Promise<number> {
  const [command, ...rest] = args;
  const commands: Record<string, (args: string[], out: Output) => Promise<number>> = {
    keygen,
    "encryption-keygen": encryptionKeygen,
    "trust-update": trustUpdate,
    firmware,
    sign,
    "sign-detached": signDetached,
    inspect,
    verify,
  };
  const early = standardFlags(args, USAGE);
  if (early || command === "help") {
    out(early?.text ?? USAGE);
    return 0;
  }
  if (!command) {
    err(
      usageLine(
        "Missing the command (keygen, encryption-keygen, trust-update, firmware, sign, sign-detached, inspect, verify)",
      ),
    );
    return 2;
  }
  const run = commands[command];
  if (!run) {
    err(usageLine(`Unknown command '${command}'`));
    return 2;
  }
  try {
    return await run(rest, out);
  } catch (error) {
    if (
      error instanceof UsageError || (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
    ) {
      err(usageLine((error as Error).message));
      return 2;
    }
    err(`image ${command} failed: ${(error as Error).message}`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(
    await runImageCli(Deno.args, (line) => console.log(line), (line) => console.error(line)),
  );
}
