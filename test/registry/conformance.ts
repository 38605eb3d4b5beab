// One conformance suite for every Target implementation, as distribution
// runs one storage-driver suite against each driver.
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  descriptorFor,
  EMPTY_CONFIG,
  encodeJson,
  isNotFound,
  MediaType,
  readAll,
  RegistryError,
  type Descriptor,
  type Manifest,
  type Target,
} from "../../registry/index.js";

const emptyConfig: Descriptor = { mediaType: EMPTY_CONFIG.mediaType, digest: EMPTY_CONFIG.digest, size: EMPTY_CONFIG.size };

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

export function targetConformance(name: string, open: () => Target): void {
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
  });
}
