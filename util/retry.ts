// Backoff for retries, used by every client that talks to a server that may
// be busy: exponential with full jitter (a random wait between 0 and the
// exponential cap, so a fleet that failed together does not retry together),
// and a server's Retry-After wins over our own guess.
// https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
// https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3

export interface BackoffOptions {
  /** The cap of the first wait in ms; it doubles per attempt. */
  baseMs: number;
  /** The longest wait, even when Retry-After asks for more. */
  maxMs: number;
}

/** How long to wait before retry number `attempt` (1 = the first retry). */
export function backoffDelay(attempt: number, options: BackoffOptions, retryAfter?: string | string[]): number {
  const asked = retryAfterMs(retryAfter);
  if (asked !== undefined) return Math.min(asked, options.maxMs);
  const cap = Math.min(options.baseMs * 2 ** (attempt - 1), options.maxMs);
  return Math.random() * cap;
}

/** Retry-After is seconds or an HTTP date (RFC 9110 §10.2.3); undefined when absent or unreadable. */
export function retryAfterMs(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** Resolves after `ms`, or rejects at once with the signal's reason when it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The wait before trying again what failed `failures` times in a row, without
 * jitter (for work already spread out, such as an agent's passes): none after
 * the first failure (a blip), then `baseMs`, doubling, up to ten times it.
 */
export function failureWait(failures: number, baseMs: number): number {
  return failures < 2 ? 0 : Math.min(baseMs * 2 ** (failures - 2), 10 * baseMs);
}
