import assert from "node:assert/strict";
import { runImageCli } from "../../tools/image_cli.ts";
import { OPENSSL, openssl, opensslDir, opensslP256Key } from "../helpers/openssl.ts";

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runImageCli(args, (l) => out.push(l), (l) => err.push(l));
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("image CLI: keygen, firmware, sign and inspect make an image that verifies against the root", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ota-image-cli-" });
  try {
    assert.equal((await cli(["keygen", "--out-dir", dir])).code, 0);
    assert.equal(
      (await cli([
        "firmware",
        "--firmware-version",
        "1.1.0",
        "--behavior",
        "hang",
        "--size",
        "8KiB",
        "--out",
        `${dir}/fw.bin`,
      ])).code,
      0,
    );
    assert.equal((await Deno.stat(`${dir}/fw.bin`)).size, 8192);
    const signed = await cli([
      "sign",
      "--payload",
      `${dir}/fw.bin`,
      "--firmware-version",
      "1.1.0+7",
      "--security-counter",
      "3",
      "--key",
      `${dir}/signer.key`,
      "--cert",
      `${dir}/signer.pem`,
      "--out",
      `${dir}/app.img`,
      "--header-size",
      "512",
    ]);
    assert.equal(signed.code, 0, signed.err);
    const inspected = await cli(["inspect", `${dir}/app.img`, "--root", `${dir}/root.pem`]);
    assert.equal(inspected.code, 0, inspected.out);
    for (
      const line of [
        /header size:\s+512/,
        /version:\s+1\.1\.0\+7/,
        /SEC_CNT \[4\]: 3/,
        /KEYHASH \[32\]/,
        /ECDSA_SIG/,
        /SIGNER_CERT .*OTA Firmware Signer/,
        /"behavior":"hang"/,
        /verifies against root/,
      ]
    ) {
      assert.match(inspected.out, line);
    }
    const image = await Deno.readFile(`${dir}/app.img`);
    image[600]! ^= 1;
    await Deno.writeFile(`${dir}/bad.img`, image);
    const bad = await cli(["inspect", `${dir}/bad.img`, "--root", `${dir}/root.pem`]);
    assert.equal(bad.code, 1);
    assert.match(bad.out, /DOES NOT VERIFY: image hash does not match/);
    await Deno.writeFile(`${dir}/junk.img`, new Uint8Array(100));
    const junk = await cli(["inspect", `${dir}/junk.img`]);
    assert.equal(junk.code, 1);
    assert.match(junk.out, /invalid image: bad header magic/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "image CLI: signs with an openssl SEC1 key and its detached signature verifies in openssl",
  ignore: OPENSSL.ignore,
}, async () => {
  const dir = await opensslDir();
  try {
    await opensslP256Key(dir, "signer.key");
    await openssl(dir, [
      "req",
      "-x509",
      "-new",
      "-key",
      "signer.key",
      "-subj",
      "/CN=x",
      "-out",
      "self.pem",
      "-days",
      "1",
    ]);
    await openssl(dir, ["pkey", "-in", "signer.key", "-pubout", "-out", "pub.pem"]);
    await dir.write("file.bin", new Uint8Array(5000).fill(9));
    const result = await cli([
      "sign-detached",
      "--key",
      `${dir.path}/signer.key`,
      "--in",
      `${dir.path}/file.bin`,
      "--out",
      `${dir.path}/sig.der`,
    ]);
    assert.equal(result.code, 0, result.err);
    assert.match(result.out, /^[A-Za-z0-9+/]+=*$/);
    const verified = await dir.run([
      "dgst",
      "-sha256",
      "-verify",
      "pub.pem",
      "-signature",
      "sig.der",
      "file.bin",
    ]);
    assert.equal(verified.code, 0, verified.stderr);
  } finally {
    await dir.dispose();
  }
});

Deno.test("image CLI: bad flags are clear errors with exit code 2", async () => {
  const cases: [string[], RegExp][] = [
    [[], /Missing the command/],
    [["frobnicate"], /Unknown command 'frobnicate'/],
    [["firmware", "--firmware-version", "1.0.0", "--size", "12", "--out", "x"], /Invalid --size/],
    [
      ["firmware", "--firmware-version", "1.0", "--size", "1KiB", "--out", "x"],
      /Invalid --firmware-version/,
    ],
    [
      [
        "firmware",
        "--firmware-version",
        "1.0.0",
        "--behavior",
        "explode",
        "--size",
        "1KiB",
        "--out",
        "x",
      ],
      /Invalid --behavior/,
    ],
    [["sign", "--firmware-version", "1.0.0"], /Missing required option --security-counter/],
    [
      ["sign", "--firmware-version", "1.0.0", "--security-counter=-1"],
      /Invalid --security-counter/,
    ],
    [
      ["sign", "--firmware-version", "1.0.0", "--security-counter", "abc"],
      /Invalid --security-counter/,
    ],
    [["keygen", "--nope"], /Unknown option/],
    [[
      "sign",
      "--payload",
      "/nonexistent",
      "--firmware-version",
      "1.0.0",
      "--security-counter",
      "1",
      "--key",
      "k",
      "--cert",
      "c",
      "--out",
      "o",
    ], /Cannot read payload/],
    [["inspect"], /exactly one image file/],
  ];
  for (const [args, message] of cases) {
    const result = await cli(args);
    assert.equal(result.code, 2, args.join(" "));
    assert.match(result.err + result.out, message, args.join(" "));
  }
});

Deno.test("image CLI as a process exits 2 on bad usage", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      new URL("../../tools/image_cli.ts", import.meta.url).pathname,
      "sign",
      "--firmware-version",
      "x",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /Invalid --firmware-version/);
});

