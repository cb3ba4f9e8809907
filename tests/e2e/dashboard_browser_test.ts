/**
 * The rollout dashboard in a real browser (the system's Chromium, driven by playwright-core):
 * a fleet run with a share of devices whose new image crashes, watched from the page while it
 * rolls out; its failures grouped by reason; a failed device opened, its reason read and the way
 * back to its update followed; operator actions (pause, resume, cancel) clicked and seen in the
 * cloud, devices the canceled rollout never reached still counted; the token asked for and
 * checked. Screenshots must not be
 * blank.
 */
import assert from "node:assert/strict";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { runFleet } from "../../fleet/run.ts";
import { smallFleetArgs } from "../helpers/fleet_args.ts";
import { qualificationCloud } from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";
import { freePort } from "../../lib/free_port.ts";
import { assertNotBlank, CHROMIUM, launch, watchErrors } from "../helpers/browser.ts";

Deno.test({
  name:
    "dashboard in Chromium: a rollout watched to completion, failures grouped, a failed device opened, its reason read and its update linked",
  // playwright-core keeps its own pipes and timers to the browser process between calls.
  ignore: CHROMIUM.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    let dashboardUrl = "";
    const dashboardPort = freePort();
    let browserDone: () => void = () => {};
    const watched = new Promise<void>((resolve) => browserDone = resolve);
    const lines: string[] = [];
    const options = parseFleetArgs([
      ...smallFleetArgs(16),
      "--bad-image-share",
      "0.25",
      // 2 devices a cloud minute, a real second at the default time scale (60): slow enough to
      // watch, quick enough for the suite.
      "--max-per-minute",
      "2",
      "--dashboard",
      "--dashboard-port",
      String(dashboardPort),
      "--report",
      "/dev/null",
    ]);
    const run = runFleet(
      options,
      (line) => {
        lines.push(line);
        if (line.startsWith("dashboard: ")) dashboardUrl = line.slice("dashboard: ".length);
      },
      undefined,
      () => watched,
    );
    const browser = await launch();
    try {
      await waitUntil(() => dashboardUrl !== "", "the dashboard's URL");
      assert.ok(
        dashboardUrl.startsWith(`http://127.0.0.1:${dashboardPort}/dashboard/`),
        dashboardUrl,
      );
      const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
      const errors = watchErrors(page);
      await page.goto(dashboardUrl);
      await page.waitForSelector("#updates a");
      await page.click("#updates a");
      await page.waitForSelector("#ended");
      // Watch the ended count climb to the whole fleet.
      const seen: number[] = [];
      await waitUntil(
        async () => {
          const text = await page.textContent("#ended");
          const ended = Number(text?.split(" / ")[0]);
          if (seen.at(-1) !== ended) seen.push(ended);
          return text === "16 / 16";
        },
        "the page to show every device ended",
        120_000,
      );
      assert.ok(seen.length >= 2 && seen[0]! < 16, `progress seen: ${seen.join(", ")}`);
      assert.deepEqual(seen, [...seen].sort((a, b) => a - b), "the count never went back");
      await waitUntil(
        async () => (await page.textContent("h1 .badge")) === "COMPLETED",
        "the update to show COMPLETED",
      );
      assert.equal(await page.getAttribute("#grid", "data-devices"), "16");
      assert.equal(await page.textContent("[data-status=FAILED] .n"), "4");
      const chartEnd = await page.getAttribute("#chart", "data-end");
      // The failures, grouped by reason and explained.
      await waitUntil(
        async () => (await page.textContent(".failure-group .count")) === "4",
        "the 4 failures in one group",
      );
      assert.equal(await page.textContent(".failure-group .reason"), "rejected: 0x00000010");
      assert.match(
        (await page.textContent(".failure-group .meaning")) ?? "",
        /^rejected: (?!0x)\w/,
      );
      assert.equal(await page.locator(".failure-group a.failed-device").count(), 4);
      await assertNotBlank(page, "update page");
      // The grid filters by status (its device list refreshes every second: it converges on the
      // counts, which the event stream brings sooner).
      await page.selectOption("#filter-status", "FAILED");
      await waitUntil(
        async () => (await page.getAttribute("#grid", "data-devices")) === "4",
        "the grid to show the 4 failed devices",
      );
      // Open a failed device and read why it failed.
      await page.click("a.failed-device");
      await page.waitForSelector("#executions .reason");
      assert.equal(await page.textContent("#executions .reason"), "rejected: 0x00000010");
      assert.equal(await page.textContent("#firmware"), "1.0.0+0");
      // The device downloaded the image it then reverted: its agent's counters say so.
      assert.match(
        await page.textContent("#agent-stats") ?? "",
        /^[1-9]\d* of [1-9]\d* blocks processed, \d+ dropped$/,
      );
      assert.equal(await page.textContent("#bootloader"), "2.0.0+0 in slot A");
      assert.match((await page.textContent("#boot-log")) ?? "", /revert/);
      await assertNotBlank(page, "device page");
      // Back to the update from the device; its chart still ends where the job did, though the
      // cloud's clock (60 times real time) has moved on since.
      await page.click("a.update-link");
      await page.waitForSelector("#chart[data-end]");
      assert.equal(await page.textContent("h1 .badge"), "COMPLETED");
      assert.equal(await page.getAttribute("#chart", "data-end"), chartEnd);
      assert.deepEqual(errors, []);
    } finally {
      browserDone();
      await browser.close();
    }
    const report = await run;
    assert.ok(report.asExpected, lines.slice(-20).join("\n"));
  },
});

