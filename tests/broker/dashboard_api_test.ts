/**
 * What the dashboard reads: its static files (and uPlot from the pinned package), the device
 * list of an OTA update with its filters, a thing with its reported state, a job's counts over
 * time rebuilt from the audit log.
 */
import assert from "node:assert/strict";
import { countsTimeline } from "../../broker/operator_api.ts";
import type { AuditEntry } from "../../broker/store.ts";
import { qualificationCloud } from "../helpers/qualification.ts";
import { waitUntil } from "../helpers/wait.ts";

const TOKEN = "qualification-token";

Deno.test("dashboard files: the page, its script and style, uPlot from npm; nothing else, GET only", async () => {
  const side = await qualificationCloud("MQTT");
  try {
    const base = side.cloud.files.baseUrl;
    const get = (path: string, init?: RequestInit) => fetch(`${base}${path}`, init);
    const root = await get("/dashboard", { redirect: "manual" });
    await root.body?.cancel();
    assert.equal(root.status, 302);
    assert.equal(root.headers.get("location"), "/dashboard/");
    for (
      const [path, type, marker] of [
        ["/dashboard/", "text/html", "<title>OTA rollouts</title>"],
        ["/dashboard/app.js", "text/javascript", "function updatePage"],
        ["/dashboard/app.css", "text/css", "#grid"],
        ["/dashboard/vendor/uPlot.iife.min.js", "text/javascript", "uPlot"],
        ["/dashboard/vendor/uPlot.min.css", "text/css", ".uplot"],
      ] as const
    ) {
      const response = await get(path);
      const text = await response.text();
      assert.equal(response.status, 200, path);
      assert.ok(response.headers.get("content-type")!.startsWith(type), path);
      assert.ok(text.includes(marker), `${path} lacks ${marker}`);
      assert.ok(response.headers.get("content-security-policy")?.includes("default-src 'self'"));
    }
    const missing = await get("/dashboard/../../deno.json");
    await missing.body?.cancel();
    assert.equal(missing.status, 404);
    const posted = await get("/dashboard/app.js", { method: "POST", body: "x" });
    await posted.body?.cancel();
    assert.equal(posted.status, 405);
    // The data stays behind the token.
    const unauthorized = await get("/api/ota-updates");
    await unauthorized.body?.cancel();
    assert.equal(unauthorized.status, 401);
  } finally {
    await side.close();
  }
});

