/**
 * Hostile input on the command lines of every tool (fleet, broker, ota, image): every flag the
 * help text documents is one the parser knows, and random argument lists (known flags with odd
 * values, unknown flags, stray words, missing values) end in options that hold their invariants
 * or in a usage error that says what is wrong - never in another exception. fast-check prints
 * the seed and path of a failing case.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseFleetArgs, USAGE as FLEET_USAGE } from "../../fleet/fleet_args.ts";
import { BROKER_USAGE, parseBrokerArgs } from "../../broker/broker_args.ts";
import { runOtaCli, USAGE as OTA_USAGE } from "../../broker/ota_cli.ts";
import { runImageCli, USAGE as IMAGE_USAGE } from "../../tools/image_cli.ts";
import { UsageError } from "../../lib/usage_error.ts";

/**
 * The `--flags` a help text mentions, but `--help` and `--version`: every command answers those
 * before its parser runs (tests/lib/cli_conventions_test.ts).
 */
function documentedFlags(usage: string): string[] {
  return [...new Set(usage.match(/--[a-z][a-z-]*/g) ?? [])]
    .filter((flag) => flag !== "--help" && flag !== "--version");
}

const noEnv = () => undefined;
/** An operator token in the environment, so the ota CLI gets past its own check. */
const tokenEnv = (name: string) => name === "OTA_OPERATOR_TOKEN" ? "operator-token" : undefined;

/** Odd values: numbers out of range, negative, fractional, sizes, words, empty, huge. */
const oddValue = fc.oneof(
  fc.constantFrom(
    "",
    "0",
    "1",
    "-1",
    "0.5",
    "1e9",
    "NaN",
    "Infinity",
    "64KiB",
    "3MiB",
    "1/2",
    "0/0",
    "mqtt://127.0.0.1:1",
    "http://127.0.0.1:1/api",
    "chaos",
    "http",
    "crash-on-boot",
  ),
  fc.string({ maxLength: 12 }),
  fc.integer({ min: -1_000_000, max: 1_000_000 }).map(String),
);

/** An argument list drawn from `flags` plus strangers. */
function argLists(flags: readonly string[], words: readonly string[] = []) {
  const token = fc.oneof(
    { weight: 4, arbitrary: fc.tuple(fc.constantFrom(...flags), oddValue).map(([f, v]) => [f, v]) },
    { weight: 1, arbitrary: fc.constantFrom(...flags).map((f) => [f]) },
    {
      weight: 1,
      arbitrary: fc.constantFrom("--bogus", "-x", "--", "---", "--devices=").map((f) => [f]),
    },
    { weight: 1, arbitrary: fc.constantFrom("stray", ...words).map((w) => [w]) },
  );
  return fc.array(token, { maxLength: 6 }).map((parts) => parts.flat());
}

/** Runs `parse`; a UsageError is fine (its message must say something), anything else is not. */
function parsedOrRefused<T>(parse: () => T): T | null {
  try {
    return parse();
  } catch (error) {
    assert.ok(error instanceof UsageError, `not a usage error: ${(error as Error).stack}`);
    assert.ok(error.message.length > 10, "the message says what is wrong");
    return null;
  }
}

