/**
 * The fleet's access to a running cloud through its operator APIs: a node that accepts
 * connections but never answers (stopped, or stuck) costs one call timeout, then the next node
 * answers; a node that is slow but alive is waited for; when none answers the run gives up after
 * its outage tolerance, in one line.
 */
import assert from "node:assert/strict";
import { remoteAccess } from "../../fleet/cloud_access.ts";

/** A listener that accepts connections and never says a word. */
function silentListener() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of listener) held.push(conn);
    } catch { /* closed */ }
  })();
  return {
    api: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/api`,
    async close() {
      listener.close();
      for (const conn of held) conn.close();
      await accepting;
    },
  };
}

Deno.test("remoteAccess: a node that never answers costs one call timeout; the next node's answer is used", async () => {
  const silent = silentListener();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    (request) =>
      new URL(request.url).pathname === "/api/jobs/J"
        ? Response.json({ status: "IN_PROGRESS", reason: null, counts: { QUEUED: 2 } })
        : new Response("no", { status: 404 }),
  );
  const good = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/api`;
  const lines: string[] = [];
  try {
    const access = remoteAccess(["mqtt://127.0.0.1:1"], [silent.api, good], "t", {
      callTimeoutMs: 300,
      log: (line) => lines.push(line),
    });
    assert.deepEqual(await access.jobState("J"), {
      status: "IN_PROGRESS",
      reason: null,
      counts: { QUEUED: 2 },
    });
    assert.deepEqual(lines, [
      `cloud: cannot reach the API at ${silent.api} (no answer within 0.3 s, nor from its /livez); waiting up to 120 s, trying the other nodes`,
      `cloud: reachable again at ${good} after ${lines[1]?.match(/after (\S+) s$/)?.[1]} s`,
    ]);
    // The node that answered stays the one asked first.
    await access.jobState("J");
    assert.equal(lines.length, 2);
  } finally {
    await server.shutdown();
    await silent.close();
  }
});

Deno.test("remoteAccess: when no node answers, the call gives up after the outage tolerance, naming them all in one line", async () => {
  const a = silentListener();
  const b = silentListener();
  try {
    const access = remoteAccess(["mqtt://127.0.0.1:1"], [a.api, b.api], "t", {
      callTimeoutMs: 200,
      outageToleranceMs: 2_000,
    });
    await assert.rejects(access.jobState("J"), (error: Error) => {
      assert.equal(
        error.message,
        `cannot reach the API at ${a.api}, ${b.api}: no answer within 0.2 s, nor from its /livez (waited 2 s)`,
      );
      return true;
    });
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("remoteAccess: a call slower than the call timeout to a node whose /livez answers is waited for, not failed over", async () => {
  const livez: number[] = [];
  let release: (() => void) | null = null;
  const answered = new Promise<void>((resolve) => release = resolve);
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    async (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/livez") {
        livez.push(Date.now());
        // The slow call is answered once the node has been found alive twice.
        if (livez.length === 2) release!();
        return Response.json({ status: "alive" });
      }
      if (path === "/api/jobs/J") {
        await answered;
        return Response.json({ status: "IN_PROGRESS", reason: null, counts: { QUEUED: 1 } });
      }
      return new Response("no", { status: 404 });
    },
  );
  const slow = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/api`;
  const silent = silentListener();
  const lines: string[] = [];
  try {
    const access = remoteAccess(["mqtt://127.0.0.1:1"], [slow, silent.api], "t", {
      callTimeoutMs: 100,
      log: (line) => lines.push(line),
    });
    assert.equal((await access.jobState("J")).status, "IN_PROGRESS");
    assert.equal(livez.length, 2, "asked whether it lives once per period it stayed silent");
    assert.deepEqual(lines, [], "no outage, no other node tried");
  } finally {
    await server.shutdown();
    await silent.close();
  }
});