Deno.test({
  name:
    "dashboard in Chromium: the token is asked for and checked; pause, resume and cancel act on the job; never-notified devices counted",
  ignore: CHROMIUM.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // A cloud whose one target never connects: the job stays in progress for the buttons.
    // A second target the rollout (1 a minute) does not reach before the cancel.
    const side = await qualificationCloud("MQTT");
    await side.cloud.provisionThing("late", "late-secret-1");
    await side.cloud.jobs.addThingToGroup("fleet", "late");
    const browser = await launch();
    try {
      const jobId = await side.update("held", {
        version: "1.1.0",
        securityCounter: 2,
        targets: { groups: ["fleet"] },
        rollout: { maximumPerMinute: 1 },
      });
      const job = async () => (await side.cloud.store.getJob(jobId))?.status;
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const errors = watchErrors(page);
      await page.goto(`${side.cloud.files.baseUrl}/dashboard/`);
      await page.waitForSelector("#login:not([hidden])");
      await page.fill("#token", "not-the-token");
      await page.click("#login button");
      await page.waitForSelector("#login:not([hidden])");
      assert.match(
        (await page.textContent("#login-error")) ?? "",
        /wrong or revoked operator token/,
      );
      await page.fill("#token", "qualification-token");
      await page.click("#login button");
      await page.click("#updates a");
      await page.waitForSelector("#pause:not([disabled])");
      await page.click("#pause");
      await waitUntil(async () => (await job()) === "PAUSED", "the job to pause");
      await page.waitForSelector("#resume:not([disabled])");
      await page.click("#resume");
      await waitUntil(async () => (await job()) === "IN_PROGRESS", "the job to resume");
      await page.waitForSelector("#cancel:not([disabled])");
      await page.click("#cancel");
      await page.click("#cancel-confirm");
      await waitUntil(async () => (await job()) === "CANCELED", "the job to be canceled");
      await waitUntil(
        async () => (await page.textContent("h1 .badge")) === "CANCELED",
        "the page to show CANCELED",
      );
      assert.ok(await page.isDisabled("#cancel"));
      // The device the rollout never reached is still counted.
      await waitUntil(
        async () => (await page.textContent("[data-status=NEVER_NOTIFIED] .n")) === "1",
        "the never-notified device counted",
      );
      assert.equal(await page.textContent("#ended"), "2 / 2");
      await assertNotBlank(page, "canceled update");
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await side.close();
    }
  },
});

Deno.test({
  name:
    "dashboard in Chromium: a viewer's token shows who and the update, without pause, resume or cancel",
  ignore: CHROMIUM.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const side = await qualificationCloud("MQTT");
    const browser = await launch();
    try {
      await side.update("watched", { version: "1.1.0", securityCounter: 2 });
      const made = await fetch(`${side.cloud.files.baseUrl}/api/tokens`, {
        method: "POST",
        headers: { authorization: "Bearer qualification-token" },
        body: JSON.stringify({ name: "vera", role: "viewer" }),
      });
      const { token } = await made.json();
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const errors = watchErrors(page);
      await page.goto(`${side.cloud.files.baseUrl}/dashboard/#token=${token}`);
      await page.click("#updates a");
      await page.waitForSelector("h1 .badge");
      assert.equal(await page.textContent("#who"), "vera (viewer)");
      assert.equal(await page.$("#pause"), null);
      assert.equal(await page.$("#resume"), null);
      assert.equal(await page.$("#cancel"), null);
      await assertNotBlank(page, "a viewer's update page");
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await side.close();
    }
  },
});
