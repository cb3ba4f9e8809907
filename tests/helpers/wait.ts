/**
 * Waiting in tests, always with a deadline that fails the test saying what did not happen:
 * `waitUntil` polls a condition (never a fixed sleep), `withDeadline` bounds a promise.
 */

/**
 * Polls `condition` (which may ask a browser or a server, asynchronously) every `intervalMs`
 * until it holds, or fails after `timeoutMs` naming `what`.
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 30_000,
  intervalMs = 5,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** `promise`, or a failure naming `what` once `timeoutMs` have passed without it settling. */
export async function withDeadline<T>(
  promise: Promise<T>,
  what: string,
  timeoutMs = 30_000,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}
