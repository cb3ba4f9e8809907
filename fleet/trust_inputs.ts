/**
 * A root of trust made outside the fleet: the CA the devices' ROM trusts (`--root-ca`), the key
 * and certificate the fleet signs with (`--signer-key`, `--signer-cert`; SEC1 or PKCS#8 keys, as
 * openssl writes them), and optionally the update as an image signed elsewhere (`--image`,
 * `--signature` DER as `openssl dgst -sha256 -sign` writes it, `--certificate`). Everything is
 * checked before a device is made, each problem one line naming the file.
 *
 * @module
 */

import {
  type Certificate,
  certificateDer,
  checkCodeSigner,
  parseCertificate,
} from "../protocol/certificates.ts";
import {
  importPrivateKeyPem,
  pemEncode,
  sha256,
  signData,
  type SigningKeys,
  verifySignature,
} from "../protocol/signatures.ts";
import { bytesSource, decodeImage, type ImageVersion } from "../protocol/image_format.ts";
import { UsageError } from "../lib/usage_error.ts";
import type { FlagSpec } from "../lib/flags.ts";

/**
 * The flags that bring a root of trust and a signer made outside, and optionally an image signed
 * elsewhere (fleet and demo take the same ones).
 */
export const TRUST_FLAGS: readonly FlagSpec[] = [
  {
    name: "root-ca",
    value: "FILE",
    help: "with --signer-key and --signer-cert: a root of trust made outside, the CA the " +
      "devices' ROM trusts (default: a PKI made for the run)",
  },
  {
    name: "signer-key",
    value: "FILE",
    help: "the code signer's key (SEC1 or PKCS#8) the images are signed with",
  },
  { name: "signer-cert", value: "FILE", help: "the code signer's certificate" },
  {
    name: "image",
    value: "FILE",
    help: "with --root-ca ..., --signature and --certificate: the (first) update is this image, " +
      "signed elsewhere",
  },
  {
    name: "signature",
    value: "FILE",
    help: "its detached DER signature (openssl dgst -sha256 -sign)",
  },
  { name: "certificate", value: "FILE", help: "its signer's certificate" },
];

/** The files, as given on the command line. */
export interface TrustFiles {
  readonly rootCa: string;
  readonly signerKey: string;
  readonly signerCert: string;
  readonly image?: {
    readonly image: string;
    readonly signature: string;
    readonly certificate: string;
  };
}

/** The files, read and checked. */
export interface Trust {
  readonly root: Certificate;
  readonly rootPem: string;
  readonly signer: Certificate;
  readonly signerPem: string;
  /** The key's PEM as given (a signing profile takes it as it is). */
  readonly signerKeyPem: string;
  readonly signerKeys: SigningKeys;
  readonly external?: {
    readonly image: Uint8Array;
    readonly signature: Uint8Array;
    readonly certificatePem: string;
    readonly version: ImageVersion;
  };
}

async function read(path: string, flag: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    throw new UsageError(`Cannot read --${flag} '${path}': ${(error as Error).message}`);
  }
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** A certificate file as openssl writes it: PEM, or DER. */
function certificateFrom(bytes: Uint8Array) {
  const pem = text(bytes);
  return parseCertificate(pem.includes("-----BEGIN") ? pem : bytes);
}

/** Reads and checks `files` against each other, at `now`. */
export async function loadTrust(files: TrustFiles, now = new Date()): Promise<Trust> {
  const root = certificateFrom(await read(files.rootCa, "root-ca"));
  if (!root.ok) throw new UsageError(`Invalid --root-ca '${files.rootCa}': ${root.reason}`);
  const signer = certificateFrom(await read(files.signerCert, "signer-cert"));
  if (!signer.ok) {
    throw new UsageError(`Invalid --signer-cert '${files.signerCert}': ${signer.reason}`);
  }
  const checked = await checkCodeSigner(signer.value, root.value, { at: now });
  if (!checked.ok) {
    throw new UsageError(`Invalid --signer-cert '${files.signerCert}': ${checked.reason}`);
  }
  const signerKeyPem = text(await read(files.signerKey, "signer-key"));
  const keys = await importPrivateKeyPem(signerKeyPem);
  if (!keys.ok) throw new UsageError(`Invalid --signer-key '${files.signerKey}': ${keys.reason}`);
  const probe = new TextEncoder().encode("fleet signer check");
  const probed = await signData(keys.value.privateKey, probe);
  if (!(await verifySignature(checked.value.verifier, probe, sha256(probe), probed))) {
    throw new UsageError(
      `Invalid --signer-key '${files.signerKey}': it does not belong to --signer-cert '${files.signerCert}'`,
    );
  }
  const trust = {
    root: root.value,
    rootPem: pemEncode("CERTIFICATE", certificateDer(root.value)),
    signer: signer.value,
    signerPem: pemEncode("CERTIFICATE", certificateDer(signer.value)),
    signerKeyPem,
    signerKeys: keys.value,
  };
  if (!files.image) return trust;
  const { image: imagePath, signature: signaturePath, certificate: certPath } = files.image;
  const image = await read(imagePath, "image");
  const decoded = decodeImage(bytesSource(image));
  if (!decoded.ok) throw new UsageError(`Invalid --image '${imagePath}': ${decoded.reason}`);
  const certificate = certificateFrom(await read(certPath, "certificate"));
  if (!certificate.ok) {
    throw new UsageError(`Invalid --certificate '${certPath}': ${certificate.reason}`);
  }
  const external = await checkCodeSigner(certificate.value, root.value, { at: now });
  if (!external.ok) throw new UsageError(`Invalid --certificate '${certPath}': ${external.reason}`);
  const signature = await read(signaturePath, "signature");
  if (!(await verifySignature(external.value.verifier, image, sha256(image), signature))) {
    throw new UsageError(
      `Invalid --signature '${signaturePath}': it does not verify over --image with --certificate`,
    );
  }
  return {
    ...trust,
    external: {
      image,
      signature,
      certificatePem: pemEncode("CERTIFICATE", certificateDer(certificate.value)),
      version: decoded.image.header.version,
    },
  };
}
