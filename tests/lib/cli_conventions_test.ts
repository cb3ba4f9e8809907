/**
 * Every command, as a process: `--help` and `-h` print the usage and exit 0, `--version` prints
 * the project's version, a wrong flag is one line saying what and "see --help", exit 2.
 */
import assert from "node:assert/strict";
import { standardFlags, usageLine, VERSION } from "../../lib/cli.ts";

const COMMANDS: Record<string, string[]> = {
  fleet: ["fleet/fleet.ts"],
  demo: ["fleet/demo.ts"],
  broker: ["broker/main.ts"],
  ota: ["broker/ota_cli.ts"],
  image: ["tools/image_cli.ts"],
  "bench:fleet": ["bench/fleet_floor.ts"],
};

async function run(script: string, args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", new URL(`../../${script}`, import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  return {
    code: output.code,
    out: new TextDecoder().decode(output.stdout),
    err: new TextDecoder().decode(output.stderr),
  };
}

for (const [name, [script]] of Object.entries(COMMANDS)) {
  Deno.test(`command line: deno task ${name}: --help, -h, --version, and a wrong flag`, async () => {
    const [help, short, version, wrong] = await Promise.all([
      run(script!, ["--help"]),
      run(script!, ["-h"]),
      run(script!, ["--version"]),
      run(script!, ["--no-such-flag"]),
    ]);
    assert.equal(help.code, 0, help.err);
    assert.match(help.out, /^Usage: deno task /);
    assert.equal(short.code, 0);
    assert.equal(short.out, help.out);
    assert.equal(version.code, 0);
    assert.equal(version.out.trim(), `ota-fleet-lab ${VERSION}`);
    assert.equal(wrong.code, 2, wrong.out + wrong.err);
    const lines = wrong.err.trim().split("\n");
    assert.equal(lines.length, 1, `one line, not the usage: ${wrong.err}`);
    assert.match(lines[0]!, /no-such-flag.*\(see --help\)$/);
    assert.doesNotMatch(wrong.err, /Usage:|\n {4}at /);
  });
}

Deno.test("command line: --help counts only as a flag of its own; usageLine keeps to one line", () => {
  assert.equal(standardFlags(["--devices", "5"], "U"), null);
  assert.deepEqual(standardFlags(["create", "--help"], "U"), { text: "U" });
  assert.equal(standardFlags(["--", "--help"], "U"), null);
  assert.equal(usageLine("Invalid --x: bad\nmore"), "Invalid --x: bad (see --help)");
});

Deno.test("command line: expected failures are one line without a stack", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const busy = (listener.addr as Deno.NetAddr).port;
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const nobody = (closed.addr as Deno.NetAddr).port;
  closed.close();
  try {
    const [inUse, unreachable, report, loss] = await Promise.all([
      run("broker/main.ts", [
        "--port",
        String(busy),
        "--http-port",
        "0",
        "--data",
        await Deno.makeTempDir(),
      ]),
      run("broker/ota_cli.ts", ["list", "--api", `http://127.0.0.1:${nobody}`, "--token", "t"]),
      run("fleet/fleet.ts", ["--report", "/nonexistent-dir/report.json"]),
      run("fleet/fleet.ts", ["--loss", "0.7"]),
    ]);
    assert.equal(inUse.code, 1);
    assert.equal(
      inUse.err.trim(),
      `cannot start the MQTT broker on port ${busy}: the address is in use`,
    );
    assert.equal(unreachable.code, 1);
    assert.equal(
      unreachable.err.trim(),
      `cannot reach the API at http://127.0.0.1:${nobody}/api: connection refused`,
      "a URL without /api is taken to mean its /api",
    );
    assert.equal(report.code, 2);
    assert.match(
      report.err.trim(),
      /^Invalid --report '\/nonexistent-dir\/report.json': .* \(see --help\)$/,
    );
    assert.equal(loss.code, 2);
    assert.match(loss.err, /Invalid --loss: expected a number 0\.\.0\.5/);
    for (const r of [inUse, unreachable, report, loss]) assert.doesNotMatch(r.err, /\n\s+at /);
  } finally {
    listener.close();
  }
});
