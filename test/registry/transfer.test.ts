// The transfer paths on real registry 2.8.2: blobs stream up in one PUT
// with backpressure (bytes read ahead of what the registry has taken stay
// bounded), a mismatch or a failing source commits nothing under the digest,
// copy between repositories of one registry mounts (bearer scopes for both),
// blobs the destination has are skipped, and progress adds up.
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copy, descriptorFor, EMPTY_CONFIG, encodeJson, MediaType, MemoryTarget, readAll, RemoteRepository, sha256, storeEmptyConfig, type Descriptor, type Target } from "../../registry/index.js";
import { startRegistryProxy, type RegistryProxy } from "../harness/proxy.js";
import { startRegistry, TEST_PASSWORD, TEST_USERNAME, type RegistryServer } from "../harness/registry.js";
import { startTokenServer, type TokenServer } from "../harness/token-server.js";
import { startUploadGate, type UploadGate } from "./upload-gate.js";

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
const credentials = { username: TEST_USERNAME, password: TEST_PASSWORD };

let a: RegistryServer;
let b: RegistryServer;
let token: RegistryServer;
let tokenServer: TokenServer;
let proxy: RegistryProxy;
let tokenProxy: RegistryProxy;
let gate: UploadGate;

beforeAll(async () => {
  tokenServer = await startTokenServer(credentials);
  [a, b, token] = await Promise.all([startRegistry(), startRegistry(), startRegistry({ auth: "token", tokenServer })]);
  [proxy, tokenProxy, gate] = await Promise.all([startRegistryProxy(b.url), startRegistryProxy(token.url), startUploadGate(b.url)]);
});
afterAll(async () => {
  await Promise.all([proxy?.stop(), tokenProxy?.stop(), gate?.stop()]);
  await Promise.all([a?.stop(), b?.stop(), token?.stop()]);
  await tokenServer?.stop();
});

/** Where distribution's filesystem driver keeps a committed blob. */
function committed(registry: RegistryServer, desc: Descriptor): boolean {
  const hex = desc.digest.slice("sha256:".length);
  return existsSync(`${registry.dataDir}/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`);
}

/** Upload sessions of `repository` whose bytes distribution's filesystem driver still holds (a cancel removes them). */
function openUploads(registry: RegistryServer, repository: string): string[] {
  const dir = `${registry.dataDir}/docker/registry/v2/repositories/${repository}/_uploads`;
  return existsSync(dir) ? readdirSync(dir).filter((session) => existsSync(`${dir}/${session}/data`)) : [];
}

/** `data` as a stream of 64 KiB chunks that counts what has been read from it. */
function countingSource(data: Buffer, failAt = Infinity): { stream: Readable; read: () => number } {
  let offset = 0;
  const stream = new Readable({
    read() {
      // A source that goes away midway, at a known point rather than when a poll happens to look.
      if (offset >= failAt) return this.destroy(new Error("source went away"));
      const chunk = data.subarray(offset, offset + CHUNK);
      offset += chunk.byteLength;
      this.push(chunk.byteLength > 0 ? chunk : null);
    },
  });
  return { stream, read: () => offset };
}

/** Resolves once `check` is true, polling; the test's own timeout bounds it. */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 10));
}

/** Resolves once `value` has not changed for `polls` polls in a row (a stream that stopped being read). */
async function settled(value: () => number, polls = 10): Promise<void> {
  for (let last = value(), same = 0; same < polls; ) {
    await new Promise((resolve) => setTimeout(resolve, 30));
    const now = value();
    same = now === last ? same + 1 : 0;
    last = now;
  }
}

/** The empty config and a manifest of `layer` (already stored) pushed into `target`. */
async function pushManifestFor(target: Target, layer: Descriptor): Promise<Descriptor> {
  await storeEmptyConfig(target);
  const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: "application/vnd.test", config: EMPTY_CONFIG, layers: [layer] });
  const manifest = descriptorFor(MediaType.ImageManifest, bytes);
  await target.push(manifest, Readable.from([bytes]));
  return manifest;
}

