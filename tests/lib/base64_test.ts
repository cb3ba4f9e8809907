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

Deno.test("base64: the native codec answers as atob/btoa do, for any bytes and any string of the alphabet (fast-check prints the seed)", () => {
  const viaAtob = (text: string) => {
    try {
      return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    } catch {
      return null;
    }
  };
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      assert.equal(toBase64(bytes), btoa(String.fromCharCode(...bytes)));
    }),
  );
  const letter = fc.constantFrom(
    ..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
  );
  fc.assert(
    fc.property(fc.array(letter, { maxLength: 24 }), (letters) => {
      const text = letters.join("");
      const strict = /^[A-Za-z0-9+/]*={0,2}$/.test(text) && text.length % 4 === 0;
      assert.deepEqual(fromBase64(text), strict ? viaAtob(text) : null);
    }),
  );
});
