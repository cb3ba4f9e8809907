/** Two fleet processes' worth of shards join one running cloud through its operator API. */
import assert from "node:assert/strict";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { runFleet } from "../../fleet/run.ts";
import { runningCloud } from "../helpers/running_cloud.ts";
import { smallFleetArgs } from "../helpers/fleet_args.ts";

Deno.test("fleet shards: --broker/--api/--token with --shard 1/2 and 2/2 update one fleet together", async () => {
  const running = await runningCloud("shard-test-token");
  const { cloud } = running;
  try {
    const shard = (i: number) =>
      runFleet(
        parseFleetArgs([
          ...smallFleetArgs(8),
          "--workers",
          "1",
          ...running.joinFlags,
          "--shard",
          `${i}/2`,
          "--update-id",
          "sharded",
        ]),
        () => {},
      );
    const [first, second] = await Promise.all([shard(1), shard(2)]);
    assert.equal(first.devices + second.devices, 8);
    assert.ok(
      first.asExpected && second.asExpected,
      JSON.stringify([first.expected, first.runningVersion, second.runningVersion]),
    );
    assert.equal(
      (await cloud.otaUpdates.describe("sharded-1-1-0"))!.counts.SUCCEEDED,
      8,
      "one update served both shards",
    );
    assert.equal((await cloud.store.listThings()).length, 8);
  } finally {
    await running.close();
  }
});

Deno.test("fleet runs against one running cloud: a second run creates its own update and succeeds", async () => {
  const running = await runningCloud("second-run-token");
  const { cloud } = running;
  try {
    const run = () =>
      runFleet(
        parseFleetArgs([...smallFleetArgs(4), "--workers", "1", ...running.joinFlags]),
        () => {},
      );
    const first = await run();
    const second = await run();
    assert.ok(first.asExpected, first.expected);
    assert.ok(second.asExpected, JSON.stringify([second.expected, second.outcome]));
    const updates = await cloud.otaUpdates.list();
    assert.equal(updates.length, 2, "one update per run");
    assert.notEqual(updates[0]!.otaUpdateId, updates[1]!.otaUpdateId);
    assert.ok(updates.every((u) => /^fleet-[0-9a-f]{8}-1-1-0$/.test(u.otaUpdateId)));
  } finally {
    await running.close();
  }
});

Deno.test("fleet flags: joining a cloud needs --broker, --api and --token together; --shard needs them", () => {
  assert.throws(() => parseFleetArgs(["--api", "http://x/api"]), /--broker, --api and --token/);
  assert.throws(() => parseFleetArgs(["--shard", "1/2"]), /--shard needs/);
  assert.throws(
    () =>
      parseFleetArgs([
        "--broker",
        "mqtt://h:1",
        "--api",
        "http://h/api",
        "--token",
        "t",
        "--shard",
        "1/2",
      ]),
    /--shard needs --update-id/,
  );
  assert.throws(() => parseFleetArgs(["--update-id", "no spaces"]), /Invalid --update-id/);
  assert.equal(parseFleetArgs([]).updateId, "fleet");
  const joined = ["--broker", "mqtt://h:1", "--api", "http://h/api", "--token", "t"];
  assert.notEqual(
    parseFleetArgs(joined).updateId,
    parseFleetArgs(joined).updateId,
    "a new id per run",
  );
  assert.throws(
    () =>
      parseFleetArgs([
        "--broker",
        "mqtt://x:1",
        "--api",
        "http://x",
        "--token",
        "t",
        "--shard",
        "3/2",
      ]),
    /Invalid --shard/,
  );
});

Deno.test("fleet flags: --broker takes a cluster's comma-separated node URLs; a bad one is refused whole", () => {
  const join = (broker: string) =>
    parseFleetArgs(["--broker", broker, "--api", "http://h:8080/api", "--token", "t"]);
  assert.deepEqual(join("mqtt://a:1883,mqtt://b:1884").remote?.brokers, [
    "mqtt://a:1883",
    "mqtt://b:1884",
  ]);
  assert.deepEqual(join("mqtt://a:1883").remote?.brokers, ["mqtt://a:1883"]);
  for (const bad of ["mqtt://a:1883,", "mqtt://a:1883,http://b:1", "mqtt://a b:1"]) {
    assert.throws(() => join(bad), /Invalid --broker: expected mqtt:\/\/HOST:PORT\[,mqtt/, bad);
  }
});

Deno.test("fleet flags: --api takes a cluster's comma-separated node APIs; a bad one is refused whole", () => {
  const join = (api: string) =>
    parseFleetArgs(["--broker", "mqtt://a:1883", "--api", api, "--token", "t"]);
  assert.deepEqual(join("http://a:8080/api,http://b:8081").remote?.apis, [
    "http://a:8080/api",
    "http://b:8081/api",
  ]);
  for (const bad of ["http://a:8080/api,", "http://a:8080,mqtt://b:1", "http://a b:1"]) {
    assert.throws(
      () => join(bad),
      /Invalid --api: expected http\(s\) URLs separated by commas/,
      bad,
    );
  }
});
