/**
 * Operator identities with roles: tokens made, listed and revoked through the API; every API route
 * enforces its role (viewer reads, operator changes updates, admin the rest); every change names
 * who made it in the audit log.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { startCloud } from "../../broker/cloud.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import {
  allows,
  OPERATOR_ROLES,
  type OperatorRole,
  requiredRole,
} from "../../broker/operator_roles.ts";
import { releaseProfile, releaseRequest } from "../helpers/pki.ts";

const BOOTSTRAP = "bootstrap-token-1";

async function world() {
  const cloud = await startCloud();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    operatorApi(cloud, { token: BOOTSTRAP }),
  );
  const base = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/api`;
  const call = async (token: string, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}` },
      ...(body !== undefined && method !== "GET" ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch { /* not JSON */ }
    return { status: response.status, body: parsed as Record<string, unknown> };
  };
  const tokenFor = async (name: string, role: OperatorRole) => {
    const made = await call(BOOTSTRAP, "POST", "/tokens", { name, role });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    return made.body.token as string;
  };
  return {
    cloud,
    call,
    tokenFor,
    async close() {
      await server.shutdown();
      await cloud.close();
    },
  };
}

Deno.test("requiredRole: reads are a viewer's (but tokens, an admin's), changes to updates an operator's, every other change an admin's", () => {
  assert.equal(requiredRole("GET", ["jobs", "j1"]), "viewer");
  assert.equal(requiredRole("GET", ["tokens"]), "admin");
  assert.equal(requiredRole("POST", ["ota-updates"]), "operator");
  assert.equal(requiredRole("POST", ["jobs", "j1", "pause"]), "operator");
  assert.equal(requiredRole("PUT", ["streams", "s"]), "operator");
  assert.equal(requiredRole("PUT", ["things", "t"]), "admin");
  assert.equal(requiredRole("POST", ["signing-profiles"]), "admin");
  assert.equal(requiredRole("DELETE", ["tokens", "x"]), "admin");
  assert.equal(requiredRole("POST", ["something-new"]), "admin", "unknown changes: the strictest");
  fc.assert(
    fc.property(
      fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"),
      fc.array(fc.string(), { maxLength: 4 }),
      (method, parts) => {
        const needed = requiredRole(method, parts);
        // Each role may do what the ones below it may.
        for (const [i, role] of OPERATOR_ROLES.entries()) {
          for (const stronger of OPERATOR_ROLES.slice(i)) {
            if (allows(role, needed)) assert.ok(allows(stronger, needed));
          }
        }
        assert.ok(allows("admin", needed), "an admin may do anything");
        if (method !== "GET") assert.notEqual(needed, "viewer", "a viewer changes nothing");
      },
    ),
  );
});

/** Every route of the API, with a body where it needs one (the role check comes first). */
const ROUTES: [string, string][] = [
  ["GET", "/things"],
  ["GET", "/things/dev-1"],
  ["PUT", "/things/dev-9"],
  ["DELETE", "/things/dev-9"],
  ["PUT", "/things/dev-1/certificate"],
  ["GET", "/things/dev-1/history"],
  ["PUT", "/groups/fleet/things/dev-1"],
  ["DELETE", "/groups/fleet/things/dev-1"],
  ["GET", "/groups"],
  ["GET", "/groups/fleet"],
  ["POST", "/jobs"],
  ["GET", "/jobs"],
  ["GET", "/jobs/j1"],
  ["GET", "/jobs/j1/timeline"],
  ["GET", "/jobs/j1/executions"],
  ["POST", "/jobs/j1/cancel"],
  ["POST", "/jobs/j1/pause"],
  ["POST", "/jobs/j1/resume"],
  ["GET", "/signing-profiles"],
  ["POST", "/signing-profiles"],
  ["POST", "/ota-updates"],
  ["GET", "/ota-updates"],
  ["GET", "/ota-updates/u1"],
  ["GET", "/ota-updates/u1/devices"],
  ["GET", "/ota-updates/u1/failures"],
  ["PUT", "/streams/s1"],
  ["GET", "/tokens"],
  ["POST", "/tokens"],
  ["DELETE", "/tokens/0123456789abcdef"],
  ["GET", "/whoami"],
];

Deno.test("operator API: every route refuses a role below the one it needs (403, saying who and what) and lets the others through", async () => {
  const w = await world();
  try {
    const tokens = {
      viewer: await w.tokenFor("vera", "viewer"),
      operator: await w.tokenFor("otto", "operator"),
      admin: await w.tokenFor("ada", "admin"),
    };
    for (const [method, path] of ROUTES) {
      const needed = requiredRole(method, path.split("/").slice(1));
      for (const role of OPERATOR_ROLES) {
        const { status, body } = await w.call(tokens[role], method, path, {});
        const where = `${role} ${method} ${path}`;
        assert.notEqual(status, 401, where);
        if (allows(role, needed)) {
          assert.notEqual(status, 403, `${where}: ${JSON.stringify(body)}`);
        } else {
          assert.equal(status, 403, where);
          assert.match(
            String(body.error),
            new RegExp(`is a ${role}: ${method} /api${path} needs ${needed}$`),
          );
        }
      }
    }
  } finally {
    await w.close();
  }
});

