// The assigner from outside, as an attacker and as real clients: the token is
// checked before a body is read, uploads are bounded and streamed, slow
// clients are cut off, client errors are 4xx with a code, the seed's whole
// Artifact struct is accepted, and 200 hostile connections do not stop an
// agent's polls (issue 8, "Request limits" and "What real clients send").
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { startAssigner, type RunningAssigner } from "../../assigner/index.js";
import { toAssignerError } from "../../assigner/errors.js";
import { scanUploadBody } from "../../assigner/upload.js";
import { BundleError, buildBundle } from "../../bundle/index.js";
import { InputError } from "../../errors.js";
import { copy, descriptorFor, EMPTY_CONFIG, encodeJson, MediaType, MemoryTarget, RemoteRepository, RegistryError, sha256 } from "../../registry/index.js";
import { http, rawConnection, registerAgent } from "../harness/assigner-http.js";
import { freePort } from "../harness/ports.js";
import { makeTempDir, removeTempDir, spawnManaged, waitUntilReady, type ManagedProcess } from "../harness/process.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { aegis, AEGIS } from "../cli/run.js";

const ADMIN = "limits-operator";
let registry: RegistryServer;
let assigner: RunningAssigner;
let work: string;

beforeAll(async () => {
  registry = await startRegistry();
  work = makeTempDir("aegis-limits-");
  assigner = await startAssigner({
    port: 0,
    dataDir: work,
    registry: `${registry.host}/aegis/uploads`,
    adminToken: ADMIN,
    maxUploadBytes: 256 * 1024,
    headersTimeoutMs: 500,
    requestTimeoutMs: 1000,
  });
});
afterAll(async () => {
  await assigner?.close();
  await registry?.stop();
  if (work) await removeTempDir(work);
});

/** Headers of a request whose body is `length` bytes of JSON. */
function postHead(path: string, length: number, token?: string): string {
  return `POST ${path} HTTP/1.1\r\nHost: assigner\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n${token ? `Authorization: Bearer ${token}\r\n` : ""}\r\n`;
}

/** Waits for `promise` up to `ms`; says whether it settled. A bound on waiting, not a timing assertion. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([promise.then(() => true), sleep(ms).then(() => false)]);
}

/**
 * Sends a 60 MB body's headers and then 64 KiB every 10 ms: the server
 * must answer and close long before the body could have been read.
 */
async function trickleUntilClosed(path: string, token?: string) {
  const conn = await rawConnection(assigner.url);
  await conn.write(postHead(path, 60_000_000, token) + "{");
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  let open = true;
  void conn.closed.then(() => (open = false));
  const deadline = Date.now() + 5000;
  while (open && Date.now() < deadline) {
    await conn.write(chunk);
    await sleep(10);
  }
  const closed = await within(conn.closed, 1000);
  conn.socket.destroy();
  return { closed, status: /^HTTP\/1\.1 (\d{3})/.exec(conn.received())?.[1], received: conn.received(), written: conn.written() };
}

