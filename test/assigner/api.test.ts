// The assigner's HTTP contract against real redis-server, nats-server and
// registry 2.8.2, played with plain HTTP calls as the seed's agent would.
import { execFile } from "node:child_process";
import { createHash, createPrivateKey, generateKeyPairSync, sign } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { AssignerSource } from "../../agent/index.js";
import { AssignerClient, AssignerError, MAX_ANSWER_SIZE } from "../../assigner/api/index.js";
import { startAssigner, type RunningAssigner } from "../../assigner/index.js";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { Readable } from "node:stream";
import { descriptorFor, EMPTY_CONFIG, encodeJson, MediaType, RemoteRepository, sha256, storeEmptyConfig } from "../../registry/index.js";
import { generateKeyPair, KeySigner, loadTrust, signArtifact, verifyArtifact } from "../../signing/index.js";
import { http as httpTo, registerAgent as registerAt, signed, telemetry, type AgentKeys, type HttpOptions } from "../harness/assigner-http.js";
import { startRegistryProxy } from "../harness/proxy.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { startNats, startRedis, type TcpServer } from "../harness/tcp-server.js";
import { aegis, expectOneErrorLine } from "../cli/run.js";

const execFileAsync = promisify(execFile);
let registry: RegistryServer;
let redis: TcpServer;
let nats: TcpServer;
let assigner: RunningAssigner;
let work: string;
let admin: Record<string, string>;
const signingKey = generateKeyPair("ecdsa-p256");

const http = (method: string, path: string, options?: HttpOptions) => httpTo(assigner.url, method, path, options);
/** The seed agent's registration, with plain HTTP and an Ed25519 key. */
const registerAgent = (hostId: string, keys?: AgentKeys) => registerAt(assigner.url, hostId, keys);

const built = new Map<string, ReturnType<typeof buildBundle>>();

/** Pushes a policy (signed unless asked not to) to the test registry and returns its digest reference. */
async function pushSignedPolicy(dir: string, version: string, signed = true): Promise<{ reference: string; digest: string }> {
  if (!built.has(dir)) built.set(dir, buildBundle(dir));
  const { bytes, policy } = await built.get(dir)!;
  const repo = new RemoteRepository(registry.host, "policies/api");
  const artifact = await pushBundle(bytes, { ...policy, version }, repo, version);
  if (signed) await signArtifact(repo, artifact.manifest, new KeySigner(createPrivateKey(signingKey.privateKey)), repo.name);
  return { reference: `${registry.host}/policies/api@${artifact.manifest.digest}`, digest: artifact.manifest.digest };
}

beforeAll(async () => {
  [registry, redis, nats] = await Promise.all([startRegistry(), startRedis(), startNats()]);
  work = mkdtempSync(join(tmpdir(), "aegis-api-"));
  writeFileSync(join(work, "ci.pub"), signingKey.publicKey);
  assigner = await startAssigner({
    port: 0,
    redisUrl: redis.url,
    natsUrl: nats.url,
    dataDir: work,
    registry: `${registry.host}/aegis/uploads`,
    adminToken: "operator-secret",
    trust: join(work, "ci.pub"),
  });
  admin = { token: "operator-secret" };
});
afterAll(async () => {
  await assigner?.close();
  await Promise.all([registry?.stop(), redis?.stop(), nats?.stop()]);
  rmSync(work, { recursive: true, force: true });
});

describe("the seed's agent flow", () => {
  it("register, poll for-host (seed JSON shape), download the binary: sha256 = checksum, unpacks as tar.zst", async () => {
    const { reference, digest } = await pushSignedPolicy("policies/block-icmp-8888", "1.0.0");
    expect((await http("POST", "/artifacts", { ...admin, body: { reference } })).status).toBe(201);
    expect((await http("POST", `/assign/${digest}/seed-host`, admin)).status).toBe(200);

    const agent = await registerAgent("seed-host");
    const poll = await http("GET", "/artifacts/for-host/seed-host", { token: agent.token });
    expect(poll.status).toBe(200);
    expect(poll.json.total).toBe(1);
    const [artifact] = poll.json.artifacts as Record<string, unknown>[];
    expect(Object.keys(artifact!).sort()).toEqual(["checksum", "description", "id", "metadata", "name", "reference", "signature", "size", "version"]);
    expect(artifact).toMatchObject({
      id: digest,
      name: "block-icmp-8888",
      version: "1.0.0",
      description: "Block ICMP ping traffic to 8.8.8.8",
      metadata: { policy_type: "network_block", target_ip: "8.8.8.8", protocol: "icmp", direction: "egress" },
    });
    expect(artifact!.checksum).toMatch(/^sha256-[a-f0-9]{64}$/);
    expect(artifact!.signature).toMatch(/^[A-Za-z0-9+/]{20,}={0,2}$/);

    const binary = await http("GET", `/artifacts/${digest}/binary`, { token: agent.token });
    expect(binary.status).toBe(200);
    expect(binary.headers.get("content-type")).toBe("application/octet-stream");
    expect(binary.bytes.byteLength).toBe(artifact!.size);
    expect(`sha256-${createHash("sha256").update(binary.bytes).digest("hex")}`).toBe(artifact!.checksum);
    const file = join(work, "download.tar.zst");
    writeFileSync(file, binary.bytes);
    const { stdout } = await execFileAsync("tar", ["--zstd", "-tf", file]);
    expect(stdout.split("\n").filter(Boolean)).toEqual(["policy.json", "program.o"]);
  });

  it("fixes the seed's error sequence: POST /artifacts (base64 data) stores, and the host's poll lists it", async () => {
    const agent = await registerAgent("upload-host");
    expect((await http("GET", "/artifacts/for-host/upload-host", { token: agent.token })).json).toEqual({ artifacts: [], total: 0 });
    const { bytes } = await buildBundle("policies/deny-egress-cidrs");
    const body = { name: "deny-egress-cidrs", version: "1.2.0", description: "Deny all egress traffic to listed networks", type: "network_block", data: bytes.toString("base64"), checksum: `sha256-${sha256(bytes).slice(7)}` };
    const created = await http("POST", "/artifacts", { ...admin, body });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
    expect(created.json.reference).toMatch(new RegExp(`^${registry.host}/aegis/uploads@sha256:`));
    expect(created.json.checksum).toBe(body.checksum);
    // Registering the same content again is idempotent.
    const again = await http("POST", "/artifacts", { ...admin, body });
    expect(again.status).toBe(200);
    expect(again.json.id).toBe(created.json.id);
    await http("POST", `/assign/${created.json.id}/upload-host`, admin);
    const poll = await http("GET", "/artifacts/for-host/upload-host", { token: agent.token });
    expect(poll.json.total).toBe(1);
    expect((poll.json.artifacts as { id: string }[])[0]!.id).toBe(created.json.id);
  });

  it("accepts an upload whose version has semver build metadata (not allowed in a tag as is)", async () => {
    const dir = join(work, "build-meta");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "policy.yaml"), readFileSync("policies/block-icmp-8888/policy.yaml", "utf8").replace("version: 1.0.0", "version: 1.0.0+build.7"));
    const { bytes } = await buildBundle(dir);
    const created = await http("POST", "/artifacts", { ...admin, body: { name: "block-icmp-8888", version: "1.0.0+build.7", data: bytes.toString("base64") } });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
    expect(created.json.version).toBe("1.0.0+build.7");
  });

  it("answers an unchanged poll with 304 from the host's version ETag", async () => {
    const agent = await registerAgent("etag-host");
    const first = await http("GET", "/artifacts/for-host/etag-host", { token: agent.token });
    const etag = first.headers.get("etag")!;
    // Registering moved the host's version once (its labels may give it selector assignments).
    expect(etag, "version 1, with Redis's epoch (its run id)").toMatch(/^"v1\.[0-9a-f]{16}"$/);
    expect((await http("GET", "/artifacts/for-host/etag-host", { token: agent.token, headers: { "if-none-match": etag } })).status).toBe(304);
    const { digest, reference } = await pushSignedPolicy("policies/block-icmp-8888", "1.0.1");
    await http("POST", "/artifacts", { ...admin, body: { reference } });
    await http("POST", `/assign/${digest}/etag-host`, admin);
    const changed = await http("GET", "/artifacts/for-host/etag-host", { token: agent.token, headers: { "if-none-match": etag } });
    expect(changed.status).toBe(200);
    expect(changed.headers.get("etag")).toBe(etag.replace('"v1.', '"v2.'));
  });

  it("answers HEAD on for-host as GET (one implementation): status and ETag, no body", async () => {
    const agent = await registerAgent("head-host");
    const get = await http("GET", "/artifacts/for-host/head-host", { token: agent.token });
    const head = await http("HEAD", "/artifacts/for-host/head-host", { token: agent.token });
    expect([head.status, head.headers.get("etag"), head.bytes.byteLength]).toEqual([200, get.headers.get("etag"), 0]);
    expect((await http("HEAD", "/artifacts/for-host/head-host", { token: agent.token, headers: { "if-none-match": get.headers.get("etag")! } })).status).toBe(304);
    expect((await http("HEAD", "/artifacts/for-host/other-host", { token: agent.token })).status, "another host's set").toBe(403);
  });
});

