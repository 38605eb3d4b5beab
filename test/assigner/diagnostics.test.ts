// What the assigner tells its operator when something fails that a caller
// cannot see or fix: a binary whose registry bytes fail verification (a 502
// before any byte went out, and a warning with the code), the reason of
// every 5xx, telemetry refused (host and reason, at most a line a minute per
// host, never the payload), and uploads kept on one machine while the store
// is shared Redis. An assigner in this process, its log captured as JSON.
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { Writable } from "node:stream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAssigner, type RunningAssigner } from "../../assigner/index.js";
import { createLogger } from "../../assigner/logging.js";
import { buildBundle } from "../../bundle/index.js";
import { sha256 } from "../../registry/index.js";
import { http, registerAgent, signed, telemetry } from "../harness/assigner-http.js";
import { freePort } from "../harness/ports.js";
import { makeTempDir, removeTempDir } from "../harness/process.js";
import { startNats, startRedis, type TcpServer } from "../harness/tcp-server.js";

const ADMIN = "diagnostics-operator";
type Line = Record<string, unknown> & { level: string; msg: string };

/** A logger whose JSON lines land in `lines`. */
function capturingLogger(level = "info") {
  const lines: Line[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) lines.push(JSON.parse(line) as Line);
      done();
    },
  });
  return { lines, logger: createLogger({ stream, readable: false, level }) };
}

let work: string;
let assigner: RunningAssigner;
let log: ReturnType<typeof capturingLogger>;

beforeAll(async () => {
  work = makeTempDir("aegis-diagnostics-");
  log = capturingLogger();
  // No --registry: uploads go to the OCI layout in the data dir, whose blobs the test can tamper with.
  assigner = await startAssigner({ port: 0, dataDir: work, adminToken: ADMIN, logger: log.logger });
});
afterAll(async () => {
  await assigner?.close();
  if (work) await removeTempDir(work);
});

/** Lines logged since `from` (an index into the log) that `match`. */
const since = (from: number, match: (line: Line) => boolean) => log.lines.slice(from).filter(match);

describe("a binary that fails verification on its way out", () => {
  it("is a 502 with DIGEST_MISMATCH in detail (not a reset), and a warning names the artifact and the code", async () => {
    const { bytes } = await buildBundle("policies/block-icmp-8888");
    const created = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body: { name: "block-icmp-8888", version: "1.0.0", data: bytes.toString("base64") } });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
    const id = created.json.id as string;
    expect((await http(assigner.url, "POST", `/assign/${id}/tamper-host`, { token: ADMIN })).status, "assign").toBe(200);
    const agent = await registerAgent(assigner.url, "tamper-host");
    // The layer's bytes in the layout, changed in place (same length): what a broken disk or a hostile mirror serves.
    const blob = join(work, "oci", "blobs", "sha256", sha256(bytes).slice("sha256:".length));
    const tampered = readFileSync(blob);
    tampered[tampered.length >> 1]! ^= 0xff;
    writeFileSync(blob, tampered);

    const from = log.lines.length;
    const answer = await http(assigner.url, "GET", `/artifacts/${id}/binary`, { token: agent.token }).catch((err: Error) => ({ status: `no answer: ${err.message}`, json: {}, headers: new Headers() }));
    expect(answer.status, "the status of the tampered binary").toBe(502);
    expect(answer.json, "the error answer").toMatchObject({ code: "BAD_GATEWAY", detail: "DIGEST_MISMATCH" });
    expect(answer.headers.get("etag"), "no ETag of the layer on the error").toBeNull();
    await expect.poll(() => since(from, (line) => line.msg === "request").length, { message: "the request line" }).toBeGreaterThan(0);
    const warned = since(from, (line) => line.level === "warn" && line.artifact_id === id);
    expect(warned, `a warning for the artifact in:\n${JSON.stringify(log.lines.slice(from), null, 1)}`).toHaveLength(1);
    expect(warned[0], "the warning's code").toMatchObject({ code: "DIGEST_MISMATCH" });
    expect(since(from, (line) => line.msg === "request")[0], "the request line").toMatchObject({ level: "error", status: 502, route: "/artifacts/{id}/binary" });
  });
});