Deno.test("CLI flags: every flag a help text documents is known to its parser", async () => {
  for (const flag of documentedFlags(FLEET_USAGE)) {
    for (const args of [[flag, "1"], [flag]]) {
      try {
        parseFleetArgs(args);
      } catch (error) {
        assert.doesNotMatch((error as Error).message, /Unknown option/, `fleet ${flag}`);
      }
    }
  }
  for (const flag of documentedFlags(BROKER_USAGE)) {
    try {
      parseBrokerArgs([flag, "1"], noEnv);
    } catch (error) {
      assert.doesNotMatch((error as Error).message, /Unknown option/, `broker ${flag}`);
    }
  }
  const io = (lines: string[]) => ({
    out: () => {},
    err: (line: string) => lines.push(line),
    env: noEnv,
    isTerminal: false,
  });
  for (const flag of documentedFlags(OTA_USAGE)) {
    const lines: string[] = [];
    // No command: it stops at usage before any network call, once the flags parsed.
    await runOtaCli(flag === "--json" || flag === "--force" ? [flag] : [flag, "1"], io(lines));
    assert.doesNotMatch(lines.join("\n"), /Unknown option/, `ota ${flag}`);
  }
  // Each image command documents its own flags in its block of the help text.
  const blocks = IMAGE_USAGE.split(/\n(?= {2}[a-z])/).slice(1);
  for (const block of blocks) {
    const command = block.trim().split(/\s+/)[0]!;
    for (const flag of documentedFlags(block)) {
      const lines: string[] = [];
      await runImageCli([command, flag, "/nonexistent/x"], () => {}, (line) => lines.push(line));
      assert.doesNotMatch(lines.join("\n"), /Unknown option/, `image ${command} ${flag}`);
    }
  }
});

Deno.test("CLI flags: property: fleet flags parse into sane options or a usage error", () => {
  fc.assert(
    fc.property(argLists(documentedFlags(FLEET_USAGE), ["happy"]), (args) => {
      const options = parsedOrRefused(() => parseFleetArgs(args));
      if (!options) return;
      assert.ok(options.devices >= 1 && options.devices <= 100_000);
      assert.ok(options.imageSize >= 1024 && options.imageSize <= 448 * 1024);
      assert.equal(options.blockSize & (options.blockSize - 1), 0, "block size a power of two");
      for (const rate of [options.disconnectRate, options.corruptRate, options.powerCutRate]) {
        assert.ok(rate >= 0 && rate <= 1);
      }
      assert.ok(options.retries >= 0 && options.retries <= 10);
      assert.ok(options.timeScale > 0 && Number.isFinite(options.timeScale));
    }),
    { numRuns: 300 },
  );
});

Deno.test("CLI flags: property: broker flags parse into sane options or a usage error", () => {
  fc.assert(
    fc.property(argLists(documentedFlags(BROKER_USAGE)), (args) => {
      const options = parsedOrRefused(() => parseBrokerArgs(args, noEnv));
      if (!options) return;
      for (const port of [options.mqttPort, options.httpPort]) {
        assert.ok(Number.isInteger(port) && port >= 0 && port <= 65535);
      }
      assert.ok(options.timeScale > 0 && Number.isFinite(options.timeScale));
      assert.ok(options.token.length >= 8);
      assert.ok(options.dataDir.length > 0);
    }),
    { numRuns: 300 },
  );
});

