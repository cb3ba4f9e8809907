/**
 * The factory step of device identity: the fleet CA certifies a secure element's public key.
 *
 * @module
 */

import { type Certificate, certificateDer } from "../protocol/certificates.ts";
import { issueTlsCertificate } from "./certificate_issuer.ts";
import type { SecureElement } from "../bootloader/secure_element.ts";

/**
 * The factory step: the fleet CA certifies the element's public key for `thing` (CN = thing,
 * clientAuth) and the element stores the certificate. Returns the certificate (DER), for the
 * cloud to register.
 *
 * @example
 * ```ts ignore
 * const der = await provisionSecureElement(element, "dev-1", fleetCa, validity);
 * await cloud.registerDeviceCertificate("dev-1", der);
 * ```
 */
export async function provisionSecureElement(
  element: SecureElement,
  thing: string,
  ca: { readonly certificate: Certificate; readonly privateKey: CryptoKey },
  validity: { readonly notBefore: Date; readonly notAfter: Date },
): Promise<Uint8Array> {
  const certificate = await issueTlsCertificate(ca.certificate, ca.privateKey, element.publicKey, {
    kind: "client",
    subject: `CN=${thing}`,
    ...validity,
  });
  const der = certificateDer(certificate);
  if (!element.installCertificate(der, new Uint8Array(certificate.publicKey.rawData))) {
    throw new Error("the CA certified another key than the element's");
  }
  return der;
}
