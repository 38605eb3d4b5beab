// The referrers tag schema, for stores without the referrers API: an image
// index tagged `sha256-<hex>` lists the manifests that refer to sha256:<hex>.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#referrers-tag-schema
import { isNotFound } from "./errors.js";
import { descriptorFor, readAll } from "./digest.js";
import { encodeJson, MAX_MANIFEST_SIZE, MediaType, parseManifest, type Descriptor, type Index } from "./oci.js";
import type { Fetcher, Pusher, Resolver, Tagger } from "./storage.js";
import { Readable } from "node:stream";

type TagStore = Fetcher & Pusher & Resolver & Tagger;

export function referrersTag(subject: Descriptor): string {
  return subject.digest.replace(":", "-");
}

async function readFallbackIndex(store: TagStore, subject: Descriptor): Promise<Index | undefined> {
  let desc: Descriptor;
  try {
    desc = await store.resolve(referrersTag(subject));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  const bytes = await readAll(await store.fetch(desc), MAX_MANIFEST_SIZE, "referrers index");
  const doc = parseManifest(bytes, desc.mediaType);
  return "manifests" in doc ? doc : undefined;
}

export async function fallbackReferrers(store: TagStore, subject: Descriptor, artifactType?: string): Promise<Descriptor[]> {
  const index = await readFallbackIndex(store, subject);
  const all = index?.manifests ?? [];
  return artifactType ? all.filter((d) => d.artifactType === artifactType) : all;
}

/**
 * Adds `referrer` to the subject's fallback index (read-modify-write). The
 * schema has no compare-and-swap, so after writing we read back, and write
 * again if a concurrent writer replaced the index without our entry.
 */
export async function addFallbackReferrer(store: TagStore, subject: Descriptor, referrer: Descriptor): Promise<void> {
  const tag = referrersTag(subject);
  for (let attempt = 0; attempt < 8; attempt++) {
    const index = await readFallbackIndex(store, subject);
    const manifests = index?.manifests ?? [];
    if (manifests.some((d) => d.digest === referrer.digest)) return;
    {
      const next: Index = { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: [...manifests, referrer] };
      const bytes = encodeJson(next);
      const desc = descriptorFor(MediaType.ImageIndex, bytes);
      await store.push(desc, Readable.from([bytes]));
      await store.tag(desc, tag);
    }
    // Give a concurrent writer's tag update time to land before re-reading.
    await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 80));
  }
}
