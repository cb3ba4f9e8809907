/**
 * The agent end to end: a real aedes broker on a TCP port, mqtt.js clients, a test job/stream
 * responder, and a simulated device whose agent is rebuilt after every reset.
 */
import assert from "node:assert/strict";
import { FwuState } from "../../bootloader/fwu.ts";
import { SIGNER_CERT_PATH, testPki } from "../helpers/pki.ts";
import { signData } from "../../protocol/signatures.ts";
import { firmwareJobDocument, TestFileServer } from "../helpers/ota_cloud.ts";
import { happyUpdate, type Rig, rig, signedUpdate, startJob } from "../helpers/agent_rig.ts";
import { waitUntil } from "../helpers/wait.ts";

Deno.test("agent e2e (aedes): a happy update is downloaded, verified, tested, reported SUCCEEDED and confirmed", async () => {
  const r = await rig();
  try {
    await happyUpdate(r);
  } finally {
    await r.close();
  }
});

const requestedAfter = (r: Rig, index: number) =>
  r.cloud.streamRequests.slice(index).flatMap((q) => q.blocks);

/** Starts a 1.1.0 update whose blocks 10..16 are withheld, and waits for the first ten. */
async function stalledAtBlock10(r: Rig): Promise<void> {
  const { image, signature } = await signedUpdate("1.1.0");
  for (let b = 10; b < 17; b++) r.cloud.faults.withhold.add(b);
  await r.runtime.start();
  await startJob(r, image, signature);
  await waitUntil(() => r.runtime.agent?.blocksRemaining === 7, "10 blocks to arrive");
}

Deno.test("agent e2e (aedes): a disconnect suspends the download and the reconnect resumes it, asking only for missing blocks", async () => {
  const r = await rig();
  try {
    await stalledAtBlock10(r);
    const mark = r.cloud.streamRequests.length;
    r.runtime.dropConnection();
    await waitUntil(
      () => r.runtime.log.some((l) => l.startsWith("suspended")),
      "the agent to suspend",
    );
    r.cloud.faults.withhold.clear();
    const execution = r.cloud.execution(r.thing, "job-1");
    await r.cloud.waitFor(() => execution.status === "SUCCEEDED", "SUCCEEDED after the reconnect");
    assert.ok(
      r.runtime.log.some((l) => /^resumed with 7 blocks to go/.test(l)),
      r.runtime.log.join("\n"),
    );
    const after = requestedAfter(r, mark);
    assert.ok(
      after.length > 0 && after.every((b) => b >= 10),
      `after the reconnect only blocks 10..16 are asked for: ${after}`,
    );
    await waitUntil(() => r.runtime.device.running?.trial === false, "confirmation");
    assert.equal(r.runtime.device.running?.version, "1.1.0+0");
  } finally {
    await r.close();
  }
});

Deno.test("agent e2e (aedes): a socket that fails a write and never closes is closed by the device, which reconnects and resumes", async () => {
  // Seen under load after a session takeover: EPIPE on the socket and no 'close', so mqtt.js
  // never reconnected and the device sat offline until the keepalive.
  const r = await rig();
  try {
    await stalledAtBlock10(r);
    const client = r.runtime.client!;
    let connects = 0;
    client.on("connect", () => connects++);
    client.stream.emit(
      "error",
      Object.assign(new Error("This socket has been ended by the other party"), { code: "EPIPE" }),
    );
    await waitUntil(() => connects >= 1, "the device to reconnect");
    r.cloud.faults.withhold.clear();
    const execution = r.cloud.execution(r.thing, "job-1");
    await r.cloud.waitFor(() => execution.status === "SUCCEEDED", "SUCCEEDED after the reconnect");
    assert.ok(r.runtime.log.some((l) => /^resumed with 7 blocks to go/.test(l)));
  } finally {
    await r.close();
  }
});