describe("artifacts", () => {
  it("serves an assigned agent the manifest and signatures as stored, which verify as the registry's do", async () => {
    const { digest, reference } = await pushSignedPolicy("policies/block-icmp-8888", "1.3.0");
    expect((await http("POST", "/artifacts", { ...admin, body: { reference } })).status).toBe(201);
    const agent = await registerAgent("chain-host");
    expect((await http("GET", `/artifacts/${digest}/manifest`, { token: agent.token })).status, "not assigned yet").toBe(403);
    await http("POST", `/assign/${digest}/chain-host`, admin);

    const manifest = await http("GET", `/artifacts/${digest}/manifest`, { token: agent.token });
    expect(manifest.status).toBe(200);
    expect(manifest.headers.get("content-type")).toBe(MediaType.ImageManifest);
    expect(sha256(manifest.bytes), "the manifest's exact bytes").toBe(digest);
    const signatures = await http("GET", `/artifacts/${digest}/signatures`, { token: agent.token });
    expect(signatures.status, JSON.stringify(signatures.json)).toBe(200);
    const list = signatures.json.signatures as { manifest: string; bundle: string }[];
    expect(list, "one signature").toHaveLength(1);

    // Read as a source of its own (the agent's assigner path), the chain verifies with the same code as a registry's.
    const source = new AssignerSource(new AssignerClient(assigner.url, agent.token), digest);
    const trust = await loadTrust([join(work, "ci.pub")]);
    expect((await verifyArtifact(source, digest, trust)).digest).toBe(digest);
  });

  it("lists an artifact pushed with plain `oras push --artifact-type` by its policy.json (no Aegis annotations)", async () => {
    const { bytes } = await buildBundle("policies/deny-egress-cidrs");
    // What `oras push --artifact-type application/vnd.aegis.policy.v1
    // bundle.tar.zst:application/vnd.aegis.policy.layer.v1.tar+zstd` sends:
    // the empty config, one layer titled by its file name, a creation date.
    const layer = { ...descriptorFor(MediaType.PolicyLayer, bytes), annotations: { "org.opencontainers.image.title": "bundle.tar.zst" } };
    const manifestBytes = encodeJson({
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      artifactType: MediaType.PolicyArtifact,
      config: EMPTY_CONFIG,
      layers: [layer],
      annotations: { "org.opencontainers.image.created": "2026-11-25T00:00:00Z" },
    });
    const manifest = descriptorFor(MediaType.ImageManifest, manifestBytes);
    const repo = new RemoteRepository(registry.host, "ci/oras");
    await storeEmptyConfig(repo);
    await repo.push(layer, Readable.from([bytes]));
    await repo.push(manifest, Readable.from([manifestBytes]));
    await repo.tag(manifest, "v1");

    const registered = await http("POST", "/artifacts", { ...admin, body: { reference: `${registry.host}/ci/oras@${manifest.digest}` } });
    expect(registered.status, JSON.stringify(registered.json)).toBe(201);
    expect((await http("POST", `/assign/${manifest.digest}/oras-host`, admin)).status).toBe(200);
    const agent = await registerAgent("oras-host");
    const poll = await http("GET", "/artifacts/for-host/oras-host", { token: agent.token });
    expect(poll.json.artifacts).toEqual([
      expect.objectContaining({
        id: manifest.digest,
        name: "deny-egress-cidrs",
        version: "1.2.0",
        checksum: `sha256-${sha256(bytes).slice("sha256:".length)}`,
        size: bytes.byteLength,
        metadata: expect.objectContaining({ policy_type: "network_block", direction: "egress" }),
      }),
    ]);
    expect((poll.json.artifacts as { description: string }[])[0]!.description, "description from policy.json").not.toBe("");
  });

  it("serves an empty signature for an artifact no trusted key signed", async () => {
    const { reference } = await pushSignedPolicy("policies/block-icmp-8888", "1.1.0", false);
    const res = await http("POST", "/artifacts", { ...admin, body: { reference } });
    expect(res.status).toBe(201);
    expect(res.json.signature).toBe("");
  });

  it("fills in a signature found after registration, and moves the assigned hosts' versions", async () => {
    const { reference, digest } = await pushSignedPolicy("policies/block-icmp-8888", "1.1.1", false);
    await http("POST", "/artifacts", { ...admin, body: { reference } });
    await http("POST", `/assign/${digest}/late-signed`, admin);
    const before = await http("GET", "/artifacts/for-host/late-signed", admin);
    expect((before.json.artifacts as { signature: string }[])[0]!.signature).toBe("");
    const repo = new RemoteRepository(registry.host, "policies/api");
    await signArtifact(repo, await repo.resolve(digest), new KeySigner(createPrivateKey(signingKey.privateKey)), repo.name);
    const again = await http("POST", "/artifacts", { ...admin, body: { reference } });
    expect(again.status).toBe(200);
    expect(again.json.signature).not.toBe("");
    const after = await http("GET", "/artifacts/for-host/late-signed", { ...admin, headers: { "if-none-match": before.headers.get("etag")! } });
    expect(after.status).toBe(200);
    expect((after.json.artifacts as { signature: string }[])[0]!.signature).toBe(again.json.signature);
  });

  it("answers 502 DIGEST_MISMATCH, or cuts the connection once bytes went out, when the registry's bytes fail verification", async () => {
    const proxy = await startRegistryProxy(registry.url);
    try {
      const { digest } = await pushSignedPolicy("policies/deny-egress-cidrs", "1.3.0", false);
      const res = await http("POST", "/artifacts", { ...admin, body: { reference: `${proxy.host}/policies/api@${digest}` } });
      expect(res.status, JSON.stringify(res.json)).toBe(201);
      proxy.set({ tamperBlobs: true });
      // Found before a byte went out (the verifier holds back the last chunk), it is the route's 502; found after
      // (the registry's bytes came in several chunks), a short body. Never a whole 200.
      // A cut while the body is read (after a 200's headers) is a cut too, not a failure of the test.
      const download = await fetch(new URL(`/artifacts/${digest}/binary`, assigner.url), { headers: { authorization: "Bearer operator-secret" } })
        .then(async (r) => ({ status: r.status, body: Buffer.from(await r.arrayBuffer()).toString() }))
        .catch((err: Error) => ({ status: 0, body: `cut: ${err.message}` }));
      if (download.status !== 0) {
        expect(download.status, `the tampered binary's answer: ${download.body.slice(0, 200)}`).toBe(502);
        expect(JSON.parse(download.body), "the 502's body").toMatchObject({ code: "BAD_GATEWAY", detail: "DIGEST_MISMATCH" });
      }
      proxy.set({ tamperBlobs: false });
      const good = await http("GET", `/artifacts/${digest}/binary`, admin);
      expect(`sha256-${createHash("sha256").update(good.bytes).digest("hex")}`).toBe(res.json.checksum);
    } finally {
      await proxy.stop();
    }
  });
});