describe("the token is checked before the body is read", () => {
  it("an unauthenticated 60 MB POST /artifacts is answered 401 at once and the connection closed", async () => {
    const result = await trickleUntilClosed("/artifacts");
    expect(result.status, `answer: ${result.received.slice(0, 200)}`).toBe("401");
    expect(result.closed, "the server closed the connection").toBe(true);
    expect(result.received, "the answer says the connection closes").toMatch(/\r\nconnection: close\r\n/i);
    expect(result.written, "bytes the client got to send before the close").toBeLessThan(8 * 1024 * 1024);
  });

  it("Expect: 100-continue is answered only once the token is known: 401 without one, 100 Continue with one", async () => {
    const body = JSON.stringify({ reference: "no host" });
    const expectHead = (token?: string) => postHead("/artifacts", Buffer.byteLength(body), token).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    const anonymous = await rawConnection(assigner.url);
    await anonymous.write(expectHead());
    expect(await within(anonymous.closed, 5000), "the server closed the connection").toBe(true);
    expect(anonymous.received(), "the answer without a token").toMatch(/^HTTP\/1\.1 401 /);
    const operator = await rawConnection(assigner.url);
    await operator.write(expectHead(ADMIN));
    for (let i = 0; i < 250 && !operator.received().includes("\r\n\r\n"); i++) await sleep(20);
    expect(operator.received(), "the interim answer with a token").toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    await operator.write(body);
    for (let i = 0; i < 250 && !/\r\n\r\n\{/.test(operator.received()); i++) await sleep(20);
    expect(operator.received(), "the final answer").toMatch(/HTTP\/1\.1 400 [^]*invalid reference/);
    operator.socket.destroy();
  });

  it("an agent token on an operator route is 403 before the body, closed the same way", async () => {
    const agent = await registerAgent(assigner.url, "limits-agent-403");
    const result = await trickleUntilClosed("/artifacts", agent.token);
    expect(result.status, `answer: ${result.received.slice(0, 200)}`).toBe("403");
    expect(result.closed, "the server closed the connection").toBe(true);
  });

  it("an unauthenticated route (/agents/register/init) keeps its small limit: a 60 MB declared body is 413 at once and closed", async () => {
    const result = await trickleUntilClosed("/agents/register/init");
    expect(result.status, `answer: ${result.received.slice(0, 200)}`).toBe("413");
    expect(result.received).toContain('"code":"PAYLOAD_TOO_LARGE"');
    expect(result.closed, "the server closed the connection").toBe(true);
  });
});

describe("upload size: --max-upload-bytes, streamed", () => {
  it("a bundle over the limit is 413 PAYLOAD_TOO_LARGE, by Content-Length or, chunked, while it streams", async () => {
    const data = Buffer.alloc(300 * 1024, 7).toString("base64");
    const body = JSON.stringify({ name: "big", version: "1.0.0", data });
    const declared = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, raw: body });
    expect(declared.status, JSON.stringify(declared.json)).toBe(413);
    expect(declared.json.code).toBe("PAYLOAD_TOO_LARGE");
    // Chunked: no length up front, so the limit is met while decoding.
    const chunked = await fetch(new URL("/artifacts", assigner.url), {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: Readable.toWeb(Readable.from([Buffer.from(body)])) as ReadableStream,
      duplex: "half",
    } as RequestInit);
    const answer = (await chunked.json()) as { code: string; error: string };
    expect(chunked.status, JSON.stringify(answer)).toBe(413);
    expect(answer).toMatchObject({ code: "PAYLOAD_TOO_LARGE", error: expect.stringMatching(/body\.data: .*262144 bytes/) });
  });

  it("a chunked upload that passes the limit while streaming gets its 413 (not a reset), and the connection is closed", async () => {
    const conn = await rawConnection(assigner.url);
    await conn.write(`POST /artifacts HTTP/1.1\r\nHost: assigner\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer ${ADMIN}\r\n\r\n`);
    const chunk = (text: string) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
    await conn.write(chunk(`{"name":"big","version":"1.0.0","data":"`));
    const piece = chunk("A".repeat(64 * 1024));
    let open = true;
    void conn.closed.then(() => (open = false));
    for (let i = 0; open && i < 200 && !conn.received(); i++) {
      await conn.write(piece);
      await sleep(5);
    }
    expect(await within(conn.closed, 5000), "the server closed the connection").toBe(true);
    expect(conn.received(), "the answer").toMatch(/^HTTP\/1\.1 413 [^]*"code":"PAYLOAD_TOO_LARGE"/);
  });

  it("aegis assigner serve --help documents the limits and their variables", async () => {
    const help = await aegis(["assigner", "serve", "--help"]);
    expect(help.code, help.stderr).toBe(0);
    for (const flag of ["--max-upload-bytes", "AEGIS_MAX_UPLOAD_BYTES", "--max-connections", "AEGIS_MAX_CONNECTIONS", "--headers-timeout", "--request-timeout", "--keep-alive-timeout"]) {
      expect(help.stdout, `help mentions ${flag}`).toContain(flag);
    }
    const bad = await aegis(["assigner", "serve", "--max-upload-bytes", "0"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--max-upload-bytes 0 is not a positive number/);
  });

  describe("the scanner: the top-level data decoded as it arrives, the rest kept for JSON.parse", () => {
    const bytes = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 37) % 256));
    const base64 = bytes.toString("base64");

    /** Feeds `text` in pieces of `size` bytes. */
    const scan = (text: string, size: number, max = 1 << 20) => {
      const raw = Buffer.from(text);
      const pieces: Buffer[] = [];
      for (let i = 0; i < raw.length; i += size) pieces.push(raw.subarray(i, i + size));
      return scanUploadBody(Readable.from(pieces), max);
    };

    it.each([1, 2, 3, 5, 7, 64, 100_000])("split every %i bytes: bytes, digest and rest are exact", async (size) => {
      const body = `{ "name" : "p", "${"k".repeat(100)}": "data", "metadata": {"data": "inner", "x": [1, "data"]}, "d\\u0061ta" : "${base64.replaceAll("/", "\\/")}", "k\\"ey": "}" }`;
      const scanned = await scan(body, size);
      expect(scanned.upload?.bytes.equals(bytes), "decoded bytes").toBe(true);
      expect(scanned.upload?.digest).toBe(sha256(bytes));
      expect(JSON.parse(scanned.rest)).toEqual({ name: "p", ["k".repeat(100)]: "data", metadata: { data: "inner", x: [1, "data"] }, data: "", 'k"ey': "}" });
    });

    it("sized by the body's length, or grown as it comes (chunked): the same bytes", async () => {
      const large = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 131) % 251));
      const body = JSON.stringify({ name: "p", data: large.toString("base64") });
      for (const bodyBytes of [0, Buffer.byteLength(body)]) {
        const scanned = await scanUploadBody(Readable.from([Buffer.from(body)]), 1 << 20, bodyBytes);
        expect(scanned.upload?.bytes.equals(large), `decoded bytes, body length given as ${bodyBytes}`).toBe(true);
        expect(scanned.upload?.digest).toBe(sha256(large));
      }
    });

    it.each([
      ["not base64", `{"data":"ab$d"}`, "BAD_REQUEST", /body\.data: must be base64/],
      ["data after padding", `{"data":"ab==cd"}`, "BAD_REQUEST", /body\.data: must be base64/],
      ["an escape other than \\/", `{"data":"ab\\ncd"}`, "BAD_REQUEST", /body\.data: must be base64/],
      ["data twice", `{"data":"abcd","data":"abcd"}`, "BAD_REQUEST", /data is given twice/],
      ["data that never ends", `{"data":"abcd`, "BAD_REQUEST", /does not end/],
      ["over the upload limit", `{"data":"${Buffer.alloc(2000).toString("base64")}"}`, "PAYLOAD_TOO_LARGE", /larger than this assigner accepts/],
      ["a large field other than data", `{"description":"${"x".repeat(70_000)}"}`, "PAYLOAD_TOO_LARGE", /other than data/],
    ])("%s", async (_what, body, code, message) => {
      await expect(scan(body, 3, 1024)).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    });
  });
});