Deno.test("agent e2e (aedes): a job cancelled mid-download is dropped cleanly and the next job runs", async () => {
  const r = await rig();
  try {
    const { image, signature } = await signedUpdate("1.1.0");
    for (let b = 5; b < 17; b++) r.cloud.faults.withhold.add(b);
    await r.runtime.start();
    await startJob(r, image, signature, "job-1");
    await waitUntil(() => r.runtime.agent?.blocksRemaining === 12, "5 blocks to arrive");
    await r.cloud.cancelJob(r.thing, "job-1");
    await waitUntil(
      () => r.runtime.agent?.activeJobId === null && r.runtime.device.fwu.state === FwuState.READY,
      "the download to be dropped",
    );
    assert.equal(r.runtime.device.running?.version, "1.0.0+0");
    const first = r.cloud.execution(r.thing, "job-1");
    assert.equal(first.status, "CANCELED");
    assert.ok(
      !first.history.some((h) => h.status === "FAILED" || h.status === "SUCCEEDED"),
      "nothing reported after the cancel",
    );
    r.cloud.faults.withhold.clear();
    await startJob(r, image, signature, "job-2", "stream-2");
    const second = r.cloud.execution(r.thing, "job-2");
    await r.cloud.waitFor(() => second.status === "SUCCEEDED", "job-2 SUCCEEDED");
    await waitUntil(() => r.runtime.device.running?.trial === false, "confirmation");
  } finally {
    await r.close();
  }
});

Deno.test("agent e2e (aedes): a block corrupted in transit is dropped and re-requested, never written", async () => {
  const r = await rig();
  try {
    r.cloud.faults.corruptOnce.add(3);
    r.cloud.faults.corruptOnce.add(16);
    const execution = await happyUpdate(r);
    assert.equal(r.cloud.faults.corruptOnce.size, 0, "both corrupt deliveries happened");
    assert.equal(r.runtime.log.filter((l) => /fails its SHA-256 check/.test(l)).length, 2);
    const asked = r.cloud.streamRequests.flatMap((q) => q.blocks);
    assert.ok(
      asked.filter((b) => b === 3).length >= 2 && asked.filter((b) => b === 16).length >= 2,
      "corrupt blocks asked again",
    );
    assert.equal(execution.status, "SUCCEEDED");
  } finally {
    await r.close();
  }
});

for (const torn of [false, true]) {
  Deno.test(`agent e2e (aedes): after a ${torn ? "torn " : ""}power cut mid-download the agent resumes from the blocks in flash`, async () => {
    const r = await rig();
    try {
      const { image, signature } = await signedUpdate("1.1.0");
      for (let b = 9; b < 17; b++) r.cloud.faults.withhold.add(b);
      await r.runtime.start();
      await startJob(r, image, signature);
      await waitUntil(() => r.runtime.agent?.blocksRemaining === 8, "9 blocks to arrive");
      if (torn) {
        // The next flash operation (writing block 9) is torn and the power goes.
        r.runtime.device.cutPowerAt({ atOperation: 1, torn: true });
        r.cloud.faults.withhold.delete(9);
        await waitUntil(() => r.runtime.device.state === "off", "the power cut");
      } else {
        r.runtime.device.powerOff();
      }
      r.cloud.faults.withhold.clear();
      const mark = r.cloud.streamRequests.length;
      await r.runtime.start();
      const execution = r.cloud.execution(r.thing, "job-1");
      await r.cloud.waitFor(
        () => execution.status === "SUCCEEDED",
        "SUCCEEDED after power returns",
      );
      assert.ok(
        r.runtime.log.some((l) =>
          /^resuming firmware.bin of job job-1: \d+\/17 blocks to go/.test(l)
        ),
        r.runtime.log.join("\n"),
      );
      const after = requestedAfter(r, mark);
      if (torn) {
        // The torn block cannot be programmed again in place: the file starts over, once.
        assert.ok(
          r.runtime.log.some((l) => /write of block 9 failed .*restarting the file/.test(l)),
          r.runtime.log.join("\n"),
        );
      } else {
        assert.ok(
          after.length > 0 && Math.min(...after) >= 8,
          `only blocks not yet in flash are fetched again: ${after}`,
        );
      }
      await waitUntil(() => r.runtime.device.running?.trial === false, "confirmation");
    } finally {
      await r.close();
    }
  });
}

