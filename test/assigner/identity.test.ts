// Registration and identity under attack (issue 8): a host cannot be taken
// over through a registration begun before it was bound, concurrent
// completions bind once, revoked tokens stop at once, pending registrations
// are capped, and small-order Ed25519 keys are refused. On both stores. And
// the agent's side: it signs a registration nonce of NONCE_BYTES only, so an
// answer cannot have it sign a telemetry report of the answer's choosing.
import { generateKeyPairSync, randomBytes, sign, verify } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AssignerClient, NONCE_BYTES, openTelemetry, TELEMETRY_PAYLOAD_TYPE, type TelemetryMessage } from "../../assigner/api/index.js";
import { startAssigner, type RunningAssigner } from "../../assigner/index.js";
import { aegis, expectOneErrorLine } from "../cli/run.js";
import { beginRegistration, http, registerAgent } from "../harness/assigner-http.js";
import { startAssignerProcess } from "../harness/assigner-process.js";
import { startRedis, type TcpServer } from "../harness/tcp-server.js";

let redis: TcpServer;
const work = mkdtempSync(join(tmpdir(), "aegis-identity-"));
const running: RunningAssigner[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await Promise.all(running.map((a) => a.close()));
  await redis?.stop();
  rmSync(work, { recursive: true, force: true });
});

const stores: [string, () => Promise<RunningAssigner>][] = [
  ["embedded", () => startAssigner({ port: 0, dataDir: mkdtempSync(join(work, "embedded-")), adminToken: "op" })],
  ["redis", () => startAssigner({ port: 0, dataDir: mkdtempSync(join(work, "redis-")), redisUrl: redis.url, redisPrefix: `id${running.length}`, adminToken: "op" })],
];

describe("registration across a change of the enroll secret (Redis keeps registrations under way across a restart)", () => {
  it("one begun under the old secret does not complete under the new; one begun under the new does", async () => {
    const prefix = `enroll${running.length}`;
    const serve = (enrollSecret: string) => startAssigner({ port: 0, dataDir: mkdtempSync(join(work, "enroll-")), redisUrl: redis.url, redisPrefix: prefix, adminToken: "op", enrollSecret });
    const before = await serve("old-secret");
    const keys = generateKeyPairSync("ed25519");
    const early = await beginRegistration(before.url, "rekeyed", keys, { enroll_secret: "old-secret" });
    expect(early.answer.status, JSON.stringify(early.answer.json)).toBe(200);
    await before.close();
    const after = await serve("new-secret");
    running.push(after);
    const late = await http(after.url, "POST", "/agents/register/complete", {
      body: { registration_id: early.answer.json.registration_id, signature: sign(null, Buffer.from(early.answer.json.nonce as string, "base64"), keys.privateKey).toString("base64") },
    });
    expect([late.status, late.json.code, late.json.error], "begun under the old secret").toEqual([401, "UNAUTHORIZED", "the assigner's enroll secret changed since this registration began: start again with /agents/register/init"]);
    const again = await beginRegistration(after.url, "rekeyed", keys, { enroll_secret: "new-secret" });
    expect((await again.complete()).status, "begun under the new secret").toBe(200);
  });
});

