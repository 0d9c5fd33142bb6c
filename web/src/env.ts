/** The clock and timers the client runs on; tests inject fakes. */

/** Milliseconds since the Unix epoch, like Date.now. */
export interface Clock {
  now(): number;
}

/** setTimeout and clearTimeout, like the browser's. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The real clock. */
export const systemClock: Clock = { now: () => Date.now() };

/** The real timers. */
export const systemTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** Page visibility, as the client pauses on it. */
export interface Visibility {
  hidden(): boolean;
  /** Calls cb on every change; returns the unsubscribe function. */
  subscribe(cb: () => void): () => void;
}

/** The document's visibility, or "always visible" outside a browser. */
export function documentVisibility(): Visibility {
  const doc = (globalThis as { document?: Document }).document;
  if (!doc) return { hidden: () => false, subscribe: () => () => {} };
  return {
    hidden: () => doc.visibilityState === "hidden",
    subscribe: (cb) => {
      doc.addEventListener("visibilitychange", cb);
      return () => doc.removeEventListener("visibilitychange", cb);
    },
  };
}

/**
 * Exponential backoff with full jitter: attempt 0 waits up to minMs, each
 * next one twice as long, capped at maxMs. random returns [0, 1).
 */
export function backoffDelay(attempt: number, minMs: number, maxMs: number, random: () => number): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.max(0, attempt));
  return Math.round(minMs / 2 + random() * Math.max(0, ceiling - minMs / 2));
}
