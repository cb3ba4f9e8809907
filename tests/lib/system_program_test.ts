import assert from "node:assert/strict";
import {
  findProgram,
  missingSuitePrograms,
  REQUIRE_VARIABLE,
  SUITE_PROGRAMS,
  systemProgram,
} from "../helpers/system_program.ts";
import { testCommands } from "../run.ts";

function env(values: Record<string, string>): { get(key: string): string | undefined } {
  return { get: (key) => values[key] };
}

Deno.test("systemProgram(): a missing program is ignored with the package to install", () => {
  const missing = systemProgram("no-such-program-ota-lab", "no-such-package", env({}));
  assert.equal(missing.path, null);
  assert.equal(missing.ignore, true);
  assert.match(missing.reason, /no-such-program-ota-lab is not installed/);
  assert.match(missing.reason, /apt-get install no-such-package/);
  assert.throws(() => missing.require(), /apt-get install no-such-package/);
});

Deno.test("systemProgram(): where CI requires programs, a missing one is run and fails", () => {
  const required = systemProgram(
    "no-such-program-ota-lab",
    "no-such-package",
    env({ [REQUIRE_VARIABLE]: "1" }),
  );
  assert.equal(required.ignore, false);
  assert.throws(() => required.require(), new RegExp(`${REQUIRE_VARIABLE}=1`));
});

Deno.test("systemProgram(): a present program is found, runs and is never ignored", () => {
  const sh = systemProgram("sh", "dash", env({}));
  assert.ok(sh.path !== null && sh.path.endsWith("/sh"));
  assert.equal(sh.ignore, false);
  assert.equal(sh.require(), sh.path);
  assert.equal(findProgram("sh", ""), sh.path, "found in the system directories without PATH");
});

Deno.test("test task: no arguments run all with coverage; arguments run only what they name", () => {
  const all = testCommands([], "cov");
  assert.equal(all.length, 2);
  assert.deepEqual(all[0]!.slice(0, 1), ["test"]);
  assert.ok(all[0]!.includes("--parallel") && all[0]!.includes("--coverage=cov"));
  assert.ok(all[1]!.includes("tests/coverage_report.ts"));
  const one = testCommands(["tests/lib/units_test.ts"]);
  assert.equal(one.length, 1);
  assert.equal(one[0]!.at(-1), "tests/lib/units_test.ts");
  assert.ok(!one[0]!.some((a) => a.startsWith("--coverage")));
});

Deno.test("suite programs: every program a test asks for is listed with the same package; missing ones are named unless CI requires them", async () => {
  // Every systemProgram("name", "package") in the suite, by reading the tests' sources.
  const asked = new Map<string, string>();
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (path.endsWith(".ts") && !path.endsWith("system_program_test.ts")) {
        const text = await Deno.readTextFile(path);
        for (const [, name, pkg] of text.matchAll(/systemProgram\("([^"]+)", "([^"]+)"/g)) {
          asked.set(name!, pkg!);
        }
      }
    }
  };
  await walk(new URL("..", import.meta.url).pathname.replace(/\/$/, ""));
  for (const [name, pkg] of asked) {
    assert.equal(SUITE_PROGRAMS[name], pkg, `${name} (apt ${pkg}) is in SUITE_PROGRAMS`);
  }
  assert.ok(asked.size >= 3, [...asked.keys()].join(", "));
  const none = () => null;
  assert.deepEqual(missingSuitePrograms(env({}), none), Object.keys(SUITE_PROGRAMS));
  assert.deepEqual(missingSuitePrograms(env({ [REQUIRE_VARIABLE]: "1" }), none), []);
  assert.deepEqual(missingSuitePrograms(env({}), (name) => `/usr/bin/${name}`), []);
});
