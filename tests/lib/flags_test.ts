/**
 * Flags declared once (lib/flags.ts): the help shows each flag's range, choices and default, and
 * the parser enforces exactly those, with messages quoting the same range, for every command
 * declared this way.
 */
import assert from "node:assert/strict";
import { type FlagSpec, parseFlags, usage } from "../../lib/flags.ts";
import { UsageError } from "../../lib/usage_error.ts";
import { FLEET_FLAGS, parseFleetArgs, USAGE as FLEET_USAGE } from "../../fleet/fleet_args.ts";
import { BROKER_FLAGS, BROKER_USAGE, parseBrokerArgs } from "../../broker/broker_args.ts";

const FLAGS: FlagSpec[] = [
  { name: "devices", value: "N", help: "fleet size", range: [1, 100], default: "20" },
  { name: "loss", value: "P", help: "share lost", range: [0, 0.5], default: "0" },
  { name: "image-size", value: "SIZE", help: "payload", sizeRange: [1024, 65536], default: "4KiB" },
  { name: "mode", value: "M", help: "how", choices: ["fast", "slow"], default: "fast" },
  { name: "verbose", short: "v", help: "say more" },
  {
    name: "long-one-with-a-very-long-name",
    value: "VALUE",
    help: "a description long enough to wrap onto a second line of the help text, aligned " +
      "under the first one",
  },
];

Deno.test("flags: the help lists every flag once, with its range, choices and default, wrapped and aligned", () => {
  const text = usage("Usage: x [options]", FLAGS, "Examples: x --devices 3");
  const lines = text.split("\n");
  assert.equal(lines[0], "Usage: x [options]");
  assert.ok(lines.includes("  --devices N              fleet size (1..100, default 20)"), text);
  assert.ok(lines.includes("  --loss P                 share lost (0..0.5, default 0)"));
  assert.ok(lines.includes("  --image-size SIZE        payload (1KiB..64KiB, default 4KiB)"));
  assert.ok(lines.includes("  --mode M                 how (fast | slow; default fast)"));
  assert.ok(lines.includes("  -v, --verbose            say more"));
  assert.ok(
    lines.includes("  --long-one-with-a-very-long-name VALUE"),
    "too long: on its own line",
  );
  assert.ok(lines.every((line) => line.length <= 100), "no line past 100 columns");
  const wrapped = lines.filter((line) => /^ {27}\S/.test(line));
  assert.ok(wrapped.length >= 2, "descriptions continue aligned under their start");
  assert.ok(lines.includes("  -h, --help               this text"));
  assert.equal(lines.at(-1), "Examples: x --devices 3");
});

Deno.test("flags: values are checked against the declared ranges and choices; defaults apply when absent", () => {
  const flags = parseFlags(["--devices", "7", "--loss", "0.25", "-v"], FLAGS);
  assert.equal(flags.int("devices"), 7);
  assert.equal(flags.number("loss"), 0.25);
  assert.equal(flags.size("image-size"), 4096);
  assert.equal(flags.choice("mode"), "fast");
  assert.equal(flags.boolean("verbose"), true);
  assert.deepEqual(flags.texts, { devices: "7", loss: "0.25" }, "texts: the given values only");
  assert.equal(flags.has("mode"), false);
  assert.equal(flags.int("devices", 99), 7, "a fallback only stands in for an absent flag");
  assert.equal(parseFlags([], FLAGS).int("devices", 99), 99);
  const refused = (args: string[], read: (f: ReturnType<typeof parseFlags>) => unknown) => {
    try {
      read(parseFlags(args, FLAGS));
    } catch (error) {
      assert.ok(error instanceof UsageError, String(error));
      assert.doesNotMatch(error.message, /\n/);
      return error.message;
    }
    assert.fail(`accepted ${args.join(" ")}`);
  };
  assert.equal(
    refused(["--devices", "101"], (f) => f.int("devices")),
    "Invalid --devices: expected an integer 1..100: current value is '101'",
  );
  assert.match(refused(["--devices", "2.5"], (f) => f.int("devices")), /an integer 1\.\.100/);
  assert.match(refused(["--devices", ""], (f) => f.int("devices")), /an integer/);
  assert.match(refused(["--loss", "0.6"], (f) => f.number("loss")), /a number 0\.\.0\.5/);
  assert.match(refused(["--loss", "NaN"], (f) => f.number("loss")), /a number 0\.\.0\.5/);
  assert.match(
    refused(["--image-size", "1MiB"], (f) => f.size("image-size")),
    /expected a size 1KiB\.\.64KiB \(e\.g\. 64KiB\): current value is '1MiB'/,
  );
  assert.match(refused(["--mode", "medium"], (f) => f.choice("mode")), /expected fast, slow/);
  assert.match(refused(["--nope"], () => {}), /Unknown option '--nope'/);
  assert.match(refused(["stray"], () => {}), /positional/);
  assert.deepEqual(
    parseFlags(["sub", "--devices", "3"], FLAGS, { allowPositionals: true }).positionals,
    ["sub"],
  );
});

/** A value just past a flag's declared bounds, for each bound that can be passed. */
function pastBounds(flag: FlagSpec): string[] {
  if (flag.range) {
    const [min, max] = flag.range;
    const step = Number.isInteger(min) && Number.isInteger(max) && max - min >= 1 ? 1 : 0.001;
    return [String(min - step), String(max + step)];
  }
  if (flag.sizeRange) return [String(flag.sizeRange[0] - 1), String(flag.sizeRange[1] + 1)];
  return [];
}

Deno.test("flags: for every ranged flag of fleet and broker, the range in --help is the one enforced", () => {
  const commands = [
    { flags: FLEET_FLAGS, help: FLEET_USAGE, parse: (args: string[]) => parseFleetArgs(args) },
    {
      flags: BROKER_FLAGS,
      help: BROKER_USAGE,
      parse: (args: string[]) => parseBrokerArgs(args, () => undefined),
    },
  ];
  let checked = 0;
  for (const { flags, help, parse } of commands) {
    for (const flag of flags) {
      for (const value of pastBounds(flag)) {
        const line = help.split("\n").find((l) => l.startsWith(`  --${flag.name} `))!;
        const shown = /\(([^,;)]*\.\.[^,;)]*)/.exec(help.slice(help.indexOf(line)))?.[1];
        assert.ok(shown, `--${flag.name} shows its range`);
        assert.throws(
          () => parse([`--${flag.name}=${value}`]),
          (error: Error) =>
            error instanceof UsageError && error.message.includes(`--${flag.name}`) &&
            error.message.includes(shown),
          `--${flag.name} ${value} is refused quoting ${shown}`,
        );
        checked++;
      }
    }
  }
  assert.ok(checked >= 30, `${checked} bounds checked`);
});
