/** Runs openssl in a scratch directory (the interoperability tests' counterpart). */
import { systemProgram } from "./system_program.ts";

/** The openssl program, or why its tests are ignored. */
export const OPENSSL = systemProgram("openssl", "openssl");

/** A scratch directory with an openssl runner; remove it with `dispose`. */
export interface OpensslDir {
  readonly path: string;
  run(
    args: string[],
    stdin?: Uint8Array,
  ): Promise<{ code: number; stdout: Uint8Array; stderr: string }>;
  write(name: string, data: string | Uint8Array): Promise<void>;
  read(name: string): Promise<Uint8Array>;
  readText(name: string): Promise<string>;
  dispose(): Promise<void>;
}

/** Creates the scratch directory. */
export async function opensslDir(): Promise<OpensslDir> {
  const path = await Deno.makeTempDir({ prefix: "ota-openssl-" });
  return {
    path,
    async run(args, stdin) {
      const child = new Deno.Command(OPENSSL.require(), {
        args,
        cwd: path,
        stdin: stdin ? "piped" : "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      if (stdin) {
        const writer = child.stdin.getWriter();
        await writer.write(stdin);
        await writer.close();
      }
      const out = await child.output();
      return { code: out.code, stdout: out.stdout, stderr: new TextDecoder().decode(out.stderr) };
    },
    async write(name, data) {
      if (typeof data === "string") await Deno.writeTextFile(`${path}/${name}`, data);
      else await Deno.writeFile(`${path}/${name}`, data);
    },
    read: (name) => Deno.readFile(`${path}/${name}`),
    readText: (name) => Deno.readTextFile(`${path}/${name}`),
    dispose: () => Deno.remove(path, { recursive: true }),
  };
}

/** Runs openssl and throws with its stderr when it fails. */
export async function openssl(
  dir: OpensslDir,
  args: string[],
  stdin?: Uint8Array,
): Promise<Uint8Array> {
  const result = await dir.run(args, stdin);
  if (result.code !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${result.stderr}`);
  return result.stdout;
}

const CA_CONFIG = `[ca]
default_ca = ca_default
[ca_default]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any_name
unique_subject = no
[any_name]
commonName = supplied
`;

/** An openssl CA named `name` (key and self-signed certificate). */
export async function opensslCa(dir: OpensslDir, name: string): Promise<void> {
  await opensslP256Key(dir, `${name}.key`);
  await openssl(dir, [
    "req",
    "-x509",
    "-new",
    "-key",
    `${name}.key`,
    "-sha256",
    "-days",
    "3650",
    "-subj",
    `/CN=${name}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
    "-out",
    `${name}.pem`,
  ]);
}

/**
 * A leaf `name` issued by `ca` (through `openssl ca`, which takes explicit validity dates; the
 * CA's database is set up in `dir` on first use) with `extensions`, valid from `start` to `end` (YYMMDDHHMMSSZ). */
export async function opensslLeaf(
  dir: OpensslDir,
  ca: string,
  name: string,
  extensions: string,
  start = "250101000000Z",
  end = "350101000000Z",
): Promise<void> {
  await dir.write("ca.cnf", CA_CONFIG);
  if (!(await Deno.stat(`${dir.path}/index.txt`).catch(() => null))) {
    await dir.write("index.txt", "");
    await dir.write("serial", "1000\n");
  }
  await opensslP256Key(dir, `${name}.key`);
  await openssl(dir, [
    "req",
    "-new",
    "-key",
    `${name}.key`,
    "-subj",
    `/CN=${name}`,
    "-out",
    `${name}.csr`,
  ]);
  await dir.write(`${name}.ext`, `${extensions}\n`);
  await openssl(dir, [
    "ca",
    "-batch",
    "-config",
    "ca.cnf",
    "-notext",
    "-cert",
    `${ca}.pem`,
    "-keyfile",
    `${ca}.key`,
    "-in",
    `${name}.csr`,
    "-out",
    `${name}.pem`,
    "-startdate",
    start,
    "-enddate",
    end,
    "-extfile",
    `${name}.ext`,
  ]);
}

/** The extensions of a code-signing certificate, for {@linkcode opensslLeaf}. */
export const CODE_SIGNING_EXTENSIONS =
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning";

/** A P-256 private key made by openssl (SEC1 PEM, as `ecparam -genkey` writes it) at `file`. */
export async function opensslP256Key(dir: OpensslDir, file: string): Promise<void> {
  await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", file]);
}
