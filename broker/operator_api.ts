/**
 * The operator HTTP API: bearer-token authentication with roles (operator_tokens.ts,
 * operator_roles.ts; device credentials do not work here), things and groups, jobs (create, list,
 * describe, cancel, pause, resume), executions by status, per-device history with every
 * statusDetails and reason, progress counts, stream upload, and the operators' own tokens.
 *
 * @module
 */

import type { Cloud } from "./cloud.ts";
import { OperatorTokens } from "./operator_tokens.ts";
import { allows, requiredRole } from "./operator_roles.ts";
import { actingAs } from "./operator_context.ts";
import type { OperatorIdentity } from "./operator_tokens.ts";
import { EXECUTION_STATUSES, type ExecutionStatus } from "./job_execution.ts";
import type { AuditEntry } from "./store.ts";
import type { JobSpec } from "./job_spec.ts";
import { serveDashboard } from "./dashboard.ts";
import { mqttOverWebSocket } from "./websocket.ts";
import { parseCertificate } from "../protocol/certificates.ts";
import { prometheusText } from "./metrics.ts";
import { FAILURE_STATUSES, groupFailures } from "./failure_groups.ts";
import { clockScale } from "../lib/clock.ts";

/** Largest JSON body accepted. */
const MAX_JSON_BODY = 1024 * 1024;
/** Largest stream file accepted. */
const MAX_FILE_BODY = 16 * 1024 * 1024;
const NAME = /^[a-zA-Z0-9:_-]{1,128}$/;

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body, null, 2), {
    status,
    headers: { "content-type": "application/json" },
  });
const problem = (status: number, error: string) => json(status, { error });

export { bearerToken } from "./operator_tokens.ts";

/**
 * Reads a request body of at most `limit` bytes, counting as it reads: a chunked body (no
 * Content-Length) that goes past the limit is cut off there, so one request cannot make the
 * broker hold more than the limit.
 */
export async function readBody(request: Request, limit: number): Promise<Uint8Array | Response> {
  const tooLarge = () => problem(413, `body larger than ${limit} bytes`);
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > limit) {
    await request.body?.cancel();
    return tooLarge();
  }
  if (!request.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel();
      return tooLarge();
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.length;
  }
  return body;
}

/** The path's segments after `/api`, percent-decoded; null when an escape is malformed. */
export function pathSegments(pathname: string): string[] | null {
  try {
    return pathname.split("/").slice(2).map(decodeURIComponent);
  } catch {
    return null;
  }
}

async function readJson(request: Request): Promise<Record<string, unknown> | Response> {
  const body = await readBody(request, MAX_JSON_BODY);
  if (body instanceof Response) return body;
  try {
    const value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return problem(400, "body must be a JSON object");
    }
    return value;
  } catch (error) {
    return problem(400, `body is not JSON: ${(error as Error).message}`);
  }
}

/**
 * Builds the request handler.
 *
 * @example
 * ```ts ignore
 * Deno.serve({ port: 8080 }, operatorApi(cloud, { token: "s3cret" }));
 * ```
 */