describe("the seed's Artifact struct is accepted (POST /artifacts)", () => {
  /** The seed's `Artifact` as encoding/json writes it, zero values included (seed document, "type Artifact struct"). */
  async function seedArtifact(overrides: Record<string, unknown> = {}) {
    const { bytes } = await buildBundle("policies/block-icmp-8888");
    return {
      bytes,
      body: {
        id: "",
        name: "block-icmp-8888",
        version: "1.0.0",
        type: "network_block",
        data: bytes.toString("base64"),
        checksum: `sha256-${sha256(bytes).slice(7)}`,
        description: "Block ICMP ping traffic to 8.8.8.8",
        metadata: { policy_type: "network_block", target_ip: "8.8.8.8" },
        signature: "",
        size: bytes.length,
        created_at: "0001-01-01T00:00:00Z",
        updated_at: "0001-01-01T00:00:00Z",
        ...overrides,
      },
    };
  }

  it("the seed-shaped POST ends in a correct for-host entry", async () => {
    const { bytes, body } = await seedArtifact({ id: "client-chosen", signature: "c2ln", created_at: "2025-01-01T00:00:00Z" });
    const created = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
    const id = created.json.id as string;
    expect(id, "the server's id, not the client's").toMatch(/^sha256:[a-f0-9]{64}$/);
    expect((await http(assigner.url, "POST", `/assign/${id}/seed-struct-host`, { token: ADMIN })).status).toBe(200);
    const agent = await registerAgent(assigner.url, "seed-struct-host");
    const poll = await http(assigner.url, "GET", "/artifacts/for-host/seed-struct-host", { token: agent.token });
    expect(poll.status).toBe(200);
    expect(poll.json.artifacts).toEqual([
      expect.objectContaining({ id, name: "block-icmp-8888", version: "1.0.0", size: bytes.length, checksum: body.checksum, signature: "" }),
    ]);
    const binary = await http(assigner.url, "GET", `/artifacts/${id}/binary`, { token: agent.token });
    expect(binary.bytes.equals(bytes), "the binary is the uploaded bundle").toBe(true);
  });

  it("Go's zero values (size 0, checksum \"\", metadata null) and sha256:<hex> are accepted", async () => {
    for (const overrides of [{ size: 0, checksum: "", metadata: null }, { checksum: undefined, size: undefined }]) {
      const { body } = await seedArtifact(overrides);
      const res = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body });
      expect([200, 201], `${JSON.stringify(overrides)}: ${JSON.stringify(res.json)}`).toContain(res.status);
    }
    const { bytes, body } = await seedArtifact();
    const res = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body: { ...body, checksum: sha256(bytes) } });
    expect([200, 201], JSON.stringify(res.json)).toContain(res.status);
  });

  it("a size or checksum that does not match the bytes is a 400 naming the field", async () => {
    const { bytes, body } = await seedArtifact();
    const size = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body: { ...body, size: bytes.length + 1 } });
    expect(size.status).toBe(400);
    expect(size.json.error).toMatch(/^body\.size: /);
    const checksum = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body: { ...body, checksum: `sha256-${"0".repeat(64)}` } });
    expect(checksum.status).toBe(400);
    expect(checksum.json.error).toMatch(/^body\.checksum: /);
    const empty = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body: { ...body, data: "" } });
    expect(empty.status).toBe(400);
    expect(empty.json.error).toMatch(/^body\.data: /);
  });
});