/** An artifact (empty config, a layer of `data`, manifest) pushed into `target`. */
async function pushLayerArtifact(target: Target, data: Buffer): Promise<{ manifest: Descriptor; layer: Descriptor }> {
  const layer = descriptorFor("application/octet-stream", data);
  await target.push(layer, Readable.from([data]));
  return { manifest: await pushManifestFor(target, layer), layer };
}

describe("streaming uploads", () => {
  it("a multi-MiB blob goes up as it is read, in one PUT after the POST, no PATCH", async () => {
    const repo = new RemoteRepository(proxy.host, "stream/one-put");
    const data = randomBytes(12 * MiB + 5);
    const desc = descriptorFor("application/octet-stream", data);
    proxy.requests.length = 0;
    await repo.push(desc, countingSource(data).stream);
    const uploads = proxy.requests.filter((r) => r.path.includes("/blobs/uploads/"));
    expect(uploads.map((r) => `${r.method} ${r.status}`), "upload requests").toEqual(["POST 202", "PUT 201"]);
    expect(committed(b, desc), "blob committed in the registry").toBe(true);
    expect(sha256(await readAll(await repo.fetch(desc), desc.size, "blob"))).toBe(desc.digest);
  });

  for (const [mode, options] of [
    ["one PUT", {}],
    ["PATCH chunks", { monolithicLimit: MiB, chunkSize: 2 * MiB }],
  ] as const) {
    it(`${mode}: a mismatch found at the end of the stream, or a source failing midway, commits nothing and cancels the upload`, async () => {
      const repo = new RemoteRepository(proxy.host, "stream/mismatch", options);
      const data = randomBytes(6 * MiB);
      const desc = descriptorFor("application/octet-stream", data);
      const altered = Buffer.from(data);
      altered[altered.byteLength - 1] = altered[altered.byteLength - 1]! ^ 0xff;
      proxy.requests.length = 0;
      await expect(repo.push(desc, countingSource(altered).stream), "altered last byte").rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
      expect(committed(b, desc), "blob committed after a mismatch").toBe(false);
      expect(await repo.exists(desc), "blob in the repository after a mismatch").toBe(false);
      expect(proxy.requests.some((r) => r.method === "DELETE" && r.path.includes("/blobs/uploads/")), "upload session cancelled").toBe(true);

      await expect(repo.push(desc, countingSource(data, 3 * MiB).stream), "source failing midway").rejects.toThrow("source went away");
      expect(committed(b, desc), "blob committed after a failing source").toBe(false);
    });
  }

  it("backpressure: while the registry takes nothing, the pusher stops reading its source", async () => {
    const repo = new RemoteRepository(gate.host, "stream/backpressure");
    const data = randomBytes(48 * MiB);
    const desc = descriptorFor("application/octet-stream", data);
    const source = countingSource(data);
    const start = gate.received;
    gate.holdAfter(start + 2 * MiB);
    const pushing = repo.push(desc, source.stream);
    try {
      await until(() => gate.holding);
      await settled(source.read);
      expect(source.read(), "bytes read from the source while the registry held").toBeLessThan(data.byteLength);
      // Read from the source but neither taken by the registry nor queued in the kernel's socket buffers: held by this process.
      const held = source.read() - (gate.received - start) - gate.kernelQueued();
      expect(held, "bytes this process holds while the registry takes nothing").toBeLessThan(4 * MiB);
    } finally {
      gate.release();
    }
    await pushing;
    expect(committed(b, desc)).toBe(true);
  });
  it("one PUT of a blob is not cut off at deadlineMs when its size needs longer over a slow uplink", async () => {
    const repo = new RemoteRepository(gate.host, "stream/slow-uplink", { deadlineMs: 500 });
    const data = randomBytes(2 * MiB);
    const desc = descriptorFor("application/octet-stream", data);
    gate.holdAfter(gate.received + MiB);
    const started = Date.now();
    const pushing = repo.push(desc, countingSource(data).stream);
    try {
      await until(() => gate.holding && Date.now() - started > 1500);
    } finally {
      gate.release();
    }
    await expect(pushing, "a push held past deadlineMs").resolves.toBeUndefined();
    expect(committed(b, desc)).toBe(true);
  });
});

