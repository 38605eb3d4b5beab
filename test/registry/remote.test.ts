// The remote client against real registry 2.8.2: auth, retries, chunked
// uploads, cross-repository mounts, typed errors, and digest verification
// behind a proxy that alters bytes.
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copy, credentialsFromEnvironment, descriptorFor, EMPTY_CONFIG, OciLayoutTarget, readAll, RemoteRepository, sha256 } from "../../registry/index.js";
import { startRegistryProxy, uploadSessions, type RegistryProxy } from "../harness/proxy.js";
import { startTokenServer, type TokenServer } from "../harness/token-server.js";
import { startRegistry, TEST_PASSWORD, TEST_USERNAME, type RegistryServer } from "../harness/registry.js";
import { pushArtifact } from "./conformance.js";

let plain: RegistryServer;
let basic: RegistryServer;
let token: RegistryServer;
let tokenServer: TokenServer;
let proxy: RegistryProxy;
const dirs: string[] = [];
const credentials = { username: TEST_USERNAME, password: TEST_PASSWORD };

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "aegis-remote-"));
  dirs.push(dir);
  return dir;
}

beforeAll(async () => {
  tokenServer = await startTokenServer(credentials);
  [plain, basic, token] = await Promise.all([startRegistry(), startRegistry({ auth: "htpasswd" }), startRegistry({ auth: "token", tokenServer })]);
  proxy = await startRegistryProxy(plain.url);
});
afterAll(async () => {
  await proxy?.stop();
  await Promise.all([plain?.stop(), basic?.stop(), token?.stop()]);
  await tokenServer?.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe("authentication", () => {
  it("basic auth: no credentials is a clear NO_CREDENTIALS error", async () => {
    const repo = new RemoteRepository(basic.host, "auth/none");
    await expect(repo.resolve("latest")).rejects.toMatchObject({ code: "NO_CREDENTIALS", message: expect.stringContaining(`registry ${basic.host} requires credentials`) });
  });

  it("basic auth: wrong password is UNAUTHORIZED, the right one works", async () => {
    const wrong = new RemoteRepository(basic.host, "auth/wrong", { credentials: { username: TEST_USERNAME, password: "nope" } });
    await expect(wrong.resolve("latest")).rejects.toMatchObject({ code: "UNAUTHORIZED", status: 401 });
    const repo = new RemoteRepository(basic.host, "auth/basic", { credentials });
    const { manifest } = await pushArtifact(repo);
    expect((await repo.resolve(manifest.digest)).digest).toBe(manifest.digest);
  });

  it("bearer tokens: fetched from the token server's realm with the scope each call needs", async () => {
    const repo = new RemoteRepository(token.host, "auth/bearer", { credentials });
    const { manifest, layer } = await pushArtifact(repo);
    const pulled = await readAll(await repo.fetch(layer), layer.size, "layer");
    expect(sha256(pulled)).toBe(layer.digest);
    expect((await repo.resolve(manifest.digest)).size).toBe(manifest.size);
    const granted = tokenServer.requests.filter((r) => r.authorized).map((r) => r.scope);
    expect(granted).toContain("repository:auth/bearer:pull,push");
    expect(granted).toContain("repository:auth/bearer:pull");
    // Without credentials the token server refuses, and the error says what is missing.
    const anonymous = new RemoteRepository(token.host, "auth/bearer");
    await expect(anonymous.resolve(manifest.digest)).rejects.toMatchObject({ code: "NO_CREDENTIALS" });
  });
});

describe("credentials come from the caller", () => {
  it("the client reads no environment; a lookup is asked for the registry's host", async () => {
    const saved = { user: process.env.AEGIS_REGISTRY_USERNAME, pass: process.env.AEGIS_REGISTRY_PASSWORD, host: process.env.AEGIS_REGISTRY_HOST };
    process.env.AEGIS_REGISTRY_HOST = basic.host;
    process.env.AEGIS_REGISTRY_USERNAME = TEST_USERNAME;
    process.env.AEGIS_REGISTRY_PASSWORD = TEST_PASSWORD;
    try {
      const bare = new RemoteRepository(basic.host, "auth/caller");
      await expect(bare.resolve("latest"), "no credentials given, though the environment has some").rejects.toMatchObject({ code: "NO_CREDENTIALS" });
      const asked: string[] = [];
      const repo = new RemoteRepository(basic.host, "auth/caller", {
        credentials: (host) => {
          asked.push(host);
          return credentialsFromEnvironment(host);
        },
      });
      const { manifest } = await pushArtifact(repo);
      expect((await repo.resolve(manifest.digest)).digest).toBe(manifest.digest);
      expect(asked, "hosts the lookup was asked for").toEqual([basic.host]);
    } finally {
      if (saved.user === undefined) delete process.env.AEGIS_REGISTRY_USERNAME;
      else process.env.AEGIS_REGISTRY_USERNAME = saved.user;
      if (saved.pass === undefined) delete process.env.AEGIS_REGISTRY_PASSWORD;
      else process.env.AEGIS_REGISTRY_PASSWORD = saved.pass;
      if (saved.host === undefined) delete process.env.AEGIS_REGISTRY_HOST;
      else process.env.AEGIS_REGISTRY_HOST = saved.host;
    }
  });

  it("credentialsFromEnvironment: the AEGIS_ pair for AEGIS_REGISTRY_HOST only, else the Docker config's entry for the host", () => {
    const dir = tempDir();
    const auth = Buffer.from("docker-user:docker-pass").toString("base64");
    writeFileSync(join(dir, "config.json"), JSON.stringify({ auths: { "https://reg.example:5000": { auth } } }));
    const env = { DOCKER_CONFIG: dir };
    expect(credentialsFromEnvironment("reg.example:5000", env)).toEqual({ username: "docker-user", password: "docker-pass" });
    expect(credentialsFromEnvironment("other.example", env), "a host the config does not name").toBeUndefined();
    const both = { ...env, AEGIS_REGISTRY_HOST: "reg.example:5000", AEGIS_REGISTRY_USERNAME: "u", AEGIS_REGISTRY_PASSWORD: "p" };
    expect(credentialsFromEnvironment("reg.example:5000", both)).toEqual({ username: "u", password: "p" });
    expect(credentialsFromEnvironment("evil.example", both), "the AEGIS_ pair for a host AEGIS_REGISTRY_HOST does not name").toBeUndefined();
    const unscoped = { ...env, AEGIS_REGISTRY_USERNAME: "u", AEGIS_REGISTRY_PASSWORD: "p" };
    expect(() => credentialsFromEnvironment("reg.example:5000", unscoped), "a username without AEGIS_REGISTRY_HOST").toThrow(/AEGIS_REGISTRY_HOST/);
  });
});

describe("credentials stay with their registry", () => {
  it("an upload Location on another origin gets no Authorization header", async () => {
    const seen: (string | undefined)[] = [];
    // The "other origin": records what it is sent.
    const elsewhere = createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(500).end();
    });
    await new Promise<void>((done) => elsewhere.listen(0, "127.0.0.2", done));
    const otherPort = (elsewhere.address() as AddressInfo).port;
    // A registry that wants basic auth and sends uploads elsewhere.
    const registry = createServer((req, res) => {
      if (!req.headers.authorization) return void res.writeHead(401, { "www-authenticate": 'Basic realm="test"' }).end();
      res.writeHead(202, { location: `http://127.0.0.2:${otherPort}/upload/1` }).end();
    });
    await new Promise<void>((done) => registry.listen(0, "127.0.0.1", done));
    try {
      const repo = new RemoteRepository(`127.0.0.1:${(registry.address() as AddressInfo).port}`, "leak/test", { credentials, maxAttempts: 1 });
      const data = Buffer.from("secret-free bytes");
      await expect(repo.push(descriptorFor("application/octet-stream", data), Readable.from([data]))).rejects.toBeInstanceOf(Error);
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((header) => header === undefined)).toBe(true);
    } finally {
      registry.close();
      elsewhere.close();
    }
  });
});

