// The agent's cache: an artifact already fetched is verified again from the
// cache alone (no registry needed: signature, checksum, and the layer hashed
// in the pass that decodes it); a cached layer altered at rest is not trusted
// but fetched again, which repairs the cache. Nothing comes into the cache
// before the source's copy is verified, and then only its verified signatures,
// whose listing the copy does not ask for again.
import { createPrivateKey } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ArtifactCache, type Assigned } from "../../agent/fetch.js";
import { buildBundle, pushBundle } from "../../bundle/index.js";
import { OciLayoutTarget, RemoteRepository } from "../../registry/index.js";
import { generateKeyPair, KeySigner, signArtifact, trustedKey, parsePublicKey, type TrustPolicy } from "../../signing/index.js";
import { pushCosignSignature } from "../harness/cosign.js";
import { startHostileRegistry } from "../harness/hostile-registry.js";
import { startRegistryProxy } from "../harness/proxy.js";
import { startRegistry } from "../harness/registry.js";
import { leaveFile } from "../harness/stale.js";
import { pushArtifact } from "../registry/conformance.js";

let work: string;
let source: string;
let assigned: Assigned;
let layerPath: string;
let trust: TrustPolicy;
let signer: KeySigner;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "aegis-fetch-cache-"));
  source = join(work, "source");
  const key = generateKeyPair("ed25519");
  signer = new KeySigner(createPrivateKey(key.privateKey));
  trust = { keys: [trustedKey("ci", parsePublicKey(key.publicKey, "ci"))] };
  const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
  const layout = new OciLayoutTarget(source);
  const artifact = await pushBundle(bytes, policy, layout, "v1");
  await signArtifact(layout, artifact.manifest, signer, layout.name);
  const id = artifact.manifest.digest;
  assigned = { id, checksum: `sha256-${artifact.layer.digest.slice(7)}`, reference: `oci:${source}@${id}`, name: policy.name };
  layerPath = join(work, "cache", "blobs", "sha256", artifact.layer.digest.slice(7));
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A fresh OCI layout under `name` holding the example policy as `version`, signed by the test key, and the assignment naming it there. */
async function signedLayout(name: string, version: string): Promise<{ dir: string; layout: OciLayoutTarget; assigned: Assigned }> {
  const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
  const dir = join(work, name);
  const layout = new OciLayoutTarget(dir);
  const artifact = await pushBundle(bytes, { ...policy, version }, layout, "v1");
  await signArtifact(layout, artifact.manifest, signer, layout.name);
  const id = artifact.manifest.digest;
  return { dir, layout, assigned: { id, checksum: `sha256-${artifact.layer.digest.slice(7)}`, reference: `oci:${dir}@${id}`, name: policy.name } };
}

/** The blob hashes an OCI layout holds ([] when it does not exist). */
function blobs(dir: string): string[] {
  const path = join(dir, "blobs", "sha256");
  return existsSync(path) ? readdirSync(path) : [];
}

