// Where the agent's telemetry goes (agent/telemetry-route.ts), against real
// nats-servers: a message NATS takes is not sent again over HTTP; one NATS
// refuses (its permissions), or one a flush cannot confirm, is in the
// outbox after confirm(), and everything after a refusal goes there until
// NATS, tried again after a backoff, takes a message again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import type { SignedTelemetry } from "../../assigner/api/index.js";
import { TelemetryRoute } from "../../agent/telemetry-route.js";
import { connectNats } from "../../util/index.js";
import { startNats, startStrictNats, type TcpServer } from "../harness/tcp-server.js";

const SUBJECT = "aegis.telemetry.route-host";
let open: TcpServer;
let strict: TcpServer;
const connections: NatsConnection[] = [];

beforeAll(async () => {
  [open, strict] = await Promise.all([startNats(), startStrictNats({ publish: "aegis.telemetry.>" })]);
});
afterAll(async () => {
  await Promise.all(connections.map((nc) => nc.close()));
  await Promise.all([open?.stop(), strict?.stop()]);
});

async function connected(server: TcpServer): Promise<NatsConnection> {
  const nc = await connectNats(server.url, { name: "route-test", signal: new AbortController().signal });
  if (!nc) throw new Error(`no connection to ${server.url}`);
  connections.push(nc);
  return nc;
}

const message = (n: number): SignedTelemetry => ({ payload: Buffer.from(`message ${n}`).toString("base64"), signature: Buffer.from(`signature ${n}`).toString("base64") });

/** What the outbox would POST now. */
async function queued(route: TelemetryRoute): Promise<SignedTelemetry[]> {
  const sent: SignedTelemetry[] = [];
  await route.outbox.flush(async (batch) => sent.push(...batch), new AbortController().signal);
  return sent;
}

const running = new AbortController().signal;

/** Kills `server` under `route`'s connection; what the outbox then holds, once it holds anything (within 5 s). */
async function afterKilling(server: TcpServer, route: TelemetryRoute): Promise<SignedTelemetry[]> {
  await server.kill();
  let outbox: SignedTelemetry[] = [];
  for (let i = 0; i < 200 && outbox.length === 0; i++) {
    outbox = await queued(route);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return outbox;
}

describe("TelemetryRoute", () => {
  it("what NATS takes goes there only", async () => {
    const nc = await connected(open);
    const seen: string[] = [];
    const sub = nc.subscribe(SUBJECT);
    void (async () => {
      for await (const m of sub) seen.push(m.string());
    })();
    await nc.flush();
    const route = new TelemetryRoute(SUBJECT, () => undefined);
    route.use(nc);
    route.send(message(1));
    await route.confirm(running);
    expect(await queued(route), "left for HTTP").toEqual([]);
    expect(seen, "received on NATS").toEqual([JSON.stringify(message(1))]);
  });

  it("what NATS refuses is in the outbox after confirm(), and so is all that follows", async () => {
    const logs: string[] = [];
    const route = new TelemetryRoute(SUBJECT, (line) => logs.push(line));
    route.use(await connected(strict));
    route.send(message(1));
    route.send(message(2));
    await route.confirm(running);
    expect(await queued(route), "the refused messages").toEqual([message(1), message(2)]);
    route.send(message(3));
    expect(await queued(route), "after the refusal").toEqual([message(3)]);
    expect(logs.filter((l) => l.startsWith("NATS refuses what this agent publishes")), logs.join("\n")).toHaveLength(1);
  });

  it("what the connection carried unconfirmed when it broke is in the outbox: a flush vouches only for what was published before it", async () => {
    const own = await startNats();
    try {
      const route = new TelemetryRoute(SUBJECT, () => undefined);
      route.use(await connected(own));
      route.send(message(1));
      const confirming = route.confirm(running);
      route.send(message(2)); // after the flush's PING
      await confirming;
      route.send(message(3));
      expect(await afterKilling(own, route), "handed over at the disconnect, with no flush").toEqual([message(2), message(3)]);
    } finally {
      await own.stop();
    }
  });

  it("what a flush cannot confirm (the agent stopping) is in the outbox", async () => {
    const route = new TelemetryRoute(SUBJECT, () => undefined);
    route.use(await connected(open));
    route.send(message(1));
    await route.confirm(AbortSignal.abort());
    expect(await queued(route), "unconfirmed").toEqual([message(1)]);
  });

  it("after a refusal NATS is tried again, and used again once it takes a message (its permissions reloaded)", async () => {
    const own = await startStrictNats({ publish: "aegis.telemetry.>" });
    try {
      const logs: string[] = [];
      const route = new TelemetryRoute(SUBJECT, (line) => logs.push(line), 20);
      const nc = await connected(own);
      route.use(nc);
      route.send(message(1));
      await route.confirm(running);
      expect(await queued(route), "refused").toEqual([message(1)]);
      await own.deny({});
      const seen: string[] = [];
      const sub = nc.subscribe(SUBJECT);
      void (async () => {
        for await (const m of sub) seen.push(m.string());
      })();
      await nc.flush();
      // Each pass sends one message; once the backoff (20-60 ms) has passed, one goes to NATS and is confirmed.
      let n = 2;
      for (let i = 0; i < 200 && !logs.includes("NATS takes this agent's telemetry again"); i++) {
        route.send(message(n++));
        await route.confirm(running);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(logs, "the recovery logged").toContain("NATS takes this agent's telemetry again");
      const overHttp = await queued(route);
      expect(overHttp.length, "sent over HTTP while NATS was not tried").toBe(n - 3);
      route.send(message(100));
      await route.confirm(running);
      expect(await queued(route), "after the recovery").toEqual([]);
      expect(seen.slice(-2), "received on NATS").toEqual([JSON.stringify(message(n - 1)), JSON.stringify(message(100))]);
    } finally {
      await own.stop();
    }
  });
});
