import assert from "node:assert/strict";
import {
  callersOf,
  type CpuProfile,
  functionTimes,
  packageTimes,
} from "../../tools/cpu_profile.ts";

const frame = (id: number, functionName: string, url: string, children: number[] = []) => ({
  id,
  callFrame: { functionName, url, lineNumber: 0 },
  children,
});

// root -> onBlock (agent) -> decode (cborg) ; root -> (garbage collector) ; root -> write (node compat)
const profile: CpuProfile = {
  nodes: [
    frame(1, "(root)", "", [2, 4, 5]),
    frame(2, "onBlock", "file:///repo/agent/agent.ts", [3]),
    frame(
      3,
      "decode",
      "file:///repo/node_modules/.deno/cborg@6.1.5/node_modules/cborg/lib/decode.js",
    ),
    frame(4, "(garbage collector)", ""),
    frame(5, "writev", "ext:deno_node/internal/stream_base_commons.ts"),
  ],
  startTime: 0,
  endTime: 100,
  samples: [3, 3, 2, 4, 5, 3],
  timeDeltas: [10, 10, 20, 30, 5, 10],
};

Deno.test("cpu_profile: self time per function, and inclusive time counts callees", () => {
  const self = new Map(functionTimes(profile));
  assert.equal(self.get("decode cborg/lib/decode.js:1"), 30);
  assert.equal(self.get("onBlock file:///repo/agent/agent.ts:1"), 20);
  const inclusive = new Map(functionTimes(profile, "inclusive"));
  assert.equal(inclusive.get("onBlock file:///repo/agent/agent.ts:1"), 50);
  assert.equal(inclusive.get("(root) :1"), 85);
});

Deno.test("cpu_profile: self time per package puts npm packages, our folders, Deno and V8 apart", () => {
  assert.deepEqual(packageTimes(profile), [
    ["npm:cborg", 30],
    ["(garbage collector)", 30],
    ["agent/", 20],
    ["deno: node compat", 5],
  ]);
});

Deno.test("cpu_profile: the callers of a function, with the time of the samples that ended in it", () => {
  assert.deepEqual(callersOf(profile, "decode", 2), [
    ["onBlock file:///repo/agent/agent.ts:1 < (root) :1", 30],
  ]);
});