describe("copy between registries", () => {
  it("streams the download into the upload with backpressure: bytes in flight stay bounded", async () => {
    const src = new RemoteRepository(a.host, "copy/src");
    const { manifest, layer } = await pushLayerArtifact(src, randomBytes(48 * MiB));
    const dst = new RemoteRepository(gate.host, "copy/dst");
    let copied = 0;
    const start = gate.received;
    gate.holdAfter(start + 2 * MiB);
    const copying = copy(src, manifest.digest, dst, "v1", { onProgress: (done) => (copied = done) });
    try {
      await until(() => gate.holding);
      await settled(() => copied);
      expect(copied, "bytes read from the source registry while the destination held").toBeLessThan(layer.size);
      const held = copied - (gate.received - start) - gate.kernelQueued();
      expect(held, "bytes this process holds while the destination takes nothing").toBeLessThan(4 * MiB);
    } finally {
      gate.release();
    }
    await copying;
    expect(committed(b, layer)).toBe(true);
    expect((await dst.resolve("v1")).digest).toBe(manifest.digest);
  });

  it("a source that alters a multi-MiB blob fails the copy and commits nothing at the destination", async () => {
    const src = new RemoteRepository(a.host, "tamper/src");
    const { manifest, layer } = await pushLayerArtifact(src, randomBytes(8 * MiB));
    const tampering = await startRegistryProxy(a.url, { tamperBlobs: true });
    try {
      const dst = new RemoteRepository(b.host, "tamper/dst");
      await expect(copy(new RemoteRepository(tampering.host, "tamper/src"), manifest.digest, dst, "v1")).rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
      expect(committed(b, layer), "layer committed at the destination").toBe(false);
      expect(await dst.exists(manifest), "manifest at the destination").toBe(false);
    } finally {
      await tampering.stop();
    }
  });

  it("skips what the destination has: a second copy reads no blob and uploads nothing", async () => {
    const src = await startRegistryProxy(a.url);
    try {
      const source = new RemoteRepository(src.host, "skip/src");
      const { manifest } = await pushLayerArtifact(source, randomBytes(3 * MiB));
      const dst = new RemoteRepository(proxy.host, "skip/dst");
      await copy(source, manifest.digest, dst, "v1");
      src.requests.length = 0;
      proxy.requests.length = 0;
      await copy(source, manifest.digest, dst, "v1");
      expect(src.requests.filter((r) => r.method === "GET" && r.path.includes("/blobs/")), "blobs read from the source").toEqual([]);
      expect(proxy.requests.filter((r) => r.path.includes("/blobs/uploads/")), "uploads at the destination").toEqual([]);
      expect(proxy.requests.filter((r) => r.method === "HEAD" && r.status === 200).length, "HEADs answered 200").toBeGreaterThanOrEqual(2);
    } finally {
      await src.stop();
    }
  });

  it("mounts across repositories of one registry with bearer auth: one token covers push here and pull there, and the registry answers 201", async () => {
    const src = new RemoteRepository(tokenProxy.host, "mount/src", { credentials });
    const { manifest, layer } = await pushLayerArtifact(src, randomBytes(2 * MiB));
    tokenProxy.requests.length = 0;
    tokenServer.requests.length = 0;
    const events: string[] = [];
    await copy(src, manifest.digest, new RemoteRepository(tokenProxy.host, "mount/dst", { credentials }), "v1", {
      onEvent: (e) => e.kind === "skip" && events.push(`${e.desc.digest} ${e.reason}`),
    });
    const mounts = tokenProxy.requests.filter((r) => r.method === "POST" && r.query.includes("mount="));
    expect(mounts.map((r) => r.status), "mount answers").toContain(201);
    expect(tokenProxy.requests.some((r) => r.method === "PATCH" || (r.method === "PUT" && r.path.includes("/blobs/uploads/"))), "bytes uploaded").toBe(false);
    expect(events).toContain(`${layer.digest} mounted`);
    const granted = tokenServer.requests.filter((r) => r.authorized).map((r) => r.scope.split(" ").sort().join(" "));
    expect(granted, "token scopes asked for").toContain("repository:mount/dst:pull,push repository:mount/src:pull");
  });
});