export function operatorApi(
  cloud: Cloud,
  options: { token: string },
): (request: Request) => Promise<Response> {
  if (options.token.length < 8) {
    throw new RangeError(
      "Cannot serve the operator API: the token must have at least 8 characters",
    );
  }
  const tokens = new OperatorTokens(cloud.store, options.token, () => cloud.clock.now());
  return async (request) => {
    const url = new URL(request.url);
    // Pre-signed file URLs carry their own authorization (HMAC + expiry), not the operator token.
    if (url.pathname.startsWith("/files/")) return cloud.files.handle(request);
    if (url.pathname === "/mqtt" && cloud.broker) {
      return mqttOverWebSocket(cloud.broker.broker, request);
    }
    // Liveness and readiness, for a load balancer or an orchestrator: no token, no secrets.
    // /livez answers from the event loop alone (a node waiting on a busy database is alive);
    // /healthz also asks the store.
    if (url.pathname === "/livez" && request.method === "GET") {
      return Response.json({ status: "alive" });
    }
    if (url.pathname === "/healthz" && request.method === "GET") return await health(cloud);
    // Counters for a Prometheus scraper: no token, nothing secret in them.
    if (url.pathname === "/metrics" && request.method === "GET") {
      return new Response(await prometheusText(cloud), {
        headers: { "content-type": "text/plain; version=0.0.4" },
      });
    }
    const page = serveDashboard(request);
    if (page) return page;
    if (!url.pathname.startsWith("/api/")) return problem(404, "not found");
    let operator: OperatorIdentity | null;
    try {
      operator = await tokens.authenticate(request.headers.get("authorization"));
    } catch (error) {
      await request.body?.cancel();
      return problem(503, `cannot check the token: ${(error as Error).message}`);
    }
    if (!operator) {
      await request.body?.cancel();
      return problem(401, "missing, wrong or revoked operator token");
    }
    const parts = pathSegments(url.pathname) ?? [];
    const needed = requiredRole(request.method, parts);
    if (!allows(operator.role, needed)) {
      await request.body?.cancel();
      return problem(
        403,
        `${operator.name} is a ${operator.role}: ${request.method} ${url.pathname} needs ${needed}`,
      );
    }
    try {
      const response = await actingAs(
        operator.name,
        () => tokensRoute(tokens, operator, request, url) ?? route(cloud, request, url),
      );
      if (request.method !== "GET" && request.method !== "HEAD" && response.status < 400) {
        // Every change an operator makes, with who made it (a device's page shows those to it).
        await cloud.store.audit({
          at: cloud.clock.now(),
          jobId: parts[0] === "jobs" ? parts[1] ?? null : null,
          thing: parts[0] === "things" ? parts[1] ?? null : null,
          event: "operator-request",
          detail: {
            operator: operator.name,
            role: operator.role,
            method: request.method,
            path: url.pathname,
            status: response.status,
          },
        });
      }
      // A change is reported done only once it is on disk (writes commit in groups).
      await cloud.store.committed();
      return response;
    } catch (error) {
      return problem(500, `internal error: ${(error as Error).message}`);
    }
  };
}

/** `/api/whoami` and `/api/tokens[/ID]`; null for any other path. */
function tokensRoute(
  tokens: OperatorTokens,
  operator: OperatorIdentity,
  request: Request,
  url: URL,
): Promise<Response> | null {
  const parts = pathSegments(url.pathname) ?? [];
  const [resource, id] = parts;
  const method = request.method;
  if (resource === "whoami" && parts.length === 1 && method === "GET") {
    return Promise.resolve(json(200, { name: operator.name, role: operator.role }));
  }
  if (resource !== "tokens") return null;
  return (async () => {
    if (parts.length === 1 && method === "GET") return json(200, await tokens.list());
    if (parts.length === 1 && method === "POST") {
      const body = await readJson(request);
      if (body instanceof Response) return body;
      const made = await tokens.create({ name: body.name, role: body.role }, operator.name);
      if (!made.ok) return problem(400, made.reason);
      return json(201, made.value);
    }
    if (id && parts.length === 2 && method === "DELETE") {
      if (!(await tokens.revoke(id, operator.name))) {
        return problem(404, `no token '${id}' to revoke`);
      }
      return json(200, { id, revoked: true });
    }
    return problem(404, "not found");
  })();
}

/** 200 when the store answers, 503 saying why not; which broker the services run on. */
async function health(cloud: Cloud): Promise<Response> {
  let store = "ok";
  try {
    await cloud.store.check();
  } catch (error) {
    store = `failing: ${(error as Error).message}`;
  }
  const ok = store === "ok";
  return json(ok ? 200 : 503, {
    status: ok ? "ok" : "unavailable",
    store,
    broker: cloud.broker !== null ? "embedded" : "external",
    // Whether this process runs the rollout scheduler (in a cluster, exactly one node does).
    scheduler: cloud.jobs.scheduling,
    // The cloud's clock (times in records are on it) and how much faster than real time it runs.
    clock: { now: cloud.clock.now(), scale: clockScale(cloud.clock) },
  });
}

