// The registry client against a registry double that misbehaves on purpose
// (test/harness/hostile-registry.ts): credentials stay with their host (and
// its token realm), tag lists, graphs and the fallback referrers index's
// writes are bounded, a malformed referrer hides no good signature, and a
// trickling blob cannot hang a pull.
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { pullBundle } from "../../bundle/index.js";
import {
  addFallbackReferrer,
  copy,
  credentialsFromEnvironment,
  descriptorFor,
  EMPTY_CONFIG,
  encodeJson,
  MAX_MANIFEST_SIZE,
  MediaType,
  MemoryTarget,
  OciLayoutTarget,
  parseManifest,
  readAll,
  referrersTag,
  RegistryError,
  RemoteRepository,
  successors,
  type AbortOptions,
  type Descriptor,
  type Index,
  type Manifest,
  type Target,
} from "../../registry/index.js";
import { explainArtifact, generateKeyPair, KeySigner, MAX_SIGNATURES, parsePublicKey, signArtifact, SIGSTORE_BUNDLE_TYPE, trustedKey, verifyArtifact } from "../../signing/index.js";
import { createPrivateKey } from "node:crypto";
import { startHostileRegistry, type HostileOptions, type HostileRegistry } from "../harness/hostile-registry.js";
import { referrerMarkTag } from "../../registry/referrers.js";
import { pushArtifact } from "./conformance.js";

const running: HostileRegistry[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()));
});
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function hostile(options: HostileOptions): Promise<HostileRegistry> {
  const registry = await startHostileRegistry(options);
  running.push(registry);
  return registry;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "aegis-hostile-"));
  dirs.push(dir);
  return dir;
}

async function pushJson(target: Target, mediaType: string, doc: unknown): Promise<Descriptor> {
  const bytes = encodeJson(doc);
  const desc = descriptorFor(mediaType, bytes);
  await target.push(desc, Readable.from([bytes]));
  return desc;
}

/** An index of `n` distinct small manifests, tagged `tag`. */
async function wideIndex(store: MemoryTarget, n: number, tag: string): Promise<Descriptor> {
  await store.push(EMPTY_CONFIG, Readable.from([Buffer.from("{}")]));
  const children: Descriptor[] = [];
  for (let i = 0; i < n; i++) {
    const doc: Manifest = { schemaVersion: 2, mediaType: MediaType.ImageManifest, config: EMPTY_CONFIG, layers: [], annotations: { n: String(i) } };
    children.push(await pushJson(store, MediaType.ImageManifest, doc));
  }
  const index = await pushJson(store, MediaType.ImageIndex, { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: children } satisfies Index);
  await store.tag(index, tag);
  return index;
}

describe("credentials stay with their host", () => {
  it("AEGIS_REGISTRY_USERNAME/PASSWORD go only to AEGIS_REGISTRY_HOST, never to another registry that challenges", async () => {
    const store = new MemoryTarget();
    const { manifest } = await pushArtifact(store);
    await store.tag(manifest, "v1");
    const evil = await hostile({ store, basicAuth: true });
    const env = { AEGIS_REGISTRY_HOST: "registry.example.com", AEGIS_REGISTRY_USERNAME: "ci", AEGIS_REGISTRY_PASSWORD: "secret", DOCKER_CONFIG: tempDir() };
    const repo = new RemoteRepository(evil.host, "steal/me", { credentials: (host) => credentialsFromEnvironment(host, env) });
    await expect(repo.resolve("v1"), "a registry other than AEGIS_REGISTRY_HOST").rejects.toMatchObject({ code: "NO_CREDENTIALS" });
    expect(evil.authorizations, "Authorization headers the other registry received").toEqual([]);
    const own = new RemoteRepository(evil.host, "steal/me", { credentials: (host) => credentialsFromEnvironment(host, { ...env, AEGIS_REGISTRY_HOST: evil.host }) });
    expect((await own.resolve("v1")).digest, "the host AEGIS_REGISTRY_HOST names gets them").toBe(manifest.digest);
    expect(evil.authorizations[0]).toBe(`Basic ${Buffer.from("ci:secret").toString("base64")}`);
  });

  it.each(["https://token.invalid/t", "http://token.invalid/t"])(
    "a registry reached over plain HTTP whose challenge names the token realm %s (another origin, not loopback) is refused before the realm is asked",
    async (realm) => {
      const store = new MemoryTarget();
      const { manifest } = await pushArtifact(store);
      await store.tag(manifest, "v1");
      const evil = await hostile({ store, bearerRealm: realm });
      const repo = new RemoteRepository(evil.host, "steal/me", { credentials: { username: "ci", password: "secret" }, maxAttempts: 1 });
      await expect(repo.resolve("v1"), `realm ${realm}`).rejects.toMatchObject({ code: "INSECURE", message: expect.stringContaining(`token realm ${realm}`) });
      expect(evil.authorizations, "Authorization headers the registry received").toEqual([]);
    },
  );

  it("without credentials the realm is asked anyway: an anonymous token request carries nothing to keep", async () => {
    // 0.0.0.0 is not loopback by name (checkRealm would refuse it credentials) but connects to this host: nothing leaves it.
    const realm = "http://0.0.0.0:1/t";
    const evil = await hostile({ store: new MemoryTarget(), bearerRealm: realm });
    const repo = new RemoteRepository(evil.host, "anon", { maxAttempts: 1 });
    await expect(repo.resolve("v1"), `anonymous, realm ${realm}`).rejects.toMatchObject({ code: "UNREACHABLE", message: expect.stringContaining("token server http://0.0.0.0:1") });
    const withCredentials = new RemoteRepository(evil.host, "anon", { credentials: { username: "ci", password: "secret" }, maxAttempts: 1 });
    await expect(withCredentials.resolve("v1"), `with credentials, realm ${realm}`).rejects.toMatchObject({ code: "INSECURE" });
  });
});

