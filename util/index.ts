// Small helpers every layer shares: durable file replacement, V8's optimizing
// compiler for short commands, write streams on opened files, retry backoff,
// the first NATS connection and kept subscriptions, freeing spent stream buffers, the tar end-marker check,
// the order of text, text others wrote made safe to show, bounded caches,
// reading only regular files within a limit.
export { atomicWrite, atomicWriteAll, isMkdtempName, isTempFor, keepFresh, makeTempDir, removeStaleTemps, STALE_TEMP_MS, syncDir, syncFile, tempPathFor, TEMP_SUFFIX, writeError, type AtomicWriteFile, type AtomicWriteOptions } from "./atomic-write.js";
export { computing, movingBytes } from "./jit.js";
export { connectNats, flushed, FLUSH_MS, isRefused, natsRetryBase, refusalWait, subscribeKept, type KeptSubscriptionOptions, type NatsConnectOptions } from "./nats.js";
export { setBounded } from "./bounded.js";
export { openRegular, readRegular } from "./read-regular.js";
export { byCodeUnit } from "./order.js";
export { openWriteStream, type OpenWriteStreamOptions } from "./open-write-stream.js";
export { backoffDelay, failureWait, retryAfterMs, sleep, type BackoffOptions } from "./retry.js";
export { streamed } from "./spent-buffers.js";
export { clip, logText, oneLine, printable, quote } from "./text.js";
export { TAR_BLOCK, TarCounter, tarDataEnd } from "./tar-end.js";