describe("slow clients and the connection cap", () => {
  it("a slowloris (headers a byte at a time) and a slow body are cut off by the configured timeouts", async () => {
    const slowloris = await rawConnection(assigner.url);
    const headers = "GET /healthz HTTP/1.1\r\nHost: assigner\r\nX-Padding: " + "a".repeat(200);
    let sent = 0;
    const dripping = (async () => {
      for (const c of headers) {
        if (!(await slowloris.write(c))) return;
        sent++;
        await sleep(50);
      }
    })();
    const slowBody = await rawConnection(assigner.url);
    await slowBody.write(postHead("/agents/register/init", 1000) + "{");
    // Both timeouts are short here (0.5 s headers, 1 s request); 8 s is only how long we wait.
    expect(await within(slowloris.closed, 8000), `slowloris still open after sending ${sent} bytes`).toBe(true);
    expect(await within(slowBody.closed, 8000), "slow body still open").toBe(true);
    expect(sent, "header bytes sent before the cut").toBeLessThan(headers.length);
    await dripping;
  });

  it("--max-connections: connections past the cap are closed at once; the held ones still work", async () => {
    const capped = await startAssigner({ port: 0, dataDir: join(work, "capped"), adminToken: ADMIN, maxConnections: 3 });
    try {
      const held = await Promise.all([0, 1, 2].map(() => rawConnection(capped.url)));
      await sleep(100);
      const extra = await rawConnection(capped.url);
      expect(await within(extra.closed, 5000), "the fourth connection was closed").toBe(true);
      await held[0]!.write("GET /healthz HTTP/1.1\r\nHost: assigner\r\n\r\n");
      for (let i = 0; i < 100 && !held[0]!.received().includes("\r\n\r\n"); i++) await sleep(20);
      expect(held[0]!.received()).toMatch(/^HTTP\/1\.1 200 /);
      for (const conn of held) conn.socket.destroy();
    } finally {
      await capped.close();
    }
  });
});