describe("tag lists", () => {
  it("a registry that always links a next page is refused after maxTagPages", async () => {
    const endless = await hostile({ tags: "endless" });
    const repo = new RemoteRepository(endless.host, "pages", { maxTagPages: 25 });
    await expect(repo.tags()).rejects.toMatchObject({ code: "SIZE_LIMIT", message: expect.stringContaining("more than 25 pages") });
    expect(endless.requests.filter((r) => r.includes("/tags/list")), "pages read").toHaveLength(25);
  });

  it("a next page already read is a loop, refused at once", async () => {
    const looping = await hostile({ tags: "loop" });
    await expect(new RemoteRepository(looping.host, "pages").tags()).rejects.toMatchObject({ code: "HTTP_ERROR", message: expect.stringContaining("loop") });
    expect(looping.requests, "pages read before the loop was seen").toHaveLength(1);
  });

  it("one page of 150,000 tags (1.4 MB, under the page cap) is refused as over maxTags, not a stack overflow", async () => {
    const page = Array.from({ length: 150_000 }, (_, i) => `t${i}`);
    const registry = await hostile({ tagPage: page });
    await expect(new RemoteRepository(registry.host, "many").tags(), "150,000 tags, default maxTags").rejects.toMatchObject({
      code: "SIZE_LIMIT",
      message: expect.stringContaining("more than 100000 tags"),
    });
  });

  it("entries that are not tags (a ~4 MiB string, a number, null, a name outside the grammar) are skipped, the tags kept", async () => {
    const huge = "x".repeat(MAX_MANIFEST_SIZE - 1024);
    const registry = await hostile({ tagPage: ["v1", huge, 42, null, "-bad", "has space", "v2.0_rc-1"] });
    expect(await new RemoteRepository(registry.host, "mixed").tags(), "the tags listed").toEqual(["v1", "v2.0_rc-1"]);
  });
});

