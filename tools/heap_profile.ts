/**
 * Where a thread's allocations came from: the bytes of `.heapprofile` files (such as those
 * `deno task fleet --heap-profile DIR` writes for every Worker), summed per allocating function
 * or per call stack, largest first.
 *
 * ```sh
 * deno run --allow-read tools/heap_profile.ts out/heap/*.heapprofile --top 30
 * deno run --allow-read tools/heap_profile.ts out/heap/*.heapprofile --stacks --depth 5
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";

/** A node of a V8 sampling heap profile (`HeapProfiler.SamplingHeapProfileNode`). */
export interface HeapProfileNode {
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
  readonly selfSize: number;
  readonly children?: readonly HeapProfileNode[];
}

/** A V8 sampling heap profile as `HeapProfiler.stopSampling` returns it. */
export interface HeapProfile {
  readonly head: HeapProfileNode;
}

/** The project's root, which file names are shown relative to. */
const ROOT = new URL("../", import.meta.url).href;

function frameName(node: HeapProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  // A package's file by its name and path in the package; ours from the project's root.
  const inPackage = url.lastIndexOf("/node_modules/");
  const file = inPackage >= 0
    ? url.slice(inPackage + "/node_modules/".length)
    : url.startsWith(ROOT)
    ? url.slice(ROOT.length)
    : url;
  return `${functionName || "(anonymous)"} ${file}:${lineNumber + 1}`;
}

/**
 * Bytes allocated per function (`depth` 1) or per call stack of `depth` frames, innermost first,
 * summed over `profiles`, largest first.
 *
 * @example
 * ```ts
 * import { allocationsBy } from "./heap_profile.ts";
 * const frame = (functionName: string) => ({ functionName, url: "", lineNumber: 0 });
 * const profile = { head: { callFrame: frame("(root)"), selfSize: 0, children: [
 *   { callFrame: frame("read"), selfSize: 4096 },
 * ] } };
 * allocationsBy([profile], 1); // [["read :1", 4096]]
 * ```
 */
export function allocationsBy(
  profiles: readonly HeapProfile[],
  depth: number,
): Array<[string, number]> {
  const totals = new Map<string, number>();
  const walk = (node: HeapProfileNode, stack: string[]) => {
    const here = [frameName(node), ...stack];
    if (node.selfSize > 0) {
      const key = here.slice(0, depth).join(" < ");
      totals.set(key, (totals.get(key) ?? 0) + node.selfSize);
    }
    for (const child of node.children ?? []) walk(child, here);
  };
  for (const profile of profiles) walk(profile.head, []);
  return [...totals].sort((a, b) => b[1] - a[1]);
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      top: { type: "string", default: "30" },
      stacks: { type: "boolean", default: false },
      depth: { type: "string", default: "4" },
    },
    allowPositionals: true,
  });
  const top = Number(values.top);
  const depth = values.stacks ? Number(values.depth) : 1;
  if (positionals.length === 0 || !(top > 0) || !(depth >= 1)) {
    console.error("Usage: heap_profile.ts PROFILE... [--top N] [--stacks [--depth N]]");
    Deno.exit(2);
  }
  const profiles = await Promise.all(
    positionals.map(async (path) => JSON.parse(await Deno.readTextFile(path)) as HeapProfile),
  );
  const rows = allocationsBy(profiles, depth);
  const total = rows.reduce((sum, [, bytes]) => sum + bytes, 0);
  console.log(`${positionals.length} profiles, ${(total / 1e6).toFixed(1)} MB sampled`);
  for (const [name, bytes] of rows.slice(0, top)) {
    console.log(
      `${(bytes / 1e6).toFixed(1).padStart(9)} MB ${
        (100 * bytes / total).toFixed(1).padStart(5)
      }%  ${name}`,
    );
  }
}
