// copy() with referrers: a signature-like referrer pushed with the tag-schema
// fallback travels to another registry and into an OCI layout, digests unchanged.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copy, OciLayoutTarget, referrersTag, RemoteRepository, type Descriptor, type Target } from "../../registry/index.js";
import { startRegistryProxy, type RegistryProxy } from "../harness/proxy.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { pushArtifact } from "./conformance.js";

let a: RegistryServer;
let b: RegistryServer;
let api: RegistryProxy;
const dirs: string[] = [];

beforeAll(async () => {
  [a, b] = await Promise.all([startRegistry(), startRegistry()]);
  api = await startRegistryProxy(b.url, { referrersApi: true });
});
afterAll(async () => {
  await api?.stop();
  await Promise.all([a?.stop(), b?.stop()]);
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** An artifact with one referrer, indexed the way the source store does it. */
async function signedArtifact(target: Target): Promise<{ subject: Descriptor; referrer: Descriptor }> {
  const subject = (await pushArtifact(target)).manifest;
  const sig = await pushArtifact(target, { artifactType: "application/vnd.test.signature", subject });
  const referrer = { ...sig.manifest, artifactType: "application/vnd.test.signature" };
  await target.indexReferrer(subject, referrer);
  return { subject, referrer };
}

describe("copy -r", () => {
  it("carries fallback-schema referrers to another registry, digests unchanged", async () => {
    const src = new RemoteRepository(a.host, "mirror/src");
    const { subject, referrer } = await signedArtifact(src);
    // Registry 2.8.2 has no referrers API: the source holds the sha256-<hex> index tag.
    expect((await src.tags())).toContain(referrersTag(subject));
    const dst = new RemoteRepository(b.host, "mirror/dst");
    const root = await copy(src, subject.digest, dst, "v1", { referrers: true });
    expect(root.digest).toBe(subject.digest);
    expect((await dst.resolve("v1")).digest).toBe(subject.digest);
    expect((await dst.referrers(subject)).map((d) => d.digest)).toEqual([referrer.digest]);
    expect((await dst.resolve(referrer.digest)).digest).toBe(referrer.digest);
    // Without -r nothing but the artifact arrives.
    const bare = new RemoteRepository(b.host, "mirror/bare");
    await copy(src, subject.digest, bare, "v1");
    expect(await bare.referrers(subject)).toEqual([]);
  });

  it("carries referrers into an OCI layout and back out to a registry with the referrers API", async () => {
    const src = new RemoteRepository(a.host, "layout/src");
    const { subject, referrer } = await signedArtifact(src);
    const dir = mkdtempSync(join(tmpdir(), "aegis-copy-"));
    dirs.push(dir);
    const layout = new OciLayoutTarget(dir);
    await copy(src, subject.digest, layout, "v1", { referrers: true });
    expect((await layout.referrers(subject)).map((d) => d.digest)).toEqual([referrer.digest]);
    const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    expect(index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === "v1")?.digest).toBe(subject.digest);

    const dst = new RemoteRepository(api.host, "layout/dst");
    api.requests.length = 0;
    await copy(layout, "v1", dst, "v1", { referrers: true });
    expect((await dst.referrers(subject, "application/vnd.test.signature")).map((d) => d.digest)).toEqual([referrer.digest]);
    // A registry with the API indexes the subject on push: no fallback tag is written.
    expect(api.requests.some((r) => r.method === "PUT" && r.path.endsWith(`/manifests/${referrersTag(subject)}`))).toBe(false);
  });

  it("copies just the referrers it is given, as listed by the caller: no listing asked for, none of theirs, none naming another subject", async () => {
    const proxy = await startRegistryProxy(a.url);
    try {
      const src = new RemoteRepository(proxy.host, "given/src");
      const { subject, referrer: chosen } = await signedArtifact(src);
      const { referrer: other } = await signedArtifact(src).then(async ({ subject: elsewhere }) => {
        // A referrer of the chosen one, and one of the subject not given: neither travels.
        const ofChosen = await pushArtifact(src, { artifactType: "application/vnd.test.signature", subject: chosen });
        await src.indexReferrer(chosen, { ...ofChosen.manifest, artifactType: "application/vnd.test.signature" });
        const notGiven = await pushArtifact(src, { artifactType: "application/vnd.test.signature", subject });
        await src.indexReferrer(subject, { ...notGiven.manifest, artifactType: "application/vnd.test.signature" });
        // And one given that names another subject.
        return { referrer: (await pushArtifact(src, { artifactType: "application/vnd.test.signature", subject: elsewhere })).manifest };
      });
      const dir = mkdtempSync(join(tmpdir(), "aegis-copy-given-"));
      dirs.push(dir);
      const layout = new OciLayoutTarget(dir);
      proxy.requests.length = 0;
      await copy(src, subject.digest, layout, undefined, { referrers: [chosen, other] });
      expect((await layout.referrers(subject)).map((d) => d.digest), "indexed").toEqual([chosen.digest]);
      expect(await layout.exists(other), "the one naming another subject").toBe(false);
      expect((await layout.referrers(chosen)).length, "referrers of the given one").toBe(0);
      const listings = proxy.requests.filter((r) => r.path.includes("/referrers/") || r.path.includes("/manifests/sha256-"));
      expect(listings.map((r) => `${r.method} ${r.path}`), "listing requests").toEqual([]);
    } finally {
      await proxy.stop();
    }
  });

  it("refuses a node over maxBlobSize, or a graph over maxTotalSize, before fetching it: SIZE_LIMIT, nothing of it stored", async () => {
    const src = new RemoteRepository(a.host, "sizes/src");
    const { manifest, layer, bytes } = await pushArtifact(src); // a 1000-byte layer, a 2-byte config
    const open = () => new OciLayoutTarget(mkdtempSync(join(tmpdir(), "aegis-copy-sizes-")));
    for (const [limits, message] of [
      [{ maxBlobSize: 999 }, `${layer.digest} in ${src.name} is 1000 bytes, over the limit of 999`],
      [{ maxTotalSize: bytes.byteLength + 1001 }, `the graph in ${src.name} is over ${bytes.byteLength + 1001} bytes`],
    ] as const) {
      const dst = open();
      dirs.push(dst.name.slice("oci:".length));
      await expect(copy(src, manifest.digest, dst, undefined, limits), JSON.stringify(limits)).rejects.toMatchObject({ code: "SIZE_LIMIT", message: expect.stringContaining(message) });
      expect(await dst.exists(layer), `${JSON.stringify(limits)}: the layer not stored`).toBe(false);
    }
    const dst = open();
    dirs.push(dst.name.slice("oci:".length));
    await copy(src, manifest.digest, dst, undefined, { maxBlobSize: 1000, maxTotalSize: bytes.byteLength + 1002 });
    expect(await dst.exists(manifest), "at the limits exactly: copied").toBe(true);
  });

  it("refuses a destination digest that differs from the source", async () => {
    const src = new RemoteRepository(a.host, "digest/src");
    const { manifest } = await pushArtifact(src);
    const other = (await pushArtifact(src)).manifest;
    await expect(copy(src, manifest.digest, new RemoteRepository(b.host, "digest/dst"), other.digest)).rejects.toMatchObject({ code: "INVALID_REFERENCE" });
  });
});
