// Acceptance 3 (issue 11), the registry half: signed artifacts go from one
// registry 2.8.2 into a capsule and from it into a second registry, digests
// and signatures intact; a tampered capsule (an altered blob, a dropped
// signature, a signature by another key, an extra file, a path out of the
// layout…) is refused with its reason, and nothing reaches the second registry.
import { execFile, execFileSync, spawn } from "node:child_process";
import { createHash, createPrivateKey, randomBytes } from "node:crypto";
import { chownSync, closeSync, constants, createWriteStream, openSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CAPSULE_LIMITS, importCapsule, MirrorError, writeCapsule, type CapsuleSource } from "../../mirror/index.js";
import type { Readable } from "node:stream";
import { copy, MAX_MANIFEST_SIZE, MemoryTarget, OciLayoutTarget, readAll, RegistryError, RemoteRepository, type AbortOptions, type Descriptor } from "../../registry/index.js";
import { generateKeyPair, KeySigner, loadTrust, signArtifact, SIGSTORE_BUNDLE_TYPE, verifyArtifact, type TrustPolicy } from "../../signing/index.js";
import { AEGIS, aegis, expectOneErrorLine } from "../cli/run.js";
import { requireBinary, run } from "../harness/process.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { pushCosignSignature } from "../harness/cosign.js";
import { backdate } from "../harness/stale.js";
import { pushArtifact } from "../registry/conformance.js";
import { blobName, readEntries, tamper, type TarEntry } from "./tar.js";

const ciKey = generateKeyPair("ed25519");
const otherKey = generateKeyPair("ed25519");
let source: RegistryServer;
let site: RegistryServer;
let work: string;
let trust: TrustPolicy;
let repoCount = 0;

interface Signed {
  repo: RemoteRepository;
  manifest: Descriptor;
  layer: Descriptor;
  signature: Descriptor;
}

async function signedArtifact(repository: string, key = ciKey): Promise<Signed> {
  const repo = new RemoteRepository(source.host, repository);
  const { manifest, layer } = await pushArtifact(repo);
  const signed = await signArtifact(repo, manifest, new KeySigner(createPrivateKey(key.privateKey)), repo.name);
  return { repo, manifest, layer, signature: signed.referrer };
}

function sourceOf(artifact: { repo: RemoteRepository; manifest: Descriptor }): CapsuleSource {
  return { target: artifact.repo, digest: artifact.manifest.digest, reference: `${artifact.repo.name}@${artifact.manifest.digest}` };
}

/** A fresh repository in the site registry. */
function siteRepo(): RemoteRepository {
  return new RemoteRepository(site.host, `site/r${++repoCount}`);
}

async function holds(repo: RemoteRepository, digest: string): Promise<boolean> {
  return repo.resolve(digest).then(() => true, () => false);
}

/** Artifact `a` with its signature copied to `repository`, and one more referrer of `subject` (of `artifactType`) pushed and indexed there. */
async function withReferrer(repository: string, subject: Descriptor, artifactType: string): Promise<{ repo: RemoteRepository; extra: { manifest: Descriptor } }> {
  const repo = new RemoteRepository(source.host, repository);
  await copy(a.repo, a.manifest.digest, repo, undefined, { referrers: true });
  const extra = await pushArtifact(repo, { artifactType, subject });
  await repo.indexReferrer(subject, { ...extra.manifest, artifactType });
  return { repo, extra };
}

/** A site (in memory) that refuses one digest's push, as a registry going away would; `pushed` records every push tried. */
function siteRefusing(refused: string, pushed: string[] = []): MemoryTarget {
  return new (class extends MemoryTarget {
    override async push(desc: Descriptor, content: Readable, options?: AbortOptions): Promise<void> {
      pushed.push(desc.digest);
      if (desc.digest === refused) {
        content.destroy();
        throw new RegistryError("UNREACHABLE", "the site went away");
      }
      return super.push(desc, content, options);
    }
  })("site");
}

let a: Signed;
let b: Signed;
let capsule: string;

beforeAll(async () => {
  [source, site] = await Promise.all([startRegistry(), startRegistry()]);
  work = mkdtempSync(join(tmpdir(), "aegis-mirror-test-"));
  writeFileSync(join(work, "ci.pub"), ciKey.publicKey);
  trust = await loadTrust([join(work, "ci.pub")]);
  a = await signedArtifact("policies/a");
  b = await signedArtifact("policies/b");
  capsule = join(work, "capsule.tar");
  await writeCapsule([sourceOf(a), sourceOf(b)], capsule);
}, 120_000);