Deno.test("agent e2e (aedes): an expired pre-signed URL is refreshed through the job document and the download continues", async () => {
  const files = new TestFileServer();
  const r = await rig({ http: true });
  try {
    const { image, signature } = await signedUpdate("1.1.0");
    files.addFile("fw.bin", image);
    const firstUrl = files.presign("fw.bin", 6);
    r.cloud.documentFor = (execution) => {
      // Documents carry the first URL (good for 6 requests) until it has expired, then fresh ones.
      const url = files.expiredRequests === 0 ? firstUrl : files.presign("fw.bin");
      return firmwareJobDocument({
        url,
        size: image.length,
        signature,
        certFile: SIGNER_CERT_PATH,
        ...execution.document,
      });
    };
    await r.runtime.start();
    await r.cloud.createJob(
      r.thing,
      "job-http",
      firmwareJobDocument({
        url: firstUrl,
        size: image.length,
        signature,
        certFile: SIGNER_CERT_PATH,
      }),
    );
    const execution = r.cloud.execution(r.thing, "job-http");
    await r.cloud.waitFor(() => execution.status === "SUCCEEDED", "SUCCEEDED over HTTP");
    assert.ok(files.expiredRequests >= 1, "the URL expired once");
    assert.ok(r.runtime.log.some((l) => /pre-signed URL expired/.test(l)));
    assert.ok(
      files.requests - files.expiredRequests <= 17 + 2,
      `blocks were not fetched again from the start: ${files.requests} requests`,
    );
    await waitUntil(() => r.runtime.device.running?.trial === false, "confirmation");
  } finally {
    await r.close();
    await files.close();
  }
});

Deno.test("agent e2e (aedes): a job over a data plane the device cannot use fails at once with InvalidDataProtocol", async () => {
  const r = await rig(); // no HTTP client
  try {
    const { image, signature } = await signedUpdate("1.1.0");
    await r.runtime.start();
    await r.cloud.createJob(
      r.thing,
      "job-http-only",
      firmwareJobDocument({
        url: "http://127.0.0.1:9/fw.bin",
        size: image.length,
        signature,
        certFile: SIGNER_CERT_PATH,
      }),
    );
    const execution = r.cloud.execution(r.thing, "job-http-only");
    await r.cloud.waitFor(() => execution.status === "FAILED", "FAILED");
    assert.equal(execution.statusDetails.reason, "0x0000000d: 0x00000000");
    assert.match(
      execution.statusDetails.detail ?? "",
      /no usable data protocol: the job offers HTTP/,
    );
    assert.equal(r.runtime.device.running?.version, "1.0.0+0");
  } finally {
    await r.close();
  }
});

for (
  const [version, reason] of [["1.0.0", "rejected: 0x00000010"], [
    "0.9.0",
    "rejected: 0x0000000f",
  ]] as const
) {
  Deno.test(`agent e2e (aedes): a job for ${version === "1.0.0" ? "the same" : "an older"} version is rejected with the AWS reason`, async () => {
    const r = await rig();
    try {
      const { image, signature } = await signedUpdate(version);
      await r.runtime.start();
      await startJob(r, image, signature);
      const execution = r.cloud.execution(r.thing, "job-1");
      await r.cloud.waitFor(() => execution.status === "REJECTED", "REJECTED");
      assert.equal(execution.statusDetails.reason, reason);
      await waitUntil(
        () => r.runtime.device.fwu.state === FwuState.READY,
        "the staging slot to be cleaned",
      );
      assert.equal(r.runtime.device.running?.version, "1.0.0+0");
      assert.ok(r.cloud.blocksSent < 17, "the download stopped at the header");
    } finally {
      await r.close();
    }
  });
}

Deno.test("agent e2e (aedes): lost $next/get replies are asked again with backoff", async () => {
  const r = await rig();
  try {
    r.cloud.faults.dropNextGet = 2;
    await happyUpdate(r, { createJobFirst: true });
    assert.ok(r.cloud.nextGetRequests >= 3, `requests: ${r.cloud.nextGetRequests}`);
  } finally {
    await r.close();
  }
});

Deno.test("agent e2e (aedes): a lost SUCCEEDED acknowledgement is retried and the image is confirmed only once the cloud has it", async () => {
  const r = await rig();
  try {
    r.cloud.faults.dropUpdateAcks = 1; // the cloud records SUCCEEDED but its acknowledgement is lost
    const execution = await happyUpdate(r);
    assert.equal(execution.status, "SUCCEEDED");
    assert.ok(
      r.runtime.log.some((l) => /SUCCEEDED for job-1 was already recorded/.test(l)),
      r.runtime.log.join("\n"),
    );
  } finally {
    await r.close();
  }
});