/**
 * A proxy to the test registry that cuts the connection of every request
 * whose path matches `fail`, as an outage of part of the registry would.
 */
async function startFailingProxy(fail: RegExp): Promise<{ host: string; stop(): Promise<void> }> {
  const target = new URL(registry.url);
  const server: Server = createServer((req, res) => {
    if (fail.test(req.url ?? "")) return void req.socket.destroy();
    const upstream = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode!, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    stop: () => new Promise<void>((done) => {
      server.close(() => done());
      server.closeAllConnections();
    }),
  };
}

describe("registry failures keep their code", () => {
  it("an outage while looking for signatures fails the registration (502, detail UNREACHABLE) and records no \"unsigned\" artifact", async () => {
    const { digest } = await pushSignedPolicy("policies/block-icmp-8888", "1.4.0");
    // Manifests by digest and blobs pass; the referrers API and the fallback/cosign tags (sha256-<hex>…) do not.
    const proxy = await startFailingProxy(/\/referrers\/|\/manifests\/sha256-/);
    try {
      const res = await http("POST", "/artifacts", { ...admin, body: { reference: `${proxy.host}/policies/api@${digest}` } });
      expect(res.status, JSON.stringify(res.json)).toBe(502);
      expect(res.json).toMatchObject({ code: "BAD_GATEWAY", detail: "UNREACHABLE" });
      expect((await http("GET", `/artifacts/${digest}`, admin)).status, "nothing recorded").toBe(404);
    } finally {
      await proxy.stop();
    }
    // Once the registry answers, the same artifact registers with its signature.
    const ok = await http("POST", "/artifacts", { ...admin, body: { reference: `${registry.host}/policies/api@${digest}` } });
    expect(ok.status, JSON.stringify(ok.json)).toBe(201);
    expect(ok.json.signature).not.toBe("");
  });

  it("a manifest that fails verification answers 502 with detail DIGEST_MISMATCH", async () => {
    const proxy = await startRegistryProxy(registry.url);
    try {
      const { digest } = await pushSignedPolicy("policies/block-icmp-8888", "1.4.1");
      proxy.set({ tamperManifests: true });
      const res = await http("POST", "/artifacts", { ...admin, body: { reference: `${proxy.host}/policies/api@${digest}` } });
      expect(res.status, JSON.stringify(res.json)).toBe(502);
      expect(res.json).toMatchObject({ code: "BAD_GATEWAY", detail: "DIGEST_MISMATCH" });
      // The client turns the answer back into an AssignerError with the same code and detail.
      const failed = await new AssignerClient(assigner.url, "operator-secret").call("POST", "/artifacts", { reference: `${proxy.host}/policies/api@${digest}` }).catch((err: unknown) => err);
      expect(failed).toBeInstanceOf(AssignerError);
      expect(failed).toMatchObject({ code: "BAD_GATEWAY", detail: "DIGEST_MISMATCH", message: expect.stringMatching(/^assigner answered 502: /) });
    } finally {
      await proxy.stop();
    }
  });
});

describe("the typed client (assigner/api)", () => {
  it("registers with an Ed25519 key, polls with If-None-Match, streams the binary, reads status", async () => {
    const { reference, digest } = await pushSignedPolicy("policies/deny-egress-cidrs", "8.0.0");
    const operator = new AssignerClient(assigner.url, "operator-secret");
    await operator.call("POST", "/artifacts", { reference });
    expect(await operator.assign(digest, "client-host")).toMatchObject({ artifact_id: digest, host_id: "client-host", changed: true });

    const { privateKey } = generateKeyPairSync("ed25519");
    const registered = await new AssignerClient(assigner.url).register("client-host", privateKey, { hostname: "client-host.example", labels: { role: "db" } });
    expect(registered.host_id).toBe("client-host");
    const agent = new AssignerClient(assigner.url, registered.token);
    const first = await agent.forHost("client-host");
    if (first.notModified) throw new Error("first poll answered 304");
    expect(first.body.artifacts.map((a) => a.id)).toEqual([digest]);
    expect(await agent.forHost("client-host", { ifNoneMatch: first.etag })).toEqual({ notModified: true, etag: first.etag });

    const hash = createHash("sha256");
    for await (const chunk of await agent.binary(digest)) hash.update(chunk as Buffer);
    expect(`sha256-${hash.digest("hex")}`).toBe(first.body.artifacts[0]!.checksum);
    expect((await agent.artifact(digest)).id).toBe(digest);

    expect((await operator.hosts()).agents.map((a) => a.host_id)).toContain("client-host");
    expect((await operator.artifacts()).artifacts.map((a) => a.id)).toContain(digest);
    expect(await operator.status(digest)).toEqual({ artifact_id: digest, hosts: [], total: 0 });
    expect(await operator.unassign(digest, "client-host")).toMatchObject({ assigned: false, changed: true });

    // Errors keep the API's code: another host's poll is 403, an unknown agent token 401.
    await expect(agent.forHost("other-host")).rejects.toMatchObject({ code: "FORBIDDEN" });
    await expect(new AssignerClient(assigner.url, "nope").forHost("client-host")).rejects.toMatchObject({ code: "UNAUTHORIZED", message: "assigner answered 401: invalid token" });
  });

  it("refuses a key that is not Ed25519, and gives codes to answers that are not the assigner's", async () => {
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    await expect(new AssignerClient(assigner.url).register("ec-host", ec), "an ECDSA key").rejects.toMatchObject({ code: "BAD_REQUEST" });
    // The registry is not an assigner: its 404 page keeps the status's code and its text.
    await expect(new AssignerClient(registry.url, "x").artifacts(), "another server's 404").rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringMatching(/^assigner answered 404: /) });
    const closed = await startFailingProxy(/./);
    await closed.stop();
    await expect(new AssignerClient(`http://${closed.host}`, "x").hosts(), "nothing listening").rejects.toMatchObject({ code: "UNAVAILABLE", message: expect.stringMatching(/^cannot reach the assigner at /) });
  });

  it("an answer that is not the API's (a redirect, a 202 with no version, a state with no list) is BAD_GATEWAY, never taken for success", async () => {
    const odd: Server = createServer((req, res) => {
      if (req.url === "/agents") res.writeHead(302, { location: "/login" }).end();
      else if (req.method === "POST") res.writeHead(202, { "content-type": "application/json" }).end('{"queued":true}');
      else res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true,"version":3}');
    });
    await new Promise<void>((resolve) => odd.listen(0, "127.0.0.1", resolve));
    try {
      const base = `http://127.0.0.1:${(odd.address() as AddressInfo).port}`;
      const client = new AssignerClient(base, "token");
      await expect(client.hosts(), "a redirect").rejects.toMatchObject({ code: "BAD_GATEWAY", message: `GET /agents at ${base} was answered 302, not by the assigner's API` });
      await expect(client.changeAssignments({ add: [] }, { ifMatch: 3 }), "a 202 without a version").rejects.toMatchObject({ code: "BAD_GATEWAY", message: `the answer to POST /assignments from ${base} has no desired-state version` });
      await expect(client.desiredState(), "a state without its list").rejects.toMatchObject({ code: "BAD_GATEWAY", message: `the answer to GET /assignments from ${base} has no assignments list` });
    } finally {
      odd.closeAllConnections();
      await new Promise((resolve) => odd.close(resolve));
    }
  });

  it("a call the assigner never answers (headers, or a body that stalls) fails UNAVAILABLE at the client's timeout", async () => {
    const silent: Server = createServer((req, res) => {
      // /stall: headers and a first byte, then nothing; anything else: not even headers.
      if (req.url === "/stall") res.writeHead(200, { "content-type": "application/json" }).write("[");
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const base = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
      const client = new AssignerClient(base, "token", { timeoutMs: 300 });
      await expect(client.hosts(), "no headers").rejects.toMatchObject({ code: "UNAVAILABLE", message: `the assigner at ${base} did not answer GET /agents within 300 ms` });
      await expect(client.call("GET", "/stall"), "a stalled body").rejects.toMatchObject({ code: "UNAVAILABLE", message: `the assigner at ${base} did not answer GET /stall within 300 ms` });
    } finally {
      silent.closeAllConnections();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it("reads at most MAX_ANSWER_SIZE of an answer and 64 KiB of an error, cutting the connection (a lying assigner cannot fill an agent's memory)", async () => {
    const streamed: Record<string, number> = {};
    // Answers every request with a body that never ends, until the client hangs up.
    const endless: Server = createServer((req, res) => {
      const path = req.url ?? "";
      streamed[path] = 0;
      res.writeHead(path.includes("broken") ? 500 : 200, { "content-type": "application/json" });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const write = () => {
        while (!res.destroyed && streamed[path]! < 4 * MAX_ANSWER_SIZE) {
          streamed[path]! += chunk.length;
          if (!res.write(chunk)) return void res.once("drain", write);
        }
        res.end();
      };
      write();
    });
    await new Promise<void>((resolve) => endless.listen(0, "127.0.0.1", resolve));
    try {
      const client = new AssignerClient(`http://127.0.0.1:${(endless.address() as AddressInfo).port}`, "token");
      await expect(client.forHost("h"), "the poll").rejects.toMatchObject({ code: "BAD_GATEWAY", message: expect.stringContaining(`larger than ${MAX_ANSWER_SIZE} bytes`) });
      await expect(client.signatures(`sha256:${"a".repeat(64)}`), "the signatures").rejects.toMatchObject({ code: "BAD_GATEWAY" });
      const error = await client.call("GET", "/broken").catch((err: unknown) => err);
      expect(error, "a 500 with an endless body").toMatchObject({ code: "INTERNAL" });
      expect((error as Error).message.length, "the error message's length").toBeLessThanOrEqual(1100);
      for (const [path, bytes] of Object.entries(streamed)) expect(bytes, `bytes the server wrote for ${path} before the client hung up`).toBeLessThan(2 * MAX_ANSWER_SIZE);
      // A stop or a deadline aborts the request itself, not only the wait for it.
      const controller = new AbortController();
      const pending = client.forHost("aborted", { signal: controller.signal });
      controller.abort(new Error("agent stopping"));
      await expect(pending, "aborted with the stop's reason").rejects.toThrow(/agent stopping/);
    } finally {
      endless.closeAllConnections();
      await new Promise((resolve) => endless.close(resolve));
    }
  });
});

describe("registration and authorization", () => {
  it("an agent token reads only its own host; no token is 401; operator calls with an agent token are 403", async () => {
    const a = await registerAgent("auth-a");
    await registerAgent("auth-b");
    const { digest, reference } = await pushSignedPolicy("policies/deny-legacy-remote-access", "2.0.1");
    await http("POST", "/artifacts", { ...admin, body: { reference } });
    await http("POST", `/assign/${digest}/auth-b`, admin);
    expect((await http("GET", "/artifacts/for-host/auth-b", { token: a.token })).status).toBe(403);
    expect((await http("GET", `/artifacts/${digest}/binary`, { token: a.token })).status).toBe(403);
    expect((await http("GET", `/artifacts/${digest}`, { token: a.token })).status).toBe(403);
    expect((await http("GET", "/artifacts/for-host/auth-a")).status).toBe(401);
    expect((await http("GET", `/artifacts/${digest}/binary`)).status).toBe(401);
    expect((await http("GET", "/artifacts/for-host/auth-a", { token: "not-a-token" })).status).toBe(401);
    for (const [method, path] of [["GET", "/agents"], ["GET", "/artifacts"], ["POST", `/assign/${digest}/auth-a`], ["POST", `/unassign/${digest}/auth-b`], ["GET", `/artifacts/${digest}/status`]] as const) {
      const res = await http(method, path, { token: a.token });
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(res.json.error).toBe("this call needs the operator token");
    }
    // Once assigned, the agent can read the binary.
    await http("POST", `/assign/${digest}/auth-a`, admin);
    expect((await http("GET", `/artifacts/${digest}/binary`, { token: a.token })).status).toBe(200);
  });

  it("a host stays bound to its key: another key is refused until an operator removes the agent; re-registering revokes the old token", async () => {
    const keys = generateKeyPairSync("ed25519");
    const first = await registerAgent("bound-host", keys);
    const intruder = generateKeyPairSync("ed25519");
    const takeover = await http("POST", "/agents/register/init", { body: { host_id: "bound-host", public_key: Buffer.from(intruder.publicKey.export({ format: "jwk" }).x!, "base64url").toString("base64") } });
    expect(takeover.status).toBe(409);
    expect(takeover.json.error).toContain(`host "bound-host" is registered with another key; an operator must remove agent ${first.uid} first`);
    // The same key may register again (a lost token); the old token stops working.
    const again = await registerAgent("bound-host", keys);
    expect((await http("GET", "/artifacts/for-host/bound-host", { token: again.token })).status).toBe(200);
    expect((await http("GET", "/artifacts/for-host/bound-host", { token: first.token })).status).toBe(401);
    // Once the operator removes the agent, its token is revoked and a new key may register.
    expect((await http("DELETE", `/agents/${again.uid}`, { token: again.token })).status).toBe(403);
    const etag = (await http("GET", "/artifacts/for-host/bound-host", admin)).headers.get("etag");
    expect((await http("DELETE", `/agents/${again.uid}`, admin)).json).toEqual({ uid: again.uid, deleted: true });
    // Its labels went with it (what selectors gave the host is served no more): the host's version moves.
    expect((await http("GET", "/artifacts/for-host/bound-host", { ...admin, headers: { "if-none-match": etag! } })).status, "the poll after the delete, with the ETag before it").toBe(200);
    expect((await http("GET", "/artifacts/for-host/bound-host", { token: again.token })).status).toBe(401);
    expect((await http("DELETE", `/agents/${again.uid}`, admin)).status).toBe(404);
    const replaced = await registerAgent("bound-host", intruder);
    expect((await http("GET", "/artifacts/for-host/bound-host", { token: replaced.token })).status).toBe(200);
  });

  it("an agent cannot tell a missing artifact from one not assigned to it", async () => {
    const agent = await registerAgent("probe-host");
    const unknown = await http("GET", `/artifacts/sha256:${"c".repeat(64)}`, { token: agent.token });
    expect(unknown.status).toBe(403);
  });

  it("a nonce is single-use and the signature must be the agent key's", async () => {
    const { publicKey } = generateKeyPairSync("ed25519");
    const other = generateKeyPairSync("ed25519");
    const init = await http("POST", "/agents/register/init", { body: { host_id: "liar", public_key: Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url").toString("base64") } });
    const forged = sign(null, Buffer.from(init.json.nonce as string, "base64"), other.privateKey).toString("base64");
    const complete = await http("POST", "/agents/register/complete", { body: { registration_id: init.json.registration_id, signature: forged } });
    expect(complete.status).toBe(401);
    expect(complete.json.error).toMatch(/signature does not verify/);
    const replay = await http("POST", "/agents/register/complete", { body: { registration_id: init.json.registration_id, signature: forged } });
    expect(replay.status).toBe(404);
  });

  it("an enrollment secret gates registration", async () => {
    const gated = await startAssigner({ port: 0, dataDir: join(work, "gated"), enrollSecret: "let-me-in" });
    try {
      const key = Buffer.from(generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }).x!, "base64url").toString("base64");
      const init = (body: Record<string, string>) =>
        fetch(new URL("/agents/register/init", gated.url), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ host_id: "gated-host", public_key: key, ...body }) });
      const none = await init({});
      expect(none.status).toBe(401);
      expect(((await none.json()) as { error: string }).error).toBe("this assigner requires enroll_secret");
      expect((await init({ enroll_secret: "wrong" })).status).toBe(403);
      expect((await init({ enroll_secret: "let-me-in" })).status).toBe(200);
    } finally {
      await gated.close();
    }
  });

  it("lists hosts with last-seen and per-artifact status", async () => {
    const agent = await registerAgent("listed-host");
    await http("GET", "/artifacts/for-host/listed-host", { token: agent.token });
    const list = await http("GET", "/agents", admin);
    const entry = (list.json.agents as { uid: string; host_id: string; hostname: string; labels: Record<string, string> }[]).find((a) => a.uid === agent.uid);
    expect(entry).toMatchObject({ host_id: "listed-host", hostname: "listed-host.example", labels: { role: "web" } });
    const detail = await http("GET", `/agents/${agent.uid}`, admin);
    expect(detail.json).toMatchObject({ host_id: "listed-host", assignments: [], status: [] });
    expect(detail.json.last_seen).not.toBeNull();
  });
});