describe.each(stores)("registration on the %s store", (_name, start) => {
  let assigner: RunningAssigner;
  let url: string;
  beforeAll(async () => {
    assigner = await start();
    running.push(assigner);
    url = assigner.url;
  });
  const poll = (host: string, token: string) => http(url, "GET", `/artifacts/for-host/${host}`, { token });

  it("a registration begun by another key before the host was bound cannot complete after it", async () => {
    const thief = generateKeyPairSync("ed25519");
    const early = await beginRegistration(url, "victim", thief);
    expect(early.answer.status, JSON.stringify(early.answer.json)).toBe(200);
    const real = await registerAgent(url, "victim");
    const late = await early.complete();
    expect(late.status, `the thief's completion: ${JSON.stringify(late.json)}`).toBe(409);
    expect(late.json.code).toBe("CONFLICT");
    expect((await poll("victim", real.token)).status, "the real agent's token still works").toBe(200);
  });

  it("of concurrent completions by different keys one wins; by one key, one token lives", async () => {
    // Four: the most registrations one host may have under way.
    const keys = Array.from({ length: 4 }, () => generateKeyPairSync("ed25519"));
    const begun = await Promise.all(keys.map((k) => beginRegistration(url, "contested", k)));
    const answers = await Promise.all(begun.map((b) => b.complete()));
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses, "statuses of 4 concurrent completions by 4 keys").toEqual([200, 409, 409, 409]);

    const one = generateKeyPairSync("ed25519");
    const same = await Promise.all(Array.from({ length: 4 }, () => beginRegistration(url, "repeated", one)));
    const tokens = (await Promise.all(same.map((b) => b.complete()))).map((a) => a.json.token as string);
    const live = (await Promise.all(tokens.map((t) => poll("repeated", t)))).map((a) => a.status);
    expect(live.filter((s) => s === 200), `poll statuses with the 4 tokens: ${live.join(",")}`).toHaveLength(1);
  });

  it("a replaced or removed agent's token is refused at once", async () => {
    const keys = generateKeyPairSync("ed25519");
    const first = await registerAgent(url, "rotating", keys);
    expect((await poll("rotating", first.token)).status).toBe(200);
    const second = await registerAgent(url, "rotating", keys);
    expect((await poll("rotating", first.token)).status, "the replaced token, just cached").toBe(401);
    expect((await poll("rotating", second.token)).status).toBe(200);
    expect((await http(url, "DELETE", `/agents/${second.uid}`, { token: "op" })).status).toBe(200);
    expect((await poll("rotating", second.token)).status, "the removed agent's token").toBe(401);
  });

  it("caps registrations under way per host with a 429", async () => {
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push((await beginRegistration(url, "flooded", generateKeyPairSync("ed25519"))).answer);
    expect(answers.map((a) => a.status), "five registrations begun for one host").toEqual([200, 200, 200, 200, 429]);
    expect(answers[4]!.json.code).toBe("TOO_MANY_REQUESTS");
    const other = await beginRegistration(url, "calm", generateKeyPairSync("ed25519"));
    expect(other.answer.status, "another host is not affected").toBe(200);
  });

  it("bounds what a pending registration may hold", async () => {
    const labels = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
    const tooMany = await beginRegistration(url, "labelled", generateKeyPairSync("ed25519"), { labels });
    expect(tooMany.answer.status, JSON.stringify(tooMany.answer.json)).toBe(400);
    const long = await beginRegistration(url, "labelled", generateKeyPairSync("ed25519"), { hostname: "h".repeat(300) });
    expect(long.answer.status, JSON.stringify(long.answer.json)).toBe(400);
  });
});

describe("small-order Ed25519 keys", () => {
  // The identity point: with R = identity and S = 0 a "signature" verifies for any message.
  const identity = Buffer.alloc(32);
  identity[0] = 1;
  const forged = Buffer.concat([identity, Buffer.alloc(32)]);

  it("would let anyone answer any nonce (why they are refused)", () => {
    const key = { key: { kty: "OKP", crv: "Ed25519", x: identity.toString("base64url") }, format: "jwk" } as const;
    expect(verify(null, Buffer.from("any nonce"), key, forged), "node verifies the forged signature").toBe(true);
  });

  it("are refused at /agents/register/init, with and without the sign bit", async () => {
    const assigner = await startAssigner({ port: 0, dataDir: mkdtempSync(join(work, "small-")), adminToken: "op" });
    running.push(assigner);
    const order8 = Buffer.from("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", "hex");
    const signed = Buffer.from(order8);
    signed[31]! |= 0x80;
    for (const [name, key] of [["identity", identity], ["order 8", order8], ["order 8, sign bit set", signed], ["zero", Buffer.alloc(32)]] as const) {
      const init = await http(assigner.url, "POST", "/agents/register/init", { body: { host_id: "weak", public_key: key.toString("base64") } });
      expect(init.status, `${name}: ${JSON.stringify(init.json)}`).toBe(400);
      expect(init.json.error, name).toMatch(/small-order/);
    }
  });
});

