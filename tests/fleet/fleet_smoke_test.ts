/** deno task fleet at small size: the report accounts for every device and nothing is bricked. */
import assert from "node:assert/strict";
import { type FleetReport, stageParts, stageTimes } from "../../fleet/report.ts";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { runFleet } from "../../fleet/run.ts";
import { allocationsBy, type HeapProfile } from "../../tools/heap_profile.ts";

async function run(...args: string[]): Promise<FleetReport> {
  const lines: string[] = [];
  const report = await runFleet(
    parseFleetArgs([...args, "--image-size", "16KiB", "--block-size", "1KiB"]),
    (l) => lines.push(l),
  );
  assert.ok(lines.some((l) => l.startsWith("fleet: ")));
  return report;
}

function accounted(report: FleetReport): void {
  const o = report.outcome;
  assert.equal(
    o.succeeded + o.failed + o.rejected + o.timedOut + o.canceled + o.other,
    report.devices,
    "every device accounted for",
  );
  assert.equal(Object.values(report.runningVersion).reduce((a, b) => a + b, 0), report.devices);
  assert.equal(report.bricked, 0);
  assert.ok(report.series.length > 0);
  assert.ok(report.peakRssBytes > 0 && report.wallSeconds > 0);
  const phases = Object.keys(report.phases);
  assert.deepEqual(phases.slice(0, 2), ["setup", "boot"]);
  assert.equal(phases.at(-1), "report");
  assert.ok(phases.slice(2, -1).every((name) => name.startsWith("update ")), phases.join(", "));
  // Phases are consecutive slices of the wall time (each rounded to 0.1 s).
  const sum = Object.values(report.phases).reduce((a, b) => a + b, 0);
  assert.ok(
    Math.abs(sum - report.wallSeconds) <= 0.1 * phases.length + 0.1,
    `${sum} vs ${report.wallSeconds}`,
  );
}

Deno.test("fleet smoke: happy scenario, 16 devices in 2 Workers, all on 1.1.0", async () => {
  const report = await run("--devices", "16", "--workers", "2", "--scenario", "happy");
  accounted(report);
  assert.deepEqual(report.runningVersion, { "1.1.0+0": 16 });
  assert.equal(report.outcome.succeeded, 16);
  assert.equal(report.jobStatus, "COMPLETED");
  assert.ok(report.bytesDelivered >= 16 * 16 * 1024);
  assert.ok(report.asExpected);
  // Every device passed every stage of the update, and the figures are ordered.
  const stages = report.stages["1.1.0"]!;
  assert.deepEqual(Object.keys(stages), ["accept", "download", "reboot", "confirm"]);
  for (const [stage, t] of Object.entries(stages)) {
    assert.equal(t.devices, 16, stage);
    assert.ok(0 <= t.p50 && t.p50 <= t.p90 && t.p90 <= t.max, `${stage}: ${JSON.stringify(t)}`);
  }
  // Every part of every device's stages was seen, the cloud's queue times included; a part
  // never outlasts its stage.
  const parts = report.stageParts!["1.1.0"]!;
  for (const [part, t] of Object.entries(parts)) {
    assert.equal(t.devices, 16, part);
    const stage = stages[part.split(".")[0] as keyof typeof stages];
    assert.ok(0 <= t.p50 && t.max <= stage.max + 0.01, `${part}: ${JSON.stringify(t)}`);
  }
});

