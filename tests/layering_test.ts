/**
 * The layers of the repository, checked on every run: the cloud (`broker/`) and the device
 * (`agent/`, `bootloader/`) meet only in `protocol/`; the bootloader stands below the agent;
 * `protocol/` and `lib/` stand on nothing of ours above them.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);

/** Which top-level folders each folder may import from (besides itself and npm packages). */
export const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  lib: [],
  protocol: ["lib"],
  pki: ["lib", "protocol", "bootloader"],
  bootloader: ["lib", "protocol"],
  agent: ["lib", "protocol", "bootloader"],
  broker: ["lib", "protocol"],
};

const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)"(\.{1,2}\/[^"]+)"/g;

/** The relative specifiers a source file imports (static, dynamic, and Worker URLs). */
export function relativeImports(source: string): string[] {
  // JSDoc examples import the module they document; they are not the module's imports.
  const code = source.replace(/\/\*\*[\s\S]*?\*\//g, "");
  return [...code.matchAll(SPECIFIER)].map((m) => m[1]!);
}

/** Breaches of {@linkcode ALLOWED} by the file at `path` (repository-relative) with `source`. */
export function breaches(path: string, source: string): string[] {
  const folder = path.split("/")[0]!;
  const allowed = ALLOWED[folder];
  if (!allowed) return [];
  const out: string[] = [];
  for (const specifier of relativeImports(source)) {
    const target = new URL(specifier, new URL(path, "file:///r/")).pathname.slice("/r/".length);
    // The repository's own configuration (deno.json: the version) belongs to no layer.
    if (!target.includes("/")) continue;
    const targetFolder = target.split("/")[0]!;
    if (targetFolder !== folder && !allowed.includes(targetFolder)) {
      out.push(
        `${path} imports ${target} (${folder}/ may import from ${
          allowed.join(", ") || "nothing of ours"
        })`,
      );
    }
  }
  return out;
}

async function sources(folder: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(new URL(`${folder}/`, ROOT))) {
    if (entry.isFile && /\.(ts|js)$/.test(entry.name)) out.push(`${folder}/${entry.name}`);
    if (entry.isDirectory) out.push(...await sources(`${folder}/${entry.name}`));
  }
  return out;
}

Deno.test("layering: broker/ imports nothing from agent/ or bootloader/, bootloader/ nothing from agent/", async () => {
  const found: string[] = [];
  let files = 0;
  for (const folder of Object.keys(ALLOWED)) {
    for (const path of await sources(folder)) {
      files++;
      found.push(...breaches(path, await Deno.readTextFile(new URL(path, ROOT))));
    }
  }
  assert.ok(files > 50, `only ${files} files read`);
  assert.deepEqual(found, []);
});

Deno.test("layering: the check sees a breach in each form an import can take", () => {
  assert.equal(breaches("broker/x.ts", 'import { a } from "../agent/topics.ts";').length, 1);
  assert.equal(breaches("broker/x.ts", 'import type { A } from "../bootloader/fwu.ts";').length, 1);
  assert.equal(breaches("broker/x.ts", 'const m = await import("../agent/agent.ts");').length, 1);
  assert.equal(
    breaches("bootloader/x.ts", 'new Worker(new URL("../agent/w.ts", import.meta.url))').length,
    1,
  );
  assert.equal(breaches("protocol/x.ts", 'export { b } from "../broker/cloud.ts";').length, 1);
  assert.equal(breaches("broker/sub/x.ts", 'import "../../agent/a.ts";').length, 1);
  assert.deepEqual(breaches("broker/x.ts", 'import { t } from "../protocol/topics.ts";'), []);
  assert.deepEqual(
    breaches("broker/x.ts", '/** ```ts\n * import { x } from "../agent/a.ts";\n * ``` */'),
    [],
  );
  assert.deepEqual(
    breaches("fleet/x.ts", 'import { a } from "../agent/agent.ts";'),
    [],
    "the fleet assembles all",
  );
});