afterAll(async () => {
  await Promise.all([source?.stop(), site?.stop()]);
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("a capsule from one registry into another", () => {
  it("carries each artifact with its signature; both verify at the site with the same digests", async () => {
    const dst = siteRepo();
    const imported = await importCapsule(capsule, dst, trust);
    expect(imported.map((i) => i.digest).sort(), "imported artifacts").toEqual([a.manifest.digest, b.manifest.digest].sort());
    for (const artifact of [a, b]) {
      const entry = imported.find((i) => i.digest === artifact.manifest.digest)!;
      expect(entry, "the signature that verified").toMatchObject({ source: `${artifact.repo.name}@${artifact.manifest.digest}`, signatures: [{ digest: artifact.signature.digest, key: "ci.pub" }], skipped: [] });
      const verified = await verifyArtifact(dst, artifact.manifest.digest, trust);
      expect(verified.signature, "the site's copy verifies with the same signature").toBe(artifact.signature.digest);
      const bytes = (d: Descriptor, repo: RemoteRepository) => repo.fetch(d).then((s) => readAll(s, MAX_MANIFEST_SIZE, d.digest));
      expect((await bytes(artifact.manifest, dst)).equals(await bytes(artifact.manifest, artifact.repo)), "the manifest's bytes are unchanged").toBe(true);
      expect(await dst.exists(artifact.layer), "the layer is there").toBe(true);
    }
    // A second import finds everything there and changes nothing.
    expect((await importCapsule(capsule, dst, trust)).length, "importing again").toBe(2);
    expect((await dst.referrers(a.manifest)).map((r) => r.digest), "one signature, not two").toEqual([a.signature.digest]);
  });

  it("pushes an artifact's signatures before the artifact: a push that fails part-way leaves no unsigned artifact at the site", async () => {
    // A site that takes everything but one artifact's signature manifest.
    const dst = siteRefusing(a.signature.digest);
    await expect(importCapsule(capsule, dst, trust), "the import fails").rejects.toMatchObject({ code: "UNREACHABLE" });
    expect(await dst.exists(a.manifest), "the artifact whose signature could not be pushed").toBe(false);
  });

  it("pushes every signature before any artifact; an artifact whose push fails after another landed: PARTLY_IMPORTED naming them", async () => {
    const [first, second] = [a, b].sort((x, y) => (x.manifest.digest < y.manifest.digest ? -1 : 1)) as [Signed, Signed];
    const order: string[] = [];
    // A site that records what it is given, and refuses the second artifact's manifest.
    const dst = siteRefusing(second.manifest.digest, order);
    const failed = (await importCapsule(capsule, dst, trust).catch((e: unknown) => e)) as MirrorError;
    expect(failed, "the error").toBeInstanceOf(MirrorError);
    expect({ code: failed.code, cause: (failed.cause as RegistryError).code }, "its code and cause").toEqual({ code: "PARTLY_IMPORTED", cause: "UNREACHABLE" });
    expect(failed.message, "what landed and what failed").toContain(`imported 1 of 2 artifacts (${first.manifest.digest}), then ${second.manifest.digest} failed`);
    const position = (digest: string) => order.indexOf(digest);
    expect(Math.max(position(a.signature.digest), position(b.signature.digest)), "both signatures before the first artifact").toBeLessThan(position(first.manifest.digest));
    expect(await dst.exists(first.manifest), "the first artifact landed").toBe(true);
  });

  it("is deterministic: the same artifacts, in any order, give the same bytes", async () => {
    const again = join(work, "again.tar");
    await writeCapsule([sourceOf(b), sourceOf(a), sourceOf(a)], again);
    const hash = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");
    expect(hash(again), "a second export of the same artifacts").toBe(hash(capsule));
    const index = JSON.parse((await readEntries(capsule)).find((e) => e.header.name === "index.json")!.data.toString()) as { manifests: Descriptor[] };
    expect(index.manifests.map((m) => m.annotations?.["org.opencontainers.image.ref.name"]), "index.json names each digest and its signatures index").toEqual(
      [...[a.manifest.digest, b.manifest.digest].sort(), ...[a, b].map((x) => x.manifest.digest.replace(":", "-")).sort()],
    );
  });

  it("is deterministic when one digest comes from two repositories: the first reference by code unit is recorded", async () => {
    const again = new RemoteRepository(source.host, "policies/a-again");
    await copy(a.repo, a.manifest.digest, again, undefined, { referrers: true });
    // A signature only this repository has: which repository the capsule copies from shows in its bytes.
    await signArtifact(again, a.manifest, new KeySigner(createPrivateKey(otherKey.privateKey)), again.name);
    const twice = sourceOf({ repo: again, manifest: a.manifest });
    const [one, two] = [join(work, "two-repos-1.tar"), join(work, "two-repos-2.tar")];
    const [first] = (await writeCapsule([sourceOf(a), twice, sourceOf(b)], one)).artifacts.filter((x) => x.desc.digest === a.manifest.digest);
    await writeCapsule([sourceOf(b), twice, sourceOf(a)], two);
    const hash = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");
    expect(hash(two), "the same bytes, whichever order").toBe(hash(one));
    expect(first!.source, "the reference recorded").toBe(`${again.name}@${a.manifest.digest}`);
  });

  it("an export over the capsule's limits is refused before the blob past them is fetched: CAPSULE_TOO_LARGE, nothing written", async () => {
    /** The artifacts' source, recording every blob read from it. */
    const fetched: string[] = [];
    const src = new (class extends MemoryTarget {
      override async fetchUnverified(desc: Descriptor, options?: AbortOptions): Promise<Readable> {
        fetched.push(desc.digest);
        return super.fetchUnverified(desc, options);
      }
    })("recording");
    for (const x of [a, b]) await copy(x.repo, x.manifest.digest, src, undefined, { referrers: true });
    const sourceIn = (x: Signed): CapsuleSource => ({ target: src, digest: x.manifest.digest, reference: `memory:${x === a ? "a" : "b"}@${x.manifest.digest}` });
    const dir = mkdtempSync(join(work, "too-large-"));
    // Room for a's graph (its manifest, config, layer and signature's) and b's manifest, not b's layer.
    const once = join(dir, "first.tar");
    await writeCapsule([sourceIn(a)], once);
    const aBytes = (await readEntries(once)).filter((e) => e.header.name.startsWith("blobs/")).reduce((sum, e) => sum + e.data.byteLength, 0);
    rmSync(once);
    const limits = { ...CAPSULE_LIMITS, maxTotalSize: aBytes + 600 };
    fetched.length = 0;
    const refusal = await writeCapsule([sourceIn(a), sourceIn(b)], join(dir, "c.tar"), { limits }).catch((err: unknown) => err as MirrorError);
    expect(refusal, "refused").toMatchObject({ code: "CAPSULE_TOO_LARGE", message: expect.stringContaining(`cannot export memory:b@${b.manifest.digest}`) });
    expect(fetched, "b's layer never read").not.toContain(b.layer.digest);
    expect(readdirSync(dir), "nothing written").toEqual([]);
    const blob = await writeCapsule([sourceIn(a)], join(dir, "blob.tar"), { limits: { ...CAPSULE_LIMITS, maxBlobSize: 999 } }).catch((err: unknown) => err as MirrorError);
    expect(blob, "a blob over maxBlobSize").toMatchObject({ code: "CAPSULE_TOO_LARGE", message: expect.stringContaining(`is 1000 bytes, over the limit of 999`) });
  });

  it("is an OCI archive skopeo copies from, digests unchanged", async () => {
    const skopeo = requireBinary("skopeo", "skopeo");
    const out = join(work, "skopeo-out");
    await run(skopeo, ["copy", `oci-archive:${capsule}:${a.manifest.digest}`, `oci:${out}:copied`]);
    const copied = new OciLayoutTarget(out);
    expect((await copied.resolve("copied")).digest, "skopeo's copy has the artifact's digest").toBe(a.manifest.digest);
    expect(await copied.exists(a.layer), "and its layer").toBe(true);
  });
});

describe("a tampered capsule is refused and nothing is pushed", () => {
  /** Imports `path` into a fresh site repository, expecting a refusal; returns it after checking nothing arrived and nothing is left behind. */
  async function refused(path: string, code: MirrorError["code"], options: Parameters<typeof importCapsule>[3] = {}): Promise<MirrorError> {
    const dst = siteRepo();
    const workDir = mkdtempSync(join(work, "unpack-"));
    const err = await importCapsule(path, dst, trust, { ...options, workDir }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, `${path}: expected a refusal`).toBeInstanceOf(MirrorError);
    expect((err as MirrorError).code, `${path}: ${(err as Error).message}`).toBe(code);
    for (const artifact of [a, b]) expect(await holds(dst, artifact.manifest.digest), `${path}: ${artifact.manifest.digest} reached the site`).toBe(false);
    expect(readdirSync(workDir), "the unpacked capsule is removed").toEqual([]);
    return err as MirrorError;
  }

  const edited = (name: string, edit: (entries: TarEntry[]) => TarEntry[]) => tamper(capsule, join(work, name), edit);

  it("an altered blob: DIGEST_MISMATCH naming the blob", async () => {
    const path = await edited("altered.tar", (entries) =>
      entries.map((e) => {
        if (e.header.name !== blobName(a.layer.digest)) return e;
        const data = Buffer.from(e.data);
        data[10] = data[10]! ^ 0xff;
        return { ...e, data };
      }),
    );
    const err = await refused(path, "DIGEST_MISMATCH");
    expect(err.message).toContain(`blob ${a.layer.digest} does not match its digest`);
  });

  it("a dropped signature: NOT_VERIFIED, no signature, naming the artifact", async () => {
    // Cleanly: its signatures index is gone from index.json, and the blobs only it reached.
    const path = await edited("unsigned.tar", (entries) => {
      const indexEntry = entries.find((e) => e.header.name === "index.json")!;
      const index = JSON.parse(indexEntry.data.toString()) as { manifests: Descriptor[] };
      const tag = a.manifest.digest.replace(":", "-");
      const dropped = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag)!;
      const signature = JSON.parse(entries.find((e) => e.header.name === blobName(a.signature.digest))!.data.toString()) as { layers: Descriptor[] };
      const gone = new Set([dropped.digest, a.signature.digest, signature.layers[0]!.digest].map(blobName));
      index.manifests = index.manifests.filter((m) => m !== dropped);
      return entries.filter((e) => !gone.has(e.header.name)).map((e) => (e === indexEntry ? { ...e, data: Buffer.from(JSON.stringify(index)) } : e));
    });
    const err = await refused(path, "NOT_VERIFIED");
    expect(err.message).toContain(`${a.manifest.digest} (from ${a.repo.name}@${a.manifest.digest}) has no signature that verifies with the pinned trust: it carries no signature`);
    expect((err.cause as { code?: string }).code).toBe("NO_SIGNATURE");
  });

  it("a signature's blobs dropped but still listed: MISSING_CONTENT", async () => {
    const path = await edited("missing.tar", (entries) => entries.filter((e) => e.header.name !== blobName(a.signature.digest)));
    const err = await refused(path, "MISSING_CONTENT");
    expect(err.message).toContain(a.signature.digest);
  });

  it("a layer dropped: MISSING_CONTENT naming it, before anything is pushed", async () => {
    const path = await edited("no-layer.tar", (entries) => entries.filter((e) => e.header.name !== blobName(b.layer.digest)));
    const err = await refused(path, "MISSING_CONTENT");
    expect(err.message).toContain(`its manifests name ${b.layer.digest}, which it does not hold`);
  });

  it("a signature by another key: NOT_VERIFIED, untrusted key", async () => {
    const other = new RemoteRepository(source.host, "policies/other-key");
    await copy(a.repo, a.manifest.digest, other);
    await signArtifact(other, a.manifest, new KeySigner(createPrivateKey(otherKey.privateKey)), other.name);
    const path = join(work, "other-key.tar");
    await writeCapsule([sourceOf({ repo: other, manifest: a.manifest })], path);
    const err = await refused(path, "NOT_VERIFIED");
    expect(err.message).toContain(`${a.manifest.digest} (from ${other.name}@${a.manifest.digest}) has no signature that verifies`);
    expect(err.message).toContain("signed by a key that is not trusted");
    expect((err.cause as { code?: string }).code).toBe("UNTRUSTED_KEY");
  });

  it("a signature by another key beside a trusted one: imported without it, and it is named", async () => {
    const both = new RemoteRepository(source.host, "policies/two-keys");
    await copy(a.repo, a.manifest.digest, both, undefined, { referrers: true });
    const extra = await signArtifact(both, a.manifest, new KeySigner(createPrivateKey(otherKey.privateKey)), both.name);
    const path = join(work, "two-keys.tar");
    await writeCapsule([sourceOf({ repo: both, manifest: a.manifest })], path);
    const dst = siteRepo();
    const [imported] = await importCapsule(path, dst, trust);
    expect(imported!.signatures.map((s) => s.digest), "the trusted signature").toEqual([a.signature.digest]);
    expect(imported!.skipped, "the other key's signature, with why").toEqual([{ digest: extra.referrer.digest, reason: expect.stringContaining("not trusted") }]);
    expect((await dst.referrers(a.manifest)).map((r) => r.digest), "only what verified is pushed").toEqual([a.signature.digest]);
  });

  it("a referrer that is not a signature (an SBOM, of any size): left out of the capsule, which imports", async () => {
    const { repo: withSbom, extra: sbom } = await withReferrer("policies/with-sbom", a.manifest, "application/vnd.test.sbom");
    const path = join(work, "sbom.tar");
    await writeCapsule([sourceOf({ repo: withSbom, manifest: a.manifest })], path);
    const names = (await readEntries(path)).map((e) => e.header.name);
    expect(names, "the SBOM's manifest").not.toContain(blobName(sbom.manifest.digest));
    const dst = siteRepo();
    const [imported] = await importCapsule(path, dst, trust);
    expect(imported, "imported with its signature, nothing skipped").toMatchObject({ signatures: [{ digest: a.signature.digest }], skipped: [] });
  });

  /** The capsule with artifact `a`'s referrers index rewritten by `edit` (a new blob, index.json pointing at it), as in transit. */
  const withReferrersIndex = (name: string, edit: (manifests: Descriptor[]) => Descriptor[]) =>
    edited(name, (entries) => {
      const tag = a.manifest.digest.replace(":", "-");
      const indexJson = entries.find((e) => e.header.name === "index.json")!;
      const index = JSON.parse(indexJson.data.toString()) as { manifests: Descriptor[] };
      const listed = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag)!;
      const old = entries.find((e) => e.header.name === blobName(listed.digest))!;
      const referrers = JSON.parse(old.data.toString()) as { manifests: Descriptor[] };
      const data = Buffer.from(JSON.stringify({ ...referrers, manifests: edit(referrers.manifests) }));
      const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
      const manifests = index.manifests.map((m) => (m === listed ? { ...m, digest, size: data.byteLength } : m));
      return [
        ...entries.filter((e) => e !== old).map((e) => (e === indexJson ? { ...e, data: Buffer.from(JSON.stringify({ ...index, manifests })) } : e)),
        { header: { name: blobName(digest), type: "file" as const, mode: 0o644 }, data },
      ];
    });

  it("a referrers index that lists a signature twice, first under another type: the site indexes it as its verified manifest describes it", async () => {
    const path = await withReferrersIndex("listed-twice-referrer.tar", (m) => [{ ...m[0]!, artifactType: "application/x.bogus" }, ...m]);
    const dst = siteRepo();
    const imported = (await importCapsule(path, dst, trust)).find((i) => i.digest === a.manifest.digest);
    expect(imported!.signatures.map((s) => s.digest), "one signature").toEqual([a.signature.digest]);
    expect(await dst.referrers(a.manifest), "the site's listing").toEqual([expect.objectContaining({ digest: a.signature.digest, artifactType: SIGSTORE_BUNDLE_TYPE })]);
    expect((await verifyArtifact(dst, a.manifest.digest, trust)).signature, "agents find it at the site").toBe(a.signature.digest);
  });

  it("a listed referrer that is not a signature is named, its artifact type quoted and escaped", async () => {
    const path = await withReferrersIndex("foreign-referrer.tar", (m) => [...m, { ...b.manifest, artifactType: "application/x.sbom\nimported sha256:forged" }]);
    const imported = (await importCapsule(path, siteRepo(), trust)).find((i) => i.digest === a.manifest.digest);
    expect(imported!.skipped, "named, on one line").toEqual([{ digest: b.manifest.digest, reason: 'not a signature (artifact type "application/x.sbom\\nimported sha256:forged")' }]);
  });

  it("an artifact whose manifest names no media type of its own (it need not, in OCI) exports and imports", async () => {
    const dir = mkdtempSync(join(work, "bare-manifest-"));
    const src = new OciLayoutTarget(dir);
    const { manifest, bytes } = await pushArtifact(src, { mediaType: undefined });
    expect(JSON.parse(bytes.toString("utf8")), "the manifest's own bytes").not.toHaveProperty("mediaType");
    await src.tag(manifest, "v1");
    await signArtifact(src, manifest, new KeySigner(createPrivateKey(ciKey.privateKey)), src.name);
    const path = join(work, "bare-manifest.tar");
    await writeCapsule([{ target: src, digest: manifest.digest, reference: `oci:${dir}@${manifest.digest}` }], path);
    const dst = new MemoryTarget("site");
    const [imported] = await importCapsule(path, dst, trust);
    expect(imported, "imported, with its signature").toMatchObject({ digest: manifest.digest, mediaType: manifest.mediaType, signatures: [{ key: "ci.pub" }] });
    expect(await dst.exists(manifest), "at the site").toBe(true);
  });

  it("a referrer of a signature (an attestation of it): left out of the capsule, which imports", async () => {
    const { repo: attested, extra: attestation } = await withReferrer("policies/attested", a.signature, "application/vnd.test.attestation");
    const path = join(work, "attested.tar");
    await writeCapsule([sourceOf({ repo: attested, manifest: a.manifest })], path);
    const names = (await readEntries(path)).map((e) => e.header.name);
    expect(names, "the attestation's manifest").not.toContain(blobName(attestation.manifest.digest));
    const [imported] = await importCapsule(path, siteRepo(), trust);
    expect(imported!.signatures.map((s) => s.digest), "imported with its signature").toEqual([a.signature.digest]);
  });

  it("an extra file nothing lists: UNLISTED_CONTENT naming it", async () => {
    const data = randomBytes(100);
    const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    const path = await edited("extra.tar", (entries) => [...entries, { header: { name: blobName(digest), type: "file", mode: 0o644 }, data }]);
    const err = await refused(path, "UNLISTED_CONTENT");
    expect(err.message).toContain(digest);
  });

  it("entries outside the layout, links and duplicates: INVALID_CAPSULE naming the entry", async () => {
    const cases: [string, TarEntry, string][] = [
      ["traversal", { header: { name: "../../escaped", type: "file" }, data: Buffer.from("x") }, `entry "../../escaped" is not part of an OCI image layout`],
      ["absolute", { header: { name: "/etc/escaped", type: "file" }, data: Buffer.from("x") }, `entry "/etc/escaped" is not part of an OCI image layout`],
      ["symlink", { header: { name: blobName(a.layer.digest).replace(/.$/, "0"), type: "symlink", linkname: "/etc/passwd" }, data: Buffer.alloc(0) }, "is a symlink"],
      ["duplicate", { header: { name: "oci-layout", type: "file" }, data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') }, `entry "oci-layout" appears twice`],
    ];
    for (const [name, extra, reason] of cases) {
      const path = await edited(`${name}.tar`, (entries) => [...entries.slice(0, 2), extra, ...entries.slice(2)]);
      const err = await refused(path, "INVALID_CAPSULE");
      expect(err.message, name).toContain(reason);
    }
    const whole = readFileSync(capsule);
    writeFileSync(join(work, "truncated.tar"), whole.subarray(0, whole.length - 4096));
    expect((await refused(join(work, "truncated.tar"), "INVALID_CAPSULE")).message, "truncated").toMatch(/not a tar archive|cut off/);
    // Cut exactly at an entry boundary (the two zero blocks gone): tar-stream ends quietly there.
    writeFileSync(join(work, "no-end-marker.tar"), whole.subarray(0, whole.length - 1024));
    expect((await refused(join(work, "no-end-marker.tar"), "INVALID_CAPSULE")).message, "no end marker").toContain("no end-of-archive marker");
    writeFileSync(join(work, "garbage.tar"), randomBytes(4096));
    expect((await refused(join(work, "garbage.tar"), "INVALID_CAPSULE")).message).toContain("not a tar archive");
  });

  it("an index.json listing an artifact twice, or tagging the referrers of one it does not list: INVALID_CAPSULE", async () => {
    // Each referrers tag costs a locked rewrite of the staging index.json: a hostile index.json of thousands of them would cost minutes.
    const withIndex = (name: string, edit: (manifests: Descriptor[]) => Descriptor[]) =>
      edited(name, (entries) =>
        entries.map((e) => {
          if (e.header.name !== "index.json") return e;
          const index = JSON.parse(e.data.toString()) as { manifests: Descriptor[] };
          return { ...e, data: Buffer.from(JSON.stringify({ ...index, manifests: edit(index.manifests) })) };
        }),
      );
    const twice = await withIndex("listed-twice.tar", (m) => [...m, m[0]!]);
    expect((await refused(twice, "INVALID_CAPSULE")).message, "an artifact listed twice").toContain("twice");
    const stranger = `sha256-${"e".repeat(64)}`;
    const foreign = await withIndex("foreign-tag.tar", (m) => {
      const tagged = m.find((d) => d.annotations?.["org.opencontainers.image.ref.name"]?.startsWith("sha256-"))!;
      return [...m, { ...tagged, annotations: { "org.opencontainers.image.ref.name": stranger } }];
    });
    expect((await refused(foreign, "INVALID_CAPSULE")).message, "the referrers tag of an unlisted artifact").toContain(`as ${stranger}, the referrers of an artifact it does not list`);
  });

  it("an index.json giving an artifact another size than its blob: INVALID_CAPSULE", async () => {
    const path = await edited("wrong-size.tar", (entries) =>
      entries.map((e) => {
        if (e.header.name !== "index.json") return e;
        const index = JSON.parse(e.data.toString()) as { manifests: Descriptor[] };
        return { ...e, data: Buffer.from(JSON.stringify({ ...index, manifests: index.manifests.map((m) => (m.digest === a.manifest.digest ? { ...m, size: m.size + 1 } : m)) })) };
      }),
    );
    expect((await refused(path, "INVALID_CAPSULE")).message).toContain("another size than the blob it holds");
  });

  it("over the limits: CAPSULE_TOO_LARGE", async () => {
    expect((await refused(capsule, "CAPSULE_TOO_LARGE", { limits: { ...CAPSULE_LIMITS, maxBlobs: 3 } })).message).toContain("more than 3 blobs");
    expect((await refused(capsule, "CAPSULE_TOO_LARGE", { limits: { ...CAPSULE_LIMITS, maxBlobSize: 500 } })).message).toMatch(/blob sha256:[0-9a-f]{64} is \d+ bytes, over the 500-byte limit/);
    expect((await refused(capsule, "CAPSULE_TOO_LARGE", { limits: { ...CAPSULE_LIMITS, maxTotalSize: 2000 } })).message).toContain("over the 2000-byte limit");
  });
});

describe("stopped midway (Ctrl-C)", () => {
  it("a device, or a file of endless zero blocks: refused, not read to its end", async () => {
    await expect(importCapsule("/dev/zero", siteRepo(), trust), "/dev/zero").rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: "capsule /dev/zero is not a file or a pipe" });
    const zeros = join(work, "zeros.tar");
    writeFileSync(zeros, Buffer.alloc(4 << 20));
    const limits = { ...CAPSULE_LIMITS, maxBlobs: 16, maxTotalSize: 1 << 20 };
    await expect(importCapsule(zeros, siteRepo(), trust, { limits }), "4 MiB of zeros, 1 MiB allowed").rejects.toMatchObject({ code: "CAPSULE_TOO_LARGE", message: expect.stringMatching(/^capsule refused: it is over \d+ bytes$/) });
  });

  it("a failure of this machine while staging (a file size limit) is named as such, not blamed on the capsule", async () => {
    // sh ignores SIGXFSZ for the CLI it execs, so a write past `ulimit -f` fails with EFBIG.
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile("sh", ["-c", 'trap "" XFSZ; ulimit -f 1; exec "$@"', "sh", process.execPath, AEGIS, "mirror", "import", capsule, siteRepo().name, "--key", join(work, "ci.pub")], (err, _stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stderr }),
      );
    });
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr, "the machine's failure").toMatch(/file too large|EFBIG/i);
    expect(result.stderr, "not the capsule's").not.toContain("capsule refused");
  });

  it("an export leaves no capsule, no staging and no temp file beside it", async () => {
    const dir = mkdtempSync(join(work, "stopped-export-"));
    const controller = new AbortController();
    const stopAtFirstBlob = (e: { kind: string }) => e.kind === "start" && controller.abort(new Error("stopped"));
    await expect(writeCapsule([sourceOf(a)], join(dir, "c.tar"), { signal: controller.signal, onEvent: stopAtFirstBlob })).rejects.toThrow("stopped");
    expect(readdirSync(dir), "what the stopped export left").toEqual([]);
  });

  it("an import removes what it unpacked and pushes nothing", async () => {
    const workDir = mkdtempSync(join(work, "stopped-import-"));
    const controller = new AbortController();
    const dst = siteRepo();
    const stopAtFirstBlob = (e: { kind: string }) => e.kind === "start" && controller.abort(new Error("stopped"));
    await expect(importCapsule(capsule, dst, trust, { workDir, signal: controller.signal, onRead: stopAtFirstBlob })).rejects.toThrow("stopped");
    expect(readdirSync(workDir), "what the stopped import left").toEqual([]);
    expect(await holds(dst, a.manifest.digest), "nothing pushed").toBe(false);
  });

  it("an import from a pipe nobody writes to yet is stopped by its signal (opening a pipe waits for a writer)", async () => {
    const fifo = join(work, "unwritten.fifo");
    execFileSync("mkfifo", [fifo]);
    const workDir = mkdtempSync(join(work, "unwritten-"));
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("stopped while waiting for a writer")), 200);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<string>((resolve) => (timer = setTimeout(() => resolve("still waiting 10 s after the abort"), 10_200)));
    const ended = importCapsule(fifo, siteRepo(), trust, { workDir, signal: controller.signal }).then(
      () => "imported",
      (err: Error) => err.message,
    );
    try {
      expect(await Promise.race([ended, late]).finally(() => clearTimeout(timer)), "how the import ended").toBe("stopped while waiting for a writer");
      expect(readdirSync(workDir), "what the stopped import left").toEqual([]);
    } finally {
      // A reader still blocked in open() (a thread of the pool, which Node joins at exit) is let go by a writer's open.
      try {
        closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // ENXIO: no reader is waiting.
      }
    }
  });
});

