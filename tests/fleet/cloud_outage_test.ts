/**
 * A fleet run against a running cloud rides out the cloud's restart: the broker process is
 * killed with SIGKILL mid-rollout and started again two seconds later on the same data; the
 * run waits, finishes with every device accounted for, and reports the outage.
 */
import assert from "node:assert/strict";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { runFleet } from "../../fleet/run.ts";
import { freePort, startBrokerProcess } from "../../cluster/broker_process.ts";
import { waitUntil } from "../helpers/wait.ts";

const TOKEN = "outage-test-token";

Deno.test({
  name:
    "fleet against a running cloud: kill -9 of the broker mid-rollout, restarted on the same data; the run finishes",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ota-outage-" });
  const ports = { mqttPort: freePort(), httpPort: freePort() };
  const options = { dataDir, ...ports, token: TOKEN, serviceSecret: "outage-service-secret" };
  let broker = await startBrokerProcess(options);
  const lines: string[] = [];
  try {
    const run = runFleet(
      parseFleetArgs([
        "--devices",
        "12",
        "--workers",
        "1",
        "--image-size",
        "16KiB",
        "--block-size",
        "1KiB",
        "--broker",
        broker.mqtt,
        "--api",
        broker.api,
        "--token",
        TOKEN,
        "--update-id",
        "outage",
        // 6 a cloud minute, a real second at the broker's time scale: about 2 s of rollout.
        "--max-per-minute",
        "6",
        "--report",
        "/dev/null",
        "--timeout",
        "180",
      ]),
      (line) => lines.push(line),
    );
    const succeeded = async () => {
      const response = await fetch(`${broker.api}/ota-updates/outage-1-1-0`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      }).catch(() => null);
      if (!response || response.status !== 200) {
        await response?.body?.cancel();
        return 0;
      }
      return Number((await response.json()).counts?.SUCCEEDED ?? 0);
    };
    await waitUntil(async () => (await succeeded()) >= 2, "two devices to succeed", 120_000, 50);
    assert.ok((await succeeded()) < 12, "the broker is killed mid-rollout");
    await broker.kill();
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    broker = await startBrokerProcess(options);
    const report = await run;
    assert.ok(
      report.asExpected,
      JSON.stringify([report.expected, report.outcome, lines.slice(-10)]),
    );
    assert.equal(report.outcome.succeeded, 12, "every device accounted for, all updated");
    assert.deepEqual(report.runningVersion, { "1.1.0+0": 12 });
    assert.ok(report.cloudOutages.count >= 1, JSON.stringify(report.cloudOutages));
    assert.ok(report.cloudOutages.seconds >= 1.5, JSON.stringify(report.cloudOutages));
    assert.ok(lines.some((l) => /cloud: cannot reach the API/.test(l)));
  } finally {
    await broker.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