Deno.test("dashboard API: an update's devices (filtered by status, version, group), a thing with its shadow, a job's timeline", async () => {
  const side = await qualificationCloud("MQTT");
  try {
    const { cloud } = side;
    await cloud.provisionThing("other", "other-secret");
    await cloud.jobs.addThingToGroup("lab", "other");
    const jobId = await side.update("listed", { version: "1.1.0", securityCounter: 2 });
    await cloud.shadows.handleUpdate(
      side.thing,
      new TextEncoder().encode(JSON.stringify({ state: { reported: { firmware: "1.0.0+0" } } })),
    );
    const api = async (path: string) => {
      const response = await fetch(`${cloud.files.baseUrl}/api${path}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      return { status: response.status, body: await response.json() };
    };
    const update = await api("/ota-updates/listed");
    assert.equal(update.body.version, "1.1.0+0");
    assert.equal(update.body.job.status, "IN_PROGRESS");
    assert.deepEqual(update.body.job.abort, []);
    const all = await api("/ota-updates/listed/devices");
    assert.deepEqual(all.body.devices, [{
      thing: side.thing,
      status: "QUEUED",
      reason: null,
      version: "1.0.0+0",
      groups: ["fleet"],
    }]);
    for (
      const [query, count] of [
        ["?status=QUEUED", 1],
        ["?status=FAILED", 0],
        ["?version=1.0.0%2B0", 1],
        ["?version=9.9.9", 0],
        ["?group=fleet", 1],
        ["?group=lab", 0],
      ] as const
    ) {
      assert.equal((await api(`/ota-updates/listed/devices${query}`)).body.devices.length, count);
    }
    assert.equal((await api("/ota-updates/nope/devices")).status, 404);

    const thing = await api(`/things/${side.thing}`);
    assert.equal(thing.body.shadow.reported.firmware, "1.0.0+0");
    assert.equal(thing.body.executions[0].jobId, jobId);
    assert.equal(thing.body.secret, undefined, "secrets never leave the cloud");
    assert.equal((await api("/things/nobody")).status, 404);

    const timeline = await api(`/jobs/${jobId}/timeline`);
    assert.equal(timeline.body.createdAt, (await cloud.store.getJob(jobId))!.createdAt);
    assert.deepEqual(timeline.body.points.at(-1).counts, { pending: 0, QUEUED: 1 });
  } finally {
    await side.close();
  }
});

Deno.test("dashboard API: a stopped rollout's unreached devices stay counted; an ended job's chart ends with it; failures grouped; executions name their update", async () => {
  const side = await qualificationCloud("MQTT");
  try {
    const { cloud } = side;
    for (const thing of ["n1", "n2", "n3"]) {
      await cloud.provisionThing(thing, `${thing}-secret-1`);
      await cloud.jobs.addThingToGroup("fleet", thing);
    }
    const jobId = await side.update("slow", {
      version: "1.1.0",
      securityCounter: 2,
      targets: { groups: ["fleet"] },
      rollout: { maximumPerMinute: 1 },
    });
    const api = async (path: string) => {
      const response = await fetch(`${cloud.files.baseUrl}/api${path}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      return { status: response.status, body: await response.json() };
    };
    await waitUntil(
      async () => (await cloud.store.executionsOfJob(jobId)).length === 1,
      "one notification",
    );
    const [first] = await cloud.store.executionsOfJob(jobId);
    const report = (status: string, reason: string) =>
      cloud.jobs.handleDeviceMessage(
        first!.thing,
        `$aws/things/${first!.thing}/jobs/${jobId}/update`,
        new TextEncoder().encode(JSON.stringify({ status, statusDetails: { reason } })),
      );
    await report("IN_PROGRESS", "downloading");
    await report("FAILED", "0x000000e3: 0x00000095");
    assert.equal((await cloud.jobs.counts(jobId)).pending, 3);
    assert.ok((await cloud.jobs.cancelJob(jobId, { reason: "stopped by a test" })).ok);

    // The three the rollout never reached are still counted, and listed.
    const counts = await cloud.jobs.counts(jobId);
    assert.equal(counts.pending, 0);
    assert.equal(counts.neverNotified, 3);
    const devices = (await api("/ota-updates/slow/devices")).body.devices;
    assert.deepEqual(
      devices.map((d: { status: string }) => d.status).sort(),
      ["FAILED", "NEVER_NOTIFIED", "NEVER_NOTIFIED", "NEVER_NOTIFIED"],
    );

    // The failure, grouped and explained.
    const failures = await api("/ota-updates/slow/failures");
    assert.equal(failures.body.failed, 1);
    assert.deepEqual(failures.body.groups, [{
      status: "FAILED",
      reason: "0x000000e3: 0x00000095",
      meaning: "signature check failed (0x95)",
      count: 1,
      example: { thing: first!.thing, detail: null },
      things: [first!.thing],
    }]);
    assert.equal((await api("/ota-updates/nope/failures")).status, 404);

    // Long after, the chart still ends where the job did: its timeline, then its event stream.
    const endedAt = (await cloud.store.getJob(jobId))!.endedAt!;
    assert.ok(endedAt >= (await cloud.store.getJob(jobId))!.createdAt);
    side.clock.advance(3_600_000);
    const timeline = (await api(`/jobs/${jobId}/timeline`)).body;
    assert.equal(timeline.endedAt, endedAt);
    assert.equal(timeline.points.at(-1).at, endedAt);
    assert.deepEqual(timeline.points.at(-1).counts, {
      pending: 0,
      neverNotified: 3,
      QUEUED: 0,
      IN_PROGRESS: 0,
      FAILED: 1,
    });
    const events = await fetch(`${cloud.files.baseUrl}/api/jobs/${jobId}/events`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const text = await events.text();
    const last = JSON.parse(/^data: (.*)$/m.exec(text.split("event: end")[1]!)![1]!);
    assert.equal(last.at, endedAt);
    assert.equal(last.counts.neverNotified, 3);

    // A device's executions name the update they belong to, for the link back to it.
    const thing = await api(`/things/${first!.thing}`);
    assert.equal(thing.body.executions[0].otaUpdateId, "slow");
  } finally {
    await side.close();
  }
});

Deno.test("countsTimeline: each execution counted once in its latest status; pending until first seen; long logs coalesced", () => {
  const entry = (at: number, thing: string, event: string, status?: string): AuditEntry => ({
    at,
    jobId: "j",
    thing,
    event,
    detail: status ? { status } : {},
  });
  const points = countsTimeline([
    entry(1, "a", "queued"),
    entry(2, "b", "queued"),
    entry(3, "a", "device-update", "IN_PROGRESS"),
    entry(4, "a", "device-update", "IN_PROGRESS"), // progress: no change of status
    entry(5, "a", "device-update", "SUCCEEDED"),
    entry(6, "b", "canceled"),
    entry(7, "b", "retry"),
    { at: 8, jobId: "j", thing: null, event: "job-completed", detail: {} },
  ], 3);
  assert.deepEqual(points.map((p) => p.at), [1, 2, 3, 5, 6]);
  assert.deepEqual(points.at(-1)!.counts, {
    pending: 1,
    QUEUED: 0,
    IN_PROGRESS: 0,
    SUCCEEDED: 1,
    CANCELED: 1,
  });
  const long = Array.from({ length: 5_000 }, (_, i) => entry(i, `t${i}`, "queued"));
  const coalesced = countsTimeline(long, 5_000);
  assert.ok(coalesced.length <= 400);
  assert.deepEqual(coalesced.at(-1)!.counts, { pending: 0, QUEUED: 5_000 });
});