describe("capability check", () => {
  it("stores the capabilities an agent reports, and refuses (409) a program its kernel cannot run unless forced", async () => {
    const { digest, reference } = await pushSignedPolicy("policies/block-icmp-8888", "7.0.0");
    await http("POST", "/artifacts", { ...admin, body: { reference } });
    const client = new AssignerClient(assigner.url, "operator-secret");
    const register = (hostId: string, capabilities: { kernel_version?: string; btf?: boolean; bpf_loop?: boolean; clsact?: boolean }) =>
      new AssignerClient(assigner.url).register(hostId, generateKeyPairSync("ed25519").privateKey, { kernel: `${capabilities.kernel_version ?? "6.8.0"}-test`, capabilities });

    const old = await register("old-kernel", { kernel_version: "5.15.0", btf: false, bpf_loop: false, clsact: true });
    const shown = await http("GET", `/agents/${old.agent_uid}`, admin);
    expect(shown.json.capabilities, "shown in GET /agents/{uid}").toEqual({ kernel_version: "5.15.0", btf: false, bpf_loop: false, clsact: true });
    const refused = await http("POST", `/assign/${digest}/old-kernel`, admin);
    expect(refused.status, JSON.stringify(refused.json)).toBe(409);
    expect(refused.json.code).toBe("CONFLICT");
    for (const reason of ["Linux >= 5.17", "the host runs 5.15.0", "BTF", "bpf_loop"]) expect(refused.json.error, `the reason names ${reason}`).toContain(reason);
    expect((await http("GET", `/agents/${old.agent_uid}`, admin)).json.assignments, "not assigned").toEqual([]);
    const unclear = await http("POST", `/assign/${digest}/old-kernel?force=yes`, admin);
    expect([unclear.status, unclear.json.error], "force is true or false").toEqual([400, expect.stringContaining("query.force")]);
    const forced = await http("POST", `/assign/${digest}/old-kernel?force=true`, admin);
    expect(forced.status, "?force=true overrides").toBe(200);
    expect(forced.json.assigned).toBe(true);

    const noBtf = await register("no-btf", { kernel_version: "6.8.0", btf: false, bpf_loop: true, clsact: true });
    await expect(client.assign(digest, "no-btf"), "a new kernel without BTF").rejects.toMatchObject({ code: "CONFLICT", message: expect.stringContaining("BTF") });
    expect((await client.assign(digest, "no-btf", { force: true })).assigned, "the client's force").toBe(true);
    expect(noBtf.host_id).toBe("no-btf");

    await register("new-kernel", { kernel_version: "6.8.0", btf: true, bpf_loop: true, clsact: true });
    expect((await http("POST", `/assign/${digest}/new-kernel`, admin)).status, "a capable host").toBe(200);
    expect((await http("POST", `/assign/${digest}/no-agent-yet`, admin)).status, "a host with no registered agent is assigned as today").toBe(200);
    await registerAgent("unreported");
    expect((await http("POST", `/assign/${digest}/unreported`, admin)).status, "an agent that reported no capabilities (kernel 6.1.0) is assigned").toBe(200);

    const bad = await http("POST", "/agents/register/init", { body: { host_id: "x", public_key: Buffer.alloc(32, 1).toString("base64"), capabilities: { kernel_version: "6.8", ebpf: true } } });
    expect(bad.status, "an unknown capability is refused (strict)").toBe(400);

    const env = { AEGIS_ASSIGNER_URL: assigner.url, AEGIS_ADMIN_TOKEN: "operator-secret" };
    await register("cli-old-kernel", { kernel_version: "5.10.0", btf: true });
    expect(expectOneErrorLine(await aegis(["assign", digest, "cli-old-kernel"], env)), "the CLI names the reason").toMatch(/409: .*needs Linux >= 5\.17, the host runs 5\.10\.0/);
    expect((await aegis(["assign", digest, "cli-old-kernel", "--force"], env)).stdout, "aegis assign --force").toMatch(/assigned to cli-old-kernel/);
    const doc = (await http("GET", "/openapi.json")).json as { paths: Record<string, Record<string, { parameters: { name: string; in: string }[] }>> };
    expect(doc.paths["/assign/{artifact_id}/{host_id}"]?.post?.parameters.map((p) => `${p.in}:${p.name}`), "force documented").toEqual(["path:artifact_id", "path:host_id", "query:force", "header:If-Match"]);
    expect(doc.paths["/assignments"]?.post?.parameters.map((p) => `${p.in}:${p.name}`), "force documented on POST /assignments").toEqual(["query:force", "header:If-Match"]);

    // POST /assignments checks every host it adds a program to, and changes nothing when one cannot run it.
    await register("batch-old-1", { kernel_version: "5.4.0", btf: false });
    await register("batch-old-2", { kernel_version: "6.8.0", btf: true, bpf_loop: true, clsact: false });
    const before = await client.desiredState();
    const batch = { add: ["new-kernel", "batch-old-1", "no-agent-yet-2", "batch-old-2"].map((host_id) => ({ artifact_id: digest, host_id })), remove: [{ artifact_id: digest, host_id: "no-btf" }] };
    const refusedBatch = await http("POST", "/assignments", { ...admin, body: batch });
    expect([refusedBatch.status, refusedBatch.json.code], JSON.stringify(refusedBatch.json)).toEqual([409, "CONFLICT"]);
    for (const part of ['host "batch-old-1" cannot run', "the host runs 5.4.0", 'host "batch-old-2" cannot run', "clsact", "--force"]) expect(refusedBatch.json.error, `the refusal names ${part}`).toContain(part);
    expect(refusedBatch.json.error, "a capable host is not named").not.toContain('"new-kernel"');
    expect(await client.desiredState(), "nothing changed, not even the removal").toEqual(before);
    await expect(client.changeAssignments(batch), "the client").rejects.toMatchObject({ code: "CONFLICT" });
    const selector = await client.changeAssignments({ add: [{ artifact_id: digest, selector: "role=web" }] });
    expect(selector.added, "a selector assignment is not checked (hosts that register later get it too)").toBe(1);
    const forcedBatch = await client.changeAssignments(batch, { force: true });
    expect([forcedBatch.added, forcedBatch.removed], "the client's force on POST /assignments").toEqual([3, 1]);
    expect((await client.desiredState()).assignments, "the forced batch is in the desired state").toEqual(expect.arrayContaining(["batch-old-1", "batch-old-2", "no-agent-yet-2"].map((host_id) => ({ artifact_id: digest, host_id }))));
    await client.changeAssignments({ remove: [...["batch-old-1", "batch-old-2", "no-agent-yet-2"].map((host_id) => ({ artifact_id: digest, host_id })), { artifact_id: digest, selector: "role=web" }] });
  });
});

