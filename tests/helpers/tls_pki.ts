/**
 * A fleet CA for device identities and the broker's TLS listener, made fresh per test: the CA,
 * a server certificate for 127.0.0.1, client identities, and a login probe that reports the
 * CONNACK code a broker answered.
 */
import mqtt from "mqtt";
import type { BrokerTls } from "../../broker/embedded.ts";
import { type Certificate, certificateDer } from "../../protocol/certificates.ts";
import {
  createRootCertificate,
  exportPrivateKeyPem,
  generateSigningKeys,
  issueTlsCertificate,
} from "../../pki/certificate_issuer.ts";
import { pemEncode } from "../../protocol/signatures.ts";

/** Valid from a minute ago for a day (real time: TLS checks it). */
export const NOW_VALIDITY = {
  notBefore: new Date(Date.now() - 60_000),
  notAfter: new Date(Date.now() + 86_400_000),
};

/** PEM of a certificate. */
export const pem = (cert: Certificate): string => pemEncode("CERTIFICATE", certificateDer(cert));

/** A CA: its certificate and private key. */
export interface TestCa {
  readonly certificate: Certificate;
  readonly privateKey: CryptoKey;
}

/** A fresh CA named `name`. */
export async function testCa(name: string): Promise<TestCa> {
  const keys = await generateSigningKeys();
  const certificate = await createRootCertificate(keys, {
    subject: `CN=${name}`,
    ...NOW_VALIDITY,
  });
  return { certificate, privateKey: keys.privateKey };
}

/** A TLS client identity for `thing` from `ca`: key and certificate as PEM, and the DER. */
export async function clientIdentity(ca: TestCa, thing: string) {
  const keys = await generateSigningKeys();
  const cert = await issueTlsCertificate(ca.certificate, ca.privateKey, keys.publicKey, {
    kind: "client",
    subject: `CN=${thing}`,
    ...NOW_VALIDITY,
  });
  return {
    key: await exportPrivateKeyPem(keys.privateKey),
    cert: pem(cert),
    der: certificateDer(cert),
  };
}

/** The broker's TLS listener settings: a server certificate from `ca`, and `ca` for clients. */
export async function brokerTls(ca: TestCa): Promise<BrokerTls> {
  const keys = await generateSigningKeys();
  const cert = await issueTlsCertificate(ca.certificate, ca.privateKey, keys.publicKey, {
    kind: "server",
    subject: "CN=broker",
    ipAddresses: ["127.0.0.1"],
    ...NOW_VALIDITY,
  });
  return {
    key: await exportPrivateKeyPem(keys.privateKey),
    cert: pem(cert),
    ca: pem(ca.certificate),
  };
}

/** 0 when the broker accepted the login; its CONNACK code, or "closed" when TLS hung up first. */
export function loginCode(url: string, options: Record<string, unknown>): Promise<number | string> {
  return new Promise((resolve) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    const finish = (result: number | string) => {
      // mqtt.js leaves its CONNACK timer running when TLS hangs up before a CONNACK.
      clearTimeout((client as unknown as { connackTimer?: number }).connackTimer);
      client.removeAllListeners();
      client.on("error", () => {});
      client.end(true, () => resolve(result));
    };
    client.once("connect", () => finish(0));
    client.once("error", (error) => finish((error as { code?: number }).code ?? error.message));
    client.once("close", () => finish("closed"));
  });
}