describe("client errors are 4xx with a code; nothing internal reaches a client", () => {
  it.each(["/artifacts/%ZZ", "/artifacts/%ZZ/binary", "/agents/%E0%A4%A", "/artifacts/%ZZ/status", "/artifacts/for-host/%ZZ"])("GET %s is 400 BAD_REQUEST, logged as no internal error", async (path) => {
    const logged = vi.spyOn(console, "error").mockImplementation(() => undefined);
    try {
      const res = await http(assigner.url, "GET", path, { token: ADMIN });
      expect(res.status, JSON.stringify(res.json)).toBe(400);
      expect(res.json.code).toBe("BAD_REQUEST");
      expect(res.bytes.toString(), "no path or stack in the answer").not.toMatch(/\/work\/|node_modules|\n\s+at /);
      expect(logged.mock.calls.map((call) => call.join(" ")).join("\n"), "console.error").toBe("");
    } finally {
      logged.mockRestore();
    }
  });

  it("errors carrying a 4xx status map to that status's code; others reveal nothing", () => {
    const cases: [unknown, number, string][] = [
      [Object.assign(new Error("too big"), { status: 413, expose: true }), 413, "PAYLOAD_TOO_LARGE"],
      [Object.assign(new Error("gone"), { statusCode: 404, expose: true }), 404, "NOT_FOUND"],
      [Object.assign(new Error("teapot"), { status: 418, expose: true }), 400, "BAD_REQUEST"],
      [Object.assign(new Error("/srv/secret/path"), { status: 400, expose: false }), 400, "BAD_REQUEST"],
      [new Error("/srv/secret/path"), 500, "INTERNAL"],
      [new InputError("INVALID_ARGUMENT", "bad field"), 400, "BAD_REQUEST"],
      [new BundleError("INVALID_BUNDLE", "layer is not zstd"), 502, "BAD_GATEWAY"],
      [new RegistryError("DIGEST_MISMATCH", "bytes differ"), 502, "BAD_GATEWAY"],
    ];
    for (const [err, status, code] of cases) {
      const mapped = toAssignerError(err);
      expect({ status: mapped.status, code: mapped.code }, `${(err as Error).message}`).toEqual({ status, code });
      expect(mapped.message, "no internal path").not.toContain("/srv/secret");
    }
    expect(toAssignerError(new BundleError("INVALID_BUNDLE", "x")).detail).toBe("INVALID_BUNDLE");
  });

  it("a registered reference that is not a policy (bundle error on the registry's bytes) is 502 with its code in detail", async () => {
    const staging = new MemoryTarget();
    const config = Buffer.from("{}");
    await staging.push(EMPTY_CONFIG, Readable.from([config]));
    const manifest = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: "application/vnd.other", config: EMPTY_CONFIG, layers: [] });
    const desc = descriptorFor(MediaType.ImageManifest, manifest);
    await staging.push(desc, Readable.from([manifest]));
    await copy(staging, desc.digest, new RemoteRepository(registry.host, "limits/other"), "v1");
    const res = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body: { reference: `${registry.host}/limits/other@${desc.digest}` } });
    expect(res.status, JSON.stringify(res.json)).toBe(502);
    expect(res.json).toMatchObject({ code: "BAD_GATEWAY", detail: "NOT_A_POLICY" });
    // The caller's own bad bytes stay a 400.
    const upload = await http(assigner.url, "POST", "/artifacts", { token: ADMIN, body: { name: "x", version: "1.0.0", data: Buffer.from("not a bundle").toString("base64") } });
    expect(upload.status, JSON.stringify(upload.json)).toBe(400);
  });
});

/** The process's peak and current resident memory, in MB, from /proc/<pid>/status. */
function memoryOf(pid: number): { peakMb: number; rssMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
  return { peakMb: kb("VmHWM") / 1024, rssMb: kb("VmRSS") / 1024 };
}

