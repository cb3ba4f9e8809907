/**
 * `ota create` with an image signed outside the cloud (`openssl dgst -sha256 -sign`): the
 * signer certificate passes the checks a signing profile's does, at creation: made by openssl, a
 * code signer of the devices' root is taken; one without the codeSigning EKU, one from another
 * CA and an expired one are refused with the same reasons a signing profile gets.
 */
import assert from "node:assert/strict";
import { startCloud } from "../../broker/cloud.ts";
import { runOtaCli } from "../../broker/ota_cli.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import {
  CODE_SIGNING_EXTENSIONS,
  OPENSSL,
  openssl,
  opensslCa,
  opensslDir,
  opensslLeaf,
} from "../helpers/openssl.ts";
import { testImage } from "../helpers/pki.ts";

const TOKEN = "external-signer-token";

Deno.test({
  name:
    "ota create --image --signature --certificate: an openssl signer is checked at creation (EKU, issuer, validity)",
  ignore: OPENSSL.ignore,
}, async () => {
  const dir = await opensslDir();
  const cloud = await startCloud();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: TOKEN }),
  );
  const api = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/api`;
  try {
    await cloud.provisionThing("dev-1", "secret-xyz");
    await cloud.jobs.addThingToGroup("fleet", "dev-1");
    await opensslCa(dir, "devices-root");
    await opensslCa(dir, "other-root");
    await opensslLeaf(dir, "devices-root", "good", CODE_SIGNING_EXTENSIONS);
    await opensslLeaf(
      dir,
      "devices-root",
      "no-eku",
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth",
    );
    await opensslLeaf(dir, "other-root", "other-ca", CODE_SIGNING_EXTENSIONS);
    await opensslLeaf(
      dir,
      "devices-root",
      "expired",
      CODE_SIGNING_EXTENSIONS,
      "200101000000Z",
      "210101000000Z",
    );
    await dir.write("image.bin", await testImage({ version: "1.1.0", securityCounter: 2 }));
    const create = async (signer: string, id: string) => {
      await openssl(dir, [
        "dgst",
        "-sha256",
        "-sign",
        `${signer}.key`,
        "-out",
        `${signer}.sig`,
        "image.bin",
      ]);
      const out: string[] = [];
      const err: string[] = [];
      const code = await runOtaCli([
        "create",
        "--id",
        id,
        "--cert-file",
        "/certs/ota_signer.pem",
        "--group",
        "fleet",
        "--image",
        `${dir.path}/image.bin`,
        "--signature",
        `${dir.path}/${signer}.sig`,
        "--certificate",
        `${dir.path}/${signer}.pem`,
        "--root",
        `${dir.path}/devices-root.pem`,
        "--api",
        api,
      ], {
        out: (l) => out.push(l),
        err: (l) => err.push(l),
        env: (n) => (n === "OTA_OPERATOR_TOKEN" ? TOKEN : undefined),
        isTerminal: false,
      });
      return { code, text: [...out, ...err].join("\n") };
    };
    const good = await create("good", "ext-good");
    assert.equal(good.code, 0, good.text);
    for (
      const [signer, reason] of [
        ["no-eku", /lacks ExtendedKeyUsage codeSigning/],
        ["other-ca", /issuer 'CN=other-root' is not the trusted root 'CN=devices-root'/],
        ["expired", /expired at 2021-01-01/],
      ] as const
    ) {
      const refused = await create(signer, `ext-${signer}`);
      assert.notEqual(refused.code, 0, `${signer} was accepted`);
      assert.match(refused.text, reason);
      assert.equal(
        (await cloud.otaUpdates.list()).some((u) => u.otaUpdateId === `ext-${signer}`),
        false,
      );
    }
  } finally {
    await server.shutdown();
    await cloud.close();
    await dir.dispose();
  }
});