describe("the fallback referrers index", () => {

  /** A store that counts resolves by reference, lists `phantoms` as tags that resolve to nothing, and can drop index writes. */
  class Marks extends MemoryTarget {
    resolves = new Map<string, number>();
    phantoms: string[] = [];
    /** Writes of this tag (a subject's fallback index) do not stick. */
    dropped: string | undefined;
    /** Called after each resolve is answered, before the caller has the answer. */
    afterResolve: (reference: string) => Promise<void> = async () => {};
    override async resolve(reference: string, options?: AbortOptions): Promise<Descriptor> {
      this.resolves.set(reference, (this.resolves.get(reference) ?? 0) + 1);
      try {
        return await super.resolve(reference, options);
      } finally {
        await this.afterResolve(reference);
      }
    }
    override async tag(desc: Descriptor, tag: string): Promise<void> {
      if (tag !== this.dropped) await super.tag(desc, tag);
    }
    override async tags(): Promise<string[]> {
      return [...(await super.tags()), ...this.phantoms];
    }
  }

  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("a store whose index writes never stick: 100 attempts, each mark resolved at most once, an indexed one never", async () => {
    // No waits between attempts (their jitter is Math.random() × 100 ms).
    vi.spyOn(Math, "random").mockReturnValue(0);
    const store = new Marks();
    const { manifest: subject } = await pushArtifact(store);
    const indexed: Descriptor[] = [];
    for (let i = 0; i < 5; i++) {
      const { manifest } = await pushArtifact(store, { subject });
      await addFallbackReferrer(store, subject, manifest);
      indexed.push(manifest);
    }
    const unindexed: Descriptor[] = [];
    for (let i = 0; i < 5; i++) {
      const { manifest } = await pushArtifact(store, { subject });
      await store.tag(manifest, referrerMarkTag(subject, manifest));
      unindexed.push(manifest);
    }
    store.phantoms = Array.from({ length: 5 }, () => `${referrersTag(subject)}.${randomBytes(16).toString("hex")}.ref`);
    store.dropped = referrersTag(subject);
    store.resolves.clear();
    const { manifest: added } = await pushArtifact(store, { subject });
    await expect(addFallbackReferrer(store, subject, added), "index writes that never stick").rejects.toMatchObject({ code: "LOCK_TIMEOUT" });
    expect(store.resolves.get(referrersTag(subject)), "reads of the index (one per attempt)").toBe(100);
    for (const m of indexed) expect(store.resolves.get(referrerMarkTag(subject, m)), `resolves of the mark of indexed ${m.digest}`).toBeUndefined();
    for (const m of [...unindexed, added]) expect(store.resolves.get(referrerMarkTag(subject, m)), `resolves of the mark of unindexed ${m.digest}`).toBe(1);
    for (const phantom of store.phantoms) expect(store.resolves.get(phantom), `resolves of the mark ${phantom} that names nothing`).toBe(1);
  });

  it("a mark found absent is asked again by the check that would end the call (a stale write of ours may have dropped its referrer)", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const store = new Marks();
    const { manifest: subject } = await pushArtifact(store);
    const { manifest: late } = await pushArtifact(store, { subject });
    const lateMark = referrerMarkTag(subject, late);
    // Listed while its write is under way: the first resolve finds nothing, and the write lands just after.
    store.phantoms = [lateMark];
    store.afterResolve = async (reference) => {
      if (reference !== lateMark || store.phantoms.length === 0) return;
      store.phantoms = [];
      await store.tag(late, lateMark);
    };
    const { manifest: added } = await pushArtifact(store, { subject });
    await addFallbackReferrer(store, subject, added);
    expect(store.resolves.get(lateMark), "resolves of the late mark (absent, then asked again once)").toBe(2);
    expect((await store.referrers(subject)).map((d) => d.digest).sort(), "the index").toEqual([added.digest, late.digest].sort());
  });
});

describe("error messages quote what a manifest says, cut short", () => {
  const huge = "x".repeat(1_000_000);
  /** A message of at most a few hundred characters that says how much was left out. */
  const short = (what: string) => ({ message: expect.stringMatching(new RegExp(`^.{0,400}… \\(\\d+ more characters\\).{0,200}$`, "s")) as unknown, what });

  it("a media type, a digest and an artifact type of a megabyte each", async () => {
    const layer = descriptorFor("application/octet-stream", Buffer.from("layer"));
    const cases: [string, () => unknown][] = [
      ["a mediaType that is not its descriptor's", () => parseManifest(encodeJson({ schemaVersion: 2, mediaType: huge, config: EMPTY_CONFIG, layers: [] }), MediaType.ImageManifest)],
      ["a layer digest that is not sha256", () => parseManifest(encodeJson({ schemaVersion: 2, config: EMPTY_CONFIG, layers: [{ ...layer, digest: `sha256:${huge}` }] }), MediaType.ImageManifest)],
    ];
    for (const [what, parse] of cases) {
      let message = "";
      try {
        parse();
      } catch (err) {
        message = (err as Error).message;
      }
      expect({ message, what }, `${what}: ${message.length} characters`).toMatchObject(short(what));
    }
    const store = new MemoryTarget();
    await store.push(EMPTY_CONFIG, Readable.from([Buffer.from("{}")]));
    const manifest = await pushJson(store, MediaType.ImageManifest, { schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: huge, config: EMPTY_CONFIG, layers: [] });
    const output = mkdtempSync(join(tmpdir(), "aegis-quote-"));
    dirs.push(output);
    const pulled = await pullBundle(store, manifest.digest, new MemoryTarget(), output).then(
      () => "pulled",
      (err: Error) => err.message,
    );
    expect({ message: pulled, what: "pull" }, `pull: ${pulled.length} characters`).toMatchObject(short("pull"));
  });
});

