/**
 * What `JSON.parse` lets through and a signed document must not: the same key twice in one
 * object (the last wins there, so a garbage signature followed by a valid one would pass).
 *
 * @example
 * ```ts
 * import { duplicateKey } from "./strict_json.ts";
 * duplicateKey('{"a":1,"b":{"a":2}}'); // null
 * duplicateKey('{"a":1,"a":2}'); // "a"
 * ```
 *
 * @module
 */

interface Frame {
  readonly keys: Set<string> | null;
  expectKey: boolean;
}

/**
 * The first key that appears twice in one object of `text`, or null. `text` must already be
 * valid JSON (parse it first): this only walks its structure, in one pass.
 */
export function duplicateKey(text: string): string | null {
  const stack: Frame[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      const top = stack.at(-1);
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = end;
    } else if (c === "{") {
      stack.push({ keys: new Set(), expectKey: true });
    } else if (c === "[") {
      stack.push({ keys: null, expectKey: false });
    } else if (c === "}" || c === "]") {
      stack.pop();
    } else if (c === ",") {
      const top = stack.at(-1);
      if (top?.keys) top.expectKey = true;
    }
  }
  return null;
}
