/**
 * Model-based resilience (fast-check `fc.commands`): random sequences of new updates,
 * disconnects, force-cancels and power cuts (clean or torn, at a drawn flash operation) against
 * the real cloud and one device actor in its Worker. After every command, once the system is
 * quiet, the invariants hold: the flash boots an image from the trusted signer; the device never
 * runs a lower version or security counter than it had; the cloud and the device agree (the device
 * runs the version of the last update the cloud says SUCCEEDED, or the one before when it says
 * otherwise); no execution is left open.
 *
 * Bounded by default (`MODEL_RUNS`, 5 runs); `deno task soak` runs many more.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { type QualificationWorld, qualificationWorld } from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";
import { TERMINAL_STATUSES } from "../../broker/job_execution.ts";

const RUNS = Number(Deno.env.get("MODEL_RUNS") ?? "5");

/** What the cloud has asked for and what the device may run. */
interface Model {
  /** Minor version of the next update to create. */
  nextMinor: number;
  /** The open update, if any. */
  open: { jobId: string; minor: number } | null;
  /** Minor version and counter the device must at least run once quiet. */
  running: { minor: number; counter: number };
}

interface Real {
  readonly world: QualificationWorld;
}

/** Waits until the cloud has no open execution for the device and the device has settled. */
async function quiet(real: Real, model: Model): Promise<void> {
  const { world } = real;
  if (model.open) {
    const jobId = model.open.jobId;
    await waitUntil(
      () => {
        const status = world.execution(jobId)?.status;
        return status !== undefined && TERMINAL_STATUSES.has(status);
      },
      `${jobId} to end`,
      60_000,
    );
    const status = world.execution(jobId)!.status;
    if (status === "SUCCEEDED") {
      model.running = { minor: model.open.minor, counter: model.open.minor + 1 };
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
    real.world.cloud.jobs.cancelJob(model.open!.jobId, { force: true, reason: "model" });
    await Promise.resolve();
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

Deno.test("model: updates, disconnects, cancels and power cuts in any order leave a trusted, agreed, never-downgraded device", async () => {
  const commands = fc.commands([
    fc.constant(new NewUpdate()),
    fc.constant(new Disconnect()),
    fc.constant(new Cancel()),
    fc.record({ at: fc.integer({ min: 1, max: 120 }), torn: fc.boolean() }).map(({ at, torn }) =>
      new PowerCut(at, torn)
    ),
    fc.constant(new Check()),
  ], { maxCommands: 8 });
  await fc.assert(
    fc.asyncProperty(commands, async (cmds) => {
      const world = await qualificationWorld("MQTT");
      try {
        const model: Model = { nextMinor: 1, open: null, running: { minor: 0, counter: 1 } };
        await fc.asyncModelRun(() => ({ model, real: { world } }), cmds);
        await invariants({ world }, model);
      } catch (error) {
        console.log(world.logs.slice(-60).join("\n"));
        throw error;
      } finally {
        await world.close();
      }
    }),
    { numRuns: RUNS },
  );
});
