/**
 * Network races under `fc.scheduler`: every message the real cloud sends the device (job
 * notifications, status acknowledgements, stream blocks) is held by the scheduler and delivered
 * in an order it draws, some blocks lost, doubled or damaged on the way; a force-cancel, a second
 * update and a dropped connection are released at drawn points among them. The device runs
 * in-process (flash, boot ROM, PAL, agent, its own mqtt.js connection) so the scheduler sits
 * between its socket and its agent; the cloud is the real one (aedes over TCP, job and stream
 * services, OTA-update manager).
 *
 * Whatever the order: the device never has two executions in progress; it always boots an image
 * from the trusted signer; once quiet, it runs the last update the cloud says SUCCEEDED (or the
 * factory image) with that update's security counter and exactly the bytes it published.
 *
 * Bounded by default (`RACE_RUNS`, 4 runs); the failing interleaving is printed with the seed.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { bytesSource, decodeImage } from "../../protocol/image_format.ts";
import { TERMINAL_STATUSES } from "../../broker/job_execution.ts";
import { toHex } from "../../lib/bytes.ts";
import { inProcessDevice, qualificationCloud } from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";

const RUNS = Number(Deno.env.get("RACE_RUNS") ?? "4");

/** What happens to one stream data block on the link. */
type LinkFate = "deliver" | "drop" | "duplicate" | "corrupt";

interface RacePlan {
  /** Fates of the stream blocks in arrival order; blocks past the end are delivered. */
  readonly fates: readonly LinkFate[];
  readonly cancelFirst: boolean;
  readonly secondUpdate: boolean;
  readonly disconnect: boolean;
}

const plans: fc.Arbitrary<RacePlan> = fc.record({
  fates: fc.array(
    fc.constantFrom<LinkFate>("deliver", "deliver", "drop", "duplicate", "corrupt"),
    { maxLength: 30 },
  ),
  cancelFirst: fc.boolean(),
  secondUpdate: fc.boolean(),
  disconnect: fc.boolean(),
});

/** One run: the cloud, the device between scheduler and socket, the plan's moves. */
async function race(scheduler: fc.Scheduler, plan: RacePlan): Promise<void> {
  const side = await qualificationCloud("MQTT");
  const fates = [...plan.fates];
  const { device, runtime, logs, bootable, settled } = await inProcessDevice(
    side,
    (topic, payload, deliver) => {
      const later = (bytes: Uint8Array, label: string) =>
        scheduler.schedule(Promise.resolve(label)).then(() => deliver(bytes));
      const name = topic.split("/").slice(-2).join("/");
      if (!topic.endsWith("/data/cbor")) {
        void later(payload, name);
        return null;
      }
      const fate = fates.shift() ?? "deliver";
      if (fate === "drop") return null;
      if (fate === "corrupt") {
        const damaged = payload.slice();
        damaged[Math.floor(damaged.length / 2)]! ^= 0x5a;
        void later(damaged, `${name} (corrupt)`);
        return null;
      }
      void later(payload, name);
      if (fate === "duplicate") void later(payload, `${name} (again)`);
      return null;
    },
  );
  const jobs: { jobId: string; minor: number }[] = [];
  const update = async (minor: number) => {
    const jobId = await side.update(`race-1-${minor}`, {
      version: `1.${minor}.0`,
      securityCounter: minor + 1,
    });
    jobs.push({ jobId, minor });
  };
  let mostInProgress = 0;
  let finished = false;
  // Releases one held message or move at a time, in the scheduler's order, until the end.
  const driver = (async () => {
    while (!finished) {
      // Let what is on its way arrive first, so that several messages compete for the next slot.
      await new Promise((resolve) => setTimeout(resolve, 1));
      if (scheduler.count() > 0) await scheduler.waitOne();
      mostInProgress = Math.max(mostInProgress, await side.inProgress());
    }
    await scheduler.waitAll();
  })();
  try {
    await runtime.start();
    await update(1);
    const moves: Promise<unknown>[] = [];
    if (plan.cancelFirst) {
      moves.push(
        scheduler.schedule(Promise.resolve("cancel 1.1.0")).then(() =>
          side.cloud.jobs.cancelJob(jobs[0]!.jobId, { force: true, reason: "race" })
        ),
      );
    }
    if (plan.secondUpdate) {
      moves.push(scheduler.schedule(Promise.resolve("update 1.2.0")).then(() => update(2)));
    }
    if (plan.disconnect) {
      moves.push(
        scheduler.schedule(Promise.resolve("disconnect")).then(() => runtime.dropConnection()),
      );
    }
    await Promise.all(moves);
    const statuses = () =>
      Promise.all(jobs.map(async (job) => (await side.execution(job.jobId))?.status));
    await waitUntil(
      async () =>
        (await statuses()).every((status) =>
          status !== undefined && TERMINAL_STATUSES.has(status)
        ) && settled(),
      "every update to end and the device to settle",
      60_000,
    );
    finished = true;
    await driver;

    assert.ok(mostInProgress <= 1, `${mostInProgress} executions were in progress at once`);
    assert.ok(await bootable(), "the flash boots an image from the trusted signer");
    const ended = await statuses();
    const succeeded = jobs.filter((_, i) => ended[i] === "SUCCEEDED");
    const last = succeeded.sort((a, b) => a.minor - b.minor).at(-1);
    const minor = last?.minor ?? 0;
    assert.equal(device.running?.version, `1.${minor}.0+0`, "the last update that SUCCEEDED runs");
    assert.equal(device.report().securityCounter, minor + 1);
    if (last) {
      const published = decodeImage(bytesSource(await side.published(last.jobId)));
      assert.ok(published.ok);
      assert.equal(device.running?.imageSha256, toHex(published.image.sha256!));
    }
  } catch (error) {
    const ended = await Promise.all(jobs.map((job) => side.execution(job.jobId)));
    console.log(
      `statuses: ${jobs.map((job, i) => `${job.jobId}=${ended[i]?.status}`).join(", ")}\n${
        logs.slice(-40).join("\n")
      }`,
    );
    throw error;
  } finally {
    finished = true;
    await driver.catch(() => {});
    await runtime.stop();
    await side.close();
  }
}

Deno.test("races: in any delivery order the scheduler draws, with lost, doubled and damaged blocks, a cancel, a second update and a disconnect among them, the device stays trusted and agrees with the cloud", async () => {
  await fc.assert(
    fc.asyncProperty(fc.scheduler(), plans, async (scheduler, plan) => {
      try {
        await race(scheduler, plan);
      } catch (error) {
        console.log(`interleaving: ${scheduler.report().map((task) => task.label).join(" -> ")}`);
        throw error;
      }
    }),
    { numRuns: RUNS },
  );
});