describe("input validation: a 4xx naming the problem, never a 500", () => {
  it.each([
    ["POST", "/assign/sha256:nothex/host", undefined, 400, /path\.artifact_id: an artifact id is a manifest digest/],
    ["POST", `/assign/sha256:${"a".repeat(64)}/bad host!`, undefined, 400, /path\.host_id: a host id is/],
    ["POST", `/assign/sha256:${"a".repeat(64)}/h1`, undefined, 404, /artifact sha256:a+ is not registered/],
    ["GET", `/artifacts/sha256:${"b".repeat(64)}`, undefined, 404, /is not registered/],
    ["POST", "/artifacts", { reference: `${"127.0.0.1:1"}/x:v1` }, 400, /has no digest: register host\/repo@sha256/],
    ["POST", "/artifacts", { reference: "no host" }, 400, /invalid reference/],
    ["POST", "/artifacts", { name: "x" }, 400, /^body/],
    ["POST", "/artifacts", { name: "x", version: "1.0.0", data: Buffer.from("not a bundle").toString("base64") }, 400, /data is not an Aegis bundle/],
    ["GET", "/no/such/path", undefined, 404, /no such endpoint: GET \/no\/such\/path/],
  ])("%s %s → %s", async (method, path, body, status, message) => {
    const res = await http(method, path, { ...admin, ...(body !== undefined ? { body } : {}) });
    expect(res.status).toBe(status);
    expect(res.json.error).toMatch(message);
    expect(res.json.code).toEqual(expect.any(String));
  });

  it("malformed JSON, a missing body and an oversized body", async () => {
    const bad = await http("POST", "/agents/register/init", { raw: "{not json" });
    expect(bad.status).toBe(400);
    expect(bad.json.error).toMatch(/malformed JSON body/);
    const missing = await fetch(new URL("/agents/register/init", assigner.url), { method: "POST" });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { error: string }).error).toMatch(/request body must be JSON/);
    const big = await http("POST", "/agents/register/init", { raw: JSON.stringify({ host_id: "x".repeat(100_000) }) });
    expect(big.status).toBe(413);
  });

  it("a tag-only reference is refused with the digest it resolves to", async () => {
    const { digest } = await pushSignedPolicy("policies/block-icmp-8888", "3.0.0");
    const res = await http("POST", "/artifacts", { ...admin, body: { reference: `${registry.host}/policies/api:3.0.0` } });
    expect(res.status).toBe(400);
    expect(res.json.error).toContain(`(3.0.0 currently resolves to ${registry.host}/policies/api@${digest})`);
  });
});

