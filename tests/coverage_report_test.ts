/** The coverage report's arithmetic: lcov parsing and per-component floors. */
import assert from "node:assert/strict";
import { byComponent, dropUnreadable, parseLcov } from "./coverage_report.ts";

Deno.test("coverage report: lcov records are summed per component and held to their floors", () => {
  const lcov = [
    "TN:",
    "SF:/repo/bootloader/flash.ts",
    "DA:1,1",
    "LF:100",
    "LH:95",
    "end_of_record",
    "SF:/repo/agent/agent.ts",
    "LF:200",
    "LH:180",
    "end_of_record",
    "SF:/repo/broker/job_service.ts",
    "LF:50",
    "LH:40",
    "end_of_record",
    "SF:/repo/broker/store.ts",
    "LF:50",
    "LH:50",
    "end_of_record",
  ].join("\n");
  const files = parseLcov(lcov);
  assert.equal(files.length, 4);
  const rows = Object.fromEntries(byComponent(files).map((r) => [r.name, r]));
  assert.deepEqual(rows["bootloader"], { name: "bootloader", percent: 95, floor: 90, ok: true });
  assert.equal(rows["agent"]!.ok, false, "90% is not above 90%");
  assert.equal(rows["job service"]!.percent, 80);
  assert.equal(rows["job service"]!.ok, false);
  assert.equal(rows["broker (all)"]!.percent, 90);
  assert.equal(rows["broker (all)"]!.ok, false, "90% is not above 90%");
  assert.equal(rows["fleet"]!.percent, 0, "no files, no coverage");
  assert.equal(rows["fleet"]!.ok, false, "a component that ran nothing fails its floor");
  assert.equal(rows["pki"]!.ok, true, "reported only");
});

Deno.test("coverage report: raw files a killed process left unfinished are left out, whole ones kept", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/whole.json`, JSON.stringify({ result: [] }));
    await Deno.writeTextFile(`${dir}/empty.json`, "");
    await Deno.writeTextFile(`${dir}/cut.json`, '{"result": [');
    await Deno.writeTextFile(`${dir}/notes.txt`, "not coverage");
    assert.equal(await dropUnreadable(dir), 2);
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(left, ["notes.txt", "whole.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