describe("transfers", () => {
  it("uploads a large blob in PATCH chunks and mounts it into another repository", async () => {
    const viaProxy = new RemoteRepository(proxy.host, "big/source", { monolithicLimit: 1024 * 1024, chunkSize: 2 * 1024 * 1024 });
    const data = randomBytes(5 * 1024 * 1024 + 123);
    const desc = descriptorFor("application/octet-stream", data);
    proxy.requests.length = 0;
    const pieces = Array.from({ length: Math.ceil(data.byteLength / 65536) }, (_, i) => data.subarray(i * 65536, (i + 1) * 65536));
    await viaProxy.push(desc, Readable.from(pieces));
    expect(proxy.requests.filter((r) => r.method === "PATCH" && r.status === 202)).toHaveLength(3);
    expect(await viaProxy.exists(desc)).toBe(true);

    const target = new RemoteRepository(proxy.host, "big/target");
    const mounted = await target.mount(desc, "big/source");
    expect(mounted).toBe(true);
    expect(proxy.requests.some((r) => r.method === "POST" && r.query.includes("mount=") && r.status === 201)).toBe(true);
    expect(sha256(await readAll(await target.fetch(desc), desc.size, "blob"))).toBe(desc.digest);
  });

  it("copy between repositories of one registry mounts instead of re-uploading, one request per blob, even for blobs there", async () => {
    const src = new RemoteRepository(proxy.host, "mount/src");
    const { manifest, layer } = await pushArtifact(src);
    const blobRequests = () => proxy.requests.filter((r) => r.path.startsWith("/v2/mount/dst/blobs/")).map((r) => `${r.method} ${r.query ? "mount" : r.path.split("/").pop()} ${r.status}`).sort();
    const mounted = ["POST mount 201", "POST mount 201"];
    for (const round of ["first copy", "copy again (the blobs are there)"]) {
      proxy.requests.length = 0;
      const events: string[] = [];
      await copy(src, manifest.digest, new RemoteRepository(proxy.host, "mount/dst"), "v1", { onEvent: (e) => e.kind === "skip" && events.push(`${e.desc.digest} ${e.reason}`) });
      // A mount is asked first: no HEAD before it, and no bytes moved.
      expect(blobRequests(), `${round}: requests for the destination's blobs`).toEqual(mounted);
      expect(events, `${round}: skip events`).toContain(`${layer.digest} mounted`);
    }
  });

  it("a registry whose mounts fail (500, which a POST is not retried on): the copy asks HEAD and uploads instead", async () => {
    const src = new RemoteRepository(proxy.host, "mountfail/src");
    const { manifest, layer } = await pushArtifact(src);
    proxy.set({ failMounts: true });
    try {
      for (const round of ["first copy", "copy again (the blobs are there)"]) {
        proxy.requests.length = 0;
        await copy(src, manifest.digest, new RemoteRepository(proxy.host, "mountfail/dst"), "v1", { concurrency: 1 });
        expect(proxy.requests.filter((r) => r.query.includes("mount=")).map((r) => r.status), `${round}: one mount, failed`).toEqual([500]);
      }
      expect(sha256(await readAll(await new RemoteRepository(plain.host, "mountfail/dst").fetch(layer), layer.size, "layer")), "the layer at the destination").toBe(layer.digest);
    } finally {
      proxy.set({ failMounts: false });
    }
  });

  it("a registry that declines mounts: the upload it opened is closed, the copy uploads, and asks no more mounts", async () => {
    const src = new RemoteRepository(proxy.host, "declined/src");
    const { manifest, layer } = await pushArtifact(src);
    proxy.set({ ignoreMounts: true });
    try {
      for (const [round, after] of [
        ["first copy", ["HEAD 404", "POST 202", "PUT 201"]],
        ["copy again", ["HEAD 200"]],
      ] as const) {
        proxy.requests.length = 0;
        // One blob at a time, so the second is asked for after the first mount was declined.
        await copy(src, manifest.digest, new RemoteRepository(proxy.host, "declined/dst"), "v1", { concurrency: 1 });
        const mounts = proxy.requests.filter((r) => r.query.includes("mount="));
        expect(mounts.map((r) => r.status), `${round}: mounts asked (declined)`).toEqual([202]);
        const sessions = uploadSessions(proxy.requests);
        expect(sessions.get(mounts[0]?.location ?? ""), `${round}: the declined mount's upload`).toEqual(["POST 202", "DELETE 204"]);
        const others = proxy.requests.filter((r) => r.path.startsWith("/v2/declined/dst/blobs/") && !r.query.includes("mount=") && r.method !== "DELETE");
        expect(others.map((r) => `${r.method} ${r.status}`).slice(-after.length), `${round}: the last blob's requests`).toEqual(after);
      }
      const dst = new RemoteRepository(plain.host, "declined/dst");
      expect(sha256(await readAll(await dst.fetch(layer), layer.size, "layer")), "the layer at the destination").toBe(layer.digest);
    } finally {
      proxy.set({ ignoreMounts: false });
    }
  });

  it("skips blobs and manifests the destination already has", async () => {
    const src = new RemoteRepository(plain.host, "skip/src");
    const { manifest, layer } = await pushArtifact(src);
    const dst = new RemoteRepository(proxy.host, "skip/dst");
    await copy(src, manifest.digest, dst, "v1");
    proxy.requests.length = 0;
    await copy(src, manifest.digest, dst, "v1");
    const seen = proxy.requests.map((r) => `${r.method} ${r.path.replace(/^.*\/(manifests|blobs)\//, "$1/")}`).sort();
    // The blobs are found and skipped; the root is written once, by its tag (a ReferencePusher), not HEAD, PUT by digest and PUT by tag.
    expect(seen, "requests of a copy the destination already has").toEqual([`HEAD blobs/${EMPTY_CONFIG.digest}`, `HEAD blobs/${layer.digest}`, "PUT manifests/v1"].sort());
  });

  it("a copy to a tag writes the root manifest once, by its tag, and the digest resolves to it", async () => {
    const src = new RemoteRepository(plain.host, "tagged/src");
    const { manifest } = await pushArtifact(src);
    const dst = new RemoteRepository(proxy.host, "tagged/dst");
    proxy.requests.length = 0;
    await copy(src, manifest.digest, dst, "v2");
    const puts = proxy.requests.filter((r) => r.method === "PUT" && r.path.includes("/manifests/")).map((r) => r.path.split("/").pop());
    expect(puts, "manifest PUTs").toEqual(["v2"]);
    const reader = new RemoteRepository(plain.host, "tagged/dst");
    expect((await reader.resolve("v2")).digest, "the tag").toBe(manifest.digest);
    expect((await new RemoteRepository(plain.host, "tagged/dst").resolve(manifest.digest)).digest, "the digest").toBe(manifest.digest);
  });

  it("resolve, fetch and copy of one manifest by digest: one GET of it, no HEAD, and the empty config never asked for", async () => {
    const { manifest, layer } = await pushArtifact(new RemoteRepository(plain.host, "fewer/src"));
    const src = new RemoteRepository(proxy.host, "fewer/src");
    proxy.requests.length = 0;
    const desc = await src.resolve(manifest.digest);
    expect(desc, "resolve by digest").toEqual({ mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size });
    await readAll(await src.fetch(desc), desc.size, "manifest");
    await copy(src, manifest.digest, new OciLayoutTarget(tempDir()));
    const seen = proxy.requests.map((r) => `${r.method} ${r.path.replace(/^.*\/(manifests|blobs)\//, "$1/")}`);
    expect(seen, "requests of resolve, fetch and copy").toEqual([`GET manifests/${manifest.digest}`, `GET blobs/${layer.digest}`]);
  });

  it("a manifest just read is fetched again from memory, its size still checked, and readAll keeps its limit on it", async () => {
    const { manifest } = await pushArtifact(new RemoteRepository(plain.host, "fewer/held"));
    const src = new RemoteRepository(proxy.host, "fewer/held");
    const desc = await src.resolve(manifest.digest);
    proxy.requests.length = 0;
    const fetched = await readAll(await src.fetch(desc), desc.size, "manifest");
    expect(sha256(fetched), "the bytes fetched").toBe(manifest.digest);
    expect(proxy.requests, "requests of the fetch").toEqual([]);
    fetched.fill(0); // a caller's copy: the bytes kept are not changed with it
    expect(sha256(await readAll(await src.fetch(desc), desc.size, "manifest")), "the bytes fetched again").toBe(manifest.digest);
    const longer = src.fetch({ ...desc, size: desc.size + 1 }).then((stream) => readAll(stream, desc.size + 1, "manifest"));
    await expect(longer, "a descriptor one byte longer").rejects.toMatchObject({ code: "SIZE_MISMATCH" });
    const limited = src.fetch(desc).then((stream) => readAll(stream, desc.size - 1, "manifest"));
    await expect(limited, "a limit one byte short").rejects.toMatchObject({ code: "SIZE_LIMIT" });
  });

  it("a tag resolves with one HEAD (pollers' reads stay cheap); a digest with one GET, checked against the bytes", async () => {
    const origin = new RemoteRepository(plain.host, "fewer/tag");
    const { manifest } = await pushArtifact(origin);
    await origin.tag(manifest, "v1");
    const src = new RemoteRepository(proxy.host, "fewer/tag");
    proxy.requests.length = 0;
    expect(await src.resolve("v1"), "the tag").toEqual({ mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size });
    expect(proxy.requests.map((r) => r.method), "requests of a tag's resolve").toEqual(["HEAD"]);
    proxy.set({ tamperManifests: true });
    try {
      await expect(new RemoteRepository(proxy.host, "fewer/tag").resolve(manifest.digest), "a digest whose bytes were altered").rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
    } finally {
      proxy.set({ tamperManifests: false });
    }
  });

  it("a resolve refused for its content type does not read the body: an endless page ends the call at once", async () => {
    let closed = false;
    const server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      const chunk = Buffer.alloc(64 * 1024, "<p>");
      const pump = () => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once("drain", pump);
      };
      res.on("close", () => (closed = true));
      pump();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
      // Were the body read, the call would last until the client's deadline, past this test's timeout.
      await expect(new RemoteRepository(host, "endless/page").resolve(`sha256:${"0".repeat(64)}`)).rejects.toMatchObject({ code: "INVALID_MANIFEST" });
      await expect.poll(() => closed, { message: "the connection closed by the client" }).toBe(true);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("retries 429 and 503, honouring Retry-After", async () => {
    const repo = new RemoteRepository(proxy.host, "retry/repo");
    const { manifest } = await pushArtifact(repo);
    // Fresh instances: the one that pushed (or resolved) a manifest resolves its digest without a request.
    const reader = () => new RemoteRepository(proxy.host, "retry/repo");
    proxy.set({ throttle: { status: 429, times: 2, retryAfterSeconds: 1 } });
    const started = Date.now();
    expect((await reader().resolve(manifest.digest)).digest).toBe(manifest.digest);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    proxy.set({ throttle: { status: 503, times: 1 } });
    expect((await reader().resolve(manifest.digest)).digest).toBe(manifest.digest);
  });

  it("gives up after the attempt limit with the registry's own error code", async () => {
    const repo = new RemoteRepository(proxy.host, "retry/limit", { maxAttempts: 2, backoffMs: 10 });
    proxy.set({ throttle: { status: 429, times: 5 } });
    await expect(repo.resolve("latest")).rejects.toMatchObject({ code: "TOOMANYREQUESTS", status: 429 });
    proxy.set({ throttle: { status: 429, times: 0 } });
  });

  it("turns registry error bodies into typed errors", async () => {
    const repo = new RemoteRepository(plain.host, "errors/repo");
    await pushArtifact(repo);
    const missing = descriptorFor("application/vnd.oci.image.manifest.v1+json", Buffer.from("nothing"));
    await expect(repo.fetch(missing)).rejects.toMatchObject({ code: "MANIFEST_UNKNOWN", status: 404 });
    const badName = new RemoteRepository(plain.host, "errors/repo");
    const blob = descriptorFor("application/octet-stream", Buffer.from("x"));
    await expect(badName.fetch(blob)).rejects.toMatchObject({ code: "BLOB_UNKNOWN", status: 404 });
  });
});

describe("verification", () => {
  it("a registry that alters blob bytes gives DIGEST_MISMATCH and nothing is written to the destination", async () => {
    const src = new RemoteRepository(plain.host, "tamper/blob");
    const { manifest, layer } = await pushArtifact(src);
    const viaProxy = new RemoteRepository(proxy.host, "tamper/blob");
    const dir = tempDir();
    const layout = new OciLayoutTarget(dir);
    const other = new RemoteRepository(plain.host, "tamper/copy");
    proxy.set({ tamperBlobs: true });
    try {
      await expect(copy(viaProxy, manifest.digest, layout, "v1")).rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
      await expect(copy(viaProxy, manifest.digest, other, "v1")).rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
    } finally {
      proxy.set({ tamperBlobs: false });
    }
    expect(await layout.exists(layer)).toBe(false);
    expect(existsSync(join(dir, "blobs", "sha256", layer.digest.slice(7)))).toBe(false);
    await expect(layout.resolve("v1")).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(await other.exists(layer)).toBe(false);
    expect(await other.exists(manifest)).toBe(false);
  });

  it("a registry that alters manifest bytes gives DIGEST_MISMATCH", async () => {
    const src = new RemoteRepository(plain.host, "tamper/manifest");
    const { manifest } = await pushArtifact(src);
    const layout = new OciLayoutTarget(tempDir());
    proxy.set({ tamperManifests: true });
    try {
      await expect(copy(new RemoteRepository(proxy.host, "tamper/manifest"), manifest.digest, layout)).rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
    } finally {
      proxy.set({ tamperManifests: false });
    }
    expect(await layout.exists(manifest)).toBe(false);
  });
});

describe("cancellation", () => {
  /** Resolves once `check` is true, polling; the test's own timeout bounds it. */
  async function until(check: () => boolean | Promise<boolean>): Promise<void> {
    while (!(await check())) await new Promise((resolve) => setTimeout(resolve, 10));
  }

  it("aborting a copy from a registry that stalls mid-blob rejects with the abort reason and leaves no partial blob", async () => {
    const src = new RemoteRepository(plain.host, "abort/copy");
    const data = randomBytes(1024 * 1024);
    const layer = descriptorFor("application/octet-stream", data);
    await src.push(layer, Readable.from([data]));
    const { manifest } = await pushArtifact(src, { layers: [layer] });
    const stalling = await startRegistryProxy(plain.url, { stallBlobsAfter: 64 * 1024 });
    const dir = tempDir();
    const layout = new OciLayoutTarget(dir);
    const blobs = join(dir, "blobs", "sha256");
    const controller = new AbortController();
    try {
      // The client's own timeout is past the test's, so only the abort can end this copy in time.
      const slow = new RemoteRepository(stalling.host, "abort/copy", { timeoutMs: 120_000 });
      const pulling = copy(slow, manifest.digest, layout, "v1", { signal: controller.signal });
      // Wait until the layer's bytes are being written beside their final name…
      await until(() => existsSync(blobs) && readdirSync(blobs).some((name) => name.startsWith(".tmp-")));
      // …then stop, as a stopping agent does.
      controller.abort();
      await expect(pulling, "the copy's rejection").rejects.toMatchObject({ name: "AbortError" });
    } finally {
      await stalling.stop();
    }
    expect(readdirSync(blobs).filter((name) => name.startsWith(".tmp-")), "temp files left in the layout").toEqual([]);
    expect(existsSync(join(blobs, layer.digest.slice(7))), "layer file in the layout").toBe(false);
    expect(await layout.exists(layer), "layer in the layout").toBe(false);
    await expect(layout.resolve("v1"), "tag in the layout").rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("aborting during a retry's wait (Retry-After) rejects with the abort reason", async () => {
    const src = new RemoteRepository(plain.host, "abort/retry");
    const { manifest } = await pushArtifact(src);
    const busy = await startRegistryProxy(plain.url, { throttle: { status: 429, times: 5, retryAfterSeconds: 30 } });
    const controller = new AbortController();
    try {
      const resolving = new RemoteRepository(busy.host, "abort/retry").resolve(manifest.digest, { signal: controller.signal });
      await until(() => busy.requests.some((r) => r.status === 429));
      controller.abort(new Error("agent stopping"));
      await expect(resolving, "the resolve's rejection").rejects.toThrow("agent stopping");
      expect(busy.requests.length, "requests after the abort").toBe(1);
    } finally {
      await busy.stop();
    }
  });
});
