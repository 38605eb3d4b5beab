// One conformance suite for every Target implementation, as distribution
// runs one storage-driver suite against each driver.
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  copy,
  descriptorFor,
  EMPTY_CONFIG,
  encodeJson,
  isNotFound,
  MediaType,
  MemoryTarget,
  readAll,
  RegistryError,
  sha256,
  type Descriptor,
  type Deleter,
  type Manifest,
  type Ingester,
  type ReferencePusher,
  type Target,
} from "../../registry/index.js";

/**
 * What an implementation can do beyond Target, so each runs exactly the cases
 * that apply to it (no skips): a remote registry has no `delete` here, and
 * only a local store can have its bytes altered underneath it.
 */
export interface Capabilities<T extends Target> {
  /** The target is a Deleter. */
  deleter?: (target: T) => Deleter;
  /** Overwrites the stored bytes of `desc` with different bytes of the same size, behind the target's back. */
  alterAtRest?: (target: T, desc: Descriptor) => Promise<void>;
  /** Files a write keeps beside the stored content while under way (temp files): none may be left once it is over. */
  leftovers?: (target: T) => Promise<string[]>;
  /** The target is a ReferencePusher. */
  referencePusher?: (target: T) => ReferencePusher;
}

const emptyConfig: Descriptor = { mediaType: EMPTY_CONFIG.mediaType, digest: EMPTY_CONFIG.digest, size: EMPTY_CONFIG.size };

const MiB = 1024 * 1024;

/** `data` as a stream of 64 KiB chunks, as a file or a socket gives it. */
function chunked(data: Buffer): Readable {
  return Readable.from(Array.from({ length: Math.ceil(data.byteLength / 65536) }, (_, i) => data.subarray(i * 65536, (i + 1) * 65536)));
}

async function pushBytes(target: Target, desc: Descriptor, bytes: Uint8Array): Promise<void> {
  await target.push(desc, Readable.from([Buffer.from(bytes)]));
}

async function fetchBytes(target: Target, desc: Descriptor): Promise<Buffer> {
  return readAll(await target.fetch(desc), desc.size + 1, desc.digest);
}

/** Pushes a small artifact (config, one random layer, manifest) and returns its parts. */
export async function pushArtifact(target: Target, extra: Partial<Manifest> = {}): Promise<{ manifest: Descriptor; layer: Descriptor; bytes: Buffer }> {
  const layerBytes = randomBytes(1000);
  const layer = descriptorFor("application/octet-stream", layerBytes);
  await pushBytes(target, emptyConfig, Buffer.from("{}"));
  await pushBytes(target, layer, layerBytes);
  const doc: Manifest = { schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: "application/vnd.test", config: EMPTY_CONFIG, layers: [layer], ...extra };
  const bytes = encodeJson(doc);
  const manifest = descriptorFor(MediaType.ImageManifest, bytes);
  await pushBytes(target, manifest, bytes);
  return { manifest, layer, bytes };
}