describe("ingesting a blob whose digest is learned as it streams", () => {
  const uploads = () => proxy.requests.filter((r) => r.path.includes("/blobs/uploads/")).map((r) => `${r.method} ${r.status}`);

  for (const [mode, options, patches] of [
    ["one PATCH", {}, 1],
    ["PATCH chunks of chunkSize", { chunkSize: 2 * MiB }, 3],
  ] as const) {
    it(`${mode}: POST opens the session, PATCH sends the bytes, and the PUT ?digest= comes only with commit`, async () => {
      const repo = new RemoteRepository(proxy.host, "ingest/commit", options);
      const data = randomBytes(5 * MiB + 7);
      const expected = descriptorFor("application/octet-stream", data);
      proxy.requests.length = 0;
      const ingested = await repo.ingest(expected.mediaType, data.byteLength, countingSource(data).stream);
      expect(ingested.desc, "descriptor learned").toEqual(expected);
      // Registry 2.8.2 answers 416 to a PATCH whose Content-Range does not start where the upload stands.
      expect(uploads(), "requests before commit").toEqual(["POST 202", ...Array<string>(patches).fill("PATCH 202")]);
      expect(committed(b, expected), "committed before commit").toBe(false);
      await ingested.commit();
      const put = proxy.requests.at(-1)!;
      expect(`${put.method} ${put.status}`, "the closing request").toBe("PUT 201");
      expect(new URLSearchParams(put.query).get("digest"), "the digest it names").toBe(expected.digest);
      expect(committed(b, expected), "committed after commit").toBe(true);
      expect(sha256(await readAll(await repo.fetch(expected), expected.size, "blob"))).toBe(expected.digest);
    });
  }

  it("abort, too few or too many bytes, or a failing source cancel the session (DELETE) and commit nothing", async () => {
    const data = randomBytes(5 * MiB);
    const desc = descriptorFor("application/octet-stream", data);
    const cases: [string, (repo: RemoteRepository) => Promise<unknown>][] = [
      ["abort", async (repo) => (await repo.ingest(desc.mediaType, data.byteLength, countingSource(data).stream)).abort()],
      ["one byte short", (repo) => repo.ingest(desc.mediaType, data.byteLength + 1, countingSource(data).stream)],
      ["one byte too many", (repo) => repo.ingest(desc.mediaType, data.byteLength - 1, countingSource(data).stream)],
      ["a source failing midway", (repo) => repo.ingest(desc.mediaType, data.byteLength, countingSource(data, 3 * MiB).stream)],
    ];
    for (const [i, [name, run]] of cases.entries()) {
      const repository = `ingest/cancel${i}`;
      const repo = new RemoteRepository(proxy.host, repository, { chunkSize: 2 * MiB });
      proxy.requests.length = 0;
      const outcome = await run(repo).then(() => "done", (err: unknown) => (err as { code?: string }).code ?? (err as Error).message);
      expect(outcome, name).toBe(name === "abort" ? "done" : name === "a source failing midway" ? "source went away" : "SIZE_MISMATCH");
      const requests = uploads();
      expect(requests.filter((r) => r.startsWith("PUT")), `${name}: a closing PUT`).toEqual([]);
      if (requests.some((r) => r.startsWith("PATCH") && !r.endsWith("202"))) {
        // A PATCH broken off midway may leave the session at another offset
        // than its last Location says (as far as the registry read it), and
        // 2.8.2 then refuses that Location (404) for a DELETE too: the DELETE
        // is tried, the registry purges the session later, nothing is committed.
        expect(requests.at(-1), `${name}: the cancel tried`).toMatch(/^DELETE (204|404)$/);
      } else {
        expect(requests.at(-1), `${name}: the session cancelled`).toBe("DELETE 204");
        expect(openUploads(b, repository), `${name}: upload sessions holding bytes`).toEqual([]);
      }
      expect(committed(b, desc), `${name}: committed`).toBe(false);
      expect(await repo.exists(desc), `${name}: blob in the repository`).toBe(false);
    }
  });
});

