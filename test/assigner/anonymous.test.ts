// What a caller without a token can hold and read: every anonymous answer
// (health, metrics, OpenAPI, registration, unknown routes) and every 401 or
// 403 closes its connection, so idle keep-alive connections cannot take the
// --max-connections slots from agents and operators; one client address can
// be capped (--max-connections-per-client); /metrics can need a token
// (--metrics-token). Real sockets against an assigner on 127.0.0.1.
import { join } from "node:path";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAssigner, type RunningAssigner } from "../../assigner/index.js";
import { createLogger } from "../../assigner/logging.js";
import { startAssignerProcess } from "../harness/assigner-process.js";
import { http, rawConnection, registerAgent, type RawConnection } from "../harness/assigner-http.js";
import { makeTempDir, removeTempDir } from "../harness/process.js";
import { aegis } from "../cli/run.js";

const ADMIN = "anonymous-test-operator";
const METRICS = "anonymous-test-scraper";
let work: string;

beforeAll(() => {
  work = makeTempDir("aegis-anonymous-");
});
afterAll(async () => {
  if (work) await removeTempDir(work);
});

/** Waits for `promise` up to `ms`; says whether it settled. A bound on waiting, not a timing assertion. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([promise.then(() => true), sleep(ms).then(() => false)]);
}

/** Sends one request on `conn` and waits (bounded) for its whole answer's head. */
async function ask(conn: RawConnection, method: string, path: string, token?: string): Promise<string> {
  await conn.write(`${method} ${path} HTTP/1.1\r\nHost: assigner\r\n${token ? `Authorization: Bearer ${token}\r\n` : ""}\r\n`);
  for (let i = 0; i < 250 && !conn.received().includes("\r\n\r\n"); i++) await sleep(20);
  return conn.received();
}