describe("graphs are bounded", () => {
  it("an index with 300 children is copied with at most 8 requests in flight", async () => {
    const store = new MemoryTarget();
    await wideIndex(store, 300, "wide");
    const registry = await hostile({ store, delayMs: 20 });
    await copy(new RemoteRepository(registry.host, "wide"), "wide", new MemoryTarget());
    expect(registry.maxInFlight, "most requests in flight at once").toBeLessThanOrEqual(8);
    expect(registry.maxInFlight, "the copy did run requests in parallel").toBeGreaterThan(1);
  });

  it("more children than maxNodes is refused before any child is fetched", async () => {
    const store = new MemoryTarget();
    const index = await wideIndex(store, 300, "wide");
    const registry = await hostile({ store });
    const dst = new MemoryTarget();
    await expect(copy(new RemoteRepository(registry.host, "wide"), "wide", dst, undefined, { maxNodes: 100 })).rejects.toMatchObject({ code: "SIZE_LIMIT", message: expect.stringContaining("100 nodes") });
    const fetched = registry.requests.filter((r) => r.startsWith("GET") && !r.includes(index.digest) && !r.endsWith("/wide"));
    expect(fetched, "children fetched").toEqual([]);
    expect(await dst.exists(index), "the index written").toBe(false);
  });

  it("an image manifest that also carries a manifests list: its children are its config and layers (the list is an unknown field, ignored)", () => {
    const layer = descriptorFor("application/octet-stream", Buffer.from("layer"));
    const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, config: EMPTY_CONFIG, layers: [layer], manifests: [null, { digest: "../../etc" }] });
    expect(successors(parseManifest(bytes, MediaType.ImageManifest)), "the children").toEqual([EMPTY_CONFIG, layer]);
  });

  it("indexes nested deeper than maxDepth are refused", async () => {
    const store = new MemoryTarget();
    let node = await pushJson(store, MediaType.ImageIndex, { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: [] });
    for (let i = 0; i < 10; i++) node = await pushJson(store, MediaType.ImageIndex, { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: [node] });
    await store.tag(node, "deep");
    await expect(copy(store, "deep", new MemoryTarget(), undefined, { maxDepth: 8 })).rejects.toMatchObject({ code: "SIZE_LIMIT", message: expect.stringContaining("nested 9 levels") });
    await expect(copy(store, "deep", new MemoryTarget(), undefined, { maxDepth: 10 }), "within the limit").resolves.toMatchObject({ digest: node.digest });
  });

  it("pull of an index is NOT_A_POLICY after reading the root alone, and writes nothing", async () => {
    const store = new MemoryTarget();
    const index = await wideIndex(store, 300, "wide");
    const registry = await hostile({ store });
    const cache = join(tempDir(), "cache");
    await expect(pullBundle(new RemoteRepository(registry.host, "wide"), "wide", new OciLayoutTarget(cache), join(tempDir(), "out"))).rejects.toMatchObject({ code: "NOT_A_POLICY" });
    const gets = registry.requests.filter((r) => r.startsWith("GET"));
    expect(gets.every((r) => r.endsWith("/wide") || r.endsWith(index.digest)), `requests: ${gets.join(", ")}`).toBe(true);
    expect(existsSync(cache) ? readdirSync(cache) : [], "cache contents").toEqual([]);
  });

  it("pull of a policy manifest claiming a 1 TiB layer is refused before the layer is fetched", async () => {
    const store = new MemoryTarget();
    await store.push(EMPTY_CONFIG, Readable.from([Buffer.from("{}")]));
    const layer: Descriptor = { mediaType: MediaType.PolicyLayer, digest: `sha256:${randomBytes(32).toString("hex")}`, size: 2 ** 40 };
    const doc: Manifest = { schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: MediaType.PolicyArtifact, config: EMPTY_CONFIG, layers: [layer] };
    await store.tag(await pushJson(store, MediaType.ImageManifest, doc), "huge");
    const registry = await hostile({ store });
    const cache = join(tempDir(), "cache");
    await expect(pullBundle(new RemoteRepository(registry.host, "huge"), "huge", new OciLayoutTarget(cache), join(tempDir(), "out"))).rejects.toMatchObject({ code: "BUNDLE_TOO_LARGE" });
    expect(registry.requests.filter((r) => r.includes("/blobs/")), "blob requests").toEqual([]);
  });
});