describe("killed midway (SIGKILL, a crash): the next run sweeps what it left, once unchanged for an hour", () => {
  /** A directory as a killed run leaves one (a layout, a partial blob deep inside); `old`: every mtime an hour back. */
  const leftDir = (path: string, old: boolean) => {
    mkdirSync(join(path, "blobs", "sha256"), { recursive: true });
    writeFileSync(join(path, "blobs", "sha256", ".tmp-x"), "partial");
    if (old) backdate(...["blobs/sha256/.tmp-x", "blobs/sha256", "blobs", ""].map((inner) => join(path, inner)));
  };
  const leftFile = (path: string, old: boolean) => {
    writeFileSync(path, "partial tar");
    if (old) backdate(path);
  };

  it("an export into the same file: its staging layouts and tar temp files go; live ones, look-alikes, other outputs' and other users' stay", async () => {
    if (process.getuid?.() !== 0) throw new Error("this case needs root (chown, as another user's staging layout)");
    const dir = mkdtempSync(join(work, "killed-export-"));
    leftDir(join(dir, ".c.tar.staging-Kill3d"), true);
    leftFile(join(dir, ".c.tar.0123456789ab.aegis-tmp"), true);
    leftDir(join(dir, ".c.tar.staging-Recent"), false); // an export under way
    leftFile(join(dir, ".c.tar.123456789abc.aegis-tmp"), false);
    leftDir(join(dir, ".c.tar.staging-toolong"), true); // not a name an export makes
    leftFile(join(dir, ".c.tar.0123456789ab.aegis-tmp.x"), true);
    leftDir(join(dir, ".d.tar.staging-Kill3d"), true); // another capsule's
    leftFile(join(dir, ".d.tar.0123456789ab.aegis-tmp"), true);
    leftDir(join(dir, ".c.tar.staging-Others"), true);
    chownSync(join(dir, ".c.tar.staging-Others"), 65534, 65534); // another user's (nobody's)
    await writeCapsule([sourceOf(a)], join(dir, "c.tar"));
    expect(readdirSync(dir).sort(), "what is left beside the capsule").toEqual([
      ".c.tar.0123456789ab.aegis-tmp.x",
      ".c.tar.123456789abc.aegis-tmp",
      ".c.tar.staging-Others",
      ".c.tar.staging-Recent",
      ".c.tar.staging-toolong",
      ".d.tar.0123456789ab.aegis-tmp",
      ".d.tar.staging-Kill3d",
      "c.tar",
    ]);
  });

  it("an import in the same work directory: its unpacked capsules go; live ones and look-alikes stay", async () => {
    const workDir = mkdtempSync(join(work, "killed-import-"));
    leftDir(join(workDir, "aegis-capsule-Kill3d"), true);
    leftDir(join(workDir, "aegis-capsule-Recent"), false);
    leftDir(join(workDir, "aegis-capsule-toolong"), true);
    leftDir(join(workDir, "mine"), true);
    await importCapsule(capsule, siteRepo(), trust, { workDir });
    expect(readdirSync(workDir).sort(), "what is left in the work directory").toEqual(["aegis-capsule-Recent", "aegis-capsule-toolong", "mine"]);
  });
});

