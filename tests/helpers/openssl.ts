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