describe("referrers", () => {
  const pair = generateKeyPair("ecdsa-p256");
  const trust = { keys: [trustedKey("ci", parsePublicKey(pair.publicKey, "test key"))] };
  const signer = new KeySigner(createPrivateKey(pair.privateKey));

  it("a null entry in the referrers API's answer does not hide a good signature", async () => {
    const store = new MemoryTarget();
    const { manifest } = await pushArtifact(store);
    await signArtifact(store, manifest, signer, "test");
    const registry = await hostile({ store, nullReferrer: true });
    const verified = await verifyArtifact(new RemoteRepository(registry.host, "signed"), manifest.digest, trust);
    expect(verified.key.name).toBe("ci");
    expect(registry.requests.some((r) => r.includes("/referrers/")), "the referrers API was used").toBe(true);
  });

  it("a null entry in the fallback index does not hide a good signature", async () => {
    const store = new MemoryTarget();
    const { manifest } = await pushArtifact(store);
    await signArtifact(store, manifest, signer, "test");
    const fallback = await store.resolve(referrersTag(manifest));
    const good = JSON.parse((await readAll(await store.fetch(fallback), fallback.size, "index")).toString("utf8")) as Index;
    const broken = await pushJson(store, MediaType.ImageIndex, { ...good, manifests: [null, { digest: "nonsense" }, ...good.manifests] });
    await store.tag(broken, referrersTag(manifest));
    expect((await verifyArtifact(store, manifest.digest, trust)).key.name).toBe("ci");
  });
});