describe("concurrency", () => {
  it("1,000 concurrent assign/unassign calls over 50 hosts give exactly the expected sets, and every host's version moved", async () => {
    const artifacts: string[] = [];
    for (let i = 0; i < 20; i++) {
      const { digest, reference } = await pushSignedPolicy("policies/block-icmp-8888", `9.0.${i}`, false);
      await http("POST", "/artifacts", { ...admin, body: { reference } });
      artifacts.push(digest);
    }
    const hosts = Array.from({ length: 50 }, (_, i) => `load-${i}`);
    // Every (artifact, host) pair gets exactly one operation, so the final state is known:
    // a third are unassigned (they start assigned), the rest assigned.
    const pairs = hosts.flatMap((host, h) => artifacts.map((artifact, a) => ({ host, artifact, add: (h * 20 + a) % 3 !== 0 })));
    expect(pairs).toHaveLength(1000);
    for (const p of pairs.filter((p) => !p.add)) await http("POST", `/assign/${p.artifact}/${p.host}`, admin);
    const before = new Map(await Promise.all(hosts.map(async (h) => [h, (await http("GET", `/artifacts/for-host/${h}`, admin)).headers.get("etag")] as const)));
    const results = await Promise.all(pairs.map((p) => http("POST", `/${p.add ? "assign" : "unassign"}/${p.artifact}/${p.host}`, admin)));
    const failed = results.flatMap((r, i) => (r.status === 200 && r.json.changed === true ? [] : [`${pairs[i]!.add ? "assign" : "unassign"} ${pairs[i]!.artifact.slice(0, 15)} ${pairs[i]!.host}: ${r.status} ${JSON.stringify(r.json)}`]));
    expect(failed, "requests that did not answer 200 changed=true").toEqual([]);
    for (const host of hosts) {
      const poll = await http("GET", `/artifacts/for-host/${host}`, admin);
      const expected = pairs.filter((p) => p.host === host && p.add).map((p) => p.artifact).sort();
      expect((poll.json.artifacts as { id: string }[]).map((a) => a.id).sort()).toEqual(expected);
      expect(poll.headers.get("etag")).not.toBe(before.get(host));
      // One version step per change: the pre-assignments, then this round's 20 changes.
      const preassigned = pairs.filter((p) => p.host === host && !p.add).length;
      expect(poll.headers.get("etag")).toMatch(new RegExp(`^"v${preassigned + 20}\\.[0-9a-f]{16}"$`));
    }
  });
});