Deno.test("CLI flags: property: ota and image commands answer any argument list with an exit code and a reason", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cli-flags-" });
  // Hostile files where files are expected: garbage, an empty file, a truncated image header.
  await Deno.writeFile(`${dir}/garbage`, crypto.getRandomValues(new Uint8Array(512)));
  await Deno.writeFile(`${dir}/empty`, new Uint8Array());
  await Deno.writeFile(`${dir}/truncated`, new Uint8Array([0x3d, 0xb8, 0xf3, 0x96, 0, 0]));
  const files = ["garbage", "empty", "truncated", "missing"].map((name) => `${dir}/${name}`);
  const withFiles = (flags: string[]) =>
    fc.array(
      fc.oneof(
        argLists(flags),
        fc.tuple(fc.constantFrom(...flags), fc.constantFrom(...files)).map((pair) => [...pair]),
      ),
      { maxLength: 3 },
    ).map((parts) => parts.flat());
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("create", "list", "describe", "cancel", "executions", "history", "bogus"),
        withFiles(documentedFlags(OTA_USAGE).filter((f) => f !== "--api")),
        async (command, args) => {
          const err: string[] = [];
          const code = await runOtaCli(
            // A closed port: whatever parses fails fast at the network, never somewhere real.
            [command, ...args, "--api", "http://127.0.0.1:1/api"],
            { out: () => {}, err: (l) => err.push(l), env: tokenEnv, isTerminal: false },
          );
          assert.ok([0, 1, 2].includes(code), `exit code ${code}`);
          if (code !== 0) assert.ok(err.join("").length > 0, "a failure says why");
        },
      ),
      { numRuns: 60 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("firmware", "sign", "sign-detached", "inspect", "bogus"),
        withFiles(documentedFlags(IMAGE_USAGE).filter((f) => f !== "--out")),
        async (command, args) => {
          const err: string[] = [];
          const code = await runImageCli(
            [command, ...args, "--out", `${dir}/out.bin`],
            () => {},
            (line) => err.push(line),
          );
          assert.ok([0, 1, 2].includes(code), `exit code ${code}`);
          if (code !== 0) assert.ok(err.join("").length > 0, "a failure says why");
        },
      ),
      { numRuns: 100 },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("broker flags: a cluster node needs PostgreSQL; the state is in --db or --data, never both; bad URLs and node ids are one line", () => {
  const env = (name: string) =>
    name === "OTA_PROFILE_KEY" ? "a-profile-key-of-the-cluster" : undefined;
  const parse = (...args: string[]) => parseBrokerArgs(["--token", "operator-1", ...args], env);
  const node = parse(
    "--cluster",
    "redis://127.0.0.1:6379",
    "--db",
    "postgres://ota@127.0.0.1:5432/ota",
    "--node-id",
    "node-a",
  );
  assert.deepEqual([node.cluster, node.db, node.nodeId], [
    "redis://127.0.0.1:6379",
    "postgres://ota@127.0.0.1:5432/ota",
    "node-a",
  ]);
  assert.match(parse().nodeId, /^node-[0-9a-f]{8}$/, "a node id is made up when not given");
  assert.equal(parse("--time-origin", "1764900000000").timeOrigin, 1764900000000);
  assert.equal(parse().timeOrigin, undefined, "no origin: the broker's start");
  const refusals: [string[], RegExp][] = [
    [["--time-origin", "soon"], /Invalid --time-origin: expected an integer/],
    [["--time-origin", "1.5"], /Invalid --time-origin: expected an integer 0\.\.8640000000000/],
    [["--cluster", "redis://h:1"], /--cluster needs --db/],
    [["--cluster", "http://h:1", "--db", "postgres://h/d"], /Invalid --cluster: expected redis/],
    [["--db", "mysql://h/d"], /Invalid --db: expected postgres:\/\//],
    [["--db", "postgres://h/d", "--data", "dir"], /--db and --data exclude each other/],
    [["--db", "postgres://h/d", "--power-loss-durable"], /PostgreSQL's durability is its own/],
    [
      ["--cluster", "redis://h:1", "--db", "postgres://h/d", "--external", "mqtt://h:1"],
      /--cluster and --external exclude each other/,
    ],
    [["--node-id", "a b"], /Invalid --node-id/],
    [["--profile-key-file", "/nonexistent/key"], /Cannot read --profile-key-file/],
  ];
  assert.equal(node.profileKey, "a-profile-key-of-the-cluster");
  assert.throws(
    () => parseBrokerArgs(["--db", "postgres://h/d"], () => undefined),
    /--db needs --profile-key-file \(or OTA_PROFILE_KEY\), the same for every node/,
  );
  assert.throws(
    () => parseBrokerArgs([], (name) => (name === "OTA_PROFILE_KEY" ? "short" : undefined)),
    /Invalid profile key: it must have at least 16 characters/,
  );
  for (const [args, message] of refusals) {
    assert.throws(() => parse(...args), (error: Error) => {
      assert.ok(error instanceof UsageError, args.join(" "));
      assert.match(error.message, message);
      assert.doesNotMatch(error.message, /\n/);
      return true;
    });
  }
  assert.doesNotMatch(
    (() => {
      try {
        parse("--db", "mysql://ota:hunter2@h/d");
      } catch (error) {
        return (error as Error).message;
      }
      return "";
    })(),
    /hunter2/,
    "a refused database URL is not echoed (it may hold a password)",
  );
});
