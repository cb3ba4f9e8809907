/**
 * The fleet's HTML report in a real browser: a self-contained page (opened from a file, no
 * network) that shows the verdict, the outcome, the executions-over-time chart, stage times and
 * faults, with no page error and not blank.
 */
import assert from "node:assert/strict";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";
import { runFleet } from "../../fleet/run.ts";
import { reportHtml } from "../../fleet/report_html.ts";
import { smallFleetArgs } from "../helpers/fleet_args.ts";
import { assertNotBlank, CHROMIUM, launch, watchErrors } from "../helpers/browser.ts";

Deno.test({
  name: "fleet --report-html: the report as a page, in Chromium, from a file",
  ignore: CHROMIUM.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const report = await runFleet(
      parseFleetArgs([...smallFleetArgs(8), "--bad-image-share", "0.25", "--seed", "2"]),
      () => {},
    );
    const dir = await Deno.makeTempDir({ prefix: "ota-report-html-" });
    const browser = await launch();
    try {
      await Deno.writeTextFile(`${dir}/report.html`, reportHtml(report));
      const page = await browser.newPage();
      const errors = watchErrors(page);
      // Nothing may come from the network: the page is one file.
      const requests: string[] = [];
      page.on("request", (request) => {
        if (!request.url().startsWith("file:")) requests.push(request.url());
      });
      await page.goto(`file://${dir}/report.html`);
      await page.waitForSelector("#chart canvas");
      assert.deepEqual(errors, []);
      assert.deepEqual(requests, []);
      assert.match(await page.textContent("#verdict") ?? "", /^(as expected|NOT as expected): /);
      const outcome = await page.textContent("#outcome") ?? "";
      assert.match(outcome, new RegExp(`succeeded${report.outcome.succeeded}`));
      assert.ok((await page.$$("#stages tr")).length > 4, "a row per stage");
      assert.match(await page.textContent("#faults") ?? "", /disconnects0/);
      await assertNotBlank(page, "the HTML report");
    } finally {
      await browser.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
