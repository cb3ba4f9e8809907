import assert from "node:assert/strict";
import fc from "fast-check";
import { certificateDer, checkCodeSigner, parseCertificate } from "../../protocol/certificates.ts";
import {
  derSignatureToRaw,
  importPrivateKeyPem,
  pemEncode,
  rawSignatureToDer,
  sha256,
  signData,
  VerificationCache,
  verifyingKey,
  verifySignature,
} from "../../protocol/signatures.ts";
import {
  exportPrivateKeyPem,
  generateSigningKeys,
  issueCodeSigningCertificate,
} from "../../pki/certificate_issuer.ts";
import { OPENSSL, openssl, opensslDir } from "../helpers/openssl.ts";
import { testPki, VALIDITY } from "../helpers/pki.ts";

const message = new TextEncoder().encode("firmware image bytes");

Deno.test({
  name:
    "importPrivateKeyPem() takes openssl's SEC1 and PKCS#8 P-256 keys and refuses RSA and P-384",
  ignore: OPENSSL.ignore,
}, async () => {
  const dir = await opensslDir();
  try {
    await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sec1.pem"]);
    await openssl(dir, [
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-out",
      "pkcs8.pem",
    ]);
    await openssl(dir, [
      "genpkey",
      "-algorithm",
      "RSA",
      "-pkeyopt",
      "rsa_keygen_bits:1024",
      "-out",
      "rsa.pem",
    ]);
    await openssl(dir, [
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-384",
      "-out",
      "p384.pem",
    ]);
    for (const name of ["sec1.pem", "pkcs8.pem"]) {
      const pem = await dir.readText(name);
      assert.ok(pem.includes(name === "sec1.pem" ? "EC PRIVATE KEY" : "BEGIN PRIVATE KEY"));
      const keys = await importPrivateKeyPem(pem);
      assert.ok(keys.ok, name);
      const signature = await signData(keys.value.privateKey, message);
      assert.ok(
        await verifySignature(
          await verifyingKey(keys.value.publicKey),
          message,
          sha256(message),
          signature,
        ),
      );
    }
    const rsa = await importPrivateKeyPem(await dir.readText("rsa.pem"));
    assert.ok(!rsa.ok && /unsupported key algorithm 'rsa'/.test(rsa.reason));
    const p384 = await importPrivateKeyPem(await dir.readText("p384.pem"));
    assert.ok(!p384.ok && /unsupported curve/.test(p384.reason));
    const garbage = await importPrivateKeyPem(
      "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    assert.ok(!garbage.ok && /cannot parse private key/.test(garbage.reason));
  } finally {
    await dir.dispose();
  }
});

Deno.test({
  name: "DER signatures interoperate with openssl in both directions",
  ignore: OPENSSL.ignore,
}, async () => {
  const dir = await opensslDir();
  try {
    const keys = await generateSigningKeys();
    await dir.write("key.pem", await exportPrivateKeyPem(keys.privateKey));
    await openssl(dir, ["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"]);
    await dir.write("msg.bin", message);
    // openssl signs, we verify
    await openssl(dir, ["dgst", "-sha256", "-sign", "key.pem", "-out", "sig.der", "msg.bin"]);
    const opensslSignature = await dir.read("sig.der");
    const verifier = await verifyingKey(keys.publicKey);
    assert.ok(
      await verifySignature(
        verifier,
        message,
        sha256(message),
        opensslSignature,
        new VerificationCache(),
      ),
    );
    // we sign, openssl verifies
    await dir.write("ours.der", await signData(keys.privateKey, message));
    const out = await dir.run([
      "dgst",
      "-sha256",
      "-verify",
      "pub.pem",
      "-signature",
      "ours.der",
      "msg.bin",
    ]);
    assert.equal(out.code, 0, out.stderr);
    // and a wrong message fails in both
    const tampered = new TextEncoder().encode("firmware image bytez");
    assert.equal(
      await verifySignature(
        verifier,
        tampered,
        sha256(tampered),
        opensslSignature,
        new VerificationCache(),
      ),
      false,
    );
  } finally {
    await dir.dispose();
  }
});

Deno.test({
  name:
    "checkCodeSigner() accepts an openssl-made code-signing chain and refuses wrong purpose, issuer and algorithm",
  ignore: OPENSSL.ignore,
}, async () => {
  const dir = await opensslDir();
  try {
    const ext = (name: string, body: string) => dir.write(name, `${body}\n`);
    await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "root.key"]);
    await openssl(dir, [
      "req",
      "-x509",
      "-new",
      "-key",
      "root.key",
      "-sha256",
      "-days",
      "3650",
      "-subj",
      "/CN=Openssl Root",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign",
      "-out",
      "root.pem",
    ]);
    const issue = async (
      name: string,
      extensions: string,
      opts: { key?: string; digest?: string } = {},
    ) => {
      const key = opts.key ?? `${name}.key`;
      if (!opts.key) {
        await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key]);
      }
      await openssl(dir, [
        "req",
        "-new",
        "-key",
        key,
        "-subj",
        `/CN=${name}`,
        "-out",
        `${name}.csr`,
      ]);
      await ext(`${name}.ext`, extensions);
      await openssl(dir, [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-days",
        "365",
        `-${opts.digest ?? "sha256"}`,
        "-extfile",
        `${name}.ext`,
        "-out",
        `${name}.pem`,
      ]);
      const parsed = parseCertificate(await dir.readText(`${name}.pem`));
      assert.ok(parsed.ok);
      return parsed.value;
    };
    const rootParsed = parseCertificate(await dir.readText("root.pem"));
    assert.ok(rootParsed.ok);
    const root = rootParsed.value;
    const codeSigning =
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning";
    const good = await checkCodeSigner(await issue("signer", codeSigning), root, {
      at: new Date(),
    });
    assert.ok(good.ok, !good.ok ? good.reason : "");
    const tls = await checkCodeSigner(
      await issue(
        "tls",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth",
      ),
      root,
    );
    assert.ok(!tls.ok && /codeSigning/.test(tls.reason));
    const noKu = await checkCodeSigner(
      await issue(
        "noku",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,keyEncipherment\nextendedKeyUsage=codeSigning",
      ),
      root,
    );
    assert.ok(!noKu.ok && /digitalSignature/.test(noKu.reason));
    const sha1 = await checkCodeSigner(await issue("sha1", codeSigning, { digest: "sha1" }), root);
    assert.ok(
      !sha1.ok && /unsupported certificate signature algorithm/.test(sha1.reason),
      !sha1.ok ? sha1.reason : "",
    );
    await openssl(dir, [
      "genpkey",
      "-algorithm",
      "RSA",
      "-pkeyopt",
      "rsa_keygen_bits:1024",
      "-out",
      "rsa.key",
    ]);
    const rsa = await checkCodeSigner(await issue("rsa", codeSigning, { key: "rsa.key" }), root);
    assert.ok(!rsa.ok && /only ECDSA P-256/.test(rsa.reason), !rsa.ok ? rsa.reason : "");
    const pki = await testPki();
    const otherRoot = await checkCodeSigner(pki.signer, root);
    assert.ok(!otherRoot.ok && /trusted root/.test(otherRoot.reason));
    const expired = await checkCodeSigner(await issue("late", codeSigning), root, {
      at: new Date(Date.now() + 400 * 86400_000),
    });
    assert.ok(!expired.ok && /expired/.test(expired.reason));
  } finally {
    await dir.dispose();
  }
});

