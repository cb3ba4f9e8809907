/**
 * Model-based resilience (fast-check `fc.commands`): random sequences of new updates,
 * disconnects, force-cancels, clean reboots, power cuts (clean or torn, at a drawn flash operation), dropped,
 * duplicated, reordered and corrupted stream blocks, the cloud's clock jumping past the
 * in-progress timeout, and races of several of these released in an order `fc.scheduler` draws,
 * against the real cloud and one device actor in its Worker. After every command, once the
 * system is quiet, the invariants hold: the flash boots an image from the trusted signer; the
 * device never runs a lower version or security counter than it had; the cloud and the device
 * agree (the device runs the version of the last update the cloud says SUCCEEDED, or the one
 * before when it says otherwise) and runs exactly the bytes that update published; no execution
 * is left open. Throughout the run, the device never has two executions in progress.
 *
 * Bounded by default (`MODEL_RUNS`, 5 runs); `deno task soak` runs many more.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { type QualificationWorld, qualificationWorld } from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";
import { TERMINAL_STATUSES } from "../../broker/job_execution.ts";
import { bytesSource, decodeImage } from "../../protocol/image_format.ts";
import { toHex } from "../../lib/bytes.ts";

const RUNS = Number(Deno.env.get("MODEL_RUNS") ?? "5");

/** What the cloud has asked for and what the device may run. */
interface Model {
  /** Minor version of the next update to create. */
  nextMinor: number;
  /** The open update, if any. */
  open: { jobId: string; minor: number } | null;
  /** Minor version, counter and job of what the device must run once quiet (factory: no job). */
  running: { minor: number; counter: number; jobId: string | null };
}

/** The in-progress timeout of every update, minutes of the cloud's clock. */
const IN_PROGRESS_TIMEOUT_MINUTES = 10;

interface Real {
  readonly world: QualificationWorld;
}

/** Waits until the cloud has no open execution for the device and the device has settled. */
async function quiet(real: Real, model: Model): Promise<void> {
  const { world } = real;
  if (model.open) {
    const jobId = model.open.jobId;
    await waitUntil(
      async () => {
        const status = (await world.execution(jobId))?.status;
        return status !== undefined && TERMINAL_STATUSES.has(status);
      },
      `${jobId} to end`,
      60_000,
    );
    const status = (await world.execution(jobId))!.status;
    if (status === "SUCCEEDED") {
      model.running = { minor: model.open.minor, counter: model.open.minor + 1, jobId };
    }
    model.open = null;
  }
  await world.settled();
}

/** The invariants, checked when quiet. */
async function invariants(real: Real, model: Model): Promise<void> {
  await quiet(real, model);
  const report = await real.world.device();
  assert.ok(report.bootable, "the flash boots an image from the trusted signer");
  assert.equal(report.device.running?.trial, false);
  assert.equal(
    report.telemetry.version,
    `1.${model.running.minor}.0+0`,
    "the device runs the last version the cloud saw succeed",
  );
  assert.equal(report.device.securityCounter, model.running.counter);
  if (model.running.jobId) {
    const published = decodeImage(bytesSource(await real.world.published(model.running.jobId)));
    assert.ok(published.ok);
    assert.equal(
      report.device.running?.imageSha256,
      toHex(published.image.sha256!),
      "the device runs exactly the image the update published",
    );
  }
}

class NewUpdate implements fc.AsyncCommand<Model, Real> {
  check(model: Readonly<Model>): boolean {
    return model.open === null;
  }
  async run(model: Model, real: Real): Promise<void> {
    const minor = model.nextMinor++;
    const jobId = await real.world.update(`v1-${minor}`, {
      version: `1.${minor}.0`,
      securityCounter: minor + 1,
      inProgressTimeoutInMinutes: IN_PROGRESS_TIMEOUT_MINUTES,
    });
    model.open = { jobId, minor };
  }
  toString(): string {
    return "NewUpdate";
  }
}

class Disconnect implements fc.AsyncCommand<Model, Real> {
  check(): boolean {
    return true;
  }
  async run(_model: Model, real: Real): Promise<void> {
    real.world.fleet.send(real.world.thing, { type: "disconnect" });
    await Promise.resolve();
  }
  toString(): string {
    return "Disconnect";
  }
}

class Cancel implements fc.AsyncCommand<Model, Real> {
  check(model: Readonly<Model>): boolean {
    return model.open !== null;
  }
  async run(model: Model, real: Real): Promise<void> {
    // In a race an earlier move may have let the update end already: nothing left to cancel.
    if (model.open) {
      await real.world.cloud.jobs.cancelJob(model.open.jobId, { force: true, reason: "model" });
    }
  }
  toString(): string {
    return "Cancel";
  }
}

class PowerCut implements fc.AsyncCommand<Model, Real> {
  constructor(readonly atOperation: number, readonly torn: boolean) {}
  check(): boolean {
    return true;
  }
  async run(_model: Model, real: Real): Promise<void> {
    real.world.fleet.send(real.world.thing, {
      type: "cut-power",
      atOperation: this.atOperation,
      torn: this.torn,
    });
    await Promise.resolve();
  }
  toString(): string {
    return `PowerCut(${this.atOperation}${this.torn ? ", torn" : ""})`;
  }
}

