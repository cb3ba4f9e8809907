/**
 * A root of trust made outside the fleet, by openssl: devices trust that CA; the fleet signs
 * with an openssl code signer's key (SEC1 and PKCS#8); or the update is an image signed
 * elsewhere (the image tool with the openssl key, the detached signature by `openssl dgst`).
 */
import assert from "node:assert/strict";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { runFleet } from "../../fleet/run.ts";
import { runImageCli } from "../../tools/image_cli.ts";
import {
  CODE_SIGNING_EXTENSIONS,
  OPENSSL,
  openssl,
  opensslCa,
  type OpensslDir,
  opensslDir,
  opensslLeaf,
} from "../helpers/openssl.ts";
import { smallFleetArgs } from "../helpers/fleet_args.ts";

async function withPki(body: (dir: OpensslDir, path: (name: string) => string) => Promise<void>) {
  const dir = await opensslDir();
  try {
    await opensslCa(dir, "my-root");
    await opensslLeaf(dir, "my-root", "signer", CODE_SIGNING_EXTENSIONS);
    await body(dir, (name) => `${dir.path}/${name}`);
  } finally {
    await dir.dispose();
  }
}

const fleetArgs = (...more: string[]) => [...smallFleetArgs(6), "--report", "/dev/null", ...more];

Deno.test({
  name:
    "fleet --root-ca --signer-key --signer-cert: openssl's CA and signer (SEC1 and PKCS#8 keys) update the fleet",
  ignore: OPENSSL.ignore,
}, async () => {
  await withPki(async (dir, path) => {
    // The same signer's key as openssl's PKCS#8 (genpkey's form) as well as SEC1 (ecparam's).
    await openssl(dir, ["pkcs8", "-topk8", "-nocrypt", "-in", "signer.key", "-out", "signer.p8"]);
    for (const key of ["signer.key", "signer.p8"]) {
      const report = await runFleet(
        parseFleetArgs(fleetArgs(
          "--root-ca",
          path("my-root.pem"),
          "--signer-key",
          path(key),
          "--signer-cert",
          path("signer.pem"),
        )),
        () => {},
      );
      assert.ok(
        report.asExpected,
        `${key}: ${JSON.stringify([report.expected, report.runningVersion])}`,
      );
      assert.deepEqual(report.runningVersion, { "1.1.0+0": 6 });
    }
  });
});

Deno.test({
  name:
    "fleet --image --signature --certificate: an image signed elsewhere is rolled out to devices trusting that root",
  ignore: OPENSSL.ignore,
}, async () => {
  await withPki(async (dir, path) => {
    const quiet = { out: () => {}, err: () => {} };
    assert.equal(
      await runImageCli(
        ["firmware", "--firmware-version", "1.2.0", "--size", "16KiB", "--out", path("fw.bin")],
        quiet.out,
        quiet.err,
      ),
      0,
    );
    assert.equal(
      await runImageCli(
        [
          "sign",
          "--payload",
          path("fw.bin"),
          "--firmware-version",
          "1.2.0",
          "--security-counter",
          "2",
          "--key",
          path("signer.key"),
          "--cert",
          path("signer.pem"),
          "--out",
          path("app.img"),
        ],
        quiet.out,
        quiet.err,
      ),
      0,
    );
    await openssl(dir, ["dgst", "-sha256", "-sign", "signer.key", "-out", "app.sig", "app.img"]);
    const report = await runFleet(
      parseFleetArgs(fleetArgs(
        "--root-ca",
        path("my-root.pem"),
        "--signer-key",
        path("signer.key"),
        "--signer-cert",
        path("signer.pem"),
        "--image",
        path("app.img"),
        "--signature",
        path("app.sig"),
        "--certificate",
        path("signer.pem"),
      )),
      () => {},
    );
    assert.ok(report.asExpected, JSON.stringify([report.expected, report.runningVersion]));
    assert.deepEqual(report.runningVersion, { "1.2.0+0": 6 });
  });
});

Deno.test({
  name:
    "fleet --root-ca: a key that is not the certificate's, or a signer of another CA, is refused before any device is made",
  ignore: OPENSSL.ignore,
}, async () => {
  await withPki(async (_dir, path) => {
    await opensslCa(_dir, "other-root");
    await opensslLeaf(_dir, "other-root", "stranger", CODE_SIGNING_EXTENSIONS);
    const attempt = (key: string, cert: string) =>
      runFleet(
        parseFleetArgs(fleetArgs(
          "--root-ca",
          path("my-root.pem"),
          "--signer-key",
          path(key),
          "--signer-cert",
          path(cert),
        )),
        () => {},
      );
    await assert.rejects(
      () => attempt("stranger.key", "signer.pem"),
      /does not belong to --signer-cert/,
    );
    await assert.rejects(
      () => attempt("stranger.key", "stranger.pem"),
      /issuer 'CN=other-root' is not the trusted root/,
    );
  });
  assert.throws(() => parseFleetArgs(["--root-ca", "x"]), /go together/);
  assert.throws(() => parseFleetArgs(["--image", "x"]), /need --root-ca/);
  const external = [
    ...["--root-ca", "r", "--signer-key", "k", "--signer-cert", "c"],
    ...["--image", "i", "--signature", "s", "--certificate", "c"],
  ];
  assert.doesNotThrow(() => parseFleetArgs(external));
  assert.throws(
    () => parseFleetArgs([...external, "--delta"]),
    /^UsageError: --delta patches the images the fleet builds: not with --image$/,
  );
});