describe("every 5xx is logged with its reason, in one line", () => {
  it("a registration from an unreachable registry: its request line, at error, gives the code, detail and message", async () => {
    const port = await freePort();
    const reference = `127.0.0.1:${port}/nowhere/policy@sha256:${"a".repeat(64)}`;
    const from = log.lines.length;
    const answer = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body: { reference } });
    expect(answer.status, JSON.stringify(answer.json)).toBe(502);
    await expect.poll(() => since(from, (line) => line.msg === "request").length, { message: "the request line" }).toBeGreaterThan(0);
    const errors = since(from, (line) => line.level === "error");
    expect(errors, `one error line (a fleet's polls during an outage are a line each) in:\n${JSON.stringify(log.lines.slice(from), null, 1)}`).toHaveLength(1);
    expect(errors[0], "the request line, with the reason").toMatchObject({ msg: "request", status: 502, route: "/artifacts", code: "BAD_GATEWAY", detail: answer.json.detail, error: answer.json.error });
    expect(JSON.stringify(log.lines), "no token in the log").not.toContain(ADMIN);
  });

  it("a client that left before the failure: its request line is out, so the reason is a line of its own", async () => {
    // A registry that takes each connection and drops it after 300 ms: the registration fails (502) well after the client gave up.
    const dropping = createNetServer((socket) => void setTimeout(() => socket.destroy(), 300));
    await new Promise<void>((resolve) => dropping.listen(0, "127.0.0.1", resolve));
    try {
      const reference = `127.0.0.1:${(dropping.address() as AddressInfo).port}/slow/policy@sha256:${"e".repeat(64)}`;
      const from = log.lines.length;
      const gaveUp = await fetch(`${assigner.url}/artifacts`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
        body: JSON.stringify({ reference }),
        signal: AbortSignal.timeout(100),
      }).then(
        (r) => `answered ${r.status}`,
        (err: Error) => err.name,
      );
      expect(gaveUp, "the client gave up first").toBe("TimeoutError");
      await expect.poll(() => since(from, (line) => line.level === "error" && line.msg !== "request").length, { message: `the reason's own line in:\n${JSON.stringify(log.lines.slice(from), null, 1)}`, timeout: 20_000 }).toBe(1);
      expect(since(from, (line) => line.level === "error" && line.msg !== "request")[0], "the reason").toMatchObject({ code: "BAD_GATEWAY", detail: "UNREACHABLE" });
      expect(since(from, (line) => line.msg === "request")[0], "the request line, out when the client left").toMatchObject({ route: "/artifacts", aborted: true });
    } finally {
      dropping.close();
    }
  });

  it("with info off (no request lines), the reason is its own line", async () => {
    const quiet = capturingLogger("warn");
    const dir = makeTempDir("aegis-diagnostics-quiet-");
    const server = await startAssigner({ port: 0, dataDir: dir, adminToken: ADMIN, logger: quiet.logger });
    try {
      const reference = `127.0.0.1:${await freePort()}/nowhere/policy@sha256:${"c".repeat(64)}`;
      const answer = await http(server.url, "POST", "/artifacts", { token: ADMIN, body: { reference } });
      expect(answer.status, JSON.stringify(answer.json)).toBe(502);
      const errors = quiet.lines.filter((line) => line.level === "error");
      expect(errors, `one error line in:\n${JSON.stringify(quiet.lines, null, 1)}`).toHaveLength(1);
      expect(errors[0], "the reason").toMatchObject({ code: "BAD_GATEWAY", detail: answer.json.detail, msg: answer.json.error });
    } finally {
      await server.close();
      await removeTempDir(dir);
    }
  });
});

describe("telemetry refused", () => {
  it("a host whose clock is 10 minutes off: a warning naming the host and the clock, once a minute at most, without the payload", async () => {
    const keys = generateKeyPairSync("ed25519");
    const agent = await registerAgent(assigner.url, "skewed-host", keys);
    const from = log.lines.length;
    const late = new Date(Date.now() - 10 * 60_000).toISOString();
    const messages = [0, 1, 2].map(() => signed(telemetry("skewed-host", `sha256:${"b".repeat(64)}`, { time: late }), keys));
    for (const [i, message] of messages.entries()) {
      const answer = await http(assigner.url, "POST", `/agents/${agent.uid}/telemetry`, { token: agent.token, body: message });
      expect(answer.json, `message ${i}: the answer's shape is the contract's`).toEqual({ recorded: 0, refused: 1 });
    }
    const warned = since(from, (line) => line.level === "warn" && line.host_id === "skewed-host");
    expect(warned, `one warning for the host in:\n${JSON.stringify(log.lines.slice(from), null, 1)}`).toHaveLength(1);
    expect(warned[0], "its fields").toMatchObject({ result: "invalid", reason: "clock" });
    expect(warned[0]!.msg, "its message").toMatch(/^telemetry from host "skewed-host" refused: time .* from the assigner's clock: check the host's clock/);
    const text = JSON.stringify(log.lines.slice(from));
    for (const message of messages) expect(text.includes(message.payload) || text.includes(message.signature), "the payload or signature in the log").toBe(false);
    expect(text, "no agent token in the log").not.toContain(agent.token);
  });

  it("each host is told of on its own: a bad signature and a report about an artifact not served", async () => {
    const keys = generateKeyPairSync("ed25519");
    const forged = await registerAgent(assigner.url, "forged-host", keys);
    const stray = await registerAgent(assigner.url, "stray-host", keys);
    const from = log.lines.length;
    const other = generateKeyPairSync("ed25519");
    expect((await http(assigner.url, "POST", `/agents/${forged.uid}/telemetry`, { token: forged.token, body: signed(telemetry("forged-host", `sha256:${"c".repeat(64)}`), other) })).json).toEqual({ recorded: 0, refused: 1 });
    expect((await http(assigner.url, "POST", `/agents/${stray.uid}/telemetry`, { token: stray.token, body: signed(telemetry("stray-host", `sha256:${"c".repeat(64)}`), keys) })).json).toEqual({ recorded: 0, refused: 1 });
    const warned = since(from, (line) => line.level === "warn" && typeof line.host_id === "string").map((line) => [line.host_id, line.result, line.reason]);
    expect(warned, "the warnings: host, result, reason").toEqual([
      ["forged-host", "invalid", "signature"],
      ["stray-host", "dropped", "not-served"],
    ]);
  });
});