Deno.test("image CLI as a process: keygen keeps existing keys without --force; sign refuses another certificate's key; verify and inspect --json", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ota-image-tool-" });
  const tool = async (...args: string[]) => {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        new URL("../../tools/image_cli.ts", import.meta.url).pathname,
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
  };
  try {
    assert.equal((await tool("keygen", "--out-dir", `${dir}/a`)).code, 0);
    const rootBefore = await Deno.readTextFile(`${dir}/a/root.pem`);
    const again = await tool("keygen", "--out-dir", `${dir}/a`);
    assert.equal(again.code, 2);
    assert.match(
      again.err,
      /already holds root\.key, root\.pem, signer\.key, signer\.pem: not overwritten \(give --force/,
    );
    assert.equal(await Deno.readTextFile(`${dir}/a/root.pem`), rootBefore, "untouched");
    assert.equal((await tool("keygen", "--out-dir", `${dir}/a`, "--force")).code, 0);
    assert.notEqual(
      await Deno.readTextFile(`${dir}/a/root.pem`),
      rootBefore,
      "replaced when asked",
    );
    assert.equal((await tool("keygen", "--out-dir", `${dir}/b`)).code, 0);
    await tool(
      "firmware",
      "--firmware-version",
      "1.1.0",
      "--size",
      "4KiB",
      "--out",
      `${dir}/fw.bin`,
    );
    const sign = (key: string) =>
      tool(
        "sign",
        "--payload",
        `${dir}/fw.bin`,
        "--firmware-version",
        "1.1.0",
        "--security-counter",
        "1",
        "--key",
        key,
        "--cert",
        `${dir}/a/signer.pem`,
        "--out",
        `${dir}/app.img`,
      );
    const mismatched = await sign(`${dir}/b/signer.key`);
    assert.equal(mismatched.code, 2);
    assert.match(mismatched.err, /does not belong to --cert/);
    assert.equal((await sign(`${dir}/a/signer.key`)).code, 0);
    const good = await tool("verify", `${dir}/app.img`, "--root", `${dir}/a/root.pem`);
    assert.equal(good.code, 0, good.out + good.err);
    assert.match(good.out, /would boot: version 1\.1\.0\+0/);
    const foreign = await tool("verify", `${dir}/app.img`, "--root", `${dir}/b/root.pem`);
    assert.equal(foreign.code, 1);
    assert.match(foreign.out, /would not boot: .*trusted root/);
    const json = await tool("inspect", `${dir}/app.img`, "--root", `${dir}/a/root.pem`, "--json");
    assert.equal(json.code, 0, json.err);
    const report = JSON.parse(json.out);
    assert.equal(report.header.version, "1.1.0+0");
    assert.equal(report.signature.verifies, true);
    assert.ok(report.tlvs.some((t: { name: string }) => t.name === "ECDSA_SIG"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("image CLI: encryption-keygen, sign --encrypt-to, inspect and verify with and without --decrypt-key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ota-image-enc-" });
  try {
    assert.equal((await cli(["keygen", "--out-dir", dir])).code, 0);
    const made = await cli(["encryption-keygen", "--out-dir", dir]);
    assert.equal(made.code, 0, made.err);
    assert.match(await Deno.readTextFile(`${dir}/image-enc.pub`), /^-----BEGIN PUBLIC KEY-----/);
    assert.equal((await Deno.stat(`${dir}/image-enc.key`)).mode! & 0o777, 0o600);
    const again = await cli(["encryption-keygen", "--out-dir", dir]);
    assert.equal(again.code, 2);
    assert.match(again.err, /already holds image-enc\.key, image-enc\.pub: not overwritten/);
    await cli(["firmware", "--firmware-version", "1.1.0", "--size", "4KiB", "--out", `${dir}/fw`]);
    const sign = (encryptTo: string) =>
      cli([
        ...["sign", "--payload", `${dir}/fw`, "--firmware-version", "1.1.0"],
        ...["--security-counter", "2", "--key", `${dir}/signer.key`, "--cert", `${dir}/signer.pem`],
        ...["--out", `${dir}/app.img`, "--encrypt-to", encryptTo],
      ]);
    const signed = await sign(`${dir}/image-enc.pub`);
    assert.equal(signed.code, 0, signed.err);
    assert.match(signed.out, /payload encrypted \(ENC_EC256\)/);
    const image = await Deno.readFile(`${dir}/app.img`);
    const plain = await Deno.readFile(`${dir}/fw`);
    assert.notDeepEqual(image.subarray(32, 32 + plain.length), plain, "the payload is ciphertext");

    const root = ["--root", `${dir}/root.pem`];
    const blind = await cli(["inspect", `${dir}/app.img`, ...root]);
    assert.equal(blind.code, 0);
    assert.match(blind.out, /^flags: {14}0x4$/m);
    assert.match(blind.out, /^encryption: {9}AES-128-CTR payload, its key wrapped/m);
    assert.match(blind.out, /^firmware manifest: {2}encrypted \(give --decrypt-key/m);
    assert.match(blind.out, /signature: {10}not checked .*--decrypt-key FILE\)$/m);
    const key = ["--decrypt-key", `${dir}/image-enc.key`];
    const seen = await cli(["inspect", `${dir}/app.img`, ...root, ...key, "--json"]);
    assert.equal(seen.code, 0, seen.out);
    const json = JSON.parse(seen.out);
    assert.equal(json.encrypted, true);
    assert.deepEqual(json.manifest, { behavior: "ok", version: "1.1.0" });
    assert.equal(json.signature.verifies, true);

    const unverified = await cli(["verify", `${dir}/app.img`, ...root]);
    assert.equal(unverified.code, 1);
    assert.match(unverified.out, /encrypted: give --decrypt-key FILE/);
    assert.equal((await cli(["verify", `${dir}/app.img`, ...root, ...key])).code, 0);
    // Another key: refused with the reason.
    await cli(["encryption-keygen", "--out-dir", `${dir}/other`]);
    const wrongKey = await cli([
      ...["verify", `${dir}/app.img`, ...root],
      ...["--decrypt-key", `${dir}/other/image-enc.key`],
    ]);
    assert.equal(wrongKey.code, 1);
    assert.match(wrongKey.out, /would not boot: cannot decrypt: key MAC mismatch/);
    // A key file that is not P-256: a clear usage error.
    const notP256 = await sign(`${dir}/fw`);
    assert.equal(notP256.code, 2);
    assert.match(notP256.err, /Cannot use --encrypt-to '.*fw': cannot parse the key/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "image CLI: an image encrypted for an openssl key is what MCUboot's ENC_EC256 says, step by step in openssl (ECDH, HKDF, HMAC, AES-128-CTR)",
  ignore: OPENSSL.ignore,
  async fn() {
    const ssl = await opensslDir();
    try {
      const dir = ssl.path;
      await openssl(ssl, [
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "dev.sec1",
      ]);
      await openssl(ssl, ["pkey", "-in", "dev.sec1", "-pubout", "-out", "dev.pub"]);
      assert.equal((await cli(["keygen", "--out-dir", dir])).code, 0);
      await cli([
        "firmware",
        "--firmware-version",
        "1.2.0",
        "--size",
        "3000",
        "--out",
        `${dir}/fw`,
      ]);
      const signed = await cli([
        ...["sign", "--payload", `${dir}/fw`, "--firmware-version", "1.2.0"],
        ...["--security-counter", "2", "--key", `${dir}/signer.key`, "--cert", `${dir}/signer.pem`],
        ...["--out", `${dir}/app.img`, "--encrypt-to", `${dir}/dev.pub`],
      ]);
      assert.equal(signed.code, 0, signed.err);
      // The SEC1 key openssl made decrypts it in our tool too.
      const verified = await cli([
        ...["verify", `${dir}/app.img`, "--root", `${dir}/root.pem`],
        ...["--decrypt-key", `${dir}/dev.sec1`],
      ]);
      assert.equal(verified.code, 0, verified.out);

      const image = await ssl.read("app.img");
      const json = JSON.parse((await cli(["inspect", `${dir}/app.img`, "--json"])).out);
      const tlv = Uint8Array.fromHex(
        json.tlvs.find((t: { name: string }) => t.name === "ENC_EC256").value,
      );
      // The ephemeral key as SubjectPublicKeyInfo (the fixed P-256 prefix, then the point).
      const spkiPrefix = Uint8Array.fromHex(
        "3059301306072a8648ce3d020106082a8648ce3d030107034200",
      );
      await ssl.write("eph.der", new Uint8Array([...spkiPrefix, ...tlv.subarray(0, 65)]));
      const shared = await openssl(ssl, [
        ...["pkeyutl", "-derive", "-inkey", "dev.sec1"],
        ...["-peerkey", "eph.der", "-peerform", "DER"],
      ]);
      assert.equal(shared.length, 32);
      const okm = await openssl(ssl, [
        ...["kdf", "-keylen", "48", "-binary", "-kdfopt", "digest:SHA256"],
        ...["-kdfopt", `hexkey:${shared.toHex()}`, "-kdfopt", "info:MCUBoot_ECIES_v1", "HKDF"],
      ]);
      const wrapped = tlv.subarray(97, 113);
      const mac = await openssl(
        ssl,
        [
          "dgst",
          "-sha256",
          "-binary",
          "-mac",
          "HMAC",
          "-macopt",
          `hexkey:${okm.subarray(16).toHex()}`,
        ],
        wrapped,
      );
      assert.equal(mac.toHex(), tlv.subarray(65, 97).toHex(), "the TLV's MAC is HMAC-SHA256");
      const ctr = (key: Uint8Array) => [
        ...["enc", "-d", "-aes-128-ctr", "-K", key.toHex()],
        ...["-iv", "00000000000000000000000000000000"],
      ];
      const imageKey = await openssl(ssl, ctr(okm.subarray(0, 16)), wrapped);
      const payload = image.subarray(32, 32 + 3000);
      const decrypted = await openssl(ssl, ctr(imageKey), payload);
      assert.deepEqual(decrypted, await ssl.read("fw"));
    } finally {
      await ssl.dispose();
    }
  },
});

/**
 * A directory with keys and a 1.2.0 payload, and `sign` with extra flags into `app.img` there;
 * removed after `body`.
 */
async function withSigning(
  prefix: string,
  body: (sign: (...more: string[]) => ReturnType<typeof cli>, dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    assert.equal((await cli(["keygen", "--out-dir", dir])).code, 0);
    await cli(["firmware", "--firmware-version", "1.2.0", "--size", "2KiB", "--out", `${dir}/fw`]);
    await body(
      (...more) =>
        cli([
          ...["sign", "--payload", `${dir}/fw`, "--firmware-version", "1.2.0"],
          ...[
            "--security-counter",
            "2",
            "--key",
            `${dir}/signer.key`,
            "--cert",
            `${dir}/signer.pem`,
          ],
          ...["--out", `${dir}/app.img`, ...more],
        ]),
      dir,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("image CLI: sign --depends-on records what the image needs; inspect says it; a bad one is a usage error", async () => {
  await withSigning("ota-image-dep-", async (sign, dir) => {
    const signed = await sign("--depends-on", "second-stage:2.1.0");
    assert.equal(signed.code, 0, signed.err);
    const inspected = await cli(["inspect", `${dir}/app.img`, "--root", `${dir}/root.pem`]);
    assert.equal(inspected.code, 0);
    assert.match(
      inspected.out,
      /^TLV \(protected\) DEPENDENCY \[12\]: second-stage 2\.1\.0\+0 or later$/m,
    );
    for (
      const [value, message] of [
        ["radio:1.0.0", /Invalid --depends-on: expected application\|second-stage:X\.Y\.Z/],
        ["second-stage:two", /Invalid --depends-on/],
      ]
    ) {
      const bad = await sign("--depends-on", value as string);
      assert.equal(bad.code, 2);
      assert.match(bad.err, message as RegExp);
    }
    const twice = await sign("--depends-on", "application:1.0.0", "--depends-on", "0:1.1.0");
    assert.equal(twice.code, 2);
    assert.match(twice.err, /'0' is given twice/);
  });
});

Deno.test("image CLI: sign --hardware names the board in a protected TLV; inspect says it; a bad board id is a usage error", async () => {
  await withSigning("ota-image-hw-", async (sign, dir) => {
    const signed = await sign("--hardware", "stm32-board.rev-B");
    assert.equal(signed.code, 0, signed.err);
    const inspected = await cli(["inspect", `${dir}/app.img`, "--root", `${dir}/root.pem`]);
    assert.equal(inspected.code, 0);
    assert.match(
      inspected.out,
      /^TLV \(protected\) HARDWARE_ID \[17\]: built for stm32-board\.rev-B$/m,
    );
    const bad = await sign("--hardware", "board/a");
    assert.equal(bad.code, 2);
    assert.match(bad.err, /Invalid --hardware: expected 1\.\.64 of \[A-Za-z0-9\._-\]/);
  });
});