Deno.test("agent e2e (aedes): a SUCCEEDED that landed without any answer in time is found by asking again, and the image is kept", async () => {
  // A loaded broker: the acknowledgement is lost and the first describes go unanswered, so the
  // report gives up and the job has left $next. Giving the trial image up would leave the cloud
  // saying SUCCEEDED for a device back on 1.0.0 (seen at 10,000 devices).
  const r = await rig({ agentConfig: { maxStatusRetries: 1, statusAckTimeoutMs: 300 } });
  try {
    r.cloud.faults.dropUpdateAcks = 1;
    r.cloud.faults.dropDescribes = 5;
    const execution = await happyUpdate(r);
    assert.equal(execution.status, "SUCCEEDED");
    assert.equal(r.cloud.faults.dropDescribes, 0, "every lost describe was asked again");
    assert.ok(
      r.runtime.log.some((l) => /SUCCEEDED had landed: confirming the image/.test(l)),
      r.runtime.log.join("\n"),
    );
    assert.equal(r.runtime.device.report().securityCounter, 2);
  } finally {
    await r.close();
  }
});

for (
  const [behavior, what, reason, detail] of [
    [
      "crash-on-boot",
      "crashes on boot",
      "rejected: 0x00000010",
      /trial image was not confirmed: reverted/,
    ],
    ["fail-self-test", "fails its self-test", "rejected: 0x00000011", /self-test failed/],
    [
      "no-network",
      "cannot reach the network",
      "rejected: 0x00000010",
      /trial image was not confirmed: reverted/,
    ],
    ["hang", "hangs", "rejected: 0x00000010", /trial image was not confirmed: reverted/],
  ] as const
) {
  Deno.test(`agent e2e (aedes): an image that ${what} never confirms: the device reverts and the job ends FAILED`, async () => {
    const r = await rig({ watchdogMs: 1_000, agentConfig: { selfTestTimeoutMs: 1_000 } });
    try {
      const { image, signature } = await signedUpdate("1.1.0", behavior);
      await r.runtime.start();
      await startJob(r, image, signature);
      const execution = r.cloud.execution(r.thing, "job-1");
      await r.cloud.waitFor(() => execution.status === "FAILED", "FAILED");
      assert.equal(execution.statusDetails.reason, reason);
      assert.match(execution.statusDetails.detail ?? "", detail);
      assert.ok(!execution.history.some((h) => h.status === "SUCCEEDED"), "never SUCCEEDED");
      await waitUntil(() => r.runtime.device.running?.version === "1.0.0+0", "the revert");
      assert.equal(r.runtime.device.running?.trial, false);
      assert.equal(
        r.runtime.device.report().securityCounter,
        1,
        "the counter never rose for an unconfirmed image",
      );
    } finally {
      await r.close();
    }
  });
}

Deno.test("agent e2e (aedes): a job with a data file and a firmware file delivers both (data first, firmware last)", async () => {
  const r = await rig();
  try {
    const { image, signature } = await signedUpdate("1.1.0");
    const config = new TextEncoder().encode(
      JSON.stringify({ sampleRateHz: 50, endpoint: "telemetry" }).repeat(40),
    );
    const configSignature = await signData((await testPki()).signerKeys.privateKey, config);
    r.cloud.addStream("stream-1", new Map([[0, image], [7, config]]));
    const document = firmwareJobDocument({
      stream: "stream-1",
      size: image.length,
      signature,
      certFile: SIGNER_CERT_PATH,
    });
    const files = (document.afr_ota as { files: Record<string, unknown>[] }).files;
    files.push({
      filepath: "config/app.json",
      filesize: config.length,
      fileid: 7,
      fileType: 3,
      certfile: SIGNER_CERT_PATH,
      "sig-sha256-ecdsa": btoa(String.fromCharCode(...configSignature)),
    });
    await r.runtime.start();
    await r.cloud.createJob(r.thing, "job-1", document);
    const execution = r.cloud.execution(r.thing, "job-1");
    await r.cloud.waitFor(() => execution.status === "SUCCEEDED", "SUCCEEDED");
    const delivered = r.runtime.events.find((e) => e.type === "UpdateComplete" && e.data !== null);
    assert.ok(delivered && delivered.type === "UpdateComplete");
    assert.equal(delivered.file.filePath, "config/app.json");
    assert.deepEqual(delivered.data, config);
    const events = r.runtime.events;
    assert.ok(
      events.indexOf(delivered) < events.findIndex((e) => e.type === "Activate"),
      "data file before activation",
    );
    await waitUntil(
      () => r.runtime.device.running?.version === "1.1.0+0" && !r.runtime.device.running.trial,
      "confirmation",
    );
  } finally {
    await r.close();
  }
});