/** Runs 8 devices in 2 Workers with `flag DIR` (a temporary directory) and hands over DIR's files. */
async function profiledRun(
  flag: string,
  check: (dir: string, files: string[]) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "fleet-profile-" });
  try {
    accounted(await run("--devices", "8", "--workers", "2", flag, dir));
    await check(dir, [...Deno.readDirSync(dir)].map((entry) => entry.name).sort());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("fleet smoke: --cpu-profile writes V8 profiles of the main thread and of every Worker", async () => {
  await profiledRun("--cpu-profile", async (dir, files) => {
    assert.deepEqual(files, ["main.cpuprofile", "worker-0.cpuprofile", "worker-1.cpuprofile"]);
    const expected = [["main", "fleet/"], ["worker-0", "agent/"], ["worker-1", "agent/"]] as const;
    for (const [file, ours] of expected) {
      const profile = JSON.parse(await Deno.readTextFile(`${dir}/${file}.cpuprofile`)) as {
        nodes: { callFrame: { url: string } }[];
        samples: number[];
        timeDeltas: number[];
      };
      assert.ok(profile.samples.length > 0, `${file}: no samples`);
      assert.equal(profile.samples.length, profile.timeDeltas.length, file);
      // The thread's own code is in it: the profile was taken where the work ran.
      assert.ok(profile.nodes.some((n) => n.callFrame.url.includes(ours)), `${file}: no ${ours}`);
    }
  });
});

Deno.test("fleet smoke: --heap-profile writes what every Worker allocated, which tools/heap_profile.ts sums per function and per stack", async () => {
  await profiledRun("--heap-profile", async (dir, files) => {
    assert.deepEqual(files, ["worker-0.heapprofile", "worker-1.heapprofile"]);
    const profiles = await Promise.all(
      files.map(async (file) =>
        JSON.parse(await Deno.readTextFile(`${dir}/${file}`)) as HeapProfile
      ),
    );
    const byFunction = allocationsBy(profiles, 1);
    const total = byFunction.reduce((sum, [, bytes]) => sum + bytes, 0);
    // Eight devices each receive a 64 KiB image: megabytes go through the Workers' heaps.
    assert.ok(total > 1_000_000, `only ${total} bytes sampled`);
    assert.ok(
      byFunction.some(([name]) => /agent\//.test(name)),
      "the agent's allocations are in it",
    );
    const byStack = allocationsBy(profiles, 3);
    assert.equal(
      byStack.reduce((sum, [, bytes]) => sum + bytes, 0),
      total,
      "same bytes, per stack",
    );
    assert.ok(byStack.some(([name]) => name.split(" < ").length === 3));
  });
});

Deno.test("fleet smoke: --identity secure-element, devices log in with tokens their secure elements sign, through chaos and a Worker crash", async () => {
  const report = await run(
    "--devices",
    "12",
    "--workers",
    "2",
    "--scenario",
    "chaos",
    "--identity",
    "secure-element",
  );
  accounted(report);
  assert.equal(report.faults.workerRestarts, 1, "the chips moved with their devices");
  assert.deepEqual(report.runningVersion, { "1.1.0+0": 12 });
  assert.ok(report.asExpected, report.expected);
});

Deno.test("fleet smoke: --protocol http, devices fetch the image through pre-signed URLs", async () => {
  const report = await run("--devices", "8", "--workers", "2", "--protocol", "http");
  accounted(report);
  assert.equal(report.protocol, "http");
  assert.deepEqual(report.runningVersion, { "1.1.0+0": 8 });
  assert.ok(report.asExpected, report.expected);
});

Deno.test("stageTimes: spans between marks, only for the job asked about, ordered statistics", () => {
  const marks = [
    { jobId: "j", received: 1_500, activated: 2_500, selfTest: 4_500, complete: 5_000 },
    { jobId: "j", received: 1_000, activated: 4_000 },
    { jobId: "other", received: 0, activated: 9_000, selfTest: 9_500, complete: 9_900 },
    null,
  ];
  assert.deepEqual(stageTimes(1_000, marks, "j"), {
    accept: { devices: 2, p50: 0.5, p90: 0.5, max: 0.5 },
    download: { devices: 2, p50: 3, p90: 3, max: 3 },
    reboot: { devices: 1, p50: 2, p90: 2, max: 2 },
    confirm: { devices: 1, p50: 0.5, p90: 0.5, max: 0.5 },
  });
});

Deno.test("stageParts: each part between its two marks, the rollout's wait from the cloud's queue times", () => {
  const marks = {
    jobId: "j",
    received: 3_000,
    lastBytes: 7_000,
    activated: 7_500,
    booted: 9_500,
    connected: 10_000,
    selfTest: 11_000,
  };
  const devices = [
    { thing: "a", marks },
    { thing: "b", marks: { jobId: "j", received: 2_000 } },
    { thing: "c", marks: { ...marks, jobId: "other" } },
    { thing: "d", marks: null },
  ];
  const one = (seconds: number) => ({ devices: 1, p50: seconds, p90: seconds, max: seconds });
  assert.deepEqual(stageParts(1_000, devices, "j", new Map([["a", 2_000], ["b", 1_500]])), {
    "accept.rollout": { devices: 2, p50: 1, p90: 1, max: 1 },
    "accept.delivery": { devices: 2, p50: 1, p90: 1, max: 1 },
    "download.blocks": one(4),
    "download.check": one(0.5),
    "reboot.boot": one(2),
    "reboot.connect": one(0.5),
    "reboot.job": one(1),
  });
  // Without the cloud's queue times the accept stage is not split.
  const unsplit = stageParts(1_000, devices, "j", null);
  assert.equal(unsplit["accept.rollout"].devices, 0);
  assert.equal(unsplit["accept.delivery"].devices, 0);
});

Deno.test("fleet smoke: chaos scenario (disconnects, corrupted blocks, power cuts, a Worker crash) still updates everyone", async () => {
  const report = await run(
    "--devices",
    "16",
    "--workers",
    "2",
    "--scenario",
    "chaos",
    "--seed",
    "7",
    "--disconnect-rate",
    "0.3",
    "--corrupt-rate",
    "0.5",
    "--power-cut-rate",
    "0.3",
  );
  accounted(report);
  assert.ok(
    report.faults.corruptedBlocks > 0 && report.faults.powerCuts > 0,
    JSON.stringify(report.faults),
  );
  // The crashed Worker's devices came back with their flash: those already updated stayed on
  // 1.1.0 (a factory reset would leave them on 1.0.0 with a SUCCEEDED execution).
  assert.equal(report.faults.workerCrashes, 1);
  assert.equal(report.faults.workerRestarts, 1);
  assert.deepEqual(report.runningVersion, { "1.1.0+0": 16 }, JSON.stringify(report.outcome));
  assert.ok(report.asExpected);
});

Deno.test("fleet smoke: a slow, lossy link (latency, bandwidth, lost QoS 0 blocks) delays but does not stop the update", async () => {
  assert.deepEqual(
    parseFleetArgs(["--latency", "40", "--bandwidth", "32KiB/s", "--loss", "0.2"]).network,
    { latencyMs: 40, bandwidthBytesPerSecond: 32 * 1024, loss: 0.2 },
  );
  const report = await run(
    "--devices",
    "6",
    "--workers",
    "2",
    "--seed",
    "3",
    "--latency",
    "40",
    "--bandwidth",
    "64KiB/s",
    "--loss",
    "0.2",
  );
  accounted(report);
  assert.ok(report.faults.lostMessages > 0, JSON.stringify(report.faults));
  assert.deepEqual(report.runningVersion, { "1.1.0+0": 6 });
  assert.ok(report.asExpected);
});

Deno.test("fleet smoke: one device per Worker", async () => {
  const report = await run("--devices", "3", "--devices-per-worker", "1");
  assert.equal(report.workers, 3);
  accounted(report);
  assert.ok(report.asExpected);
});

Deno.test("fleet flags: every bad value is a clear error", () => {
  for (
    const args of [
      ["--devices", "0"],
      ["--devices", "x"],
      ["--image-size", "1GiB"],
      ["--block-size", "3000"],
      ["--protocol", "coap"],
      ["--scenario", "nope"],
      ["--corrupt-rate", "2"],
      ["--workers", "2", "--devices-per-worker", "1"],
      ["--bogus"],
      ["--latency", "-1"],
      ["--bandwidth", "fast"],
      ["--loss", "0.9"],
      ["--retries", "11"],
      ["--worker-crashes", "-1"],
      ["--identity", "password"],
      ["--encrypted", "--delta"],
      [
        "--identity",
        "secure-element",
        "--broker",
        "mqtt://h:1",
        "--api",
        "http://h",
        "--token",
        "t",
      ],
    ]
  ) {
    assert.throws(() => parseFleetArgs(args), Error, args.join(" "));
  }
  assert.equal(
    parseFleetArgs(["--scenario", "chaos"]).corruptRate,
    0.2,
    "chaos turns every fault on",
  );
  const chaos = parseFleetArgs(["--scenario", "chaos"]);
  assert.deepEqual([chaos.workerCrashes, chaos.retries], [1, 3], "and retries what they fail");
  assert.equal(parseFleetArgs([]).identity, "secret");
  assert.equal(parseFleetArgs(["--identity", "secure-element"]).identity, "secure-element");
  assert.equal(parseFleetArgs([]).erasePreviousImage, false);
  assert.equal(parseFleetArgs(["--erase-previous-image"]).erasePreviousImage, true);
  const quiet = parseFleetArgs(["--scenario", "chaos", "--worker-crashes", "0", "--retries", "0"]);
  assert.deepEqual([quiet.workerCrashes, quiet.retries], [0, 0]);
});

Deno.test("fleet smoke: back-to-back runs three updates and late-joiners reach devices added during a continuous job", async () => {
  const chain = await run("--devices", "8", "--workers", "2", "--scenario", "back-to-back");
  accounted(chain);
  assert.deepEqual(chain.runningVersion, { "1.3.0+0": 8 });
  assert.deepEqual(chain.updates.map((u) => u.counts.SUCCEEDED), [8, 8, 8]);
  assert.ok(chain.asExpected);
  const late = await run("--devices", "10", "--workers", "2", "--scenario", "late-joiners");
  accounted(late);
  assert.deepEqual(late.runningVersion, { "1.1.0+0": 10 });
  assert.equal(late.updates[0]!.status, "IN_PROGRESS", "a continuous job keeps running");
  assert.ok(late.asExpected);
});

Deno.test("fleet smoke: canary-abort stops the rollout and leaves nobody on the failing image", async () => {
  const report = await run("--devices", "20", "--workers", "2", "--scenario", "canary-abort");
  accounted(report);
  assert.equal(report.jobStatus, "CANCELED");
  assert.deepEqual(report.runningVersion, { "1.0.0+0": 20 });
  assert.ok(report.outcome.failed >= 2 && report.outcome.other > 0, JSON.stringify(report.outcome));
  assert.ok(report.asExpected);
});

Deno.test("fleet smoke: --cancel stops a slow rollout midway; devices end on either image, none bricked", async () => {
  const report = await run(
    "--devices",
    "10",
    "--workers",
    "2",
    "--max-per-minute",
    "1",
    "--time-scale",
    "60",
    "--cancel",
    "0.2",
  );
  accounted(report);
  assert.equal(report.jobStatus, "CANCELED");
  assert.ok(
    report.outcome.succeeded >= 2 && report.outcome.other > 0,
    JSON.stringify(report.outcome),
  );
  assert.equal(
    (report.runningVersion["1.0.0+0"] ?? 0) + (report.runningVersion["1.1.0+0"] ?? 0),
    10,
  );
  assert.ok(report.asExpected);
});

Deno.test("fleet smoke: an image that crashes on a quarter of the devices trips the abort threshold", async () => {
  const mixed = await run(
    "--devices",
    "20",
    "--workers",
    "2",
    "--bad-image-share",
    "0.25",
    "--seed",
    "3",
  );
  accounted(mixed);
  const bad = mixed.runningVersion["1.0.0+0"] ?? 0;
  assert.ok(
    bad > 0 && mixed.outcome.failed === bad,
    "the devices it crashes on revert and report FAILED",
  );
  assert.ok(mixed.asExpected);
  const stopped = await run(
    "--devices",
    "20",
    "--workers",
    "2",
    "--bad-image-share",
    "0.5",
    "--abort-percent",
    "20",
    "--max-per-minute",
    "10",
    "--seed",
    "3",
  );
  accounted(stopped);
  assert.equal(stopped.jobStatus, "CANCELED");
  assert.ok(stopped.outcome.other > 0, "the rest of the fleet was never updated");
  assert.ok(stopped.asExpected);
});

Deno.test("fleet smoke: --trace prints the traced device's own log lines as they happen, and only its", async () => {
  const lines: string[] = [];
  const report = await runFleet(
    parseFleetArgs([
      "--devices",
      "4",
      "--workers",
      "1",
      "--trace",
      "dev-00002",
      "--image-size",
      "16KiB",
      "--block-size",
      "1KiB",
    ]),
    (l) => lines.push(l),
  );
  assert.ok(report.asExpected);
  const traced = lines.filter((l) => l.startsWith("trace "));
  assert.ok(traced.every((l) => /^trace \d+\.\d s \[dev-00002\] /.test(l)), traced.join("\n"));
  for (
    const expected of [/booted 1\.0\.0\+0$/, /booted 1\.1\.0\+0 \(trial\)$/, /confirming the image/]
  ) {
    assert.ok(traced.some((l) => expected.test(l)), `${expected} in:\n${traced.join("\n")}`);
  }
  assert.throws(
    () => parseFleetArgs(["--devices", "4", "--trace", "dev-00003,dev-00009"]),
    /Invalid --trace: no device dev-00009 in this run/,
  );
  assert.throws(() => parseFleetArgs(["--trace", "dev 1"]), /Invalid --trace/);
});

Deno.test("fleet smoke: devices whose slots are wiped after the rollout count as bricked, and the run is not as expected", async () => {
  const report = await run(
    "--devices",
    "6",
    "--workers",
    "1",
    "--wipe-share",
    "0.5",
    "--seed",
    "3",
  );
  assert.ok(report.faults.wipes >= 1, `wiped: ${report.faults.wipes}`);
  assert.equal(report.bricked, report.faults.wipes, "exactly the wiped devices cannot boot");
  assert.equal(report.asExpected, false);
  assert.equal(report.outcome.succeeded, 6, "the rollout itself went through");
});

Deno.test("fleet smoke: bad-wave: the health gate pauses the rollout after the failing wave; the command exits 0", async () => {
  const report = await run("--devices", "10", "--workers", "1", "--scenario", "bad-wave");
  assert.ok(report.asExpected, JSON.stringify([report.expected, report.outcome, report.jobReason]));
  assert.equal(report.jobStatus, "PAUSED");
  assert.match(
    report.jobReason ?? "",
    /^health gate: 1 of the 2 things of the last wave succeeded/,
  );
  assert.equal(report.outcome.other, 8, "the devices after the failing wave were never notified");
  assert.equal(report.bricked, 0);
  // The command itself: the expected outcome is a success.
  const dir = await Deno.makeTempDir({ prefix: "ota-bad-wave-" });
  try {
    const command = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        new URL("../../fleet/fleet.ts", import.meta.url).pathname,
        "--scenario",
        "bad-wave",
        "--devices",
        "10",
        "--workers",
        "1",
        "--image-size",
        "16KiB",
        "--block-size",
        "1KiB",
        "--report",
        `${dir}/report.json`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(command.stdout);
    assert.equal(command.code, 0, text + new TextDecoder().decode(command.stderr));
    assert.match(text, /job {16}PAUSED \(health gate: /);
    assert.match(text, /as expected {8}yes/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fleet smoke: factory-reset: devices reset to the factory image after updating are updated again by the continuous job", async () => {
  const report = await run("--devices", "10", "--workers", "1", "--scenario", "factory-reset");
  assert.ok(
    report.asExpected,
    JSON.stringify([report.expected, report.runningVersion, report.faults]),
  );
  assert.equal(report.faults.factoryResets, 2);
  assert.deepEqual(report.runningVersion, { "1.1.0+0": 10 });
  assert.equal(report.bricked, 0);
  assert.equal(report.outcome.succeeded, 10);
});

Deno.test("fleet smoke: two-components: firmware and second stage installed together on every device, through power cuts; no device runs one new and one old", async () => {
  const report = await run(
    ...["--devices", "16", "--workers", "1", "--scenario", "two-components"],
    ...["--power-cut-rate", "0.5", "--seed", "3"],
  );
  assert.ok(
    report.asExpected,
    JSON.stringify([report.expected, report.runningPair, report.faults]),
  );
  assert.ok(report.faults.powerCuts > 0, "the power went on some devices");
  assert.deepEqual(
    Object.keys(report.runningPair).filter((pair) =>
      pair !== "1.1.0+0 / 2.1.0+0" && pair !== "1.0.0+0 / 2.0.0+0"
    ),
    [],
    "no mix",
  );
  assert.ok((report.runningPair["1.1.0+0 / 2.1.0+0"] ?? 0) > 0);
  assert.equal(report.bricked, 0);
});

Deno.test("fleet smoke: bad-component: the new second stage crashes, the firmware goes back with it on every device; every execution FAILED", async () => {
  const report = await run("--devices", "10", "--workers", "1", "--scenario", "bad-component");
  assert.ok(report.asExpected, JSON.stringify([report.expected, report.runningPair]));
  assert.deepEqual(report.runningPair, { "1.0.0+0 / 2.0.0+0": 10 });
  assert.equal(report.outcome.failed, 10);
  assert.equal(report.bricked, 0);
});

Deno.test("fleet as a process: an injected Worker crash is one line, not an uncaught error with a stack", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ota-crash-" });
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        new URL("../../fleet/fleet.ts", import.meta.url).pathname,
        "--devices",
        "8",
        "--workers",
        "2",
        "--worker-crashes",
        "1",
        "--image-size",
        "16KiB",
        "--block-size",
        "1KiB",
        "--report",
        `${dir}/report.json`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(output.stdout);
    const err = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, out + err);
    assert.match(out, /^fault: Worker \d crashed \(injected\)$/m);
    assert.doesNotMatch(err, /Uncaught|\n\s+at /, err);
    assert.match(out, /worker crashes 1 \(restarts 1\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fleet smoke: --delta: three updates in a row, each taken as a patch by every device; the report says what it saved", async () => {
  const report = await run(
    "--devices",
    "6",
    "--workers",
    "1",
    "--scenario",
    "back-to-back",
    "--delta",
  );
  accounted(report);
  assert.ok(report.asExpected, JSON.stringify([report.expected, report.runningVersion]));
  assert.deepEqual(Object.keys(report.deltaSavings ?? {}), ["1.1.0", "1.2.0", "1.3.0"]);
  for (const [version, saved] of Object.entries(report.deltaSavings!)) {
    assert.equal(saved.devices, 6, version);
    assert.equal(saved.patched, 6, `${version}: every device on the previous release patched`);
    assert.ok(saved.bytesSaved > 6 * 12 * 1024, `${version}: ${saved.bytesSaved} bytes saved`);
  }
  // Three updates of 16 KiB images to 6 devices, fetched as patches: a small part of the bytes.
  assert.ok(report.bytesDelivered < 3 * 6 * 16 * 1024 / 4, `${report.bytesDelivered} bytes`);
});

Deno.test("fleet smoke: --encrypted: every device installs an image encrypted for its secure element's key; a failing one reverts", async () => {
  const report = await run("--devices", "6", "--workers", "2", "--encrypted");
  accounted(report);
  assert.ok(report.asExpected, JSON.stringify([report.expected, report.runningVersion]));
  assert.deepEqual(report.runningVersion, { "1.1.0+0": 6 });
  assert.equal(report.runningEncrypted, 6, "each runs the image that came encrypted");
  // The image crashes: each device reverts to its factory image (the new one goes back to the
  // secondary slot encrypted again) and the execution fails.
  const rollback = await run(
    "--devices",
    "4",
    "--workers",
    "1",
    "--encrypted",
    "--scenario",
    "rollback",
  );
  assert.ok(rollback.asExpected, JSON.stringify([rollback.expected, rollback.runningVersion]));
  assert.deepEqual(rollback.runningVersion, { "1.0.0+0": 4 });
  assert.equal(rollback.runningEncrypted, 0);
  assert.equal(rollback.bricked, 0);
});