describe("aegis mirror", () => {
  it("import stopped by Ctrl-C removes what it unpacked: one error line, then the process ends by SIGINT", async () => {
    // Read from a FIFO this test holds open, so the import is certainly still reading when SIGINT arrives.
    const fifo = join(work, "capsule.fifo");
    execFileSync("mkfifo", [fifo]);
    const workDir = mkdtempSync(join(work, "interrupted-"));
    const dst = siteRepo();
    const child = spawn(process.execPath, [AEGIS, "mirror", "import", fifo, dst.name, "--key", join(work, "ci.pub"), "--work-dir", workDir], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    const writer = createWriteStream(fifo);
    writer.on("error", () => undefined);
    writer.write(readFileSync(capsule).subarray(0, 4096));
    for (let i = 0; i < 400 && readdirSync(workDir).length === 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(readdirSync(workDir).length, "the import started unpacking").toBeGreaterThan(0);
    child.kill("SIGINT");
    for (let i = 0; i < 400 && readdirSync(workDir).length > 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(readdirSync(workDir), "what the interrupted import left").toEqual([]);
    // Node joins its thread pool at exit, and one thread is still blocked reading the FIFO: release it.
    writer.destroy();
    const { code, signal } = await exited;
    expect({ code, signal }, `how the import ended (by the signal, not exit 1): ${stderr}`).toEqual({ code: null, signal: "SIGINT" });
    expect(expectOneErrorLine({ code: 1, stdout: "", stderr })).toContain("interrupted by SIGINT");
  });


  it("import into a --work-dir that does not exist: one error line naming it, nothing pushed", async () => {
    const dst = siteRepo();
    const missing = join(work, "no-such-dir");
    const result = await aegis(["mirror", "import", capsule, dst.name, "--key", join(work, "ci.pub"), "--work-dir", missing]);
    expect(expectOneErrorLine(result)).toContain(`cannot unpack the capsule in ${missing}`);
    expect(await holds(dst, a.manifest.digest), "nothing pushed").toBe(false);
  });

  it("export refuses a tag, naming the digest it resolves to, and writes nothing", async () => {
    await a.repo.tag(a.manifest, "v1");
    const out = join(work, "tagged.tar");
    const result = await aegis(["mirror", "export", `${a.repo.name}:v1`, "-o", out]);
    expect(expectOneErrorLine(result)).toContain(`(v1 currently resolves to ${a.repo.name}@${a.manifest.digest})`);
    expect(readdirSync(work).filter((n) => n.includes("tagged.tar")), "nothing written").toEqual([]);
  });

  it("export with --key refuses an artifact no pinned key signed, and writes nothing", async () => {
    const unsigned = new RemoteRepository(source.host, "policies/unsigned");
    const { manifest } = await pushArtifact(unsigned);
    const out = join(work, "unsigned-cli.tar");
    const result = await aegis(["mirror", "export", `${a.repo.name}@${a.manifest.digest}`, `${unsigned.name}@${manifest.digest}`, "-o", out, "--key", join(work, "ci.pub")]);
    expect(expectOneErrorLine(result), "refused before anything of it is copied").toContain(`${unsigned.name}@${manifest.digest} has no signature`);
    expect(readdirSync(work).filter((n) => n.includes("unsigned-cli")), "no capsule, no temp file").toEqual([]);
  });

  it("export with --key refuses an artifact signed only with a cosign .sig tag, which a capsule does not carry, and writes nothing", async () => {
    const legacy = new RemoteRepository(source.host, "policies/legacy");
    const { manifest } = await pushArtifact(legacy);
    await pushCosignSignature(legacy, manifest, createPrivateKey(ciKey.privateKey), legacy.name);
    expect((await verifyArtifact(legacy, manifest.digest, trust)).format, "it verifies at the source").toBe("cosign-legacy");
    const out = join(work, "legacy-cli.tar");
    const result = await aegis(["mirror", "export", `${legacy.name}@${manifest.digest}`, "-o", out, "--key", join(work, "ci.pub")]);
    expect(expectOneErrorLine(result), "before its blobs are fetched").toContain(`${legacy.name}@${manifest.digest} is signed only with a cosign .sig tag, which a capsule does not carry`);
    expect(readdirSync(work).filter((n) => n.includes("legacy-cli.tar")), "no capsule, no staging, no temp file").toEqual([]);
  });

  it("export --from (repeatable) takes the digests fleet files name (with any given here, before or after it, once each); a tag in a fleet file is refused", async () => {
    const fleetDir = join(work, "fleet");
    execFileSync("mkdir", ["-p", fleetDir]);
    writeFileSync(join(fleetDir, "prod.yaml"), `environment: prod\npolicies:\n  - name: a\n    ref: ${a.repo.name}@${a.manifest.digest}\n    hosts: [web-01]\n`);
    writeFileSync(join(fleetDir, "staging.yaml"), `environment: staging\npolicies:\n  - name: b\n    ref: ${b.repo.name}@${b.manifest.digest}\n    selectors: ["env=staging"]\n`);
    const out = join(work, "from-fleet.tar");
    // A reference after --from is a reference, not a fleet file (a variadic --from took it).
    const exported = await aegis(["mirror", "export", "--from", join(fleetDir, "prod.yaml"), `${a.repo.name}@${a.manifest.digest}`, "--from", join(fleetDir, "staging.yaml"), "-o", out, "--json"]);
    expect(exported.code, exported.stderr).toBe(0);
    const digests = (JSON.parse(exported.stdout) as { artifacts: { digest: string }[] }).artifacts.map((x) => x.digest).sort();
    expect(digests, "both environments' digests, each once").toEqual([a.manifest.digest, b.manifest.digest].sort());

    await a.repo.tag(a.manifest, "fleet-tag");
    writeFileSync(join(work, "tagged-fleet.yaml"), `policies:\n  - name: a\n    ref: ${a.repo.name}:fleet-tag\n    hosts: [web-01]\n`);
    const tagged = await aegis(["mirror", "export", "--from", join(work, "tagged-fleet.yaml"), "-o", join(work, "tagged-fleet.tar")]);
    expect(expectOneErrorLine(tagged), "a tag in a fleet file is refused like one on the command line").toContain(`(fleet-tag currently resolves to ${a.repo.name}@${a.manifest.digest})`);
    expect(readdirSync(work).filter((n) => n.includes("tagged-fleet.tar")), "nothing written").toEqual([]);

    const nothing = await aegis(["mirror", "export", "-o", join(work, "empty.tar")]);
    expect(expectOneErrorLine(nothing)).toContain("name at least one reference");
  });

  it("export without --key still refuses an artifact with no signature (an import would refuse it), and an -o that is a directory or -, writing nothing", async () => {
    const unsigned = new RemoteRepository(source.host, "policies/unsigned-nokey");
    const { manifest } = await pushArtifact(unsigned);
    const out = join(work, "unsigned-nokey.tar");
    const result = await aegis(["mirror", "export", `${a.repo.name}@${a.manifest.digest}`, `${unsigned.name}@${manifest.digest}`, "-o", out, "--json"]);
    expect(JSON.parse(result.stdout), "the code for scripts").toMatchObject({ code: "NOT_VERIFIED" });
    expect(expectOneErrorLine(result), "names the unsigned artifact").toContain(`${unsigned.name}@${manifest.digest} carries no signature (a sigstore bundle referrer), and an import refuses an unsigned artifact`);
    expect(readdirSync(work).filter((n) => n.includes("unsigned-nokey")), "no capsule, no staging, no temp file").toEqual([]);

    const dir = mkdtempSync(join(work, "a-directory-"));
    const intoDir = await aegis(["mirror", "export", `${a.repo.name}@${a.manifest.digest}`, "-o", dir, "--json"]);
    expect(JSON.parse(intoDir.stdout), "an input error").toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(expectOneErrorLine(intoDir), "names the directory").toBe(`aegis: error: cannot write ${dir}: it is a directory`);
    expect(readdirSync(work).filter((n) => n.startsWith(`.${basename(dir)}.`)), "no staging or temp file beside it").toEqual([]);
    const dash = await aegis(["mirror", "export", `${a.repo.name}@${a.manifest.digest}`, "-o", "-"]);
    expect(expectOneErrorLine(dash), "-o - (not a file named -)").toBe("aegis: error: -o -: a capsule is written to a file, not to stdout");
  });

  it("export and import, quiet when piped; --json lists what was imported", async () => {
    const out = join(work, "cli.tar");
    const exported = await aegis(["mirror", "export", `${a.repo.name}@${a.manifest.digest}`, "-o", out, "--json", "--key", join(work, "ci.pub")]);
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stderr, "no progress when piped").toBe("");
    expect(JSON.parse(exported.stdout)).toMatchObject({ output: out, artifacts: [{ digest: a.manifest.digest, source: `${a.repo.name}@${a.manifest.digest}`, signatures: 1 }] });
    const dst = siteRepo();
    const imported = await aegis(["mirror", "import", out, dst.name, "--key", join(work, "ci.pub"), "--json"]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stderr, "no progress when piped").toBe("");
    expect(JSON.parse(imported.stdout)).toEqual({
      capsule: out,
      destination: dst.name,
      artifacts: [expect.objectContaining({ digest: a.manifest.digest, reference: `${dst.name}@${a.manifest.digest}`, signatures: [expect.objectContaining({ digest: a.signature.digest, key: "ci.pub" })] })],
    });
    const human = await aegis(["mirror", "import", out, dst.name, "--key", join(work, "ci.pub")]);
    expect(human.stdout).toContain(`imported ${a.manifest.digest} → ${dst.name}@${a.manifest.digest} (digests verified; 1 signature(s) verified, key ci.pub)`);
  });

  it("import of a tampered capsule: one error line naming the digest and the reason, exit 1, nothing pushed", async () => {
    const path = await tamper(capsule, join(work, "cli-altered.tar"), (entries) =>
      entries.map((e) => (e.header.name === blobName(b.layer.digest) ? { ...e, data: Buffer.from(e.data).fill(0, 0, 8) } : e)),
    );
    const dst = siteRepo();
    const result = await aegis(["mirror", "import", path, dst.name, "--key", join(work, "ci.pub")]);
    expect(result.code).toBe(1);
    expect(expectOneErrorLine(result)).toContain(`capsule refused: blob ${b.layer.digest} does not match its digest`);
    expect(await holds(dst, a.manifest.digest), "nothing pushed").toBe(false);
    // With --json, the failure's code for scripts, on stdout.
    const scripted = await aegis(["mirror", "import", path, dst.name, "--key", join(work, "ci.pub"), "--json"]);
    expect(scripted.code, scripted.stderr).toBe(1);
    expect(JSON.parse(scripted.stdout), "the JSON failure").toEqual({ error: expect.stringContaining(`blob ${b.layer.digest} does not match its digest`), code: "DIGEST_MISMATCH" });
    const noKey = await aegis(["mirror", "import", capsule, dst.name]);
    expect(expectOneErrorLine(noKey)).toContain("no trusted keys given");
  });
});