Deno.test({
  name: "our certificates read in openssl as a code-signing chain",
  ignore: OPENSSL.ignore,
}, async () => {
  const pki = await testPki();
  const dir = await opensslDir();
  try {
    await dir.write("root.pem", pemEncode("CERTIFICATE", certificateDer(pki.root)));
    await dir.write("signer.pem", pemEncode("CERTIFICATE", certificateDer(pki.signer)));
    const text = new TextDecoder().decode(
      await openssl(dir, ["x509", "-in", "signer.pem", "-noout", "-text"]),
    );
    assert.match(text, /Code Signing/);
    assert.match(text, /ecdsa-with-SHA256/);
    const verify = await dir.run([
      "verify",
      "-CAfile",
      "root.pem",
      "-purpose",
      "any",
      "-attime",
      String(Math.floor(Date.parse("2030-01-01") / 1000)),
      "signer.pem",
    ]);
    assert.equal(verify.code, 0, verify.stderr);
  } finally {
    await dir.dispose();
  }
});

Deno.test("checkCodeSigner() refuses a CA certificate and a signer outside its validity period", async () => {
  const pki = await testPki();
  const asCa = await checkCodeSigner(pki.root, pki.root);
  assert.ok(!asCa.ok);
  const early = await checkCodeSigner(pki.signer, pki.root, { at: new Date("2024-01-01") });
  assert.ok(!early.ok && /not valid before/.test(early.reason));
  const keys = await generateSigningKeys();
  const noEku = await issueCodeSigningCertificate(
    pki.root,
    pki.rootKeys.privateKey,
    keys.publicKey,
    { subject: "CN=Web", ...VALIDITY, extendedKeyUsages: ["1.3.6.1.5.5.7.3.1"] },
  );
  const refused = await checkCodeSigner(noEku, pki.root);
  assert.ok(!refused.ok && /codeSigning/.test(refused.reason));
});

Deno.test("derSignatureToRaw(): property: round-trips any r‖s and refuses any malformed DER", () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), (raw) => {
      const der = rawSignatureToDer(raw);
      const back = derSignatureToRaw(der);
      assert.ok(back.ok);
      assert.deepEqual(back.value, raw);
      const trailing = derSignatureToRaw(new Uint8Array([...der, 0]));
      assert.ok(!trailing.ok);
    }),
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
      const result = derSignatureToRaw(bytes);
      if (result.ok) {
        assert.deepEqual(rawSignatureToDer(result.value), bytes, "only canonical DER is accepted");
      }
    }),
    { numRuns: 1000 },
  );
});

Deno.test("parseCertificate() gives a reason for garbage, never an exception", () => {
  for (
    const input of [
      "",
      "not a pem",
      "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----",
      new Uint8Array([0x30, 0x03, 1, 2, 3]),
    ]
  ) {
    const result = parseCertificate(input);
    assert.ok(!result.ok);
    assert.ok(result.reason.length > 0);
  }
});

Deno.test("parseCertificate remembers parses by content: the same bytes give the same result, other bytes are parsed afresh", async () => {
  const pki = await testPki();
  const der = certificateDer(pki.signer);
  const first = parseCertificate(der);
  assert.ok(first.ok);
  assert.equal(parseCertificate(der.slice()), first, "same content, same parse");
  const altered = der.slice();
  altered[altered.length - 5]! ^= 0x01;
  const other = parseCertificate(altered);
  assert.notEqual(other, first);
  if (other.ok) assert.notDeepEqual(certificateDer(other.value), der);
  const pem = parseCertificate(pemEncode("CERTIFICATE", der));
  assert.equal(pem, first, "PEM of the same certificate hits the same entry");
});