/** A logger whose JSON lines land in `lines`. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: createLogger({ stream, readable: false, level: "info" }) };
}

describe("anonymous and refused callers keep no connection", () => {
  let assigner: RunningAssigner;
  let agentToken: string;

  beforeAll(async () => {
    assigner = await startAssigner({ port: 0, dataDir: join(work, "close"), adminToken: ADMIN });
    agentToken = (await registerAgent(assigner.url, "anon-agent")).token;
  });
  afterAll(async () => {
    await assigner?.close();
  });

  it("the review's case: five idle sockets that each did GET /healthz do not hold a 5-connection assigner's slots", async () => {
    const capped = await startAssigner({ port: 0, dataDir: join(work, "capped"), adminToken: ADMIN, maxConnections: 5 });
    try {
      const conns = await Promise.all(Array.from({ length: 5 }, () => rawConnection(capped.url)));
      for (const [i, conn] of conns.entries()) {
        const answer = await ask(conn, "GET", "/healthz");
        expect(answer, `socket ${i}: the health answer`).toMatch(/^HTTP\/1\.1 200 /);
        expect(answer, `socket ${i}: the answer says the connection closes`).toMatch(/\r\nconnection: close\r\n/i);
      }
      for (const [i, conn] of conns.entries()) expect(await within(conn.closed, 5000), `socket ${i} was closed by the assigner`).toBe(true);
      const admin = await fetch(`${capped.url}/agents`, { headers: { authorization: `Bearer ${ADMIN}` } }).then((res) => res.status, (err: Error) => `${err.message} (${String((err.cause as Error | undefined)?.message)})`);
      expect(admin, "the operator's request after the five").toBe(200);
    } finally {
      await capped.close();
    }
  });

  it.each([
    ["GET /healthz, no token", "GET", "/healthz", undefined, 200],
    ["GET /openapi.json, no token", "GET", "/openapi.json", undefined, 200],
    ["GET /metrics, no token (public by default)", "GET", "/metrics", undefined, 200],
    ["POST /agents/register/init refused (no body)", "POST", "/agents/register/init", undefined, 400],
    ["an unknown route", "GET", "/no/such/route", undefined, 404],
    ["GET /agents with no token: 401", "GET", "/agents", undefined, 401],
    ["GET /agents with a wrong token: 401", "GET", "/agents", "not-a-token", 401],
    ["GET /agents with an agent token: 403", "GET", "/agents", "AGENT", 403],
    ["the poll for another host with an agent token: 403", "GET", "/artifacts/for-host/someone-else", "AGENT", 403],
    ["the poll with a wrong token: 401", "GET", "/artifacts/for-host/anon-agent", "not-a-token", 401],
  ] as const)("%s: answered with Connection: close, and closed", async (what, method, path, token, status) => {
    const conn = await rawConnection(assigner.url);
    try {
      const answer = await ask(conn, method, path, token === "AGENT" ? agentToken : token);
      expect(answer, `${what}: status`).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(answer, `${what}: Connection: close`).toMatch(/\r\nconnection: close\r\n/i);
      expect(await within(conn.closed, 5000), `${what}: the assigner closed the connection`).toBe(true);
    } finally {
      conn.socket.destroy();
    }
  });

  it.each([
    ["an operator's GET /agents", "/agents", ADMIN],
    ["an agent's poll of its own host", "/artifacts/for-host/anon-agent", "AGENT"],
  ] as const)("%s keeps its connection for the next request", async (what, path, token) => {
    const conn = await rawConnection(assigner.url);
    try {
      const first = await ask(conn, "GET", path, token === "AGENT" ? agentToken : token);
      expect(first, `${what}: status`).toMatch(/^HTTP\/1\.1 200 /);
      expect(first, `${what}: no Connection: close`).not.toMatch(/\r\nconnection: close\r\n/i);
      expect(await within(conn.closed, 300), `${what}: the connection is still open`).toBe(false);
    } finally {
      conn.socket.destroy();
    }
  });
});

describe("--max-connections-per-client", () => {
  it("a client address past its share has its next connection closed at once (and logged); the held ones work, other room stays", async () => {
    const { lines, logger } = capturingLogger();
    const capped = await startAssigner({ port: 0, dataDir: join(work, "per-client"), adminToken: ADMIN, maxConnectionsPerClient: 2, logger });
    try {
      const held = await Promise.all([0, 1].map(() => rawConnection(capped.url)));
      await sleep(100);
      const extra = await rawConnection(capped.url);
      expect(await within(extra.closed, 5000), "the third connection from 127.0.0.1 was closed").toBe(true);
      const answer = await ask(held[0]!, "GET", "/agents", ADMIN);
      expect(answer, "a held connection still answers").toMatch(/^HTTP\/1\.1 200 /);
      held[1]!.socket.destroy();
      await held[1]!.closed;
      await sleep(100);
      const later = await rawConnection(capped.url);
      expect(await ask(later, "GET", "/agents", ADMIN), "a slot freed by a close is taken again").toMatch(/^HTTP\/1\.1 200 /);
      for (const conn of [...held, later]) conn.socket.destroy();
      const warned = lines.filter((line) => line.level === "warn" && /--max-connections-per-client/.test(String(line.msg)));
      expect(warned, `the refusal's warning in:\n${JSON.stringify(lines, null, 1)}`).toHaveLength(1);
      expect(warned[0], "the warning names the client").toMatchObject({ client: "127.0.0.1", limit: 2 });
    } finally {
      await capped.close();
    }
  });

  it("is refused when not a positive integer", async () => {
    await expect(startAssigner({ port: 0, dataDir: join(work, "bad-cap"), adminToken: ADMIN, maxConnectionsPerClient: 0 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });
});

describe("--metrics-token", () => {
  let assigner: RunningAssigner;
  let agentToken: string;

  beforeAll(async () => {
    assigner = await startAssigner({ port: 0, dataDir: join(work, "metrics"), adminToken: ADMIN, metricsToken: METRICS });
    agentToken = (await registerAgent(assigner.url, "metrics-agent")).token;
  });
  afterAll(async () => {
    await assigner?.close();
  });

  it.each([
    ["no token", undefined, 401],
    ["a wrong token", "wrong-scraper", 401],
    ["an agent's token", "AGENT", 403],
    ["the metrics token", METRICS, 200],
    ["the operator's token", ADMIN, 200],
  ] as const)("GET /metrics with %s", async (what, token, status) => {
    const res = await http(assigner.url, "GET", "/metrics", token ? { token: token === "AGENT" ? agentToken : token } : {});
    expect(res.status, `${what}: ${res.bytes.toString().slice(0, 200)}`).toBe(status);
    if (status === 200) expect(res.bytes.toString(), `${what}: the metrics`).toContain("aegis_http_requests_total");
    else expect(res.bytes.toString(), `${what}: no metrics in a refusal`).not.toContain("aegis_");
  });

  it("aegis assigner serve takes it from AEGIS_METRICS_TOKEN, and --help names the flag and the variable", async () => {
    const help = await aegis(["assigner", "serve", "--help"]);
    expect(help.code, help.stderr).toBe(0);
    for (const text of ["--metrics-token", "AEGIS_METRICS_TOKEN", "--max-connections-per-client", "AEGIS_MAX_CONNECTIONS_PER_CLIENT"]) expect(help.stdout, `help mentions ${text}`).toContain(text);
    const proc = await startAssignerProcess(["--admin-token", ADMIN], { AEGIS_METRICS_TOKEN: METRICS });
    try {
      expect((await http(proc.url, "GET", "/metrics")).status, "anonymous").toBe(401);
      expect((await http(proc.url, "GET", "/metrics", { token: METRICS })).status, "the metrics token").toBe(200);
      expect((await http(proc.url, "GET", "/healthz")).status, "the health check stays public").toBe(200);
      expect(proc.process.output(), "the token is never logged").not.toContain(METRICS);
    } finally {
      await proc.stop();
    }
  });
});
