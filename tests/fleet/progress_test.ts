/**
 * The fleet's progress: the stages and the work measure joined from the cloud's counts and the
 * devices' telemetry (pure), the remote run's speed from the devices' own byte counts, and the
 * bar of the real command in a terminal (a pseudo-terminal from `script`), drawn to its final
 * frame.
 */
import assert from "node:assert/strict";
import type { DeviceTelemetry } from "../../fleet/device_actor.ts";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { type FleetProgress, formatProgress, rolloutStages } from "../../fleet/progress.ts";
import { runFleet } from "../../fleet/run.ts";
import { systemProgram } from "../helpers/system_program.ts";
import { smallFleetArgs } from "../helpers/fleet_args.ts";
import { runningCloud } from "../helpers/running_cloud.ts";

const IMAGE = 10_000;

function device(
  thing: string,
  updateState: string | null,
  marks: Partial<NonNullable<DeviceTelemetry["marks"]>> | null,
  extra: Partial<DeviceTelemetry> = {},
): DeviceTelemetry {
  return {
    thing,
    state: "running",
    version: "1.0.0+0",
    trial: false,
    updateState,
    unconfirmedSuccess: false,
    marks: marks ? { jobId: "job", received: 1, ...marks } : null,
    ...extra,
  };
}

Deno.test("rolloutStages: devices per stage; the work moves with every block, ended devices count whole, never past the targets", () => {
  const counts = { pending: 2, QUEUED: 1, IN_PROGRESS: 4, SUCCEEDED: 2, FAILED: 1 };
  const telemetry = [
    device("a", "WRITING", { bytes: 2_500 }),
    device("b", "WRITING", { bytes: 25_000 }), // re-sent blocks: a device counts at most whole
    device("c", "STAGED", { activated: 2 }),
    device("d", "TRIAL", { activated: 2 }, { trial: true }),
    device("e", "READY", { activated: 2, complete: 3 }), // done with it: counted by the cloud
    device("f", "WRITING", { bytes: 9_000, jobId: "other-job" }), // another update's download
    device("g", "READY", null),
  ];
  const stages = rolloutStages(counts, telemetry, "job", IMAGE);
  assert.deepEqual(
    { ...stages, work: Math.round(stages.work * 1000) / 1000 },
    {
      waiting: 2,
      queued: 1,
      downloading: 2,
      installing: 1,
      onTrial: 1,
      ended: 3,
      succeeded: 2,
      failed: 1,
      work: 3 + 0.8 * (0.25 + 1) + 0.9 * 2,
      total: 10,
    },
  );
  // One more block received: the work grows though no device ended.
  const later = rolloutStages(
    counts,
    [device("a", "WRITING", { bytes: 3_500 }), ...telemetry.slice(1)],
    "job",
    IMAGE,
  );
  assert.ok(later.work > stages.work && later.ended === stages.ended);
  // Devices the cloud already counts as ended that still say they are on trial: capped.
  const capped = rolloutStages(
    { SUCCEEDED: 2 },
    [device("a", "TRIAL", { activated: 1 }, { trial: true }), device("b", "TRIAL", {})],
    "job",
    IMAGE,
  );
  assert.equal(capped.work, 2);
  assert.equal(capped.onTrial, 0);
  // Telemetry lagging the cloud: no more devices under way than executions in progress, the
  // furthest along first, so the bar is whole only when every device ended.
  const lagging = rolloutStages(
    { IN_PROGRESS: 1, SUCCEEDED: 2 },
    [
      device("a", "TRIAL", { activated: 1 }, { trial: true }),
      device("b", "TRIAL", { activated: 1 }, { trial: true }),
      device("c", "WRITING", { bytes: IMAGE }),
    ],
    "job",
    IMAGE,
  );
  assert.deepEqual([lagging.onTrial, lagging.downloading], [1, 0]);
  assert.equal(lagging.work, 2 + 0.9);
  // A stopped rollout's devices end it too.
  assert.equal(rolloutStages({ CANCELED: 1, neverNotified: 3 }, [], "job", IMAGE).ended, 4);
});

Deno.test("formatProgress: ended of total, the stages under way, bytes and speed; done on the final frame", () => {
  const stages = rolloutStages(
    { pending: 1, IN_PROGRESS: 1, SUCCEEDED: 2 },
    [device("a", "WRITING", { bytes: 5_000 })],
    "job",
    IMAGE,
  );
  const snapshot: FleetProgress = {
    version: "1.1.0",
    status: "IN_PROGRESS",
    stages,
    bytesReceived: 2_500_000,
    mbPerSecond: 1.25,
    etaSeconds: 7,
    final: false,
  };
  assert.equal(
    formatProgress(snapshot),
    "IN_PROGRESS ended 2/4 (ok 2, failed 0) | waiting 1, downloading 1 | 2.5 MB at 1.3 MB/s | ETA 7 s",
  );
  assert.match(formatProgress({ ...snapshot, final: true }), /\| done$/);
});

Deno.test("fleet progress against a running cloud: speed and bytes from the devices themselves, a final snapshot with the whole fleet ended", async () => {
  const running = await runningCloud("progress-test-token");
  try {
    const snapshots: FleetProgress[] = [];
    const report = await runFleet(
      parseFleetArgs([...smallFleetArgs(4), ...running.joinFlags]),
      () => {},
      (p) => snapshots.push(p),
    );
    assert.ok(report.asExpected, report.expected);
    const last = snapshots.at(-1)!;
    assert.equal(last.final, true);
    assert.equal(snapshots.filter((s) => s.final).length, 1, "one final frame per rollout");
    assert.equal(last.stages.work, 4);
    assert.equal(last.stages.succeeded, 4);
    // Every device received the whole 16 KiB image (stream blocks carry a little framing).
    assert.ok(last.bytesReceived >= 4 * 16 * 1024, String(last.bytesReceived));
    assert.ok(snapshots.some((s) => s.mbPerSecond > 0), "a speed was shown");
    assert.equal(report.bytesDelivered, last.bytesReceived);
    const works = snapshots.map((s) => s.stages.work);
    assert.deepEqual(works, [...works].sort((a, b) => a - b), `work never went back: ${works}`);
  } finally {
    await running.close();
  }
});

const SCRIPT = systemProgram("script", "bsdutils");

Deno.test({
  name: "deno task fleet in a terminal: the progress bar ends on its final frame at 100%",
  ignore: SCRIPT.ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const fleet = [
        Deno.execPath(),
        "run",
        "--allow-all",
        new URL("../../fleet/fleet.ts", import.meta.url).pathname,
        ...smallFleetArgs(4),
        "--report",
        `${dir}/report.json`,
      ].map((word) => `'${word}'`).join(" ");
      // `script` gives the command a pseudo-terminal, so it draws the bar as on a console.
      const output = await new Deno.Command(SCRIPT.require(), {
        args: ["-qec", fleet, "/dev/null"],
        stdout: "piped",
        stderr: "piped",
        stdin: "null",
        env: { TERM: "xterm" },
      }).output();
      const text = new TextDecoder().decode(output.stdout);
      assert.equal(output.code, 0, text + new TextDecoder().decode(output.stderr));
      // The last frame the bar drew: the whole fleet ended, the rollout done.
      const frames = text.split(/\r|\n/).filter((line) => line.includes("| COMPLETED ended"));
      assert.ok(frames.length > 0, text);
      assert.match(frames.at(-1)!, /100% \| COMPLETED ended 4\/4 \(ok 4, failed 0\) \|.* \| done/);
      assert.doesNotMatch(text, /^progress /m, "a terminal gets the bar, not the lines");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