describe("NATS", () => {
  let nc: NatsConnection;
  beforeAll(async () => {
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await nc?.close();
  });

  it("publishes aegis.assignments.<host> on a change, and records telemetry in /artifacts/{id}/status", async () => {
    const { digest, reference } = await pushSignedPolicy("policies/block-icmp-8888", "4.0.0");
    await http("POST", "/artifacts", { ...admin, body: { reference } });
    const sub = nc.subscribe("aegis.assignments.nats-host", { max: 1 });
    await nc.flush();
    await http("POST", `/assign/${digest}/nats-host`, admin);
    for await (const msg of sub) expect(msg.json()).toEqual({ host_id: "nats-host", version: 1 });
    // Telemetry counts only from a host with a registered agent, signed with its key (test/assigner/telemetry.test.ts has the refusals).
    const keys = generateKeyPairSync("ed25519");
    await registerAgent("nats-host", keys);

    nc.publish("aegis.telemetry.nats-host", JSON.stringify(signed(telemetry("nats-host", digest, { counters: { "rule.0": 3 } }), keys)));
    // A message whose subject names another host is ignored.
    nc.publish("aegis.telemetry.other-host", JSON.stringify(signed(telemetry("nats-host", digest, { event: "failed", reason: "spoofed" }), keys)));
    await nc.flush();
    let status: { hosts: { host_id: string; event: string; counters?: Record<string, number> }[] } | undefined;
    for (let i = 0; i < 50 && !status?.hosts.length; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      status = (await http("GET", `/artifacts/${digest}/status`, admin)).json as typeof status;
    }
    expect(status!.hosts).toEqual([expect.objectContaining({ host_id: "nats-host", event: "attached", counters: { "rule.0": 3 } })]);
  });
});

describe("operations", () => {
  it("serves /healthz, /openapi.json for every route, and Prometheus /metrics", async () => {
    const health = await http("GET", "/healthz");
    expect(health.json).toEqual({ status: "ok", store: "ok", registry: "ok", nats: "connected" });
    const doc = (await http("GET", "/openapi.json")).json as { openapi: string; paths: Record<string, Record<string, unknown>> };
    expect(doc.openapi).toBe("3.1.0");
    for (const path of ["/agents/register/init", "/agents/register/complete", "/agents", "/agents/{uid}", "/healthz", "/artifacts", "/artifacts/{id}", "/artifacts/{id}/binary", "/artifacts/for-host/{host_id}", "/assign/{artifact_id}/{host_id}", "/unassign/{artifact_id}/{host_id}", "/artifacts/{id}/status", "/agents/{uid}/telemetry"]) {
      expect(doc.paths[path], path).toBeDefined();
    }
    // The answers beside each route's success: a repeat registration, registry failures, the health document on 503, ETags.
    type Operation = { responses: Record<string, { description: string; headers?: Record<string, unknown>; content?: Record<string, { schema: { properties?: Record<string, unknown> } }> }>; parameters: { name: string }[] };
    const op = (path: string, method: string) => (doc.paths[path] as Record<string, Operation>)[method]!;
    expect(Object.keys(op("/artifacts", "post").responses).sort(), "POST /artifacts answers").toEqual(["200", "201", "4XX", "502", "503"]);
    expect(op("/healthz", "get").responses["503"]!.content!["application/json"]!.schema.properties, "/healthz's 503 body").toHaveProperty("store");
    expect(op("/artifacts/for-host/{host_id}", "get").responses["200"]!.headers, "the poll's ETag").toHaveProperty("ETag");
    expect(op("/artifacts/for-host/{host_id}", "get").parameters.map((p) => p.name), "the poll's If-None-Match").toContain("If-None-Match");
    expect(op("/assignments", "post").responses["200"]!.headers, "the desired state's version").toHaveProperty("ETag");
    const metrics = await fetch(new URL("/metrics", assigner.url)).then((r) => r.text());
    expect(metrics).toMatch(/aegis_http_requests_total\{method="get",route="\/artifacts\/for-host\/\{host_id\}",status="200"\} \d+/);
    expect(metrics).toMatch(/aegis_assignment_changes_total\{op="assign"\} \d+/);
  });

  it("operator CLI: assign, unassign, hosts, status", async () => {
    const { digest, reference } = await pushSignedPolicy("policies/block-icmp-8888", "5.0.0");
    await http("POST", "/artifacts", { ...admin, body: { reference } });
    const env = { AEGIS_ASSIGNER_URL: assigner.url, AEGIS_ADMIN_TOKEN: "operator-secret" };
    const assigned = await aegis(["assign", digest, "cli-host", "--json"], env);
    expect(assigned.code, assigned.stderr).toBe(0);
    expect(JSON.parse(assigned.stdout)).toMatchObject({ artifact_id: digest, host_id: "cli-host", changed: true, version: 1 });
    expect((await aegis(["assign", digest, "cli-host"], env)).stdout).toMatch(/already assigned/);
    expect((await aegis(["unassign", digest, "cli-host"], env)).stdout).toMatch(/unassigned from cli-host \(host version 2\)/);
    await registerAgent("cli-listed");
    expect((await aegis(["hosts"], env)).stdout).toMatch(/^cli-listed +role=web +never +0 +0 +0$/m);
    expect((await aegis(["status", digest], env)).stdout).toMatch(/0 of 0 assigned hosts enforcing\nno host is assigned it or has reported on it/);
    expect(expectOneErrorLine(await aegis(["assign", "sha256:bad", "h"], env))).toMatch(/assigner answered 400: path\.artifact_id/);
    expect(expectOneErrorLine(await aegis(["hosts"], { ...env, AEGIS_ADMIN_TOKEN: "wrong" }))).toMatch(/assigner answered 401: invalid token/);
  });
});

