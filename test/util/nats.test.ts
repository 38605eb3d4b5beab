// subscribeKept (util/nats.ts) against a real nats-server whose permissions
// the test changes: a refused subscription is asked for again and reported
// taken once NATS allows it, even when the first checks that it was taken
// cannot be answered (a connection that fails its flushes, as one
// reconnecting does), and a message on it counts as taken.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats, subscribeKept } from "../../util/index.js";
import { startStrictNats, type StrictNats } from "../harness/tcp-server.js";

const SUBJECT = "aegis.kept.test";
let strict: StrictNats;
const connections: NatsConnection[] = [];

beforeAll(async () => {
  strict = await startStrictNats({ subscribe: SUBJECT });
});
afterAll(async () => {
  await Promise.all(connections.map((nc) => nc.close()));
  await strict?.stop();
});

async function connected(): Promise<NatsConnection> {
  const nc = await connectNats(strict.url, { name: "kept-test", signal: new AbortController().signal });
  if (!nc) throw new Error(`no connection to ${strict.url}`);
  connections.push(nc);
  return nc;
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  if (!check()) throw new Error(`gave up waiting: ${what}`);
}

/** `nc`, whose flushes fail while `flushes.failing` (as while it reconnects), counted: everything else is the real connection's. */
function failingFlushes(nc: NatsConnection, flushes: { failing: boolean; failed: number }): NatsConnection {
  return new Proxy(nc, {
    get(target, property) {
      if (property === "flush" && flushes.failing) {
        return () => {
          flushes.failed++;
          return Promise.reject(new Error("injected: the flush failed"));
        };
      }
      const value: unknown = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

describe("subscribeKept", () => {
  it("reports a refused subscription taken once NATS allows it, though the first checks fail", async () => {
    await strict.deny({ subscribe: SUBJECT });
    const nc = await connected();
    const flushes = { failing: false, failed: 0 };
    const events: string[] = [];
    const stop = new AbortController();
    const kept = subscribeKept(failingFlushes(nc, flushes), SUBJECT, () => undefined, {
      signal: stop.signal,
      retryMs: 10,
      onRefused: (err) => events.push(`refused: ${(err as Error).message}`),
      onAccepted: () => events.push("accepted"),
    });
    try {
      await until("refused", () => events.length > 0);
      expect(events[0], "the refusal").toMatch(/^refused: Permissions Violation for Subscription/);
      flushes.failing = true;
      await strict.deny({});
      // Allowed now, but the checks fail: made again, and not taken for an answer.
      flushes.failed = 0;
      await until("two checks failed after the reload", () => flushes.failed >= 2);
      expect(events.includes("accepted"), "taken while no check could answer").toBe(false);
      flushes.failing = false;
      await until("accepted", () => events.includes("accepted"));
      expect(events.filter((e) => e.startsWith("refused")), "the refusal told once").toHaveLength(1);
    } finally {
      stop.abort();
      await nc.close();
      await kept;
    }
  });

  it("takes a message on a subscription asked for again as NATS taking it", async () => {
    await strict.deny({ subscribe: SUBJECT });
    const nc = await connected();
    const events: string[] = [];
    const received: string[] = [];
    const stop = new AbortController();
    // Every check fails: only the message can tell.
    const kept = subscribeKept(failingFlushes(nc, { failing: true, failed: 0 }), SUBJECT, (msg) => void received.push(msg.string()), {
      signal: stop.signal,
      retryMs: 10,
      onRefused: () => events.push("refused"),
      onAccepted: () => events.push("accepted"),
    });
    try {
      await until("refused", () => events.length > 0);
      await strict.deny({});
      const publisher = await connected();
      await until("a message received", () => {
        publisher.publish(SUBJECT, "hello");
        return received.length > 0;
      });
      expect(events, "refused, then taken").toEqual(["refused", "accepted"]);
      expect(received[0], "handed on").toBe("hello");
    } finally {
      stop.abort();
      await nc.close();
      await kept;
    }
  });
});
