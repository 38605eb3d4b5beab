// The first connection to NATS, for the agent and the assigner, which both
// start without it (they poll, or serve, meanwhile) and connect when it comes.
// nats.js's own `waitOnFirstConnect` dials forever with no way to stop it, so
// a stopped agent or a closed assigner kept dialing; here each attempt is one
// dial (at most `timeoutMs`), the waits between are cancelled by `signal`,
// and a connection that completes after it fired is closed. Once connected,
// nats.js reconnects by itself (maxReconnectAttempts: -1).
// nats.js itself is imported on the first call: every command shares util/,
// and loading NATS would add about 16 ms to each (test/cli/startup.test.ts).
// https://github.com/nats-io/nats.js/blob/main/core/README.md#connection-options
import type { NatsConnection } from "@nats-io/transport-node";
import { backoffDelay, sleep } from "./retry.js";

export interface NatsConnectOptions {
  /** Client name the server shows. */
  name: string;
  /** Stops dialing; the call then resolves undefined. */
  signal: AbortSignal;
  /** Base of the jittered wait between first attempts, and nats.js's reconnect wait (ms); default 500, at least 10. The wait doubles to 10× this. */
  retryMs?: number;
  /** Longest one attempt may take (ms); default 5 s. */
  timeoutMs?: number;
  /** Told of the first failed attempt (later ones are the same story until it connects). */
  onFirstFailure?: (err: unknown) => void;
}

/** Connects to `url`, retrying until it succeeds or `signal` fires (then undefined). */
export async function connectNats(url: string, options: NatsConnectOptions): Promise<NatsConnection | undefined> {
  const { signal, timeoutMs = 5000 } = options;
  // At least 10 ms: with none, a NATS that refuses would be dialed back to back.
  const retryMs = Math.max(options.retryMs ?? 500, 10);
  const { connect } = await import("@nats-io/transport-node");
  for (let attempt = 1; !signal.aborted; attempt++) {
    try {
      const nc = await connect({ servers: url, name: options.name, timeout: timeoutMs, maxReconnectAttempts: -1, reconnectTimeWait: retryMs });
      if (!signal.aborted) return nc;
      await nc.close().catch(() => undefined);
      return undefined;
    } catch (err) {
      if (attempt === 1) options.onFirstFailure?.(err);
    }
    await sleep(backoffDelay(attempt, { baseMs: retryMs, maxMs: 10 * retryMs }), signal).catch(() => undefined);
  }
  return undefined;
}

/**
 * Whether a status error of nats.js is NATS refusing a publish (a
 * PermissionViolationError): told by its name and fields, since importing
 * the class would load nats.js where it is not used. What NATS refuses it
 * drops, and says so only afterwards, asynchronously.
 */
export function isPublishRefused(err: unknown): boolean {
  return err instanceof Error && err.name === "PermissionViolationError" && (err as { operation?: unknown }).operation === "publish";
}
