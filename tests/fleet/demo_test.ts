/**
 * `deno task demo` as a process: with openssl's CA and signer it walks the whole update path;
 * with an image signed elsewhere as its first update, that image is installed and confirmed.
 */
import assert from "node:assert/strict";
import { runImageCli } from "../../tools/image_cli.ts";
import {
  CODE_SIGNING_EXTENSIONS,
  OPENSSL,
  openssl,
  opensslCa,
  opensslDir,
  opensslLeaf,
} from "../helpers/openssl.ts";

async function demo(...args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("../../fleet/demo.ts", import.meta.url).pathname,
      "--image-size",
      "32KiB",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: output.code,
    out: new TextDecoder().decode(output.stdout),
    err: new TextDecoder().decode(output.stderr),
  };
}

Deno.test({
  name:
    "demo --root-ca --signer-key --signer-cert (openssl), and --image signed elsewhere as its first update",
  ignore: OPENSSL.ignore,
}, async () => {
  const dir = await opensslDir();
  try {
    const path = (name: string) => `${dir.path}/${name}`;
    await opensslCa(dir, "my-root");
    await opensslLeaf(dir, "my-root", "signer", CODE_SIGNING_EXTENSIONS);
    const pki = [
      "--root-ca",
      path("my-root.pem"),
      "--signer-key",
      path("signer.key"),
      "--signer-cert",
      path("signer.pem"),
    ];
    const own = await demo(...pki);
    assert.equal(own.code, 0, own.err);
    assert.match(own.out, /== update to 1\.1\.0/);
    assert.match(own.out, /running {12}1\.3\.0\+0/);
    const quiet = () => {};
    assert.equal(
      await runImageCli(
        ["firmware", "--firmware-version", "1.1.5", "--size", "32KiB", "--out", path("fw.bin")],
        quiet,
        quiet,
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
          "1.1.5",
          "--security-counter",
          "2",
          "--key",
          path("signer.key"),
          "--cert",
          path("signer.pem"),
          "--out",
          path("app.img"),
        ],
        quiet,
        quiet,
      ),
      0,
    );
    await openssl(dir, ["dgst", "-sha256", "-sign", "signer.key", "-out", "app.sig", "app.img"]);
    const external = await demo(
      ...pki,
      "--image",
      path("app.img"),
      "--signature",
      path("app.sig"),
      "--certificate",
      path("signer.pem"),
    );
    assert.equal(external.code, 0, external.err);
    assert.match(external.out, /== update to 1\.1\.5\+0, an image signed elsewhere/);
    assert.match(external.out, /signature verified/);
    const wrong = await demo("--root-ca", path("my-root.pem"), "--signer-key", path("signer.key"));
    assert.equal(wrong.code, 2);
    assert.match(wrong.err, /go together/);
  } finally {
    await dir.dispose();
  }
});