describe("the operator token file", () => {
  it("refuses an empty --admin-token-file instead of writing a token into it", async () => {
    const dir = mkdtempSync(join(work, "token-"));
    const file = join(dir, "admin-token");
    writeFileSync(file, "");
    chmodSync(file, 0o644);
    await expect(startAssigner({ port: 0, dataDir: dir, adminTokenFile: file })).rejects.toThrow(`admin token file ${file} is empty`);
  });

  it("a --admin-token-file flag wins over AEGIS_ADMIN_TOKEN in the environment (flags win); both flags are refused", async () => {
    const dir = mkdtempSync(join(work, "token-"));
    const file = join(dir, "admin-token");
    writeFileSync(file, "token-from-the-file\n", { mode: 0o600 });
    const process = await startAssignerProcess(["--admin-token-file", file], { AEGIS_ADMIN_TOKEN: "token-from-the-environment" });
    try {
      expect((await http(process.url, "GET", "/assignments", { token: "token-from-the-file" })).status, "the file's token").toBe(200);
      expect((await http(process.url, "GET", "/assignments", { token: "token-from-the-environment" })).status, "the variable's").toBe(401);
    } finally {
      await process.stop();
    }
    const both = await aegis(["assigner", "serve", "--port", "0", "--data-dir", dir, "--admin-token", "x", "--admin-token-file", file]);
    expect(expectOneErrorLine(both)).toContain("both an admin token and an admin token file are given (--admin-token and --admin-token-file): give one");
  });

  it("writes a generated token 0600, even over an empty world-readable file", async () => {
    const dir = mkdtempSync(join(work, "token-"));
    writeFileSync(join(dir, "admin-token"), "", { mode: 0o644 });
    chmodSync(join(dir, "admin-token"), 0o644);
    const assigner = await startAssigner({ port: 0, dataDir: dir });
    running.push(assigner);
    expect(assigner.adminToken.length, "a generated token").toBeGreaterThan(20);
    expect((statSync(join(dir, "admin-token")).mode & 0o777).toString(8)).toBe("600");
  });
});

describe("registry credentials", () => {
  it("refuses to start with AEGIS_REGISTRY_USERNAME but no AEGIS_REGISTRY_HOST", async () => {
    const saved = { ...process.env };
    Object.assign(process.env, { AEGIS_REGISTRY_USERNAME: "ci", AEGIS_REGISTRY_PASSWORD: "secret" });
    delete process.env.AEGIS_REGISTRY_HOST;
    try {
      await expect(startAssigner({ port: 0, dataDir: mkdtempSync(join(work, "creds-")), adminToken: "op" })).rejects.toThrow(/AEGIS_REGISTRY_HOST is not/);
    } finally {
      process.env = saved;
    }
  });
});

describe("the agent signs a nonce, and nothing an answer chooses", () => {
  /** A server at the assigner's address that answers register/init with `nonce` and records every request's path and body. */
  async function answering(nonce: Buffer) {
    const seen: { path: string; body: string }[] = [];
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        seen.push({ path: req.url ?? "", body });
        const answer = req.url === "/agents/register/init" ? { registration_id: "r1", nonce: nonce.toString("base64") } : { agent_uid: "a1", host_id: "h1", token: "t" };
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, close: () => new Promise((r) => server.close(r)) };
  }

  it("a 'nonce' that is a telemetry report is refused, unsigned; a NONCE_BYTES one is signed", async () => {
    const keys = generateKeyPairSync("ed25519");
    const publicKey = Buffer.from(keys.publicKey.export({ format: "jwk" }).x!, "base64url").toString("base64");
    const forged: TelemetryMessage = { type: TELEMETRY_PAYLOAD_TYPE, host_id: "h1", artifact_id: `sha256:${"a".repeat(64)}`, event: "failed", time: new Date().toISOString(), seq: Number.MAX_SAFE_INTEGER };
    const chosen = Buffer.from(JSON.stringify(forged));
    const liar = await answering(chosen);
    try {
      await expect(new AssignerClient(liar.url).register("h1", keys.privateKey), "register against an answer choosing the bytes").rejects.toMatchObject({ code: "BAD_GATEWAY", message: expect.stringContaining(`not ${NONCE_BYTES}`) });
      expect(liar.seen.map((r) => r.path), "requests: no signature was sent").toEqual(["/agents/register/init"]);
      // What the liar was after: a signature over its bytes would have been a valid report of this host.
      const wouldBe = sign(null, chosen, keys.privateKey).toString("base64");
      expect(openTelemetry({ payload: chosen.toString("base64"), signature: wouldBe }, { hostId: "h1", publicKey, maxSkewMs: 60_000 }).ok, "the forged report, had it been signed").toBe(true);
    } finally {
      await liar.close();
    }
    const honest = await answering(randomBytes(NONCE_BYTES));
    try {
      await new AssignerClient(honest.url).register("h1", keys.privateKey);
      expect(honest.seen.map((r) => r.path), "requests for a nonce of NONCE_BYTES").toEqual(["/agents/register/init", "/agents/register/complete"]);
    } finally {
      await honest.close();
    }
  });
});