describe("under attack (a separate `aegis assigner serve` process, loopback only)", () => {
  /** The bound the assigner's peak RSS must stay under, attack included. */
  const RSS_BOUND_MB = 300;
  let proc: ManagedProcess;
  let url: string;
  let dir: string;

  beforeAll(async () => {
    dir = makeTempDir("aegis-limits-load-");
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    proc = spawnManaged(process.execPath, [
      AEGIS, "assigner", "serve", "--port", String(port), "--data-dir", dir, "--admin-token", ADMIN,
      "--headers-timeout", "1", "--request-timeout", "2", "--max-connections", "1000",
    ]);
    await waitUntilReady(proc, () => fetch(`${url}/healthz`).then(() => true, () => false), "aegis assigner serve");
  });
  afterAll(async () => {
    await proc?.stop();
    if (dir) await removeTempDir(dir);
  });

  it(`200 unauthenticated large or slow requests: every agent poll is answered, and peak RSS stays under ${RSS_BOUND_MB} MB`, async () => {
    const agent = await registerAgent(url, "polling-host");
    const before = memoryOf(proc.child.pid!);
    let attacking = true;
    const attempts = { big: 0, slow: 0 };

    // 100 clients posting 60 MB bodies without a token: 4 MiB as fast as the
    // socket takes it, then a trickle; reconnecting when cut off.
    const big = async () => {
      const chunk = Buffer.alloc(256 * 1024, 0x20);
      while (attacking) {
        attempts.big++;
        const conn = await rawConnection(url).catch(() => undefined);
        if (conn) {
          let sent = 0;
          let open = await conn.write(postHead("/artifacts", 60_000_000) + "{");
          while (attacking && open) {
            open = await conn.write(sent < 4 * 1024 * 1024 ? chunk : chunk.subarray(0, 1024));
            sent += sent < 4 * 1024 * 1024 ? chunk.length : 1024;
            if (sent >= 4 * 1024 * 1024) await sleep(100);
          }
          conn.socket.destroy();
        }
        await sleep(500);
      }
    };
    // 100 slowloris connections: a request's headers a few bytes at a time.
    const slow = async () => {
      while (attacking) {
        attempts.slow++;
        const conn = await rawConnection(url).catch(() => undefined);
        if (conn) {
          const headers = `POST /agents/register/init HTTP/1.1\r\nHost: assigner\r\nX-Padding: ${"a".repeat(10_000)}`;
          for (let i = 0; attacking && i < headers.length; i += 4) {
            if (!(await conn.write(headers.slice(i, i + 4)))) break;
            await sleep(100);
          }
          conn.socket.destroy();
        }
        await sleep(500);
      }
    };
    const attackers = [...Array.from({ length: 100 }, big), ...Array.from({ length: 100 }, slow)];

    // The agent polls through the attack: each poll must be answered, within a loose deadline.
    await sleep(500);
    const polls: string[] = [];
    let etag: string | undefined;
    for (let i = 0; i < 20; i++) {
      try {
        const res = await fetch(`${url}/artifacts/for-host/polling-host`, {
          headers: { authorization: `Bearer ${agent.token}`, ...(etag ? { "if-none-match": etag } : {}) },
          signal: AbortSignal.timeout(10_000),
        });
        await res.arrayBuffer();
        etag = res.headers.get("etag") ?? etag;
        polls.push(String(res.status));
      } catch (err) {
        polls.push(`poll ${i}: ${(err as Error).message}`);
      }
      await sleep(250);
    }
    const during = memoryOf(proc.child.pid!);
    attacking = false;
    await Promise.all(attackers);

    expect(attempts.big, "big-body connections made").toBeGreaterThanOrEqual(100);
    expect(attempts.slow, "slowloris connections made").toBeGreaterThanOrEqual(100);
    expect(polls.filter((p) => p !== "200" && p !== "304"), `polls: ${polls.join(", ")}`).toEqual([]);
    const after = memoryOf(proc.child.pid!);
    console.log(`assigner RSS: ${before.rssMb.toFixed(0)} MB before, ${during.rssMb.toFixed(0)} MB during, peak ${after.peakMb.toFixed(0)} MB`);
    expect(after.peakMb, `peak RSS (VmHWM) of the assigner in MB; bound ${RSS_BOUND_MB}`).toBeLessThan(RSS_BOUND_MB);
    expect(proc.output(), "the assigner's log").not.toMatch(/internal error/);
  }, 50_000);
});