describe("progress", () => {
  it("onProgress counts up to the graph's bytes, copied and skipped alike", async () => {
    const src = new MemoryTarget();
    const { manifest, layer } = await pushLayerArtifact(src, randomBytes(3 * MiB));
    const total = manifest.size + layer.size + EMPTY_CONFIG.size;
    const dst = new MemoryTarget();
    // The config is already there: skipped, yet counted as done.
    await dst.push({ mediaType: EMPTY_CONFIG.mediaType, digest: EMPTY_CONFIG.digest, size: EMPTY_CONFIG.size }, Readable.from([Buffer.from("{}")]));
    const seen: [number, number][] = [];
    await copy(src, manifest.digest, dst, undefined, { onProgress: (done, all) => seen.push([done, all]) });
    expect(seen.at(-1), "last report").toEqual([total, total]);
    expect(seen.every(([done, all], i) => done <= all && (i === 0 || done >= seen[i - 1]![0])), "done never passes the total nor goes back").toBe(true);
  });

  it("a blob reaches the destination in pieces of at least 128 KiB (the last may be less), each source chunk counted as it arrives", async () => {
    const CHUNK = 64 * 1024;
    const data = randomBytes(MiB + 1000);
    /** A source that gives blobs as a socket does, in 64 KiB chunks. */
    class Chunked extends MemoryTarget {
      override async fetchUnverified(desc: Descriptor): Promise<Readable> {
        const bytes = await readAll(await super.fetchUnverified(desc), desc.size, desc.digest);
        return Readable.from(Array.from({ length: Math.ceil(bytes.byteLength / CHUNK) }, (_, i) => bytes.subarray(i * CHUNK, (i + 1) * CHUNK)));
      }
    }
    /** A destination that records the size of every chunk it is given. */
    class Recording extends MemoryTarget {
      pieces: number[] = [];
      override async push(desc: Descriptor, content: Readable): Promise<void> {
        const chunks: Buffer[] = [];
        for await (const chunk of content) chunks.push(chunk as Buffer);
        if (desc.size === data.byteLength) this.pieces = chunks.map((c) => c.byteLength);
        return super.push(desc, Readable.from([Buffer.concat(chunks)]));
      }
    }
    const src = new Chunked();
    const { manifest, layer } = await pushLayerArtifact(src, data);
    const dst = new Recording();
    const counted: number[] = [];
    await copy(src, manifest.digest, dst, undefined, { onEvent: (e) => e.kind === "bytes" && e.desc.digest === layer.digest && counted.push(e.bytes) });
    expect(await readAll(await dst.fetch(layer), layer.size, "copied layer"), "the bytes").toEqual(data);
    expect(dst.pieces.slice(0, -1).filter((size) => size < 128 * 1024), `pieces smaller than 128 KiB before the last: ${dst.pieces.join(", ")}`).toEqual([]);
    expect(dst.pieces.length, `pieces: ${dst.pieces.join(", ")}`).toBe(Math.ceil(data.byteLength / (128 * 1024)));
    expect(counted, "bytes events: one per source chunk").toEqual(Array.from({ length: Math.ceil(data.byteLength / CHUNK) }, (_, i) => Math.min(CHUNK, data.byteLength - i * CHUNK)));
  });
});