async function route(cloud: Cloud, request: Request, url: URL): Promise<Response> {
  const parts = pathSegments(url.pathname);
  if (parts === null) return problem(400, "malformed percent-escape in the path");
  const method = request.method;
  const { store, jobs } = cloud;
  const [resource, id, sub, subId] = parts;
  if (resource === "things" && parts.length === 1 && method === "GET") {
    const things = [];
    for (const t of await store.listThings()) {
      things.push({ name: t.name, attributes: t.attributes, groups: await store.groupsOf(t.name) });
    }
    return json(200, things);
  }
  if (resource === "things" && id && parts.length === 2 && method === "GET") {
    const thing = await store.getThing(id);
    if (!thing) return problem(404, `no thing '${id}'`);
    // Each execution names its OTA update (if it belongs to one), so a device links back to it.
    const updateOfJob = new Map(
      (await cloud.otaUpdates.list()).map((u) => [u.jobId, u.otaUpdateId]),
    );
    return json(200, {
      name: thing.name,
      attributes: thing.attributes,
      groups: await store.groupsOf(id),
      shadow: await cloud.shadows.get(id),
      executions: (await store.executionsOfThing(id)).map((e) => ({
        ...e,
        otaUpdateId: updateOfJob.get(e.jobId) ?? null,
      })),
    });
  }
  if (resource === "things" && id && parts.length === 2 && method === "PUT") {
    if (!NAME.test(id)) {
      return problem(400, "thing name must be 1..128 characters of [a-zA-Z0-9:_-]");
    }
    const body = await readJson(request);
    if (body instanceof Response) return body;
    if (body.generateSecret !== undefined && body.generateSecret !== true) {
      return problem(400, "generateSecret must be true when given");
    }
    const generate = body.generateSecret === true;
    if (generate && body.secret !== undefined) {
      return problem(400, "give either secret or generateSecret, not both");
    }
    if (!generate && (typeof body.secret !== "string" || body.secret.length < 8)) {
      return problem(400, "secret must be a string of at least 8 characters");
    }
    const groups = body.groups ?? [];
    if (!Array.isArray(groups) || !groups.every((g) => typeof g === "string" && NAME.test(g))) {
      return problem(400, "groups must be an array of names of [a-zA-Z0-9:_-]");
    }
    const attributes = body.attributes ?? {};
    if (
      typeof attributes !== "object" || attributes === null || Array.isArray(attributes) ||
      !Object.values(attributes).every((v) => typeof v === "string")
    ) {
      return problem(400, "attributes must be an object of strings");
    }
    const secret = await cloud.provisionThing(
      id,
      generate ? null : body.secret as string,
      attributes as Record<string, string>,
    );
    for (const group of groups as string[]) await jobs.addThingToGroup(group, id);
    // A generated secret is shown this once; the cloud keeps only its hash.
    return json(201, {
      name: id,
      groups: await store.groupsOf(id),
      ...(generate ? { secret } : {}),
    });
  }
  if (resource === "things" && id && parts.length === 2 && method === "DELETE") {
    return (await cloud.removeThing(id))
      ? json(200, { name: id, removed: true })
      : problem(404, `no thing '${id}'`);
  }
  if (resource === "things" && id && sub === "certificate" && parts.length === 3) {
    if (method === "GET") {
      const registered = await store.getRecord("device-certificate", id);
      return registered ? json(200, registered) : problem(404, `no certificate for '${id}'`);
    }
    if (method === "PUT") {
      // Provisioning or re-provisioning a device identity: the new certificate replaces the old.
      const body = await readJson(request);
      if (body instanceof Response) return body;
      if (typeof body.certificatePem !== "string") {
        return problem(400, "certificatePem must be a PEM certificate");
      }
      const registered = await cloud.registerDeviceCertificate(id, body.certificatePem);
      if (!registered.ok) {
        return problem((await store.getThing(id)) ? 400 : 404, registered.reason);
      }
      return json(200, registered.value);
    }
  }
  if (resource === "things" && id && sub === "history" && method === "GET") {
    return json(200, {
      thing: id,
      executions: await store.executionsOfThing(id),
      history: await store.history({ thing: id }),
    });
  }
  if (resource === "groups" && id && sub === "things" && subId && parts.length === 4) {
    if (!NAME.test(id) || !NAME.test(subId)) {
      return problem(400, "group and thing names must be 1..128 characters of [a-zA-Z0-9:_-]");
    }
    if (method === "PUT") {
      await jobs.addThingToGroup(id, subId);
      return json(200, { group: id, things: await store.groupMembers(id) });
    }
    if (method === "DELETE") {
      await jobs.removeThingFromGroup(id, subId);
      return json(200, { group: id, things: await store.groupMembers(id) });
    }
  }
  if (resource === "groups" && parts.length === 1 && method === "GET") {
    return json(200, await store.listGroups());
  }
  if (resource === "groups" && id && parts.length === 2 && method === "GET") {
    return json(200, { group: id, things: await store.groupMembers(id) });
  }
  if (resource === "jobs" && parts.length === 1 && method === "POST") {
    const body = await readJson(request);
    if (body instanceof Response) return body;
    const created = await jobs.createJob(body as unknown as JobSpec);
    return created.ok
      ? json(201, { ...created.value, counts: await jobs.counts(created.value.jobId) })
      : problem(400, created.reason);
  }
  if (resource === "jobs" && parts.length === 1 && method === "GET") {
    const listed = [];
    for (const job of await store.listJobs()) {
      listed.push({
        jobId: job.jobId,
        status: job.status,
        reason: job.reason,
        createdAt: job.createdAt,
        counts: await jobs.counts(job.jobId),
      });
    }
    return json(200, listed);
  }
  if (resource === "jobs" && id && parts.length === 2 && method === "GET") {
    const job = await store.getJob(id);
    return job
      ? json(200, { ...job, pending: job.pending.length, counts: await jobs.counts(id) })
      : problem(404, `no job '${id}'`);
  }
  if (resource === "jobs" && id && sub === "timeline" && method === "GET") {
    const job = await store.getJob(id);
    if (!job) return problem(404, `no job '${id}'`);
    const targets = new Set([
      ...(await store.executionsOfJob(id)).map((e) => e.thing),
      ...job.pending,
      ...(job.neverNotified ?? []),
    ]);
    const points = countsTimeline(await store.history({ jobId: id }), targets.size);
    // The chart of an ended job ends with it, not at the moment someone looks at it.
    if (job.endedAt !== undefined && points.length > 0) {
      points.push({ at: job.endedAt, counts: { ...points.at(-1)!.counts } });
    }
    return json(200, {
      jobId: id,
      createdAt: job.createdAt,
      endedAt: job.endedAt ?? null,
      points,
    });
  }
  if (resource === "jobs" && id && sub === "events" && method === "GET") {
    if (!(await store.getJob(id))) return problem(404, `no job '${id}'`);
    return progressStream(cloud, id);
  }
  if (resource === "jobs" && id && sub === "executions" && method === "GET") {
    const status = url.searchParams.get("status");
    if (status !== null && !(EXECUTION_STATUSES as readonly string[]).includes(status)) {
      return problem(400, `unknown status '${status}'`);
    }
    if (!(await store.getJob(id))) return problem(404, `no job '${id}'`);
    const executions = (await store.executionsOfJob(id)).filter((e) =>
      status === null || e.status === (status as ExecutionStatus)
    );
    return json(200, executions);
  }
  if (
    resource === "jobs" && id && (sub === "cancel" || sub === "pause" || sub === "resume") &&
    method === "POST"
  ) {
    // The body is optional here (`curl -X POST .../pause` is enough).
    const body = request.headers.get("content-length") === "0" || !request.body
      ? {}
      : await readJson(request);
    if (body instanceof Response) return body;
    const result = await (sub === "cancel"
      ? jobs.cancelJob(id, {
        force: body.force === true,
        ...(typeof body.reason === "string" ? { reason: body.reason } : {}),
      })
      : sub === "pause"
      ? jobs.pauseJob(id)
      : jobs.resumeJob(id));
    return result.ok
      ? json(200, {
        jobId: id,
        status: (await store.getJob(id))?.status,
        counts: await jobs.counts(id),
      })
      : problem(409, result.reason);
  }
  if (resource === "signing-profiles" && parts.length === 1 && method === "GET") {
    // Names and certificates only: a profile's private key never leaves the cloud.
    return json(
      200,
      (await store.listRecords<{ name: string; certificatePem: string }>("signing-profile")).map(
        (p) => {
          const cert = parseCertificate(p.certificatePem);
          return {
            name: p.name,
            subject: cert.ok ? cert.value.subject : null,
            issuer: cert.ok ? cert.value.issuer : null,
            notAfter: cert.ok ? cert.value.notAfter.toISOString() : null,
          };
        },
      ),
    );
  }
  if (resource === "signing-profiles" && parts.length === 1 && method === "POST") {
    const body = await readJson(request);
    if (body instanceof Response) return body;
    const created = await cloud.otaUpdates.createSigningProfile(body as never);
    return created.ok ? json(201, created.value) : problem(400, created.reason);
  }
  if (resource === "ota-updates" && parts.length === 1 && method === "POST") {
    const body = await readBody(request, MAX_FILE_BODY * 2);
    if (body instanceof Response) return body;
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder().decode(body));
    } catch (error) {
      return problem(400, `body is not JSON: ${(error as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      return problem(400, "body must be a JSON object");
    }
    const created = await cloud.otaUpdates.createOtaUpdate(parsed as never);
    return created.ok
      ? json(201, await cloud.otaUpdates.describe(created.value.otaUpdateId))
      : problem(400, created.reason);
  }
  if (resource === "ota-updates" && parts.length === 1 && method === "GET") {
    const updates = [];
    for (const u of await cloud.otaUpdates.list()) {
      updates.push(await cloud.otaUpdates.describe(u.otaUpdateId));
    }
    return json(200, updates);
  }
  if (resource === "ota-updates" && id && parts.length === 2 && method === "GET") {
    const update = await cloud.otaUpdates.describe(id);
    if (!update) return problem(404, `no OTA update '${id}'`);
    const job = await store.getJob(update.jobId);
    const spec = (job?.spec ?? {}) as Partial<JobSpec>;
    return json(200, {
      ...update,
      job: {
        status: job?.status,
        reason: job?.reason ?? null,
        createdAt: job?.createdAt,
        targets: spec.targets,
        rollout: spec.rollout ?? null,
        abort: spec.abort ?? [],
        timeout: spec.timeout ?? null,
        retry: spec.retry ?? [],
        healthGate: spec.healthGate ?? null,
        pending: job?.pending.length ?? 0,
        notified: job?.notifiedAt.length ?? 0,
      },
    });
  }
  if (resource === "ota-updates" && id && sub === "devices" && method === "GET") {
    const update = await cloud.otaUpdates.describe(id);
    if (!update) return problem(404, `no OTA update '${id}'`);
    const shadows = await cloud.shadows.all();
    const filter = {
      status: url.searchParams.get("status"),
      version: url.searchParams.get("version"),
      group: url.searchParams.get("group"),
    };
    const executions = new Map(
      (await store.executionsOfJob(update.jobId)).map((e) => [e.thing, e]),
    );
    const job = await store.getJob(update.jobId);
    // Every target: those with an execution, those the rollout has not reached yet and those
    // it never will (it stopped first).
    const neverNotified = new Set(job?.neverNotified ?? []);
    const things = [
      ...executions.keys(),
      ...[...(job?.pending ?? []), ...neverNotified].filter((t) => !executions.has(t)),
    ];
    const listed = [];
    for (const thing of things) {
      const execution = executions.get(thing);
      const firmware = shadows.get(thing)?.reported.firmware;
      listed.push({
        thing,
        status: execution?.status ?? (neverNotified.has(thing) ? "NEVER_NOTIFIED" : "PENDING"),
        reason: execution?.statusDetails.reason ?? null,
        version: typeof firmware === "string" ? firmware : null,
        groups: await store.groupsOf(thing),
      });
    }
    const devices = listed.filter((d) =>
      (filter.status === null || d.status === filter.status) &&
      (filter.version === null || d.version === filter.version) &&
      (filter.group === null || d.groups.includes(filter.group))
    );
    return json(200, { otaUpdateId: id, jobId: update.jobId, devices });
  }
  if (resource === "ota-updates" && id && sub === "failures" && method === "GET") {
    const update = await cloud.otaUpdates.describe(id);
    if (!update) return problem(404, `no OTA update '${id}'`);
    const failed = (await store.executionsOfJob(update.jobId)).filter((e) =>
      (FAILURE_STATUSES as readonly string[]).includes(e.status)
    );
    return json(200, {
      otaUpdateId: id,
      jobId: update.jobId,
      failed: failed.length,
      groups: groupFailures(failed),
    });
  }
  if (resource === "streams" && id && parts.length === 2 && method === "PUT") {
    if (!/^[a-zA-Z0-9_-]{1,128}$/.test(id)) {
      return problem(400, "stream id must be 1..128 characters of [a-zA-Z0-9_-]");
    }
    const fileId = Number(url.searchParams.get("fileId") ?? "0");
    if (!Number.isInteger(fileId) || fileId < 0 || fileId > 255) {
      return problem(400, "fileId must be 0..255");
    }
    const body = await readBody(request, MAX_FILE_BODY);
    if (body instanceof Response) return body;
    if (body.length === 0) return problem(400, "empty file");
    cloud.streams.addStream(id, new Map([[fileId, body]]));
    return json(201, { streamId: id, fileId, size: body.length });
  }
  return problem(404, `no route for ${method} ${url.pathname}`);
}

/** Coalescing delay between progress events of one job. */
const PROGRESS_INTERVAL_MS = 200;

/**
 * Server-sent events: `progress` with the job's status and counts, at once and then after
 * changes (at most every 200 ms); `end` when the job completes or is canceled.
 */
function progressStream(cloud: Cloud, jobId: string): Response {
  const encoder = new TextEncoder();
  let unsubscribe = () => {};
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      const close = () => {
        closed = true;
        unsubscribe();
        if (timer !== undefined) clearTimeout(timer);
        controller.close();
      };
      const send = async () => {
        const job = await cloud.store.getJob(jobId);
        const body = {
          jobId,
          at: job?.endedAt ?? cloud.clock.now(),
          status: job?.status,
          reason: job?.reason ?? null,
          counts: await cloud.jobs.counts(jobId),
        };
        timer = undefined;
        if (closed) return;
        controller.enqueue(encoder.encode(`event: progress\ndata: ${JSON.stringify(body)}\n\n`));
        if (job?.status === "COMPLETED" || job?.status === "CANCELED") {
          controller.enqueue(encoder.encode(`event: end\ndata: ${JSON.stringify(body)}\n\n`));
          close();
        }
      };
      const sendOrEnd = () => {
        send().catch((error) => {
          if (closed) return;
          const line = JSON.stringify({ jobId, error: (error as Error).message });
          controller.enqueue(encoder.encode(`event: error\ndata: ${line}\n\n`));
          close();
        });
      };
      unsubscribe = cloud.onJobChange((changed) => {
        if (changed === jobId && timer === undefined && !closed) {
          timer = setTimeout(sendOrEnd, PROGRESS_INTERVAL_MS);
        }
      });
      sendOrEnd();
    },
    cancel() {
      closed = true;
      unsubscribe();
      if (timer !== undefined) clearTimeout(timer);
    },
  });
  return new Response(stream, {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
  });
}

/** Most points a timeline returns (samples are coalesced to this many). */
const TIMELINE_POINTS = 400;

/**
 * Per-status counts over time, rebuilt from a job's audit log (each execution's status after
 * every event), so a chart opened mid-rollout or afterwards starts from the whole history.
 * `pending` is the targets no event has reached yet, `neverNotified` those a stopped rollout
 * left behind.
 */
export function countsTimeline(
  entries: readonly AuditEntry[],
  targets: number,
): { at: number; counts: Record<string, number> }[] {
  const status = new Map<string, string>();
  const counts: Record<string, number> = { pending: targets };
  const points: { at: number; counts: Record<string, number> }[] = [];
  for (const entry of entries) {
    if (!entry.thing) {
      // A stopped rollout leaves the targets it had not reached never notified.
      if (entry.event === "job-canceled" || entry.event === "rollout-stopped") {
        counts.neverNotified = (counts.neverNotified ?? 0) + (counts.pending ?? 0);
        counts.pending = 0;
        points.push({ at: entry.at, counts: { ...counts } });
      }
      continue;
    }
    const next = entry.event === "queued"
      ? "QUEUED"
      : entry.event === "device-update"
      ? String(entry.detail.status ?? "")
      : entry.event.toUpperCase();
    if (!(EXECUTION_STATUSES as readonly string[]).includes(next)) continue;
    const previous = status.get(entry.thing);
    if (previous === next) continue;
    if (previous) counts[previous] = (counts[previous] ?? 0) - 1;
    else counts.pending = Math.max(0, (counts.pending ?? 0) - 1);
    counts[next] = (counts[next] ?? 0) + 1;
    status.set(entry.thing, next);
    points.push({ at: entry.at, counts: { ...counts } });
  }
  if (points.length <= TIMELINE_POINTS) return points;
  // Keep the last point of each of TIMELINE_POINTS equal time buckets.
  const first = points[0]!.at;
  const span = Math.max(1, points.at(-1)!.at - first);
  const buckets = new Map<number, { at: number; counts: Record<string, number> }>();
  for (const point of points) {
    buckets.set(
      Math.min(TIMELINE_POINTS - 1, Math.floor(((point.at - first) / span) * TIMELINE_POINTS)),
      point,
    );
  }
  return [...buckets.values()];
}