describe("telemetry over NATS that is malformed, or that the store cannot take", () => {
  it("malformed: counted invalid, one warning for all such messages (any publisher may name any host); Redis away: counted dropped, one error line", async () => {
    const [redis, nats] = await Promise.all([startRedis(), startNats()]);
    const own = capturingLogger();
    const started = await startAssigner({ port: 0, dataDir: join(work, "nats-telemetry"), adminToken: ADMIN, logger: own.logger, redisUrl: redis.url, redisPrefix: "nats-telemetry", natsUrl: nats.url });
    const nc = await connect({ servers: nats.url });
    try {
      const counted = async () => {
        const text = (await http(started.url, "GET", "/metrics")).bytes.toString("utf8");
        const value = (result: string) => Number(new RegExp(`^aegis_telemetry_messages_total\\{result="${result}"\\} (\\d+)`, "m").exec(text)?.[1] ?? 0);
        return { invalid: value("invalid"), dropped: value("dropped") };
      };
      await expect.poll(async () => (await http(started.url, "GET", "/healthz")).json.nats, { message: "the assigner on NATS", timeout: 20_000 }).toBe("connected");
      const keys = generateKeyPairSync("ed25519");
      await registerAgent(started.url, "nats-host", keys);
      for (const [subject, body] of [["nats-host", "not json"], ["nats-host", '{"payload":1}'], ["made-up-host", "{}"], ["bad!host", "{}"]]) nc.publish(`aegis.telemetry.${subject}`, body);
      await nc.flush();
      await expect.poll(async () => (await counted()).invalid, { message: "the four malformed messages counted invalid" }).toBe(4);
      const malformed = own.lines.filter((line) => line.reason === "malformed");
      expect(malformed, `one warning for the four in:\n${JSON.stringify(own.lines, null, 1)}`).toHaveLength(1);
      expect(malformed[0], "the warning").toMatchObject({ level: "warn", host_id: "nats-host", result: "invalid" });
      expect(malformed[0]!.msg, "its message").toMatch(/^telemetry from host "nats-host" refused: not a signed telemetry envelope/);

      await redis.stop();
      for (let i = 0; i < 3; i++) nc.publish("aegis.telemetry.nats-host", JSON.stringify(signed(telemetry("nats-host", `sha256:${"d".repeat(64)}`), keys)));
      await nc.flush();
      await expect.poll(async () => (await counted()).dropped, { message: "the three messages Redis could not take counted dropped" }).toBe(3);
      const lost = own.lines.filter((line) => line.reason === "store");
      expect(lost, `one error line for the three in:\n${JSON.stringify(own.lines, null, 1)}`).toHaveLength(1);
      expect(lost[0], "the error line").toMatchObject({ level: "error", host_id: "nats-host", result: "dropped" });
      expect(lost[0]!.msg, "its message").toMatch(/^telemetry from host "nats-host" not recorded: /);
    } finally {
      await nc.close();
      await started.close();
      await Promise.all([redis.stop(), nats.stop()]);
    }
  });
});

describe("uploads on one machine while the store is shared Redis", () => {
  let redis: TcpServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it.each([
    ["Redis without --registry", { redis: true }, 1],
    ["Redis with --registry", { redis: true, registry: true }, 0],
    ["the embedded store", {}, 0],
  ] as const)("%s (%j): %i start-up warnings about uploads", async (what, setup, count) => {
    const own = capturingLogger();
    const dir = join(work, `shared-${count}-${Object.keys(setup).join("-") || "embedded"}`);
    const started = await startAssigner({
      port: 0,
      dataDir: dir,
      adminToken: ADMIN,
      logger: own.logger,
      ...("redis" in setup ? { redisUrl: redis.url, redisPrefix: `shared-${Object.keys(setup).length}` } : {}),
      ...("registry" in setup ? { registry: `oci:${join(dir, "uploads")}` } : {}),
    });
    await started.close();
    const warned = own.lines.filter((line) => line.level === "warn" && /--registry/.test(line.msg));
    expect(warned, `${what}: warnings in:\n${JSON.stringify(own.lines, null, 1)}`).toHaveLength(count);
    if (count > 0) expect(warned[0]!.msg, `${what}: the warning`).toMatch(/another assigner on this Redis cannot serve them; give every assigner the same --registry/);
  });
});
