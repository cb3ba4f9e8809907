import assert from "node:assert/strict";
import fc from "fast-check";
import { sha256 } from "../../protocol/signatures.ts";
import { buildFirmware, readManifest } from "../../bootloader/firmware.ts";
import {
  bytesSource,
  compareVersions,
  decodeImage,
  encodeHeader,
  encodeTlvArea,
  IMAGE_MAGIC,
  parseVersion,
  TLV_INFO_MAGIC,
  TlvType,
} from "../../protocol/image_format.ts";
import { hashedRegion, unsignedImage } from "../../protocol/image_sign.ts";
import { validateImage } from "../../bootloader/image_validate.ts";
import { concatBytes, viewOf } from "../../lib/bytes.ts";
import { testImage, testPki } from "../helpers/pki.ts";

const image = await testImage({ version: "1.2.3", securityCounter: 7, payloadSize: 2000 });
const pki = await testPki();

Deno.test("decodeImage() reads back every header field and TLV of a signed image", () => {
  const result = decodeImage(bytesSource(image));
  assert.ok(result.ok, !result.ok ? result.reason : "");
  const { header, securityCounter, sha256: hash, keyHash, signature, signerCertificate } =
    result.image;
  assert.deepEqual(header.version, { major: 1, minor: 2, revision: 3, build: 0 });
  assert.equal(header.headerSize, 32);
  assert.equal(header.payloadSize, 2000);
  assert.equal(header.protectedTlvSize, 12);
  assert.equal(securityCounter, 7);
  assert.equal(result.image.totalSize, image.length);
  assert.deepEqual(hash, sha256(image.subarray(0, result.image.hashedSize)));
  assert.deepEqual(keyHash, sha256(new Uint8Array(pki.signer.publicKey.rawData)));
  assert.ok(signature && signature[0] === 0x30);
  assert.ok(signerCertificate && signerCertificate.length > 100);
});

Deno.test("validateImage() accepts the signed image and explains every refusal", async () => {
  const ok = await validateImage(bytesSource(image), { root: pki.root });
  assert.ok(ok.ok);
  const below = await validateImage(bytesSource(image), {
    root: pki.root,
    minimumSecurityCounter: 8,
  });
  assert.ok(!below.ok && /below/.test(below.reason));
  const unsigned = unsignedImage({
    payload: new Uint8Array(100),
    version: parseVersion("1.0.0")!,
    securityCounter: 1,
  });
  const refused = await validateImage(bytesSource(unsigned), { root: pki.root });
  assert.ok(!refused.ok && /not signed/.test(refused.reason));
  const rogue = await validateImage(
    bytesSource(await testImage({ version: "1.0.0", signer: "rogue" })),
    { root: pki.root },
  );
  assert.ok(!rogue.ok && /trusted root/.test(rogue.reason));
  const expired = await validateImage(bytesSource(image), {
    root: pki.root,
    at: new Date("2040-01-01"),
  });
  assert.ok(!expired.ok && /expired/.test(expired.reason));
});

Deno.test("decodeImage() rejects malformed images with a reason", () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ["empty slot", new Uint8Array(64).fill(0xff), /empty/],
    ["too short", new Uint8Array(10), /smaller than an image header/],
    [
      "bad magic",
      (() => {
        const b = image.slice();
        b[0] = 0;
        return b;
      })(),
      /bad header magic/,
    ],
    ["payload past end", image.subarray(0, 1000), /exceed the slot/],
    [
      "header size too small",
      (() => {
        const b = image.slice();
        viewOf(b).setUint16(8, 16, true);
        return b;
      })(),
      /header size/,
    ],
    [
      "unsupported flag (AES-256)",
      (() => {
        const b = image.slice();
        viewOf(b).setUint32(16, 0x08, true);
        return b;
      })(),
      /unsupported header flags/,
    ],
    [
      "encrypted (AES-128) without the key's TLV",
      (() => {
        const b = image.slice();
        viewOf(b).setUint32(16, 0x04, true);
        return b;
      })(),
      /encrypted image has no ENC_EC256 TLV/,
    ],
    [
      "unknown flag",
      (() => {
        const b = image.slice();
        viewOf(b).setUint32(16, 0x80000, true);
        return b;
      })(),
      /unknown header flags/,
    ],
    [
      "protected size mismatch",
      (() => {
        const b = image.slice();
        viewOf(b).setUint16(10, 16, true);
        return b;
      })(),
      /protected TLV area/,
    ],
    ["truncated TLVs", image.subarray(0, image.length - 5), /past the end|crosses/],
  ];
  for (const [name, bytes, reason] of cases) {
    const result = decodeImage(bytesSource(bytes));
    assert.ok(!result.ok, `${name} should be rejected`);
    assert.match(result.reason, reason, name);
  }
});

