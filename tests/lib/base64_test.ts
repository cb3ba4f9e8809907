import assert from "node:assert/strict";
import fc from "fast-check";
import { fromBase64, fromBase64Url, toBase64, toBase64Url } from "../../lib/base64.ts";

Deno.test("base64 and base64url: property: any bytes round-trip through both encodings", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      assert.deepEqual(fromBase64(toBase64(bytes)), bytes);
      const url = toBase64Url(bytes);
      assert.match(url, /^[A-Za-z0-9_-]*$/, "no padding, no + or /");
      assert.deepEqual(fromBase64Url(url), bytes);
    }),
  );
});

Deno.test("base64url: anything not unpadded base64url decodes to null, never throws", () => {
  for (const bad of ["a+b", "ab/c", "abc=", "a", "abcde", "é", 42, null, undefined]) {
    assert.equal(fromBase64Url(bad), null, String(bad));
  }
  assert.deepEqual(fromBase64Url(""), new Uint8Array());
});