describe("referrers listings are the source's word", () => {
  const pair = generateKeyPair("ecdsa-p256");
  const trust = { keys: [trustedKey("ci", parsePublicKey(pair.publicKey, "test key"))] };
  const signer = new KeySigner(createPrivateKey(pair.privateKey));
  const other = new KeySigner(createPrivateKey(generateKeyPair("ecdsa-p256").privateKey));

  /** A store whose referrers listing is `listing(subject)` (counted), whatever it holds. */
  class Listing extends MemoryTarget {
    listings = 0;
    listing: (subject: Descriptor) => Descriptor[] = () => [];
    /** A read of this digest fails with this code. */
    failing: { digest: string; code: "TIMEOUT" | "DIGEST_MISMATCH" | "BLOB_UNKNOWN" } | undefined;
    /** Resolving a tag ending in .sig (cosign's legacy signature) fails with this code. */
    sigTag: "TIMEOUT" | "INVALID_MANIFEST" | undefined;
    override async resolve(reference: string, options?: AbortOptions): Promise<Descriptor> {
      if (this.sigTag && reference.endsWith(".sig")) throw new RegistryError(this.sigTag, `${reference}: ${this.sigTag}`);
      return super.resolve(reference, options);
    }
    override async referrers(subject: Descriptor): Promise<Descriptor[]> {
      this.listings++;
      return this.listing(subject);
    }
    /** Every digest read, in order. */
    fetched: string[] = [];
    override async fetch(desc: Descriptor, options?: AbortOptions): Promise<Readable> {
      this.fetched.push(desc.digest);
      if (desc.digest === this.failing?.digest) throw new RegistryError(this.failing.code, `${desc.digest}: ${this.failing.code}`);
      return super.fetch(desc, options);
    }
    // copy reads blobs unverified (the destination verifies them).
    override async fetchUnverified(desc: Descriptor, options?: AbortOptions): Promise<Readable> {
      if (desc.digest === this.failing?.digest) throw new RegistryError(this.failing.code, `${desc.digest}: ${this.failing.code}`);
      return super.fetchUnverified(desc, options);
    }
  }
  class CountingIndex extends MemoryTarget {
    indexed: string[] = [];
    override async indexReferrer(subject: Descriptor, referrer: Descriptor): Promise<void> {
      this.indexed.push(`${referrer.digest} -> ${subject.digest}`);
      return super.indexReferrer(subject, referrer);
    }
  }

  it("one signature listed 100 times, under its subject and under itself, is copied with one listing per subject and one index write", async () => {
    const src = new Listing();
    const { manifest } = await pushArtifact(src);
    const { referrer } = await signArtifact(src, manifest, signer, "test");
    src.listing = () => Array<Descriptor>(100).fill(referrer);
    const dst = new CountingIndex();
    await copy(src, manifest.digest, dst, undefined, { referrers: true });
    expect(src.listings, "referrers listings (the root's and the signature's)").toBe(2);
    expect(dst.indexed, "index writes").toEqual([`${referrer.digest} -> ${manifest.digest}`]);
    expect(src.fetched.filter((d) => d === referrer.digest), "reads of the signature manifest (its subject check's bytes are the ones copied)").toHaveLength(1);
  });

  it("a referrer listed under a subject its manifest does not name is neither copied, indexed nor followed", async () => {
    const src = new Listing();
    const a = (await pushArtifact(src)).manifest;
    const b = (await pushArtifact(src)).manifest;
    const { referrer: ofB } = await signArtifact(src, b, signer, "test");
    // Its own blobs: the empty config is a's too.
    const ofBBlobs = successors(parseManifest(await readAll(await src.fetch(ofB), ofB.size, "referrer"), ofB.mediaType)).filter((d) => d.digest !== EMPTY_CONFIG.digest);
    src.listing = (subject) => (subject.digest === a.digest ? [ofB] : []);
    const dst = new CountingIndex();
    await copy(src, a.digest, dst, undefined, { referrers: true });
    expect(dst.indexed, "index writes").toEqual([]);
    expect(src.listings, "listings: the root's only").toBe(1);
    expect(await dst.exists(ofB), "the other subject's signature copied").toBe(false);
    expect(ofBBlobs.length, "blobs of the other subject's signature").toBeGreaterThan(0);
    for (const blob of ofBBlobs) expect(await dst.exists(blob), `its blob ${blob.digest} copied`).toBe(false);
  });

  it("a referrer listed first under another subject is still copied under the one it names", async () => {
    const src = new Listing();
    const root = (await pushArtifact(src)).manifest;
    const onRoot = (await pushArtifact(src, { subject: root })).manifest;
    const onReferrer = (await pushArtifact(src, { subject: onRoot })).manifest;
    src.listing = (subject) => (subject.digest === root.digest ? [onReferrer, onRoot] : subject.digest === onRoot.digest ? [onReferrer] : []);
    const dst = new CountingIndex();
    await copy(src, root.digest, dst, undefined, { referrers: true });
    expect(dst.indexed, "index writes").toEqual([`${onRoot.digest} -> ${root.digest}`, `${onReferrer.digest} -> ${onRoot.digest}`]);
    expect(src.fetched.filter((d) => d === onReferrer.digest), "reads of the referrer's referrer (its check, then its copy)").toHaveLength(2);
  });

  it("a listed referrer that is absent or not its digest's bytes is skipped; one the registry cannot serve fails the copy", async () => {
    const src = new Listing();
    const root = (await pushArtifact(src)).manifest;
    const good = (await pushArtifact(src, { subject: root })).manifest;
    const bad = (await pushArtifact(src, { subject: root })).manifest;
    const absent: Descriptor = { mediaType: MediaType.ImageManifest, digest: `sha256:${"a".repeat(64)}`, size: 100 };
    src.listing = (subject) => (subject.digest === root.digest ? [absent, bad, good] : []);
    src.failing = { digest: bad.digest, code: "DIGEST_MISMATCH" };
    const dst = new CountingIndex();
    await copy(src, root.digest, dst, undefined, { referrers: true });
    expect(dst.indexed, "index writes").toEqual([`${good.digest} -> ${root.digest}`]);
    src.failing = { digest: good.digest, code: "TIMEOUT" };
    await expect(copy(src, root.digest, new CountingIndex(), undefined, { referrers: true }), "a timeout").rejects.toMatchObject({ code: "TIMEOUT" });
  });

  it("a referrer that names a digest of another algorithm is skipped, by copy and by a signature check; one whose blob cannot be read fails the copy", async () => {
    const src = new Listing();
    const { manifest: root } = await pushArtifact(src);
    const { referrer: good } = await signArtifact(src, root, signer, "test");
    const sha512: Descriptor = { mediaType: "application/octet-stream", digest: `sha512:${"b".repeat(128)}`, size: 1 };
    const otherAlgorithm = await pushJson(src, MediaType.ImageManifest, { schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: SIGSTORE_BUNDLE_TYPE, config: EMPTY_CONFIG, layers: [sha512], subject: root });
    src.listing = (subject) => (subject.digest === root.digest ? [{ ...otherAlgorithm, artifactType: SIGSTORE_BUNDLE_TYPE }, good] : []);
    const dst = new CountingIndex();
    await copy(src, root.digest, dst, undefined, { referrers: true });
    expect(dst.indexed, "index writes").toEqual([`${good.digest} -> ${root.digest}`]);
    expect((await verifyArtifact(src, root.digest, trust)).signature, "the signature check").toBe(good.digest);
    // Copied whole or not at all, as the root's graph: the copy fails, and says why.
    const { manifest: broken, layer: missing } = await pushArtifact(src, { subject: root });
    src.listing = (subject) => (subject.digest === root.digest ? [broken, good] : []);
    src.failing = { digest: missing.digest, code: "BLOB_UNKNOWN" };
    await expect(copy(src, root.digest, new CountingIndex(), undefined, { referrers: true }), "a blob the source cannot serve").rejects.toMatchObject({ code: "BLOB_UNKNOWN" });
  });

  it("a referrer whose graph passes the node limit fails the copy: a limit is never taken for a bad referrer", async () => {
    const src = new Listing();
    const { manifest: root } = await pushArtifact(src);
    const { referrer } = await signArtifact(src, root, signer, "test");
    src.listing = (subject) => (subject.digest === root.digest ? [referrer] : []);
    // The root's graph is 3 nodes; the signature's adds its manifest and its bundle layer (the config is shared).
    await expect(copy(src, root.digest, new CountingIndex(), undefined, { referrers: true, maxNodes: 4 }), "limit 4").rejects.toMatchObject({ code: "SIZE_LIMIT" });
  });

  it("the referrers listings of one copy name at most 10 entries per node allowed, together", async () => {
    const src = new Listing();
    const { manifest: root } = await pushArtifact(src);
    const { referrer } = await signArtifact(src, root, signer, "test");
    src.listing = () => Array<Descriptor>(41).fill(referrer);
    // Two listings (the root's, the signature's) of 41 entries: 82, past 10 × 8.
    await expect(copy(src, root.digest, new CountingIndex(), undefined, { referrers: true, maxNodes: 8 }), "82 entries").rejects.toMatchObject({ code: "SIZE_LIMIT" });
    await copy(src, root.digest, new CountingIndex(), undefined, { referrers: true, maxNodes: 9 });
  });

  it("a listed blob is not copied, and referrers refused count toward the node limit", async () => {
    const src = new Listing();
    const { manifest } = await pushArtifact(src);
    const bytes = Buffer.from("not a manifest");
    const blob = descriptorFor("application/octet-stream", bytes);
    await src.push(blob, Readable.from([bytes]));
    src.listing = () => [blob];
    const dst = new CountingIndex();
    await copy(src, manifest.digest, dst, undefined, { referrers: true });
    expect(src.fetched.filter((d) => d === blob.digest), "reads of the listed blob").toEqual([]);
    expect(await dst.exists(blob), "the listed blob copied").toBe(false);

    const others: Descriptor[] = [];
    for (let i = 0; i < 6; i++) others.push((await signArtifact(src, (await pushArtifact(src)).manifest, signer, "test")).referrer);
    src.listing = () => others;
    // The graph is 3 nodes (manifest, config, layer): with 6 refused referrers, 9.
    await expect(copy(src, manifest.digest, new CountingIndex(), undefined, { referrers: true, maxNodes: 8 }), "9 nodes, limit 8").rejects.toMatchObject({ code: "SIZE_LIMIT" });
    await copy(src, manifest.digest, new CountingIndex(), undefined, { referrers: true, maxNodes: 9 });
  });

  it("a registry that cannot serve a signature fails the check with its own code; a signature's bad bytes are a verdict", async () => {
    const src = new Listing();
    const { manifest } = await pushArtifact(src);
    const { referrer } = await signArtifact(src, manifest, signer, "test");
    src.listing = () => [referrer];
    src.failing = { digest: referrer.digest, code: "TIMEOUT" };
    await expect(verifyArtifact(src, manifest.digest, trust), "a timeout").rejects.toMatchObject({ code: "TIMEOUT" });
    src.failing = { digest: referrer.digest, code: "DIGEST_MISMATCH" };
    await expect(verifyArtifact(src, manifest.digest, trust), "altered bytes").rejects.toMatchObject({ code: "INVALID_BUNDLE" });

    // A cosign .sig tag that names no manifest (an HTML page) is that signature's verdict beside the others; one that cannot be read fails the check.
    src.failing = undefined;
    src.sigTag = "INVALID_MANIFEST";
    const explained = await explainArtifact(src, manifest.digest, { keys: [trustedKey("other", parsePublicKey(generateKeyPair("ed25519").publicKey, "other"))] });
    expect(explained.signatures.map((v) => `${v.format} ${v.accepted} ${v.code}`), "verdicts").toEqual(["sigstore-bundle false UNTRUSTED_KEY", "cosign-legacy false INVALID_BUNDLE"]);
    expect(explained.signatures[1]?.reason).toContain(".sig: INVALID_MANIFEST");
    src.sigTag = "TIMEOUT";
    await expect(explainArtifact(src, manifest.digest, trust), "a .sig lookup that times out").rejects.toMatchObject({ code: "TIMEOUT" });
  });

  it("a signature check reads at most MAX_SIGNATURES signatures, each listed digest once", async () => {
    const src = new Listing();
    const { manifest } = await pushArtifact(src);
    const untrusted: Descriptor[] = [];
    for (let i = 0; i < MAX_SIGNATURES + 4; i++) untrusted.push((await signArtifact(src, manifest, other, "test")).referrer);
    const { referrer: good } = await signArtifact(src, manifest, signer, "test");
    src.listing = () => [...untrusted, good];
    const explained = await explainArtifact(src, manifest.digest, trust);
    expect(explained.signatures, "signatures read").toHaveLength(MAX_SIGNATURES);
    expect(explained.error?.code, "the good signature, listed after the cap, was not read").toBe("NO_VALID_SIGNATURE");

    src.listing = () => [...Array<Descriptor>(100).fill(untrusted[0]!), good];
    const repeated = await explainArtifact(src, manifest.digest, trust);
    expect(repeated.signatures.map((v) => v.accepted), "one verdict per distinct signature").toEqual([false, true]);

    // A stop while the check runs ends it with the stop's reason, not with verdicts on the signatures left.
    const controller = new AbortController();
    src.listing = () => {
      controller.abort(new Error("agent stopping"));
      return [...untrusted, good];
    };
    await expect(explainArtifact(src, manifest.digest, trust, { signal: controller.signal }), "a check stopped after its listing").rejects.toThrow("agent stopping");
  });
});

