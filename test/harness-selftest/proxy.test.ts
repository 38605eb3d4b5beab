import { createServer } from "node:net";
import { fetch } from "undici";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startRegistryProxy } from "../harness/proxy.js";
import type { RegistryProxy } from "../harness/proxy.js";
import { startRegistry } from "../harness/registry.js";
import type { RegistryServer } from "../harness/registry.js";
import { EMPTY_CONFIG, OCI_MANIFEST, pushBlob, pushManifest, sha256 } from "./oci-util.js";

const REPO = "selftest/proxy";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const SIG_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json";

interface Index {
  schemaVersion: number;
  mediaType: string;
  manifests: { mediaType: string; digest: string; size: number; artifactType?: string; annotations?: Record<string, string> }[];
}

function manifest(fields: Record<string, unknown>): string {
  return JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY_CONFIG, layers: [], ...fields });
}

describe("registry proxy", () => {
  let registry: RegistryServer;
  let proxy: RegistryProxy;
  let blob: Uint8Array;
  let blobDigest: string;
  let subjectBody: string;
  let subjectDigest: string;

  beforeAll(async () => {
    registry = await startRegistry();
    proxy = await startRegistryProxy(registry.url);
    await pushBlob(registry.url, REPO, new TextEncoder().encode("{}"));
    blob = new TextEncoder().encode("policy bytes ".repeat(1000));
    blobDigest = await pushBlob(registry.url, REPO, blob);
    subjectBody = manifest({
      artifactType: "application/vnd.aegis.policy.v1",
      layers: [{ mediaType: "application/vnd.aegis.policy.layer.v1.tar+zstd", digest: blobDigest, size: blob.length }],
    });
    subjectDigest = sha256(subjectBody);
    await pushManifest(registry.url, REPO, "v1", subjectBody);
  });
  afterAll(async () => {
    await proxy.stop();
    await registry.stop();
  });
  beforeEach(() => {
    proxy.set({ tamperBlobs: false, tamperManifests: false, throttle: undefined, referrersApi: false });
    proxy.requests.length = 0;
  });

  it("forwards uploads through itself by rewriting Location", async () => {
    const bytes = new TextEncoder().encode("through the proxy");
    const post = await fetch(`${proxy.url}/v2/${REPO}/blobs/uploads/`, { method: "POST" });
    expect(post.status).toBe(202);
    expect(post.headers.get("location")).toMatch(new RegExp(`^${proxy.url}/v2/${REPO}/blobs/uploads/`));
    await post.arrayBuffer();
    const digest = await pushBlob(proxy.url, REPO, bytes);
    expect(proxy.requests.map((r) => `${r.method} ${r.status}`)).toEqual(["POST 202", "POST 202", "PUT 201"]);
    expect(proxy.requests[2]?.query).toContain(`digest=${encodeURIComponent(digest)}`);
    const direct = await fetch(`${registry.url}/v2/${REPO}/blobs/${digest}`);
    expect(Buffer.from(await direct.arrayBuffer())).toEqual(Buffer.from(bytes));
  });

  it("passes blobs through intact, and flips one byte when tamperBlobs is set", async () => {
    const clean = Buffer.from(await (await fetch(`${proxy.url}/v2/${REPO}/blobs/${blobDigest}`)).arrayBuffer());
    expect(sha256(clean)).toBe(blobDigest);

    proxy.set({ tamperBlobs: true });
    const res = await fetch(`${proxy.url}/v2/${REPO}/blobs/${blobDigest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-content-digest")).toBe(blobDigest);
    const tampered = Buffer.from(await res.arrayBuffer());
    expect(tampered.length).toBe(blob.length);
    expect(sha256(tampered)).not.toBe(blobDigest);
    expect([...tampered].filter((b, i) => b !== blob[i])).toHaveLength(1);
    // manifests are untouched by tamperBlobs
    const m = await fetch(`${proxy.url}/v2/${REPO}/manifests/v1`, { headers: { accept: OCI_MANIFEST } });
    expect(await m.text()).toBe(subjectBody);
  });

  it("flips one byte of manifests when tamperManifests is set", async () => {
    proxy.set({ tamperManifests: true });
    const res = await fetch(`${proxy.url}/v2/${REPO}/manifests/${subjectDigest}`, { headers: { accept: OCI_MANIFEST } });
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.length).toBe(Buffer.byteLength(subjectBody));
    expect(sha256(body)).not.toBe(subjectDigest);
    const head = await fetch(`${proxy.url}/v2/${REPO}/manifests/${subjectDigest}`, { method: "HEAD", headers: { accept: OCI_MANIFEST } });
    expect(head.status).toBe(200);
  });

  it("throttles the next N requests with 429, Retry-After and an error body, then forwards", async () => {
    proxy.set({ throttle: { status: 429, times: 2, retryAfterSeconds: 3 } });
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${proxy.url}/v2/`);
      expect(res.status).toBe(429);
      expect(res.headers.get("retry-after")).toBe("3");
      const body = (await res.json()) as { errors: { code: string; message: string }[] };
      expect(body.errors[0]?.code).toBe("TOOMANYREQUESTS");
    }
    const ok = await fetch(`${proxy.url}/v2/`);
    expect(ok.status).toBe(200);
    expect(proxy.requests.map((r) => r.status)).toEqual([429, 429, 200]);
  });

  it("throttles with 503 UNAVAILABLE and Retry-After 0 by default", async () => {
    proxy.set({ throttle: { status: 503, times: 1 } });
    const res = await fetch(`${proxy.url}/v2/${REPO}/blobs/${blobDigest}`);
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("0");
    expect(((await res.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe("UNAVAILABLE");
    expect((await fetch(`${proxy.url}/v2/${REPO}/blobs/${blobDigest}`)).status).toBe(200);
  });

  it("forwards /referrers/ to the registry (404) without referrersApi", async () => {
    const res = await fetch(`${proxy.url}/v2/${REPO}/referrers/${subjectDigest}`);
    expect(res.status).toBe(404);
  });

  it("implements the referrers API with referrersApi", async () => {
    proxy.set({ referrersApi: true });
    const empty = await fetch(`${proxy.url}/v2/${REPO}/referrers/${subjectDigest}`);
    expect(empty.status).toBe(200);
    expect(((await empty.json()) as Index).manifests).toEqual([]);

    const sigBody = manifest({
      artifactType: SIG_TYPE,
      subject: { mediaType: OCI_MANIFEST, digest: subjectDigest, size: Buffer.byteLength(subjectBody) },
      annotations: { "dev.sigstore.bundle.content": "dsse-envelope" },
    });
    const put = await pushManifest(proxy.url, REPO, sha256(sigBody), sigBody);
    expect(put.headers.get("oci-subject")).toBe(subjectDigest);
    // no artifactType: the config media type stands in
    const otherBody = manifest({ subject: { mediaType: OCI_MANIFEST, digest: subjectDigest, size: Buffer.byteLength(subjectBody) } });
    await pushManifest(proxy.url, REPO, "other", otherBody);
    // a manifest without subject is not a referrer and gets no OCI-Subject
    const plain = await pushManifest(proxy.url, REPO, "plain", manifest({ annotations: { n: "1" } }));
    expect(plain.headers.get("oci-subject")).toBeNull();

    const all = await fetch(`${proxy.url}/v2/${REPO}/referrers/${subjectDigest}`);
    expect(all.status).toBe(200);
    expect(all.headers.get("content-type")).toBe(OCI_INDEX);
    expect(all.headers.get("oci-filters-applied")).toBeNull();
    const index = (await all.json()) as Index;
    expect(index).toEqual({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          digest: sha256(sigBody),
          size: Buffer.byteLength(sigBody),
          artifactType: SIG_TYPE,
          annotations: { "dev.sigstore.bundle.content": "dsse-envelope" },
        },
        { mediaType: OCI_MANIFEST, digest: sha256(otherBody), size: Buffer.byteLength(otherBody), artifactType: EMPTY_CONFIG.mediaType },
      ],
    });

    const filtered = await fetch(`${proxy.url}/v2/${REPO}/referrers/${subjectDigest}?artifactType=${encodeURIComponent(SIG_TYPE)}`);
    expect(filtered.headers.get("oci-filters-applied")).toBe("artifactType");
    expect(((await filtered.json()) as Index).manifests.map((d) => d.digest)).toEqual([sha256(sigBody)]);

    // the referrer really is stored upstream, byte for byte
    const stored = await fetch(`${registry.url}/v2/${REPO}/manifests/${sha256(sigBody)}`, { headers: { accept: OCI_MANIFEST } });
    expect(await stored.text()).toBe(sigBody);

    // other repositories do not see these referrers
    const elsewhere = await fetch(`${proxy.url}/v2/selftest/elsewhere/referrers/${subjectDigest}`);
    expect(((await elsewhere.json()) as Index).manifests).toEqual([]);

    const bad = await fetch(`${proxy.url}/v2/${REPO}/referrers/not-a-digest`);
    expect(bad.status).toBe(400);

    // deleting a referrer removes it from the list
    const del = await fetch(`${proxy.url}/v2/${REPO}/manifests/${sha256(otherBody)}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    const after = (await (await fetch(`${proxy.url}/v2/${REPO}/referrers/${subjectDigest}`)).json()) as Index;
    expect(after.manifests.map((d) => d.digest)).toEqual([sha256(sigBody)]);
  });
});

describe("registry proxy in front of a token-auth registry", () => {
  it("keeps the registry's auth on referrers and forwards challenges", async () => {
    const registry = await startRegistry({ auth: "token" });
    const proxy = await startRegistryProxy(registry.url, { referrersApi: true });
    try {
      const res = await fetch(`${proxy.url}/v2/${REPO}/referrers/${sha256("x")}`);
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toContain(`scope="repository:${REPO}:pull"`);
      const base = await fetch(`${proxy.url}/v2/`);
      expect(base.status).toBe(401);
    } finally {
      await proxy.stop();
      await registry.stop();
    }
  });
});

describe("registry proxy stop()", () => {
  it("frees its port", async () => {
    const registry = await startRegistry();
    const proxy = await startRegistryProxy(registry.url);
    try {
      expect((await fetch(`${proxy.url}/v2/`)).status).toBe(200);
      await proxy.stop();
      await expect(fetch(`${proxy.url}/v2/`)).rejects.toThrow();
      const port = Number(proxy.host.split(":")[1]);
      const bound = await new Promise<boolean>((resolve) => {
        const s = createServer();
        s.once("error", () => resolve(false));
        s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
      });
      expect(bound).toBe(true);
    } finally {
      await proxy.stop();
      await registry.stop();
    }
  });

  it("refuses a non-loopback upstream", async () => {
    await expect(startRegistryProxy("http://example.com:5000")).rejects.toThrow(/loopback/);
  });
});