describe("durability and outages (Redis)", () => {
  it("after Redis restarts, having lost its last change, an agent's ETag from before is not taken for other content of the same version", async () => {
    const first = await pushSignedPolicy("policies/block-icmp-8888", "6.1.0");
    const other = await pushSignedPolicy("policies/deny-egress-cidrs", "1.2.0");
    for (const { reference } of [first, other]) await http("POST", "/artifacts", { ...admin, body: { reference } });
    const agent = await registerAgent("lossy-host");
    const poll = (etag?: string) => http("GET", "/artifacts/for-host/lossy-host", { token: agent.token, ...(etag ? { headers: { "if-none-match": etag } } : {}) });
    const version = (await http("POST", `/assign/${first.digest}/lossy-host`, admin)).json.version as number;
    const seen = await poll();
    expect((seen.json.artifacts as { id: string }[]).map((a) => a.id), "the agent has the change").toEqual([first.digest]);
    const etag = seen.headers.get("etag")!;
    await redis.kill();
    await redis.start();
    // As a Redis that lost its last second of writes (appendfsync everysec) comes back: the change is gone.
    const raw = new Redis(redis.url);
    try {
      await raw.set("aegis:{a}:version:lossy-host", String(version - 1));
      await raw.srem("aegis:{a}:host:lossy-host", first.digest);
      await raw.srem(`aegis:{a}:hosts:${first.digest}`, "lossy-host");
    } finally {
      raw.disconnect();
    }
    let answered = await poll();
    for (let i = 0; i < 200 && answered.status === 503; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      answered = await poll();
    }
    expect(answered.status, `the poll once Redis is back: ${JSON.stringify(answered.json)}`).toBe(200);
    // The same version again, for other content.
    const assigned = await http("POST", `/assign/${other.digest}/lossy-host`, admin);
    expect([assigned.status, assigned.json.version], `the version handed out again: ${JSON.stringify(assigned.json)}`).toEqual([200, version]);
    const again = await poll(etag);
    expect(again.status, `the ETag from before the restart (${etag}) against ${again.headers.get("etag")}`).toBe(200);
    expect((again.json.artifacts as { id: string }[]).map((a) => a.id), "what the host is served now").toEqual([other.digest]);
  });

  it("a restarted assigner loses nothing; with Redis stopped the API answers 503 within a second, and recovers", async () => {
    const { digest, reference } = await pushSignedPolicy("policies/block-icmp-8888", "6.0.0");
    await http("POST", "/artifacts", { ...admin, body: { reference } });
    await http("POST", `/assign/${digest}/durable-host`, admin);
    const agent = await registerAgent("durable-host");

    await assigner.close();
    assigner = await startAssigner({ port: 0, redisUrl: redis.url, natsUrl: nats.url, dataDir: work, registry: `${registry.host}/aegis/uploads`, adminToken: "operator-secret", trust: join(work, "ci.pub") });
    const poll = await http("GET", "/artifacts/for-host/durable-host", { token: agent.token });
    expect(poll.status).toBe(200);
    expect((poll.json.artifacts as { id: string }[]).map((a) => a.id)).toEqual([digest]);

    await redis.kill();
    try {
      for (const [method, path] of [["GET", "/artifacts"], ["POST", `/assign/${digest}/other`], ["GET", `/artifacts/for-host/durable-host`]] as const) {
        const started = Date.now();
        const res = await http(method, path, path.includes("for-host") ? { token: agent.token } : admin);
        // Fails fast (no offline queue): well under the 5 s command timeout a
        // hanging call would take, with room for a loaded machine.
        expect(Date.now() - started, `ms for ${method} ${path} with Redis stopped`).toBeLessThan(2500);
        expect(res.status, `${method} ${path}`).toBe(503);
        expect(res.json.error, "the answer, without ioredis's own words").toBe("Redis is unavailable");
      }
      const health = await http("GET", "/healthz");
      expect(health.status).toBe(503);
      expect(health.json.store).toBe("unavailable");
    } finally {
      await redis.start();
    }
    let recovered = 0;
    for (let i = 0; i < 40 && recovered !== 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      recovered = (await http("GET", "/artifacts/for-host/durable-host", { token: agent.token })).status;
    }
    expect(recovered).toBe(200);
  });

  it("the embedded store (the default) keeps assignments across a restart too", async () => {
    const dir = join(work, "embedded");
    const first = await startAssigner({ port: 0, dataDir: dir });
    const token = readFileSync(join(dir, "admin-token"), "utf8").trim();
    const { reference, digest } = await pushSignedPolicy("policies/block-icmp-8888", "7.0.0");
    const call = (server: RunningAssigner, method: string, path: string, body?: unknown) =>
      fetch(new URL(path, server.url), { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, ...(body ? { body: JSON.stringify(body) } : {}) });
    expect((await call(first, "POST", "/artifacts", { reference })).status).toBe(201);
    expect((await call(first, "POST", `/assign/${digest}/embedded-host`)).status).toBe(200);
    const before = (await call(first, "GET", "/artifacts/for-host/embedded-host")).headers.get("etag")!;
    await first.close();
    const second = await startAssigner({ port: 0, dataDir: dir });
    try {
      const answer = await call(second, "GET", "/artifacts/for-host/embedded-host");
      const poll = (await answer.json()) as { artifacts: { id: string }[] };
      expect(poll.artifacts.map((a) => a.id)).toEqual([digest]);
      // A start may hand out versions again that the last run handed out for content never saved: the ETag's epoch moves.
      expect(answer.headers.get("etag"), "the ETag after a restart").toMatch(/^"v1\.[0-9a-f]{8}"$/);
      expect(answer.headers.get("etag"), "the ETag after a restart").not.toBe(before);
      // Host names that are also JavaScript property names are plain names.
      expect((await call(second, "POST", `/assign/${digest}/constructor`)).status).toBe(200);
      expect((await call(second, "GET", "/artifacts/for-host/toString")).status).toBe(200);
    } finally {
      await second.close();
    }
  });
});