Deno.test("decodeImage() refuses unknown, duplicate, misplaced and wrongly sized TLVs", () => {
  const region = hashedRegion({
    payload: new Uint8Array(64),
    version: parseVersion("1.0.0")!,
    securityCounter: 1,
  });
  const withTlvs = (tlvs: { type: number; value: Uint8Array }[]) =>
    concatBytes([region, encodeTlvArea(TLV_INFO_MAGIC, tlvs)]);
  const cases: [string, Uint8Array, RegExp][] = [
    ["unknown", withTlvs([{ type: 0x77, value: new Uint8Array(4) }]), /unknown TLV type 0x77/],
    [
      "duplicate",
      withTlvs([{ type: TlvType.SHA256, value: new Uint8Array(32) }, {
        type: TlvType.SHA256,
        value: new Uint8Array(32),
      }]),
      /duplicate/,
    ],
    [
      "counter unprotected",
      withTlvs([{ type: TlvType.SEC_CNT, value: new Uint8Array(4) }]),
      /must be in the protected/,
    ],
    [
      "short hash",
      withTlvs([{ type: TlvType.SHA256, value: new Uint8Array(31) }]),
      /SHA256 has 31 bytes/,
    ],
  ];
  for (const [name, bytes, reason] of cases) {
    const result = decodeImage(bytesSource(bytes));
    assert.ok(!result.ok, name);
    assert.match(result.reason, reason, name);
  }
});

Deno.test("decodeImage(): property: random bytes and random mutations never throw", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      const result = decodeImage(bytesSource(bytes));
      assert.equal(typeof result.ok, "boolean");
      if (!result.ok) assert.ok(result.reason.length > 0);
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(
      fc.array(
        fc.record({ at: fc.nat(image.length - 1), value: fc.integer({ min: 0, max: 255 }) }),
        { minLength: 1, maxLength: 8 },
      ),
      fc.nat(image.length),
      (mutations, cut) => {
        const bytes = image.slice(0, Math.max(cut, 1));
        for (const m of mutations) if (m.at < bytes.length) bytes[m.at] = m.value;
        const result = decodeImage(bytesSource(bytes));
        if (!result.ok) assert.ok(result.reason.length > 0);
        else {assert.ok(
            result.image.totalSize <= bytes.length,
            "decoded extent stays inside the input",
          );}
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("validateImage(): every single-bit flip in the signer certificate is refused", async () => {
  const decoded = decodeImage(bytesSource(image));
  assert.ok(decoded.ok);
  const start = image.length - decoded.image.signerCertificate!.length;
  for (let at = start; at < image.length; at++) {
    for (let bit = 0; bit < 8; bit++) {
      const bytes = image.slice();
      bytes[at]! ^= 1 << bit;
      const result = await validateImage(bytesSource(bytes), { root: pki.root });
      assert.ok(
        !result.ok,
        `flip of bit ${bit} at ${at} (certificate byte ${at - start}) was accepted`,
      );
    }
  }
});

Deno.test("validateImage(): property: any single-bit flip in a signed image is refused", async () => {
  await fc.assert(
    fc.asyncProperty(fc.nat(image.length - 1), fc.integer({ min: 0, max: 7 }), async (at, bit) => {
      const bytes = image.slice();
      bytes[at]! ^= 1 << bit;
      const result = await validateImage(bytesSource(bytes), { root: pki.root });
      assert.ok(!result.ok, `flip of bit ${bit} at ${at} was accepted`);
    }),
    { numRuns: 400 },
  );
});

Deno.test("parseVersion() and compareVersions() follow MCUboot (build number ignored)", () => {
  assert.deepEqual(parseVersion("2.10.300+7"), { major: 2, minor: 10, revision: 300, build: 7 });
  for (const bad of ["", "1.2", "1.2.3.4", "256.0.0", "1.2.x", "1.2.3+", "-1.0.0"]) {
    assert.equal(parseVersion(bad), null, bad);
  }
  assert.equal(compareVersions(parseVersion("1.2.3+9")!, parseVersion("1.2.3+1")!), 0);
  assert.equal(compareVersions(parseVersion("1.2.3")!, parseVersion("1.10.0")!), -1);
  assert.equal(compareVersions(parseVersion("2.0.0")!, parseVersion("1.99.999")!), 1);
});

Deno.test("encodeHeader() lays out the MCUboot header little-endian", () => {
  const bytes = encodeHeader({
    loadAddress: 0x1000,
    headerSize: 0x200,
    protectedTlvSize: 12,
    payloadSize: 0x1234,
    flags: 0,
    version: parseVersion("1.2.3+4")!,
  });
  const view = viewOf(bytes);
  assert.equal(bytes.length, 0x200);
  assert.equal(view.getUint32(0, true), IMAGE_MAGIC);
  assert.equal(view.getUint32(4, true), 0x1000);
  assert.equal(view.getUint16(8, true), 0x200);
  assert.equal(view.getUint16(10, true), 12);
  assert.equal(view.getUint32(12, true), 0x1234);
  assert.deepEqual([...bytes.subarray(20, 28)], [1, 2, 3, 0, 4, 0, 0, 0]);
});

Deno.test("readManifest() reads the behaviour, treats plain payloads as ok and broken manifests as crashes", () => {
  assert.equal(
    readManifest(buildFirmware({ behavior: "no-network", version: "1.0.0" }, 512)).manifest
      .behavior,
    "no-network",
  );
  assert.equal(readManifest(new Uint8Array(512)).source, "none");
  const broken = buildFirmware({ behavior: "ok", version: "1.0.0" }, 512);
  broken[12] = 0x7b; // corrupt the JSON
  broken[13] = 0x7b;
  const reading = readManifest(broken);
  assert.equal(reading.source, "malformed");
  assert.equal(reading.manifest.behavior, "crash-on-boot");
  assert.throws(() => buildFirmware({ behavior: "ok", version: "1.0.0" }, 10), RangeError);
});