/** A clean reboot at whatever moment the command lands: power off, then on again. */
class Reboot implements fc.AsyncCommand<Model, Real> {
  check(): boolean {
    return true;
  }
  async run(_model: Model, real: Real): Promise<void> {
    real.world.fleet.send(real.world.thing, { type: "power-off" });
    real.world.fleet.send(real.world.thing, { type: "power-on" });
    await Promise.resolve();
  }
  toString(): string {
    return "Reboot";
  }
}

/** The link loses, doubles, delays past the next one or damages the next stream blocks. */
class BlockFaults implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly fault: "drop" | "duplicate" | "reorder" | "corrupt",
    readonly count: number,
  ) {}
  check(): boolean {
    return true;
  }
  async run(_model: Model, real: Real): Promise<void> {
    real.world.fleet.send(
      real.world.thing,
      this.fault === "corrupt"
        ? { type: "corrupt-blocks", count: this.count }
        : { type: "block-faults", fault: this.fault, count: this.count },
    );
    await Promise.resolve();
  }
  toString(): string {
    return `BlockFaults(${this.fault} x${this.count})`;
  }
}

/** The cloud's clock jumps: past the in-progress timeout, an execution under way times out. */
class AdvanceTime implements fc.AsyncCommand<Model, Real> {
  constructor(readonly minutes: number) {}
  check(): boolean {
    return true;
  }
  async run(_model: Model, real: Real): Promise<void> {
    real.world.clock.advance(this.minutes * 60_000);
    await Promise.resolve();
  }
  toString(): string {
    return `AdvanceTime(${this.minutes} min)`;
  }
}

/** Several moves at once, released in the order the scheduler draws (printed on failure). */
class Race implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly scheduler: fc.Scheduler,
    readonly moves: readonly fc.AsyncCommand<Model, Real>[],
  ) {}
  check(model: Readonly<Model>): boolean {
    return this.moves.every((move) => move.check(model));
  }
  async run(model: Model, real: Real): Promise<void> {
    const runs = this.moves.map((move) =>
      this.scheduler.schedule(Promise.resolve(move.toString())).then(() => move.run(model, real))
    );
    await this.scheduler.waitAll();
    await Promise.all(runs);
  }
  toString(): string {
    return `Race(${this.moves.join(", ")}) ${
      this.scheduler.report().map((t) => t.label).join(" -> ")
    }`;
  }
}

/** Lets the system run to quiet and checks the invariants. */
class Check implements fc.AsyncCommand<Model, Real> {
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    await invariants(real, model);
  }
  toString(): string {
    return "Check";
  }
}

Deno.test("model: updates, disconnects, cancels, reboots, power cuts, block faults, timeouts and scheduled races in any order leave a trusted, agreed, never-downgraded device", async () => {
  const powerCut = fc.record({ at: fc.integer({ min: 1, max: 120 }), torn: fc.boolean() }).map((
    { at, torn },
  ) => new PowerCut(at, torn));
  const blockFaults = fc.record({
    fault: fc.constantFrom(
      "drop" as const,
      "duplicate" as const,
      "reorder" as const,
      "corrupt" as const,
    ),
    count: fc.integer({ min: 1, max: 6 }),
  }).map(({ fault, count }) => new BlockFaults(fault, count));
  const advanceTime = fc.integer({ min: 1, max: 2 * IN_PROGRESS_TIMEOUT_MINUTES }).map((m) =>
    new AdvanceTime(m)
  );
  const raceMove = fc.oneof(
    fc.constant(new Disconnect()),
    fc.constant(new Cancel()),
    fc.constant(new Reboot()),
    powerCut,
    blockFaults,
    advanceTime,
  );
  const commands = fc.commands([
    fc.constant(new NewUpdate()),
    fc.constant(new Disconnect()),
    fc.constant(new Cancel()),
    fc.constant(new Reboot()),
    powerCut,
    blockFaults,
    advanceTime,
    fc.tuple(fc.scheduler(), fc.array(raceMove, { minLength: 2, maxLength: 3 })).map((
      [scheduler, moves],
    ) => new Race(scheduler, moves)),
    fc.constant(new Check()),
  ], { maxCommands: 8 });
  await fc.assert(
    fc.asyncProperty(commands, async (cmds) => {
      const world = await qualificationWorld("MQTT");
      // Sampled all along, not only when quiet: two downloads at once would not wait for a check.
      let mostInProgress = 0;
      const sampler = setInterval(async () => {
        mostInProgress = Math.max(mostInProgress, await world.inProgress());
      }, 10);
      try {
        const model: Model = {
          nextMinor: 1,
          open: null,
          running: { minor: 0, counter: 1, jobId: null },
        };
        await fc.asyncModelRun(() => ({ model, real: { world } }), cmds);
        await invariants({ world }, model);
        assert.ok(mostInProgress <= 1, `${mostInProgress} executions were in progress at once`);
      } catch (error) {
        console.log(world.logs.slice(-60).join("\n"));
        throw error;
      } finally {
        clearInterval(sampler);
        await world.close();
      }
    }),
    { numRuns: RUNS },
  );
});