describe("ArtifactCache", () => {
  it("verifies a cached artifact from the cache alone; an altered cached layer is fetched again", async () => {
    const cache = new ArtifactCache(join(work, "cache"));
    const first = await cache.fetchVerified(assigned, { mirrors: [], trust });
    expect(first.source).toBe(`oci:${source}@${assigned.id}`);
    const stored = readFileSync(layerPath);

    // The source gone: the cache alone serves it, verified.
    renameSync(source, `${source}.away`);
    const hit = await cache.fetchVerified(assigned, { mirrors: [], trust });
    expect(hit.source).toBe("the cache");
    expect(hit.bundle).toEqual(first.bundle);
    expect(hit.signature.key.name).toBe("ci");

    // Altered at rest, with the source still gone: refused, never served from the cache.
    const altered = Buffer.from(stored);
    altered[altered.length >> 1]! ^= 0x01;
    writeFileSync(layerPath, altered);
    await expect(cache.fetchVerified(assigned, { mirrors: [], trust })).rejects.toThrow();

    // The source back: fetched again from it, and the cache repaired.
    renameSync(`${source}.away`, source);
    const again = await cache.fetchVerified(assigned, { mirrors: [], trust });
    expect(again.source).toBe(`oci:${source}@${assigned.id}`);
    expect(readFileSync(layerPath).equals(stored), "the cached layer repaired").toBe(true);
    expect((await cache.fetchVerified(assigned, { mirrors: [], trust })).source).toBe("the cache");
  });

  it("stores nothing the source has not proved first: an unsigned artifact leaves no blob; only signatures that verify are cached with a signed one", async () => {
    const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
    const unsignedDir = join(work, "unsigned");
    const unsigned = await pushBundle(bytes, policy, new OciLayoutTarget(unsignedDir), "v1");
    const cacheDir = join(work, "cache-unsigned");
    await expect(new ArtifactCache(cacheDir).fetchVerified({ ...assigned, reference: `oci:${unsignedDir}@${unsigned.manifest.digest}` }, { mirrors: [], trust })).rejects.toMatchObject({
      code: "NO_SIGNATURE",
    });
    expect(blobs(cacheDir), "blobs cached for an unsigned artifact").toEqual([]);

    // A signed artifact whose source also holds a signature by an untrusted key and another referrer (any bytes a registry may attach).
    const extraDir = join(work, "extras");
    const layout = new OciLayoutTarget(extraDir);
    const artifact = await pushBundle(bytes, policy, layout, "v1");
    const good = await signArtifact(layout, artifact.manifest, signer, layout.name);
    const untrusted = await signArtifact(layout, artifact.manifest, new KeySigner(createPrivateKey(generateKeyPair("ed25519").privateKey)), layout.name);
    const attached = await pushArtifact(layout, { subject: artifact.manifest });
    await layout.indexReferrer(artifact.manifest, attached.manifest);
    const cached = join(work, "cache-extras");
    await new ArtifactCache(cached).fetchVerified({ ...assigned, reference: `oci:${extraDir}@${artifact.manifest.digest}` }, { mirrors: [], trust });
    const stored = blobs(cached);
    for (const digest of [artifact.manifest.digest, artifact.layer.digest, good.referrer.digest]) expect(stored, `cached: ${digest}`).toContain(digest.slice(7));
    for (const digest of [untrusted.referrer.digest, attached.manifest.digest, attached.layer.digest]) expect(stored, `not cached: ${digest}`).not.toContain(digest.slice(7));
  });

  it("a cosign .sig signature (the legacy format) verifies at the source and again from the cache, which keeps it under its tag, pruned or not", async () => {
    const legacyKey = generateKeyPair("ed25519");
    const legacyTrust: TrustPolicy = { keys: [trustedKey("cosign", parsePublicKey(legacyKey.publicKey, "cosign"))] };
    const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
    const dir = join(work, "legacy");
    const layout = new OciLayoutTarget(dir);
    const artifact = await pushBundle(bytes, policy, layout, "v1");
    await pushCosignSignature(layout, artifact.manifest, createPrivateKey(legacyKey.privateKey), "legacy");

    const cache = new ArtifactCache(join(work, "cache-legacy"));
    const legacyAssigned = { ...assigned, reference: `oci:${dir}@${artifact.manifest.digest}` };
    expect(await cache.fetchVerified(legacyAssigned, { mirrors: [], trust: legacyTrust }), "from the source").toMatchObject({ signature: { format: "cosign-legacy", key: { name: "cosign" } } });
    expect(await cache.prune([artifact.manifest.digest]), "a prune keeping the artifact removes nothing of it").toEqual([]);
    renameSync(dir, `${dir}.away`);
    expect((await cache.fetchVerified(legacyAssigned, { mirrors: [], trust: legacyTrust })).source, "the source gone: from the cache").toBe("the cache");
  });

  it("a mirror is tried before the assigner's reference is read: a malformed reference does not stop a mirror that holds the digest", async () => {
    const { dir, assigned: signed } = await signedLayout("mirror", "1.0.9");
    const named = { ...signed, reference: "not a reference!" };
    const cache = new ArtifactCache(join(work, "cache-mirror"));
    expect((await cache.fetchVerified(named, { mirrors: [`oci:${dir}`], trust })).source, "from the mirror").toBe(`oci:${dir}@${named.id}`);
    await expect(new ArtifactCache(join(work, "cache-no-mirror")).fetchVerified(named, { mirrors: [], trust }), "no mirror: the reference is refused").rejects.toMatchObject({ code: "INVALID_REFERENCE" });
  });

  it("a registry that trickles is given up after pullTimeoutMs: the next source serves the artifact, or the pull fails with TIMEOUT", async () => {
    const { layout, assigned: named } = await signedLayout("slow", "1.0.10");
    // The same content over HTTP, each blob sent a byte every 50 ms: each request is alive, the pull never ends.
    const slow = await startHostileRegistry({ store: layout, trickleMs: 50 });
    try {
      const { id } = named;
      // Time enough for the good source under load (a CI run beside a loaded one took over 500 ms): the trickle never ends.
      const options = { mirrors: [`${slow.host}/policies`], trust, pullTimeoutMs: 2000 };
      expect((await new ArtifactCache(join(work, "cache-slow")).fetchVerified(named, options)).source, "from the reference, past the mirror").toBe(named.reference);
      expect(slow.requests.filter((r) => r.startsWith("GET /v2/policies/blobs/")), "the mirror was read").not.toEqual([]);
      const only = { ...named, reference: `${slow.host}/policies@${id}` };
      await expect(new ArtifactCache(join(work, "cache-slow-only")).fetchVerified(only, { ...options, mirrors: [] }), "no other source").rejects.toMatchObject({
        code: "TIMEOUT",
        message: expect.stringContaining(`${only.reference}: did not serve ${id} within 2000 ms`),
      });
    } finally {
      await slow.stop();
    }
  });

  it("prune removes temp files left an hour untouched (a killed agent's: a download's, an index write's), never a fresh one", async () => {
    const dir = join(work, "cache-temps");
    const cache = new ArtifactCache(dir);
    const blobsDir = join(dir, "blobs", "sha256");
    mkdirSync(blobsDir, { recursive: true });
    for (const [where, old] of [[blobsDir, true], [dir, true], [blobsDir, false], [dir, false]] as const) {
      const age = old ? "dead" : "live";
      leaveFile(join(where, `.tmp-${age}`), old);
      if (where === dir) leaveFile(join(dir, `.index.json.${old ? "aaaaaaaaaaaa" : "bbbbbbbbbbbb"}.aegis-tmp`), old);
    }
    leaveFile(join(dir, "notes.txt"), true);
    expect(await cache.prune([]), "no blob to prune").toEqual([]);
    expect(readdirSync(blobsDir).filter((n) => n.startsWith(".tmp-")), "temp files left in blobs/sha256").toEqual([".tmp-live"]);
    expect(readdirSync(dir).sort(), "what is left beside index.json: the fresh ones, and what the layout did not write").toEqual(
      [".index.json.bbbbbbbbbbbb.aegis-tmp", ".tmp-dead", ".tmp-live", "blobs", "notes.txt"].sort(),
    );
  });

  it("a cached artifact whose signature the current trust does not accept is not served from the cache", async () => {
    const cache = new ArtifactCache(join(work, "cache-trust"));
    await cache.fetchVerified(assigned, { mirrors: [], trust });
    const other: TrustPolicy = { keys: [trustedKey("other", parsePublicKey(generateKeyPair("ed25519").publicKey, "other"))] };
    await expect(cache.fetchVerified(assigned, { mirrors: [], trust: other })).rejects.toMatchObject({ code: expect.stringMatching(/SIGNATURE|UNTRUSTED|NO_/) });
  });

  it("from a registry, lists the artifact's referrers once: the copy takes the signatures the check found", async () => {
    const registry = await startRegistry();
    const proxy = await startRegistryProxy(registry.url);
    try {
      const repo = new RemoteRepository(proxy.host, "fetch/once");
      const { bytes, policy } = await buildBundle("policies/block-icmp-8888");
      const artifact = await pushBundle(bytes, policy, repo, "v1");
      await signArtifact(repo, artifact.manifest, signer, repo.name);
      const id = artifact.manifest.digest;
      const fromRegistry = { id, checksum: `sha256-${artifact.layer.digest.slice(7)}`, reference: `${proxy.host}/fetch/once@${id}`, name: policy.name };
      proxy.requests.length = 0;
      const cache = new ArtifactCache(join(work, "cache-registry"));
      expect((await cache.fetchVerified(fromRegistry, { mirrors: [], trust })).signature.key.name, "verified").toBe("ci");
      // Registry 2.8.2 has no referrers API (this process learned so when the test pushed the signature): each listing asks for the fallback tag.
      const listings = proxy.requests.filter((r) => r.path.includes("/referrers/") || r.path.endsWith(`/manifests/sha256-${id.slice(7)}`));
      expect(listings.map((r) => `${r.method} ${r.path}`), "listing requests (one listing)").toHaveLength(1);
      expect((await cache.layout.referrers(artifact.manifest)).length, "the signature in the cache").toBe(1);
    } finally {
      await proxy.stop();
      await registry.stop();
    }
  });
});
