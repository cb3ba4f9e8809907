import assert from "node:assert/strict";
import { startCloud } from "../../broker/cloud.ts";
import { runOtaCli } from "../../broker/ota_cli.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import { buildFirmware, evolveFirmware } from "../../bootloader/firmware.ts";
import {
  bytesSource,
  decodeImage,
  formatVersion,
  ImageId,
  isEncrypted,
  parseVersion,
} from "../../protocol/image_format.ts";
import { signImage } from "../../protocol/image_sign.ts";
import { pemEncode, sha256, signData } from "../../protocol/signatures.ts";
import { signTrustUpdate } from "../../protocol/trust_update.ts";
import { ECDH_P256, payloadCipher, unwrapImageKey } from "../../protocol/image_encryption.ts";
import { releaseProfile, releaseRequest, secondStageImage, testPki } from "../helpers/pki.ts";

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
    await cloud.provisionThing(thing, "secret-xyz");
    await cloud.jobs.addThingToGroup("fleet", thing);
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
  /** `ota create` of fw.bin as 1.1.0 (counter 2, profile "release", group "fleet") and `more`. */
  const create = (id: string, ...more: string[]) =>
    run(
      ...["create", "--id", id, "--payload", `${dir}/fw.bin`, "--firmware-version", "1.1.0"],
      ...["--security-counter", "2", "--profile", "release", "--cert-file", "/certs/s.pem"],
      ...["--group", "fleet", ...more],
    );
  return {
    cloud,
    run,
    create,
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
    const listed = (await s.run("list")).out;
    assert.match(listed, /^UPDATE +STATUS +DONE +SUCCEEDED/);
    assert.match(listed, /\nv110 +IN_PROGRESS +0\/2 +0 +0/);
    const described = await s.run("describe", "v110", "--json");
    assert.equal(JSON.parse(described.out).counts.QUEUED, 2);
    const watching = s.run("watch", "v110", "--json");
    await device(s.cloud, "dev-1", "AFR_OTA-v110", "IN_PROGRESS");
    await device(s.cloud, "dev-1", "AFR_OTA-v110", "SUCCEEDED");
    await device(s.cloud, "dev-2", "AFR_OTA-v110", "IN_PROGRESS");
    await device(s.cloud, "dev-2", "AFR_OTA-v110", "FAILED");
    const watched = await watching;
    assert.equal(watched.code, 0);
    const events = watched.out.split("\n").map((l) => JSON.parse(l));
    assert.equal(events[events.length - 1].event, "end");
    assert.equal(events[events.length - 1].status, "COMPLETED");
    assert.match(
      (await s.run("executions", "v110", "--status", "FAILED")).out,
      /dev-2 +FAILED +attempt 1/,
    );
    const history = (await s.run("history", "dev-2")).out;
    assert.match(history, /^TIME \(CLOUD CLOCK\) +JOB +EVENT +DETAIL/);
    assert.match(history, /device-update +FAILED, signature check failed \(0x95\)/);
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
    assert.equal((await s.cloud.store.getJob("AFR_OTA-v111"))!.status, "PAUSED");
    const resumed = await s.run("resume", "v111");
    assert.equal(resumed.code, 0, resumed.err);
    assert.match(resumed.out, /^resumed: IN_PROGRESS/);
    const watching = s.run("watch", "v111", "--fail-on-failed");
    await device(s.cloud, "dev-1", "AFR_OTA-v111", "IN_PROGRESS");
    await device(s.cloud, "dev-1", "AFR_OTA-v111", "SUCCEEDED");
    await device(s.cloud, "dev-2", "AFR_OTA-v111", "IN_PROGRESS");
    await device(s.cloud, "dev-2", "AFR_OTA-v111", "FAILED");
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

Deno.test("ota CLI: things, groups and signing profiles without curl; failures grouped by reason", async () => {
  const s = await setup();
  try {
    const added = await s.run("thing", "add", "dev-9", "--group", "lab");
    assert.equal(added.code, 0, added.err);
    assert.match(added.out, /added dev-9 \(groups lab\)\nsecret: \S{20,}/);
    const withSecret = await s.run("thing", "add", "dev-10", "--secret", "chosen-secret-1");
    assert.equal(withSecret.code, 0, withSecret.err);
    assert.doesNotMatch(withSecret.out, /secret:/, "a chosen secret is not echoed");
    assert.match((await s.run("thing", "list")).out, /^THING +GROUPS\n(.*\n)*dev-9 +lab/);
    assert.match((await s.run("group", "add", "lab", "dev-10")).out, /group lab: 2 things/);
    assert.match((await s.run("group", "list")).out, /^GROUP +THINGS\nfleet +2\nlab +2/);
    assert.match((await s.run("group", "remove", "lab", "dev-9")).out, /group lab: 1 things/);
    assert.match(
      (await s.run("thing", "show", "dev-9")).out,
      /thing dev-9, groups: none\nfirmware: not reported/,
    );
    assert.match((await s.run("thing", "remove", "dev-9")).out, /removed dev-9/);
    const gone = await s.run("thing", "show", "dev-9");
    assert.equal(gone.code, 1);
    assert.match(gone.err, /error 404: no thing 'dev-9'/);
    assert.match(
      (await s.run("profile", "list")).out,
      /^PROFILE +SIGNER +ISSUER +VALID UNTIL\nrelease +CN=Test Firmware Signer +CN=Test OTA Root/,
    );
    const noFiles = await s.run("profile", "create", "p2", "--root", "/nonexistent");
    assert.equal(noFiles.code, 2);
    // Two devices fail for the same reason, one for another.
    for (const thing of ["dev-11", "dev-12", "dev-13"]) {
      await s.run("thing", "add", thing, "--secret", "a-secret-123", "--group", "fleet");
    }
    const created = await s.run(
      "create",
      "--id",
      "v120",
      "--payload",
      `${s.dir}/fw.bin`,
      "--firmware-version",
      "1.2.0",
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
    for (const thing of ["dev-1", "dev-11"]) {
      await device(s.cloud, thing, "AFR_OTA-v120", "IN_PROGRESS");
      await device(s.cloud, thing, "AFR_OTA-v120", "FAILED");
    }
    await s.cloud.jobs.handleDeviceMessage(
      "dev-12",
      "$aws/things/dev-12/jobs/AFR_OTA-v120/update",
      new TextEncoder().encode(JSON.stringify({
        status: "REJECTED",
        statusDetails: {
          reason: "rejected: 0x00000010",
          detail: "image 1.2.0 is the version already running",
        },
      })),
    );
    const failures = await s.run("failures", "v120");
    assert.equal(failures.code, 0, failures.err);
    const lines = failures.out.split("\n");
    assert.match(lines[0]!, /^COUNT +STATUS +REASON +MEANING +EXAMPLE/);
    assert.match(lines[1]!, /^2 +FAILED +0x000000e3: 0x00000095 +signature check failed \(0x95\)/);
    assert.match(
      lines[2]!,
      /^1 +REJECTED +rejected: 0x00000010 +rejected: same firmware version +dev-12: image 1\.2\.0/,
    );
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: create --delta-base FILE --delta-shipped offers a patch from that image; a base that is not an image is refused", async () => {
  const s = await setup();
  try {
    const pki = await testPki();
    const basePayload = buildFirmware({ behavior: "ok", version: "1.0.0" }, 16 * 1024);
    const base = await signImage(
      { payload: basePayload, version: parseVersion("1.0.0")!, securityCounter: 1 },
      { privateKey: pki.signerKeys.privateKey, certificate: pki.signer },
    );
    await Deno.writeFile(`${s.dir}/base.img`, base);
    await Deno.writeFile(
      `${s.dir}/next.bin`,
      evolveFirmware(basePayload, { behavior: "ok", version: "1.1.0" }),
    );
    const create = (id: string, deltaBase: string) =>
      s.run(
        ...["create", "--id", id, "--payload", `${s.dir}/next.bin`, "--firmware-version", "1.1.0"],
        ...["--security-counter", "2", "--profile", "release", "--cert-file", "/certs/s.pem"],
        ...["--group", "fleet", "--delta-base", deltaBase, "--delta-shipped"],
      );
    const created = await create("d110", `${s.dir}/base.img`);
    assert.equal(created.code, 0, created.err);
    const described = JSON.parse((await s.run("describe", "d110", "--json")).out);
    assert.equal(described.deltas.length, 1);
    assert.equal(described.deltas[0].baseSha256, sha256(base).toHex());
    assert.ok(described.deltas[0].fileSize < 2048, `${described.deltas[0].fileSize}-byte patch`);
    const refused = await create("d111", `${s.dir}/next.bin`);
    assert.equal(refused.code, 1);
    assert.match(refused.err, /delta\.bases\[0\] is not a base64 image/);
    assert.doesNotMatch(refused.err, /\n/);
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: create --encrypt-to has the cloud encrypt the image it signs for the devices' key; not with --image or --delta-base", async () => {
  const s = await setup();
  try {
    const pair = await crypto.subtle.generateKey(ECDH_P256, true, ["deriveBits"]);
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
    await Deno.writeTextFile(`${s.dir}/enc.pub`, pemEncode("PUBLIC KEY", spki));
    const { create } = s;
    const created = await create("e110", "--encrypt-to", `${s.dir}/enc.pub`);
    assert.equal(created.code, 0, created.err);
    const described = JSON.parse((await s.run("describe", "e110", "--json")).out);
    assert.equal(described.encrypted, true);
    const image = await s.cloud.store.getFile(described.fileKey);
    assert.ok(image);
    const decoded = decodeImage(bytesSource(image));
    assert.ok(decoded.ok && isEncrypted(decoded.image));
    // The holder of the private key reads the plaintext the operator gave.
    const unwrapped = await unwrapImageKey(decoded.image.encryptedKey!, pair.privateKey);
    assert.ok(unwrapped.ok);
    const plain = await Deno.readFile(`${s.dir}/fw.bin`);
    const start = decoded.image.payloadOffset;
    assert.deepEqual(
      payloadCipher(unwrapped.key, 0, image.subarray(start, start + plain.length)),
      plain,
    );
    const withDelta = await create("e111", "--encrypt-to", `${s.dir}/enc.pub`, "--delta-shipped");
    assert.equal(withDelta.code, 1);
    assert.match(withDelta.err, /an encrypted image cannot be patched/);
    const notAKey = await create("e112", "--encrypt-to", `${s.dir}/fw.bin`);
    assert.equal(notAKey.code, 1);
    assert.match(notAKey.err, /encryptTo: cannot parse the key/);
    const withImage = await s.run(
      ...["create", "--id", "e113", "--image", `${s.dir}/fw.bin`, "--signature", `${s.dir}/fw.bin`],
      ...["--certificate", `${s.dir}/fw.bin`, "--cert-file", "/c", "--group", "fleet"],
      ...["--encrypt-to", `${s.dir}/enc.pub`],
    );
    assert.equal(withImage.code, 2);
    assert.match(withImage.err, /--encrypt-to encrypts what the cloud signs/);
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: create --file TYPE:PATH adds a data file the profile signs; a malformed --file is a usage error", async () => {
  const s = await setup();
  try {
    await Deno.writeTextFile(`${s.dir}/app.json`, '{"sampleRate":50}');
    const { create } = s;
    const created = await create("f110", "--file", `3:${s.dir}/app.json`);
    assert.equal(created.code, 0, created.err);
    const described = JSON.parse((await s.run("describe", "f110", "--json")).out);
    assert.deepEqual(
      described.extraFiles.map((f: { filePath: string; fileType: number; fileSize: number }) => [
        f.filePath,
        f.fileType,
        f.fileSize,
      ]),
      [["app.json", 3, 17]],
    );
    const malformed = await create("f111", "--file", `${s.dir}/app.json`);
    assert.equal(malformed.code, 2);
    assert.match(malformed.err, /Invalid --file: expected TYPE:PATH\[:SIGNATURE\]/);
    const firmwareAgain = await create("f112", "--file", `0:${s.dir}/app.json`);
    assert.equal(firmwareAgain.code, 1);
    assert.match(
      firmwareAgain.err,
      /extraFiles\[0\]\.fileType must be 1\.\.255 \(0 is the firmware itself\)/,
    );
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: create --file 1:STAGE2 ships a second stage with firmware the cloud makes depend on it; anything else is refused", async () => {
  const s = await setup();
  try {
    await Deno.writeFile(`${s.dir}/stage2.img`, await secondStageImage("2.1.0"));
    await Deno.writeTextFile(`${s.dir}/app.json`, '{"sampleRate":50}');
    const { create } = s;
    const created = await create("b110", "--file", `1:${s.dir}/stage2.img`);
    assert.equal(created.code, 0, created.err);
    const record = (await s.cloud.otaUpdates.describe("b110"))!;
    assert.deepEqual(record.extraFiles?.map((f) => [f.filePath, f.fileType]), [["stage2.img", 1]]);
    const firmware = decodeImage(bytesSource((await s.cloud.store.getFile(record.fileKey))!));
    assert.ok(firmware.ok);
    assert.deepEqual(
      firmware.image.dependencies.map((d) => [d.imageId, formatVersion(d.minVersion)]),
      [[ImageId.SECOND_STAGE, "2.1.0+0"]],
      "the firmware the cloud signed depends on the second stage it comes with",
    );
    const notAnImage = await create("b111", "--file", `1:${s.dir}/app.json`);
    assert.equal(notAnImage.code, 1);
    assert.match(
      notAnImage.err,
      /extraFiles\[0\]: a second-stage bootloader must be a signed image/,
    );
    const two = await create(
      "b112",
      "--file",
      `1:${s.dir}/stage2.img`,
      "--file",
      `1:${s.dir}/stage2.img`,
    );
    assert.equal(two.code, 1);
    assert.match(two.err, /one second-stage bootloader \(fileType 1\) at most|given twice/);
    const alone = await s.run(
      ...["create", "--id", "b113", "--payload", `${s.dir}/fw.bin`, "--firmware-version", "2.2.0"],
      ...["--security-counter", "2", "--profile", "release", "--cert-file", "/certs/s.pem"],
      ...["--group", "fleet", "--file-type", "1", "--file", `1:${s.dir}/stage2.img`],
    );
    assert.equal(alone.code, 1);
    assert.match(alone.err, /a second-stage bootloader update goes alone/);
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: create --hardware BOARD signs the board into the image; a bad board id and --hardware with --image are refused", async () => {
  const s = await setup();
  try {
    const { create } = s;
    const created = await create("h110", "--hardware", "board-a");
    assert.equal(created.code, 0, created.err);
    const record = (await s.cloud.otaUpdates.describe("h110"))!;
    assert.equal(record.hardwareId, "board-a");
    const firmware = decodeImage(bytesSource((await s.cloud.store.getFile(record.fileKey))!));
    assert.ok(firmware.ok);
    assert.equal(firmware.image.hardwareId, "board-a");
    const bad = await create("h111", "--hardware", "no spaces allowed");
    assert.equal(bad.code, 1);
    assert.match(bad.err, /hardwareId must be 1\.\.64 of \[A-Za-z0-9\._-\]/);
    const withImage = await s.run(
      ...["create", "--id", "h112", "--image", `${s.dir}/fw.bin`, "--signature", `${s.dir}/fw.bin`],
      ...["--certificate", `${s.dir}/fw.bin`, "--cert-file", "/c", "--group", "fleet"],
      ...["--hardware", "board-a"],
    );
    assert.equal(withImage.code, 2);
    assert.match(withImage.err, /--hardware names the board of what the cloud signs/);
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: create --min-rate SIZE --min-rate-window S puts the download-rate floor in the job document; a bad one is a usage error", async () => {
  const s = await setup();
  try {
    const { create } = s;
    const created = await create("r110", "--min-rate", "2KiB", "--min-rate-window", "30");
    assert.equal(created.code, 0, created.err);
    const jobId = (await s.cloud.otaUpdates.describe("r110"))!.jobId;
    const document = (await s.cloud.store.getJob(jobId))!.spec.document as {
      afr_ota: { minimumRate?: unknown };
    };
    assert.deepEqual(document.afr_ota.minimumRate, { bytesPerSecond: 2048, windowSeconds: 30 });
    const defaultWindow = await create("r111", "--min-rate", "100");
    assert.equal(defaultWindow.code, 0, defaultWindow.err);
    const job = (await s.cloud.store.getJob((await s.cloud.otaUpdates.describe("r111"))!.jobId))!;
    assert.deepEqual(
      (job.spec.document as { afr_ota: { minimumRate?: unknown } }).afr_ota.minimumRate,
      { bytesPerSecond: 100, windowSeconds: 60 },
    );
    const bad = await create("r112", "--min-rate", "2KiB", "--min-rate-window", "0");
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--min-rate-window/);
    const refused = await s.cloud.otaUpdates.createOtaUpdate({
      ...releaseRequest(),
      otaUpdateId: "r113",
      protocols: ["MQTT"],
      minimumRate: { bytesPerSecond: 1.5, windowSeconds: 10 },
    });
    assert.deepEqual(refused, {
      ok: false,
      reason: "minimumRate must be { bytesPerSecond: 1..1000000000, windowSeconds: 1..3600 }",
    });
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: token create/list/revoke and whoami; a viewer's change is refused with who and what, exit 1", async () => {
  const s = await setup();
  try {
    const created = await s.run("token", "create", "vera", "--role", "viewer");
    assert.equal(created.code, 0, created.err);
    const token = created.out.split("\n")[1]!;
    assert.match(token, /^ota_[0-9a-f]{16}_/);
    const id = /created token ([0-9a-f]{16}) for vera \(viewer\)/.exec(created.out)![1]!;
    const asVera = (...args: string[]) => s.run(...args, "--token", token);
    assert.equal((await asVera("whoami")).out, "vera (viewer)");
    assert.equal((await asVera("list")).code, 0, "a viewer reads");
    const update = await s.create("t110");
    assert.equal(update.code, 0, update.err);
    const paused = await asVera("pause", "t110");
    assert.equal(paused.code, 1);
    assert.match(paused.err, /vera is a viewer: POST \/api\/jobs\/.* needs operator/);
    const listed = await s.run("token", "list");
    assert.match(listed.out, new RegExp(`${id}\\s+vera\\s+viewer`));
    assert.ok(!listed.out.includes(token.slice(-20)), "the secret is not listed");
    assert.equal((await asVera("token", "list")).code, 1, "tokens are an admin's to read");
    const revoked = await s.run("token", "revoke", id);
    assert.equal(revoked.code, 0, revoked.err);
    assert.equal((await asVera("whoami")).code, 1);
    const noRole = await s.run("token", "create", "x");
    assert.equal(noRole.code, 2);
    assert.match(noRole.err, /Missing required option --role/);
  } finally {
    await s.close();
  }
});

Deno.test("ota CLI: create --file-type 2 ships a trust-store update as it is, without a version or counter; anything else is refused", async () => {
  const s = await setup();
  try {
    const pki = await testPki();
    const update = await signTrustUpdate(
      { version: 1, signers: [], revoked: ["ab".repeat(32)] },
      (bytes) => signData(pki.rootKeys.privateKey, bytes),
    );
    await Deno.writeFile(`${s.dir}/trust.json`, update);
    const ship = (id: string, payload: string, ...more: string[]) =>
      s.run(
        ...["create", "--id", id, "--payload", payload, "--file-type", "2"],
        ...["--profile", "release", "--cert-file", "/certs/s.pem", "--group", "fleet", ...more],
      );
    const created = await ship("trust-1", `${s.dir}/trust.json`);
    assert.equal(created.code, 0, created.err);
    const record = (await s.cloud.otaUpdates.describe("trust-1"))!;
    assert.equal(record.fileType, 2);
    assert.deepEqual(await s.cloud.store.getFile(record.fileKey), update, "shipped byte for byte");
    await Deno.writeTextFile(`${s.dir}/other.json`, '{"hello":"world"}');
    const notAStore = await ship("trust-2", `${s.dir}/other.json`);
    assert.equal(notAStore.code, 1);
    assert.match(notAStore.err, /payload: trust update needs body and signature, base64/);
    const tooBig = await ship("trust-3", `${s.dir}/fw.bin`);
    assert.equal(tooBig.code, 1);
    assert.match(tooBig.err, /payload: trust update must be 1\.\.3072 bytes/);
    const firmwareNeedsVersion = await s.run(
      ...["create", "--id", "fw-1", "--payload", `${s.dir}/fw.bin`, "--security-counter", "2"],
      ...["--profile", "release", "--cert-file", "/certs/s.pem", "--group", "fleet"],
    );
    assert.equal(firmwareNeedsVersion.code, 2);
    assert.match(firmwareNeedsVersion.err, /Missing required option --firmware-version/);
  } finally {
    await s.close();
  }
});