Deno.test("operator tokens: shown once, listed without secrets, revoked ones stop working at once; whoami says who", async () => {
  const w = await world();
  try {
    const made = await w.call(BOOTSTRAP, "POST", "/tokens", { name: "alice", role: "operator" });
    assert.equal(made.status, 201);
    const token = made.body.token as string;
    assert.match(token, /^ota_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    assert.deepEqual((await w.call(token, "GET", "/whoami")).body, {
      name: "alice",
      role: "operator",
    });
    assert.deepEqual((await w.call(BOOTSTRAP, "GET", "/whoami")).body, {
      name: "bootstrap-admin",
      role: "admin",
    });
    const listed = await w.call(BOOTSTRAP, "GET", "/tokens");
    const text = JSON.stringify(listed.body);
    assert.ok(!text.includes(token.slice(-43)), "no secret in the list");
    assert.doesNotMatch(text, /"hash"/);
    assert.deepEqual(
      (listed.body as unknown as { name: string; role: string; createdBy: string }[]).map((t) => [
        t.name,
        t.role,
        t.createdBy,
      ]),
      [["alice", "operator", "bootstrap-admin"]],
    );
    // Stored as a hash only.
    assert.ok(!JSON.stringify(await w.cloud.store.listRecords("operator-token")).includes(token));
    for (
      const [body, reason] of [
        [{ name: "bad name!", role: "viewer" }, /name must be 1\.\.64/],
        [{ name: "bob", role: "root" }, /role must be viewer, operator or admin/],
      ] as const
    ) {
      const refused = await w.call(BOOTSTRAP, "POST", "/tokens", body);
      assert.equal(refused.status, 400);
      assert.match(String(refused.body.error), reason);
    }
    const id = made.body.id as string;
    assert.equal((await w.call(BOOTSTRAP, "DELETE", `/tokens/${id}`)).status, 200);
    const after = await w.call(token, "GET", "/whoami");
    assert.equal(after.status, 401);
    assert.match(String(after.body.error), /missing, wrong or revoked operator token/);
    assert.equal((await w.call(BOOTSTRAP, "DELETE", `/tokens/${id}`)).status, 404);
    const revoked = (await w.call(BOOTSTRAP, "GET", "/tokens")).body as unknown as {
      revokedBy?: string;
    }[];
    assert.equal(revoked[0]!.revokedBy, "bootstrap-admin");
    // A token of the right shape but a wrong secret is refused.
    const forged = token.slice(0, -4) + (token.endsWith("AAAA") ? "BBBB" : "AAAA");
    assert.equal((await w.call(forged, "GET", "/whoami")).status, 401);
  } finally {
    await w.close();
  }
});

Deno.test("audit: every change names the operator who made it, the job service's own rows too", async () => {
  const w = await world();
  try {
    await w.cloud.provisionThing("dev-1", "secret-dev-1");
    await w.cloud.jobs.addThingToGroup("fleet", "dev-1");
    const admin = await w.tokenFor("ada", "admin");
    const operator = await w.tokenFor("otto", "operator");
    assert.equal(
      (await w.call(admin, "POST", "/signing-profiles", await releaseProfile())).status,
      201,
    );
    const created = await w.call(operator, "POST", "/ota-updates", {
      ...releaseRequest(),
      otaUpdateId: "audited",
      protocols: ["MQTT"],
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const jobId = created.body.jobId as string;
    assert.equal((await w.call(operator, "POST", `/jobs/${jobId}/pause`)).status, 200);
    const rows = await w.cloud.store.history({ jobId });
    const byEvent = (event: string) => rows.find((r) => r.event === event)?.detail.operator;
    assert.equal(byEvent("job-created"), "otto");
    assert.equal(byEvent("job-paused"), "otto");
    const requests = (await w.cloud.store.history({})).filter((r) =>
      r.event === "operator-request"
    );
    assert.deepEqual(
      requests.map((r) => [r.detail.operator, r.detail.method, r.detail.path]),
      [
        ["bootstrap-admin", "POST", "/api/tokens"],
        ["bootstrap-admin", "POST", "/api/tokens"],
        ["ada", "POST", "/api/signing-profiles"],
        ["otto", "POST", "/api/ota-updates"],
        ["otto", "POST", `/api/jobs/${jobId}/pause`],
      ],
    );
    // The executions the job queued were queued by its creation, so by its creator.
    const queued = rows.filter((r) => r.event === "queued");
    assert.ok(queued.length > 0 && queued.every((r) => r.detail.operator === "otto"));
  } finally {
    await w.close();
  }
});