describe("deadlines", () => {
  it("a listing that is never answered ends with the caller's signal, not the request's timeout: tags, referrers, a signature check", async () => {
    const store = new MemoryTarget();
    const { manifest } = await pushArtifact(store);
    const registry = await hostile({ store, stallListings: true });
    // The client's own timeouts are far off: only the signal can end these within the test.
    const repo = new RemoteRepository(registry.host, "stalled", { timeoutMs: 60_000, deadlineMs: 60_000 });
    const key = generateKeyPair("ed25519");
    const trust = { keys: [trustedKey("ci", parsePublicKey(key.publicKey, "test key"))] };
    const cases: [string, (signal: AbortSignal) => Promise<unknown>][] = [
      ["tags", (signal) => repo.tags({ signal })],
      ["referrers (the API probe)", (signal) => repo.referrers(manifest, undefined, { signal })],
      // The probe above is shared and still unanswered: this one waits on it too.
      ["referrers of one type", (signal) => repo.referrers(manifest, SIGSTORE_BUNDLE_TYPE, { signal })],
      ["verifyArtifact", (signal) => verifyArtifact(repo, manifest.digest, trust, { signal })],
    ];
    for (const [what, list] of cases) {
      const reason = new Error(`${what}: cancelled`);
      const controller = new AbortController();
      const started = performance.now();
      setTimeout(() => controller.abort(reason), 100);
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        list(controller.signal).then(
          (value) => `answered ${JSON.stringify(value)}`,
          (err: unknown) => err,
        ),
        new Promise((resolve) => (timer = setTimeout(() => resolve("still waiting 5 s after the abort"), 5_100))),
      ]).finally(() => clearTimeout(timer));
      expect(outcome, `${what}: rejects with the signal's reason (after ${Math.round(performance.now() - started)} ms)`).toBe(reason);
    }
    expect(registry.requests.filter((r) => r.includes("/tags/") || r.includes("/referrers/")).length, "the listings were asked").toBeGreaterThanOrEqual(2);
  }, 20_000);


  it("a blob trickled one byte at a time (each within the idle timeout) fails at the overall deadline", async () => {
    const store = new MemoryTarget();
    const { manifest, layer } = await pushArtifact(store);
    await store.tag(manifest, "v1");
    const registry = await hostile({ store, trickleMs: 50 });
    const repo = new RemoteRepository(registry.host, "slow", { timeoutMs: 5_000, deadlineMs: 1_000 });
    await repo.fetch(manifest).then((s) => readAll(s, manifest.size, "manifest"));
    await expect(repo.fetch(layer).then((s) => readAll(s, layer.size, "layer"))).rejects.toMatchObject({ code: "TIMEOUT" });
  }, 15_000);
});
