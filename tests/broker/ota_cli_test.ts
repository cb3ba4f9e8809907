import assert from "node:assert/strict";
import { startCloud } from "../../broker/cloud.ts";
import { runOtaCli } from "../../broker/ota_cli.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import { buildFirmware } from "../../bootloader/firmware.ts";
import { releaseProfile } from "../helpers/pki.ts";

const TOKEN = "cli-token-1234";

async function setup() {
  const cloud = await startCloud();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: TOKEN }),
  );
  const api = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/api`;
  const created = await cloud.otaUpdates.createSigningProfile(await releaseProfile());
  assert.ok(created.ok);
  for (const thing of ["dev-1", "dev-2"]) {
    cloud.provisionThing(thing, "secret-xyz");
    cloud.jobs.addThingToGroup("fleet", thing);
  }
  const dir = await Deno.makeTempDir({ prefix: "ota-cli-" });
  await Deno.writeFile(`${dir}/fw.bin`, buildFirmware({ behavior: "ok", version: "1.1.0" }, 4096));
  const run = async (...args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runOtaCli([...args, "--api", api], {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      env: (n) => (n === "OTA_OPERATOR_TOKEN" ? TOKEN : undefined),
      isTerminal: false,
    });
    return { code, out: out.join("\n"), err: err.join("\n") };
  };
  return {
    cloud,
    run,
    dir,
    async close() {
      await server.shutdown();
      await cloud.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const device = (
  cloud: Awaited<ReturnType<typeof startCloud>>,
  thing: string,
  jobId: string,
  status: string,
) =>
  cloud.jobs.handleDeviceMessage(
    thing,
    `$aws/things/${thing}/jobs/${jobId}/update`,
    new TextEncoder().encode(
      JSON.stringify({
        status,
        statusDetails: { reason: status === "FAILED" ? "0x000000e3: 0x00000095" : "ok" },
      }),
    ),
  );

Deno.test("ota CLI: create, list, describe, executions, history and a watch that ends when the update completes", async () => {
  const s = await setup();
  try {
    const created = await s.run(
      "create",
      "--id",
      "v110",
      "--payload",
      `${s.dir}/fw.bin`,
      "--firmware-version",
      "1.1.0",
      "--security-counter",
      "2",
      "--profile",
      "release",
      "--cert-file",
      "/certs/ota_signer.pem",
      "--group",
      "fleet",
      "--max-per-minute",
      "100",
    );
    assert.equal(created.code, 0, created.err);
    assert.match(created.out, /created v110 \(job AFR_OTA-v110\): IN_PROGRESS/);
    assert.match((await s.run("list")).out, /v110 +IN_PROGRESS 0\/2 done/);
    const described = await s.run("describe", "v110", "--json");
    assert.equal(JSON.parse(described.out).counts.QUEUED, 2);
    const watching = s.run("watch", "v110", "--json");
    device(s.cloud, "dev-1", "AFR_OTA-v110", "IN_PROGRESS");
    device(s.cloud, "dev-1", "AFR_OTA-v110", "SUCCEEDED");
    device(s.cloud, "dev-2", "AFR_OTA-v110", "IN_PROGRESS");
    device(s.cloud, "dev-2", "AFR_OTA-v110", "FAILED");
    const watched = await watching;
    assert.equal(watched.code, 0);
    const events = watched.out.split("\n").map((l) => JSON.parse(l));
    assert.equal(events[events.length - 1].event, "end");
    assert.equal(events[events.length - 1].status, "COMPLETED");
    assert.match(
      (await s.run("executions", "v110", "--status", "FAILED")).out,
      /dev-2 +FAILED +attempt 1/,
    );
    assert.match((await s.run("history", "dev-2")).out, /device-update .*0x000000e3: 0x00000095/);
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: cancel, bad usage (exit 2) and refusals (exit 1)", async () => {
  const s = await setup();
  try {
    assert.equal(
      (await s.run(
        "create",
        "--id",
        "c1",
        "--payload",
        `${s.dir}/fw.bin`,
        "--firmware-version",
        "1.1.0",
        "--security-counter",
        "2",
        "--profile",
        "release",
        "--cert-file",
        "/c",
        "--thing",
        "dev-1",
      )).code,
      0,
    );
    const canceled = await s.run("cancel", "c1");
    assert.equal(canceled.code, 0, canceled.err);
    assert.match(canceled.out, /canceled: CANCELED/);
    for (
      const args of [
        [],
        ["frobnicate"],
        ["create", "--id", "x"],
        ["create", "--id", "x", "--cert-file", "/c", "--group", "g", "--protocol", "COAP"],
        ["describe"],
        ["create", "--id", "x", "--cert-file", "/c", "--group", "g", "--payload", "/nonexistent"],
        ["list", "--bogus"],
      ]
    ) {
      assert.equal((await s.run(...args)).code, 2, args.join(" "));
    }
    const refused = await s.run(
      "create",
      "--id",
      "bad id",
      "--payload",
      `${s.dir}/fw.bin`,
      "--firmware-version",
      "1.1.0",
      "--security-counter",
      "2",
      "--profile",
      "release",
      "--cert-file",
      "/c",
      "--group",
      "fleet",
    );
    assert.equal(refused.code, 1);
    assert.match(refused.err, /error 400: otaUpdateId/);
    assert.equal((await s.run("describe", "nope")).code, 1);
    const noToken = await runOtaCli(["list"], {
      out: () => {},
      err: () => {},
      env: () => undefined,
      isTerminal: false,
    });
    assert.equal(noToken, 2);
    const wrongToken = await s.run("list", "--token", "wrong");
    assert.equal(wrongToken.code, 1);
    assert.match(wrongToken.err, /error 401/);
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: pause and resume an update; watch --fail-on-failed exits 1 when executions failed", async () => {
  const s = await setup();
  try {
    const created = await s.run(
      "create",
      "--id",
      "v111",
      "--payload",
      `${s.dir}/fw.bin`,
      "--firmware-version",
      "1.1.0",
      "--security-counter",
      "2",
      "--profile",
      "release",
      "--cert-file",
      "/certs/ota_signer.pem",
      "--group",
      "fleet",
    );
    assert.equal(created.code, 0, created.err);
    const paused = await s.run("pause", "v111");
    assert.equal(paused.code, 0, paused.err);
    assert.match(paused.out, /^paused: PAUSED/);
    assert.equal(s.cloud.store.getJob("AFR_OTA-v111")!.status, "PAUSED");
    const resumed = await s.run("resume", "v111");
    assert.equal(resumed.code, 0, resumed.err);
    assert.match(resumed.out, /^resumed: IN_PROGRESS/);
    const watching = s.run("watch", "v111", "--fail-on-failed");
    device(s.cloud, "dev-1", "AFR_OTA-v111", "IN_PROGRESS");
    device(s.cloud, "dev-1", "AFR_OTA-v111", "SUCCEEDED");
    device(s.cloud, "dev-2", "AFR_OTA-v111", "IN_PROGRESS");
    device(s.cloud, "dev-2", "AFR_OTA-v111", "FAILED");
    const watched = await watching;
    assert.equal(watched.code, 1, "a failed execution fails the watch");
    assert.match(watched.err, /1 executions FAILED, were REJECTED or TIMED_OUT/);
    const again = await s.run("pause", "v111");
    assert.equal(again.code, 1, "a completed update cannot be paused");
    const unknownGroup = await s.run(
      "create",
      "--id",
      "typo",
      "--payload",
      `${s.dir}/fw.bin`,
      "--firmware-version",
      "1.2.0",
      "--security-counter",
      "3",
      "--profile",
      "release",
      "--cert-file",
      "/certs/ota_signer.pem",
      "--group",
      "flet",
    );
    assert.equal(unknownGroup.code, 1);
    assert.match(
      unknownGroup.err + unknownGroup.out,
      /the targets name no thing \(group 'flet' has no members\)/,
    );
  } finally {
    await s.close();
  }
});
