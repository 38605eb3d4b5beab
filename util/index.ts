// Small helpers every layer shares: durable file replacement and retry backoff.
export { atomicWrite, removeStaleTemps, syncDir, TEMP_SUFFIX, type AtomicWriteOptions } from "./atomic-write.js";
export { backoffDelay, retryAfterMs, sleep, type BackoffOptions } from "./retry.js";
