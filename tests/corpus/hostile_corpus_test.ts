/**
 * The shared corpus of hand-made hostile inputs (hostile.json), one section per parser that reads
 * the network or a file: job messages, stream blocks and requests (CBOR), image headers and TLVs,
 * certificates, pre-signed URLs, operator API bodies, fleet and broker flags. Every case must be
 * refused with the reason the corpus names; nothing may throw. The property tests beside each
 * module explore around these cases; a bug they find earns a case here.
 */
import assert from "node:assert/strict";
import { parseJobMessage } from "../../protocol/job_document.ts";
import { decodeGetStreamRequest, decodeStreamBlock } from "../../protocol/stream_codec.ts";
import { parseCertificate } from "../../protocol/certificates.ts";
import { bytesSource, decodeImage } from "../../protocol/image_format.ts";
import { parseBrokerArgs } from "../../broker/broker_args.ts";
import { startCloud } from "../../broker/cloud.ts";
import { operatorApi } from "../../broker/operator_api.ts";
import { parseFleetArgs } from "../../fleet/fleet_args.ts";

interface Case {
  readonly name: string;
  readonly expect: string;
  readonly text?: string;
  readonly hex?: string;
}
interface HttpCase extends Case {
  readonly status: number;
  readonly method?: string;
  readonly path: string;
  readonly body?: string;
  readonly range?: string;
}
interface ArgsCase extends Case {
  readonly args: string[];
}

const corpus = JSON.parse(
  await Deno.readTextFile(new URL("./hostile.json", import.meta.url)),
) as {
  jobMessage: Case[];
  streamBlock: Case[];
  streamRequest: Case[];
  image: Case[];
  certificate: Case[];
  presignedUrl: HttpCase[];
  operatorApi: HttpCase[];
  fleetArgs: ArgsCase[];
  brokerArgs: ArgsCase[];
};

function bytesOf(entry: Case): Uint8Array {
  if (entry.hex !== undefined) {
    return new Uint8Array((entry.hex.match(/../g) ?? []).map((h) => parseInt(h, 16)));
  }
  return new TextEncoder().encode(entry.text ?? "");
}

/** Runs `refuse` on every case; it returns the reason, or null when the input was accepted. */
function eachRefused(cases: readonly Case[], refuse: (entry: Case) => string | null): void {
  assert.ok(cases.length > 0);
  for (const entry of cases) {
    const reason = refuse(entry);
    assert.ok(reason !== null, `${entry.name}: accepted`);
    assert.ok(reason.includes(entry.expect), `${entry.name}: '${reason}' lacks '${entry.expect}'`);
  }
}

Deno.test("hostile corpus: job messages are refused with the reason", () => {
  eachRefused(corpus.jobMessage, (entry) => {
    const message = parseJobMessage(bytesOf(entry), { maxFirmwareSize: 1 << 20 });
    return message.kind === "invalid" ? message.detail : null;
  });
});

Deno.test("hostile corpus: CBOR stream blocks and block requests are refused with the reason", () => {
  eachRefused(corpus.streamBlock, (entry) => {
    const block = decodeStreamBlock(bytesOf(entry));
    return block.ok ? null : block.reason;
  });
  eachRefused(corpus.streamRequest, (entry) => {
    const request = decodeGetStreamRequest(bytesOf(entry));
    return request.ok ? null : request.reason;
  });
});

Deno.test("hostile corpus: image headers and TLV areas are refused with the reason", () => {
  eachRefused(corpus.image, (entry) => {
    const image = decodeImage(bytesSource(bytesOf(entry)));
    return image.ok ? null : image.reason;
  });
});

Deno.test("hostile corpus: certificates are refused with the reason", () => {
  eachRefused(corpus.certificate, (entry) => {
    const certificate = parseCertificate(entry.hex !== undefined ? bytesOf(entry) : entry.text!);
    return certificate.ok ? null : certificate.reason;
  });
});

Deno.test("hostile corpus: fleet and broker flags are refused with the reason", () => {
  const refusal = (parse: () => unknown) => {
    try {
      parse();
      return null;
    } catch (error) {
      return (error as Error).message;
    }
  };
  eachRefused(corpus.fleetArgs, (entry) => refusal(() => parseFleetArgs((entry as ArgsCase).args)));
  eachRefused(
    corpus.brokerArgs,
    (entry) => refusal(() => parseBrokerArgs((entry as ArgsCase).args, () => undefined)),
  );
});

Deno.test("hostile corpus: pre-signed URLs and operator API bodies get a 4xx with the reason, and nothing changes", async () => {
  const cloud = await startCloud();
  try {
    cloud.files.baseUrl = "http://cloud";
    await cloud.store.putFile("ota-x.bin", new Uint8Array(10));
    const genuine = new URL(cloud.files.presign("ota-x.bin", 60));
    const fill = (path: string) =>
      path.replace("{expires}", genuine.searchParams.get("X-Ota-Expires")!)
        .replace("{signature}", genuine.searchParams.get("X-Ota-Signature")!);
    for (const entry of corpus.presignedUrl) {
      const response = await cloud.files.handle(
        new Request(`http://cloud${fill(entry.path)}`, {
          ...(entry.range ? { headers: { range: entry.range } } : {}),
        }),
      );
      const text = await response.text();
      assert.equal(response.status, entry.status, `${entry.name}: ${text}`);
      assert.ok(text.includes(entry.expect), `${entry.name}: '${text}' lacks '${entry.expect}'`);
    }
    const api = operatorApi(cloud, { token: "corpus-operator-token" });
    const things = (await cloud.store.listThings()).length;
    const jobs = (await cloud.store.listJobs()).length;
    for (const entry of corpus.operatorApi) {
      const response = await api(
        new Request(`http://cloud${entry.path}`, {
          method: entry.method ?? "POST",
          headers: {
            authorization: "Bearer corpus-operator-token",
            "content-type": "application/json",
          },
          ...(entry.body !== undefined ? { body: entry.body } : {}),
        }),
      );
      const text = await response.text();
      assert.equal(response.status, entry.status, `${entry.name}: ${text}`);
      assert.ok(text.includes(entry.expect), `${entry.name}: '${text}' lacks '${entry.expect}'`);
    }
    assert.equal((await cloud.store.listThings()).length, things, "no thing was half-created");
    assert.equal((await cloud.store.listJobs()).length, jobs, "no job was half-created");
  } finally {
    await cloud.close();
  }
});
