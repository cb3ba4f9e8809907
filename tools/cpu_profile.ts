/**
 * Where the CPU time went: self (or, with `--inclusive`, inclusive) time per function, summed
 * over profiles. Either samples a running Deno process through its inspector (start it with
 * `--inspect=127.0.0.1:PORT`; Deno 2.9 has no `--cpu-prof` and lists no Worker there), or
 * summarizes `.cpuprofile` files, such as those `deno task fleet --cpu-profile DIR` writes for
 * its main thread and every Worker.
 *
 * ```sh
 * deno run --allow-read tools/cpu_profile.ts --file out/profiles/*.cpuprofile --top 40
 * deno run --allow-net --allow-write tools/cpu_profile.ts --inspect 127.0.0.1:9229 --seconds 20 --top 40
 * deno run --allow-net tools/cpu_profile.ts --inspect 127.0.0.1:9229 --inclusive # with callees
 * deno run --allow-read tools/cpu_profile.ts --file out/profiles/*.cpuprofile --by-package
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
  readonly children?: readonly number[];
}

/** A V8 CPU profile as the inspector's Profiler.stop returns it. */
export interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/**
 * Who spends the time of `name` (a function name): its call stacks, `depth` frames up, with
 * the time of the samples that ended in it.
 */
export function callersOf(
  profile: CpuProfile,
  name: string,
  depth = 4,
): Array<[string, number]> {
  const { byId, parentOf } = indexNodes(profile);
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const node = byId.get(id);
    if (!node || node.callFrame.functionName !== name) return;
    const stack: string[] = [];
    for (
      let at = parentOf.get(id);
      at !== undefined && stack.length < depth;
      at = parentOf.get(at)
    ) {
      const frame = byId.get(at);
      if (frame) stack.push(frameKey(frame));
    }
    const key = stack.join(" < ");
    totals.set(key, (totals.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  return [...totals].sort((a, b) => b[1] - a[1]);
}

/** The profile's call tree: nodes by id, and each node's caller. */
function indexNodes(profile: CpuProfile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parentOf.set(child, node.id);
  }
  return { byId, parentOf };
}

function frameKey(node: ProfileNode): string {
  const frame = node.callFrame;
  // Lines are those of the transpiled JavaScript: the name and file are what to go by.
  const where = frame.url.replace(/^.*\/(node_modules|work\/main)\//, "");
  return `${frame.functionName || "(anonymous)"} ${where}:${frame.lineNumber + 1}`;
}

/**
 * Time per function (microseconds), keyed "name url:line", biggest first: `self` counts the
 * samples in the function itself, `inclusive` also those in what it called (once per sample,
 * however deep the recursion).
 */
export function functionTimes(
  profile: CpuProfile,
  kind: "self" | "inclusive" = "self",
): Array<[string, number]> {
  const { byId, parentOf } = indexNodes(profile);
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
      const node = byId.get(at);
      if (!node) break;
      const key = frameKey(node);
      if (!seen.has(key)) totals.set(key, (totals.get(key) ?? 0) + delta);
      seen.add(key);
      if (kind === "self") break;
    }
  });
  return [...totals].sort((a, b) => b[1] - a[1]);
}

/**
 * Self time per place the code lives (microseconds), biggest first: an npm package by name, a
 * top-level folder of this repository, Deno's Node compatibility layer, the rest of Deno's
 * runtime, or V8's own entries (garbage collector, idle, natives).
 */
export function packageTimes(profile: CpuProfile): Array<[string, number]> {
  const { byId } = indexNodes(profile);
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const node = byId.get(id);
    if (!node) return;
    const place = placeOf(node.callFrame.url, node.callFrame.functionName);
    totals.set(place, (totals.get(place) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  return [...totals].sort((a, b) => b[1] - a[1]);
}

function placeOf(url: string, functionName: string): string {
  const npm = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\/(?!.*\/node_modules\/)/.exec(url);
  if (npm) return `npm:${npm[1]}`;
  if (url.startsWith("ext:deno_node/")) return "deno: node compat";
  if (url.startsWith("ext:")) return "deno: runtime";
  const own = /^file:\/\/.*?\/(agent|bootloader|broker|fleet|lib|bench|tools|tests)\//.exec(url);
  if (own) return `${own[1]}/`;
  return url === "" ? functionName.startsWith("(") ? functionName : "(native)" : url;
}

async function profileTarget(url: string, seconds: number): Promise<CpuProfile> {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  let next = 1;
  const pending = new Map<number, (result: unknown) => void>();
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    pending.get(message.id)?.(message.result);
  };
  const call = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve) => {
      const id = next++;
      pending.set(id, resolve);
      socket.send(JSON.stringify({ id, method, params }));
    });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 500 });
  await call("Profiler.start");
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const { profile } = await call("Profiler.stop") as { profile: CpuProfile };
  socket.close();
  return profile;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      inspect: { type: "string", default: "127.0.0.1:9229" },
      seconds: { type: "string", default: "10" },
      top: { type: "string", default: "30" },
      out: { type: "string" },
      inclusive: { type: "boolean", default: false },
      file: { type: "boolean", default: false },
      callers: { type: "string" },
      "by-package": { type: "boolean", default: false },
    },
    allowPositionals: true,
  });
  const seconds = Number(values.seconds);
  const top = Number(values.top);
  if (!(seconds > 0) || !(top > 0)) {
    console.error(
      "Usage: cpu_profile.ts [--inspect HOST:PORT] [--seconds S] [--out FILE] | --file PROFILE... " +
        "[--top N] [--inclusive | --callers NAME | --by-package]",
    );
    Deno.exit(2);
  }
  let titles: string[];
  let profiles: CpuProfile[];
  if (values.file) {
    // A `.cpuprofile` holds one profile; what `--out` wrote holds one per inspected thread.
    const files = await Promise.all(
      positionals.map(async (path) =>
        [JSON.parse(await Deno.readTextFile(path)) as CpuProfile | CpuProfile[]].flat()
      ),
    );
    titles = positionals.flatMap((path, i) =>
      files[i]!.length === 1 ? [path] : files[i]!.map((_, n) => `${path}#${n}`)
    );
    profiles = files.flat();
  } else {
    const targets = await (await fetch(`http://${values.inspect}/json/list`)).json() as Array<
      { title: string; url: string; webSocketDebuggerUrl: string }
    >;
    titles = targets.map((t) => t.title);
    profiles = await Promise.all(
      targets.map((t) => profileTarget(t.webSocketDebuggerUrl, seconds)),
    );
  }
  const totals = new Map<string, number>();
  let sampled = 0;
  for (const profile of profiles) {
    sampled += profile.timeDeltas.reduce((sum, delta) => sum + delta, 0);
    const kind = values.inclusive ? "inclusive" : "self";
    const rows = values.callers !== undefined
      ? callersOf(profile, values.callers)
      : values["by-package"]
      ? packageTimes(profile)
      : functionTimes(profile, kind);
    for (const [key, micros] of rows) {
      totals.set(key, (totals.get(key) ?? 0) + micros);
    }
  }
  console.log(
    `${titles.length} profiles (${titles.join(", ")}), ${(sampled / 1e6).toFixed(1)} s of samples`,
  );
  for (const [key, micros] of [...totals].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(
      `${(micros / 1e3).toFixed(0).padStart(8)} ms ${
        (100 * micros / sampled).toFixed(1).padStart(5)
      }%  ${key}`,
    );
  }
  if (values.out) await Deno.writeTextFile(values.out, JSON.stringify(profiles));
}
