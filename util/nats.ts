// The first connection to NATS, for the agent and the assigner, which both
// start without it (they poll, or serve, meanwhile) and connect when it comes.
// nats.js's own `waitOnFirstConnect` dials forever with no way to stop it, so
// a stopped agent or a closed assigner kept dialing; here each attempt is one
// dial (at most `timeoutMs`), the waits between are cancelled by `signal`,
// and a connection that completes after it fired is closed. Once connected,
// nats.js reconnects by itself (maxReconnectAttempts: -1).
// nats.js itself is imported on the first call: every command shares util/,
// and loading NATS would add about 16 ms to each (test/cli/startup.test.ts).
// NATS may also refuse a subscription or a publish (its permissions), and
// allow it again once its configuration is reloaded: `flushed` tells whether
// it took what was sent, and `subscribeKept` asks again for a subscription
// it refused, so fixing the permissions needs no restart.
// https://github.com/nats-io/nats.js/blob/main/core/README.md#connection-options
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
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
  const retryMs = natsRetryBase(options.retryMs);
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
 * Whether an error of nats.js is NATS refusing a publish or subscription (a
 * PermissionViolationError; `operation` narrows it to one): told by its name
 * and fields, since importing the class would load nats.js where it is not
 * used. What NATS refuses it drops, and says so only afterwards,
 * asynchronously.
 */
export function isRefused(err: unknown, operation?: "publish" | "subscription"): boolean {
  return err instanceof Error && err.name === "PermissionViolationError" && (operation === undefined || (err as { operation?: unknown }).operation === operation);
}

/**
 * The base of the waits between attempts at NATS (`retryMs` options): 500 ms
 * by default, at least 10 (with none, a NATS that refuses would be asked
 * back to back).
 */
export function natsRetryBase(retryMs: number | undefined): number {
  return Math.max(retryMs ?? 500, 10);
}

/** The jittered wait before asking NATS again after `attempt` refusals: doubling from `retryMs` to 60× it, cut short by `signal`. */
export function refusalWait(attempt: number, retryMs: number, signal: AbortSignal): Promise<void> {
  return sleep(backoffDelay(attempt, { baseMs: retryMs, maxMs: 60 * retryMs }), signal).catch(() => undefined);
}

/** How long a flush may wait for NATS's answer (ms): a connection that does not answer it is treated as broken. */
export const FLUSH_MS = 5000;

/**
 * Whether NATS answered a flush on `nc` within `timeoutMs` and before
 * `signal` fired: then it has taken or refused all that was sent before.
 * NATS answers a refusal before the flush's PONG, and nats.js hands it on
 * through promises and async iterators (a status loop, a subscription
 * ending): all of that has run once this resolves.
 */
export function flushed(nc: NatsConnection, signal: AbortSignal, timeoutMs = FLUSH_MS): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    // A timer and a listener removed once settled, not AbortSignal.any(signal, …): Node 20 keeps every such
    // combination referenced from `signal`, a process's lifelong one here, for as long as that lives.
    const done = (ok: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
      resolve(ok);
    };
    const abort = () => done(false);
    // Unref'd, as AbortSignal.timeout's is: it never keeps a process from exiting.
    const timer = setTimeout(abort, timeoutMs).unref();
    signal.addEventListener("abort", abort, { once: true });
    nc.flush()
      .then(() => new Promise((settled) => setImmediate(settled)))
      .then(() => done(true), () => done(false));
  });
}

export interface KeptSubscriptionOptions {
  /** A queue group: each message reaches one of its members. */
  queue?: string;
  /** Base of the jittered wait before asking again after a refusal (ms); default 500, at least 10. The wait doubles to 60× this. */
  retryMs?: number;
  /** Stops asking again. */
  signal: AbortSignal;
  /** NATS refused the subscription: told once, until it takes it again. */
  onRefused: (err: unknown) => void;
  /** NATS took the subscription again after refusing it. */
  onAccepted: () => void;
}

/**
 * Subscribes to `subject` on `nc` and hands each message to `handle`, one at
 * a time, until the connection closes or drains (nats.js itself renews
 * subscriptions across reconnects). A subscription NATS refuses, or stops
 * allowing (a configuration reload), is asked for again after a backoff
 * until NATS takes it: a message arrives on it, or a flush is answered while
 * it stays open (checked again with backoff while the connection cannot
 * answer). `signal` stops the asking again.
 */
export async function subscribeKept(nc: NatsConnection, subject: string, handle: (msg: Msg) => Promise<void> | void, options: KeptSubscriptionOptions): Promise<void> {
  const { signal } = options;
  const retryMs = natsRetryBase(options.retryMs);
  const wait = (attempt: number) => refusalWait(attempt, retryMs, signal);
  let refusals = 0;
  let current: Subscription | undefined;
  let revoked: unknown;
  const taken = () => {
    if (refusals === 0) return;
    refusals = 0;
    options.onAccepted();
  };
  // A reload that takes the permission away ends a plain subscription with an
  // error, but nats.js matches the server's error (which names no queue) to no
  // queue subscription, which then stays open and receives nothing: the
  // connection's status tells.
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type !== "error" || !isRefused(status.error, "subscription") || (status.error as { subject?: unknown }).subject !== subject) continue;
      if (current && !current.isClosed()) {
        revoked = status.error;
        current.unsubscribe();
      }
    }
  })();
  const confirm = async (subscription: Subscription) => {
    for (let attempt = 1; refusals > 0 && current === subscription && !subscription.isClosed() && !signal.aborted; attempt++) {
      if ((await flushed(nc, signal)) && current === subscription && !subscription.isClosed()) return taken();
      await wait(attempt);
    }
  };
  while (!signal.aborted && !nc.isClosed()) {
    const subscription = nc.subscribe(subject, options.queue !== undefined ? { queue: options.queue } : {});
    current = subscription;
    revoked = undefined;
    if (refusals > 0) void confirm(subscription);
    try {
      for await (const msg of subscription) {
        taken();
        await handle(msg);
      }
      if (revoked === undefined) return; // the connection closed or drained
      throw revoked;
    } catch (err) {
      if (!isRefused(err)) throw err;
      if (++refusals === 1) options.onRefused(err);
    }
    await wait(refusals);
  }
}
