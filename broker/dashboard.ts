/**
 * Serves the rollout dashboard: a page with no build step (`broker/dashboard/`) and uPlot from
 * the pinned npm package, under `/dashboard/` on the operator API's port. The files hold no data;
 * the page asks for the operator token and sends it with every API call it makes.
 *
 * @module
 */

import uplotPackage from "uplot/package.json" with { type: "json" };
import { createRequire } from "node:module";

const PAGES: Readonly<Record<string, readonly [file: string, type: string]>> = {
  "/dashboard/": ["index.html", "text/html; charset=utf-8"],
  "/dashboard/app.js": ["app.js", "text/javascript; charset=utf-8"],
  "/dashboard/app.css": ["app.css", "text/css; charset=utf-8"],
};

const VENDOR: Readonly<Record<string, readonly [module: string, type: string]>> = {
  "/dashboard/vendor/uPlot.iife.min.js": [
    "uplot/dist/uPlot.iife.min.js",
    "text/javascript; charset=utf-8",
  ],
  "/dashboard/vendor/uPlot.min.css": ["uplot/dist/uPlot.min.css", "text/css; charset=utf-8"],
};

const cache = new Map<string, Uint8Array>();

function load(path: string): Uint8Array | null {
  let bytes = cache.get(path);
  if (bytes) return bytes;
  const page = PAGES[path];
  const vendor = VENDOR[path];
  if (page) {
    bytes = Deno.readFileSync(new URL(`./dashboard/${page[0]}`, import.meta.url));
  } else if (vendor) {
    bytes = Deno.readFileSync(createRequire(import.meta.url).resolve(vendor[0]));
  } else {
    return null;
  }
  cache.set(path, bytes);
  return bytes;
}

/**
 * Answers a `/dashboard...` request, or null when the path is not the dashboard's.
 *
 * @example
 * ```ts ignore
 * const page = serveDashboard(new Request("http://127.0.0.1:8080/dashboard/"));
 * page?.headers.get("content-type"); // "text/html; charset=utf-8"
 * ```
 */
export function serveDashboard(request: Request): Response | null {
  const { pathname } = new URL(request.url);
  if (pathname === "/dashboard" || pathname === "/") {
    return new Response(null, { status: 302, headers: { location: "/dashboard/" } });
  }
  if (!pathname.startsWith("/dashboard/")) return null;
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("method not allowed", { status: 405 });
  }
  const bytes = load(pathname);
  if (!bytes) return new Response("not found", { status: 404 });
  const type = (PAGES[pathname] ?? VENDOR[pathname])![1];
  return new Response(request.method === "HEAD" ? null : bytes.slice(), {
    headers: {
      "content-type": type,
      "cache-control": "no-cache",
      "x-uplot-version": uplotPackage.version,
      // The page talks only to its own origin.
      "content-security-policy":
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'",
    },
  });
}