export function targetConformance<T extends Target & Ingester>(name: string, open: () => T, capabilities: Capabilities<T> = {}): void {
  describe(`Target conformance: ${name}`, () => {
    it("stores a blob and returns the same bytes", async () => {
      const target = open();
      const data = randomBytes(3000);
      const desc = descriptorFor("application/octet-stream", data);
      expect(await target.exists(desc)).toBe(false);
      await pushBytes(target, desc, data);
      expect(await target.exists(desc)).toBe(true);
      expect((await fetchBytes(target, desc)).equals(data)).toBe(true);
    });

    it("refuses content that does not match its descriptor, storing nothing", async () => {
      const target = open();
      const data = randomBytes(2000);
      const desc = descriptorFor("application/octet-stream", data);
      const altered = Buffer.from(data);
      altered[7] = altered[7]! ^ 0xff;
      await expect(pushBytes(target, desc, altered)).rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
      await expect(pushBytes(target, desc, data.subarray(0, 1000))).rejects.toBeInstanceOf(RegistryError);
      expect(await target.exists(desc)).toBe(false);
    });

    it("stores a multi-MiB blob streamed in small chunks, and hands back the stored bytes unverified too", async () => {
      const target = open();
      const data = randomBytes(6 * MiB + 321);
      const desc = descriptorFor("application/octet-stream", data);
      await target.push(desc, chunked(data));
      expect((await fetchBytes(target, desc)).equals(data), "fetch after a streamed push").toBe(true);
      if (target.fetchUnverified) {
        expect((await readAll(await target.fetchUnverified(desc), desc.size + 1, desc.digest)).equals(data), "fetchUnverified").toBe(true);
      }
    });

    it("refuses a multi-MiB stream that differs in its last byte, or whose source fails midway, storing nothing", async () => {
      const target = open();
      const data = randomBytes(5 * MiB);
      const desc = descriptorFor("application/octet-stream", data);
      const altered = Buffer.from(data);
      altered[altered.byteLength - 1] = altered[altered.byteLength - 1]! ^ 0xff;
      await expect(target.push(desc, chunked(altered)), "last byte altered").rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
      expect(await target.exists(desc), "stored after a mismatch").toBe(false);
      const failing = new Readable({ read() {} });
      failing.push(data.subarray(0, 2 * MiB));
      setImmediate(() => failing.destroy(new Error("source went away")));
      await expect(target.push(desc, failing), "source failing midway").rejects.toThrow("source went away");
      expect(await target.exists(desc), "stored after a failing source").toBe(false);
    });

    it("as copy's destination, verifies what it stores: a source whose unverified bytes are altered stores nothing", async () => {
      const source = new MemoryTarget("altering source");
      const { manifest, layer } = await pushArtifact(source);
      // What a registry that alters bytes hands out unverified: copy passes them to push, which must check them.
      const altering = Object.assign(Object.create(source) as MemoryTarget, {
        fetchUnverified: async (desc: Descriptor) => {
          const bytes = await readAll(await source.fetch(desc), desc.size, desc.digest);
          if (desc.digest === layer.digest) bytes[0] = bytes[0]! ^ 0xff;
          return Readable.from([bytes]);
        },
      });
      const target = open();
      await expect(copy(altering, manifest.digest, target, "v1")).rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
      expect(await target.exists(layer), "layer stored").toBe(false);
      expect(await target.exists(manifest), "manifest stored").toBe(false);
    });

    it("ingests a blob whose digest it learns as it streams: its descriptor once written, stored only on commit", async () => {
      const target = open();
      const data = randomBytes(6 * MiB + 123);
      const expected = descriptorFor("application/octet-stream", data);
      const ingested = await target.ingest(expected.mediaType, data.byteLength, chunked(data));
      expect(ingested.desc, "descriptor learned").toEqual(expected);
      expect(await target.exists(expected), "stored before commit").toBe(false);
      await ingested.commit();
      expect(await target.exists(expected), "stored after commit").toBe(true);
      expect((await fetchBytes(target, expected)).equals(data), "fetch after commit").toBe(true);
      // Again, of bytes it holds already: committing them again changes nothing.
      await (await target.ingest(expected.mediaType, data.byteLength, chunked(data))).commit();
      expect((await fetchBytes(target, expected)).equals(data), "fetch after a second commit").toBe(true);
      const empty = await target.ingest("application/octet-stream", 0, Readable.from([]));
      expect(empty.desc.digest, "an empty blob").toBe(descriptorFor("", Buffer.alloc(0)).digest);
      await empty.commit();
      expect(await target.exists(empty.desc), "empty blob stored").toBe(true);
    });

    it("an ingest aborted, of content shorter or longer than its size, or whose source fails, stores nothing", async () => {
      const target = open();
      const data = randomBytes(3 * MiB + 5);
      const desc = descriptorFor("application/octet-stream", data);
      const aborted = await target.ingest(desc.mediaType, data.byteLength, chunked(data));
      await aborted.abort();
      expect(await target.exists(desc), "stored after abort").toBe(false);
      await expect(target.ingest(desc.mediaType, data.byteLength + 1, chunked(data)), "one byte short").rejects.toMatchObject({ code: "SIZE_MISMATCH" });
      await expect(target.ingest(desc.mediaType, data.byteLength - 1, chunked(data)), "one byte too many").rejects.toMatchObject({ code: "SIZE_MISMATCH" });
      await expect(target.ingest(desc.mediaType, 10, chunked(data)), "megabytes too many").rejects.toMatchObject({ code: "SIZE_MISMATCH" });
      const failing = new Readable({ read() {} });
      failing.push(data.subarray(0, MiB));
      setImmediate(() => failing.destroy(new Error("source went away")));
      await expect(target.ingest(desc.mediaType, data.byteLength, failing), "source failing midway").rejects.toThrow("source went away");
      const signal = AbortSignal.abort(new Error("stopping"));
      await expect(target.ingest(desc.mediaType, data.byteLength, chunked(data), { signal }), "aborted signal").rejects.toThrow("stopping");
      for (const digest of [desc.digest, sha256(data.subarray(0, -1))]) {
        expect(await target.exists({ ...desc, digest }), `stored under ${digest}`).toBe(false);
      }
      if (capabilities.leftovers) expect(await capabilities.leftovers(target), "files left behind").toEqual([]);
    });

    it("reports unknown content as not found", async () => {
      const target = open();
      const desc = descriptorFor("application/octet-stream", randomBytes(10));
      const err = await target.fetch(desc).then((s) => readAll(s, 100, "x")).catch((e: unknown) => e);
      expect(isNotFound(err)).toBe(true);
      expect(isNotFound(await target.resolve("no-such-tag").catch((e: unknown) => e))).toBe(true);
    });

    it("resolves a manifest by digest and by tag, with exact bytes", async () => {
      const target = open();
      const { manifest, bytes } = await pushArtifact(target);
      expect(await target.resolve(manifest.digest)).toMatchObject({ digest: manifest.digest, size: manifest.size, mediaType: MediaType.ImageManifest });
      await target.tag(manifest, "v1");
      expect((await target.resolve("v1")).digest).toBe(manifest.digest);
      expect((await fetchBytes(target, manifest)).equals(bytes)).toBe(true);
      // Moving a tag points it at the new manifest.
      const second = await pushArtifact(target);
      await target.tag(second.manifest, "v1");
      expect((await target.resolve("v1")).digest).toBe(second.manifest.digest);
    });

    it("lists referrers of a manifest, filtered by artifact type", async () => {
      const target = open();
      const subject = (await pushArtifact(target)).manifest;
      const signature = await pushArtifact(target, { artifactType: "application/vnd.test.signature", subject });
      const other = await pushArtifact(target, { artifactType: "application/vnd.test.sbom", subject });
      for (const r of [signature, other]) {
        await target.indexReferrer(subject, { ...r.manifest, artifactType: JSON.parse(r.bytes.toString()).artifactType });
      }
      const all = await target.referrers(subject);
      expect(all.map((d) => d.digest).sort()).toEqual([signature.manifest.digest, other.manifest.digest].sort());
      const signatures = await target.referrers(subject, "application/vnd.test.signature");
      expect(signatures.map((d) => d.digest)).toEqual([signature.manifest.digest]);
      expect(await target.referrers((await pushArtifact(target)).manifest)).toEqual([]);
    });

    it("fetch, exists, resolve and copy reject with the reason of an aborted signal", async () => {
      const target = open();
      const { manifest, layer } = await pushArtifact(target);
      const signal = AbortSignal.abort(new Error("stopping"));
      await expect(target.fetch(layer, { signal }), "fetch").rejects.toThrow("stopping");
      await expect(target.exists(layer, { signal }), "exists").rejects.toThrow("stopping");
      await expect(target.resolve(manifest.digest, { signal }), "resolve").rejects.toThrow("stopping");
      await expect(copy(target, manifest.digest, new MemoryTarget(), undefined, { signal }), "copy").rejects.toThrow("stopping");
    });

    it("a manifest pushed with annotations on its descriptor (a ref.name, as a parent lists its children) is stored untagged", async () => {
      const target = open();
      const { layer } = await pushArtifact(target);
      const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: "application/vnd.test.child", config: EMPTY_CONFIG, layers: [layer] });
      const child = descriptorFor(MediaType.ImageManifest, bytes);
      // A parent's listing of a child is the source's word: it must not name tags here (a hostile one would name another artifact's referrers tag).
      await pushBytes(target, { ...child, annotations: { "org.opencontainers.image.ref.name": "sha256-planted.ref", note: "x" } }, bytes);
      expect(await target.tags(), "tags").toEqual([]);
      await expect(target.resolve("sha256-planted.ref"), "the annotation as a tag").rejects.toSatisfy(isNotFound);
      expect((await target.resolve(child.digest)).digest).toBe(child.digest);
    });

    it("lists every tag once, and none for an empty store", async () => {
      const target = open();
      expect(await target.tags(), "tags of an empty store").toEqual([]);
      const a = await pushArtifact(target);
      const b = await pushArtifact(target);
      await target.tag(a.manifest, "v1");
      await target.tag(a.manifest, "stable");
      await target.tag(b.manifest, "v2");
      await target.tag(b.manifest, "stable");
      expect((await target.tags()).sort()).toEqual(["stable", "v1", "v2"]);
      expect((await target.resolve("stable")).digest, "a moved tag").toBe(b.manifest.digest);
    });

    it("ends consistent after concurrent pushes and tags of the same and of different content", async () => {
      const target = open();
      const source = new MemoryTarget("writers");
      const shared = await pushArtifact(source);
      const distinct = await Promise.all(Array.from({ length: 4 }, () => pushArtifact(source)));
      // Eight writers at once: four copy the same artifact under their own
      // tag, four copy different ones; all of them also move one shared tag.
      const writers = [
        ...Array.from({ length: 4 }, (_, i) => ({ tag: `same-${i}`, digest: shared.manifest.digest })),
        ...distinct.map((d, i) => ({ tag: `diff-${i}`, digest: d.manifest.digest })),
      ];
      const results = await Promise.allSettled(
        writers.map(async (w) => {
          await copy(source, w.digest, target, w.tag);
          await copy(source, w.digest, target, "latest");
        }),
      );
      results.forEach((r, i) => expect(r.status, `writer ${writers[i]!.tag}: ${r.status === "rejected" ? String(r.reason) : ""}`).toBe("fulfilled"));
      const tags = await target.tags();
      expect([...tags].sort(), "every tag listed exactly once").toEqual([...writers.map((w) => w.tag), "latest"].sort());
      for (const w of writers) {
        const desc = await target.resolve(w.tag);
        expect(desc.digest, `tag ${w.tag}`).toBe(w.digest);
        expect((await fetchBytes(target, desc)).byteLength, `manifest of ${w.tag}`).toBe(desc.size);
      }
      expect(writers.map((w) => w.digest), "latest names one of the writers' manifests").toContain((await target.resolve("latest")).digest);
      for (const d of [shared, ...distinct]) {
        expect(await target.exists(d.layer), `layer ${d.layer.digest}`).toBe(true);
      }
    });

    if (capabilities.referencePusher) {
      const asPusher = capabilities.referencePusher;
      it("pushReference stores a manifest and its tag in one write; altered bytes store nothing and move no tag", async () => {
        const target = open();
        const first = await pushArtifact(target);
        await target.tag(first.manifest, "v1");
        const layerBytes = randomBytes(500);
        const layer = descriptorFor("application/octet-stream", layerBytes);
        await pushBytes(target, layer, layerBytes);
        const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: "application/vnd.test", config: EMPTY_CONFIG, layers: [layer] } satisfies Manifest);
        const manifest = descriptorFor(MediaType.ImageManifest, bytes);
        const altered = Buffer.from(bytes);
        altered[altered.length - 2] = altered[altered.length - 2]! ^ 0x01;
        await expect(asPusher(target).pushReference(manifest, Readable.from([altered]), "v1"), "altered bytes").rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
        expect((await target.resolve("v1")).digest, "the tag after a refused write").toBe(first.manifest.digest);
        expect(await target.exists(manifest), "the refused manifest").toBe(false);
        await asPusher(target).pushReference(manifest, Readable.from([bytes]), "v1");
        expect((await target.resolve("v1")).digest, "the tag").toBe(manifest.digest);
        expect((await fetchBytes(target, manifest)).equals(bytes), "the manifest by its digest").toBe(true);
      });
    }

    if (capabilities.deleter) {
      const asDeleter = capabilities.deleter;
      it("deletes a manifest with its tags, then a blob, and reports a second delete as not found", async () => {
        const target = open();
        const kept = await pushArtifact(target);
        const gone = await pushArtifact(target);
        await target.tag(kept.manifest, "kept");
        await target.tag(gone.manifest, "gone");
        await target.tag(gone.manifest, "gone-too");
        await asDeleter(target).delete(gone.manifest);
        expect(await target.exists(gone.manifest), "deleted manifest").toBe(false);
        expect(isNotFound(await target.resolve("gone").catch((e: unknown) => e)), "tag of a deleted manifest").toBe(true);
        expect(isNotFound(await target.resolve(gone.manifest.digest).catch((e: unknown) => e)), "digest of a deleted manifest").toBe(true);
        expect(await target.tags(), "tags after delete").toEqual(["kept"]);
        expect(await target.exists(gone.layer), "a layer outlives its manifest until deleted").toBe(true);
        await asDeleter(target).delete(gone.layer);
        expect(await target.exists(gone.layer), "deleted layer").toBe(false);
        expect(isNotFound(await target.fetch(gone.layer).catch((e: unknown) => e)), "fetch of a deleted layer").toBe(true);
        expect(isNotFound(await asDeleter(target).delete(gone.layer).catch((e: unknown) => e)), "second delete").toBe(true);
        expect((await target.resolve("kept")).digest, "other content is untouched").toBe(kept.manifest.digest);
        expect((await fetchBytes(target, kept.layer)).byteLength).toBe(kept.layer.size);
      });
    }

    if (capabilities.alterAtRest) {
      const alter = capabilities.alterAtRest;
      it("notices a blob altered at rest: fetch fails, exists says no, and a later copy repairs it", async () => {
        const source = new MemoryTarget("origin");
        const { manifest, layer } = await pushArtifact(source);
        const original = await fetchBytes(source, layer);
        const target = open();
        await copy(source, manifest.digest, target, "v1");
        await alter(target, layer);
        await expect(fetchBytes(target, layer), "fetch of the altered blob").rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
        expect(await target.exists(layer), "exists of the altered blob").toBe(false);
        await copy(source, manifest.digest, target, "v1");
        expect((await fetchBytes(target, layer)).equals(original), "blob after the repairing copy").toBe(true);
        expect(await target.exists(layer), "exists after the repairing copy").toBe(true);
      });
    }
  });
}
