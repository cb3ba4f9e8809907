/** Chromium for the page tests (the system's, driven by playwright-core): launch, errors, not blank. */
import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { systemProgram } from "./system_program.ts";

/** The system's Chromium, or why the page tests are ignored. */
export const CHROMIUM = systemProgram("chromium", "chromium");

/** A headless Chromium. */
export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM.require(),
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/** Fails the test on any error the page throws. */
export function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  return errors;
}

/**
 * A screenshot is not blank: decoded in the page itself, it has many colours and a fair share
 * of pixels that are not the background.
 */
export async function assertNotBlank(page: Page, what: string): Promise<void> {
  const png = await page.screenshot({ fullPage: true });
  // Runs in the page (a string: the test's own type context has no DOM).
  const stats = await page.evaluate(`(async () => {
    const image = new Image();
    image.src = "data:image/png;base64,${
    btoa(Array.from(png, (b) => String.fromCharCode(b)).join(""))
  }";
    await image.decode();
    const canvas = new OffscreenCanvas(image.width, image.height);
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const pixels = context.getImageData(0, 0, image.width, image.height).data;
    const colours = new Set();
    let inked = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      const rgb = (pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2];
      colours.add(rgb);
      if (rgb !== 0xffffff) inked++;
    }
    return { colours: colours.size, inked: inked / (pixels.length / 4) };
  })()`) as { colours: number; inked: number };
  assert.ok(stats.colours > 20, `${what}: only ${stats.colours} colours`);
  assert.ok(stats.inked > 0.02, `${what}: ${(stats.inked * 100).toFixed(1)}% of the page drawn`);
}
