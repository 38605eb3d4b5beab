// The referrers tag schema, for stores without the referrers API: an image
// index tagged `sha256-<hex>` lists the manifests that refer to sha256:<hex>.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#referrers-tag-schema
import { isNotFound, RegistryError } from "./errors.js";
import { descriptorFor, readAll } from "./digest.js";
import { encodeJson, MAX_MANIFEST_SIZE, MediaType, parseManifest, type Descriptor, type Index } from "./oci.js";
import type { Fetcher, Pusher, Resolver, Tagger } from "./storage.js";
import { Readable } from "node:stream";

type TagStore = Fetcher & Pusher & Resolver & Tagger & { readonly name: string };

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
 * schema has no compare-and-swap: a concurrent writer whose read came before
 * our write can replace the index without our entry. So every write carries
 * the union of all entries this call has ever seen (repairing others' losses
 * too), and we return only once the index has held everything we know on
 * three reads spaced apart, longer than another writer's read-to-write window.
 */
export async function addFallbackReferrer(store: TagStore, subject: Descriptor, referrer: Descriptor): Promise<void> {
  const tag = referrersTag(subject);
  const known = new Map<string, Descriptor>();
  let stable = 0;
  for (let attempt = 0; attempt < 60; attempt++) {
    const manifests = (await readFallbackIndex(store, subject))?.manifests ?? [];
    for (const d of manifests) if (!known.has(d.digest)) known.set(d.digest, d);
    // Already indexed before we started: nothing to write, nothing to watch.
    if (attempt === 0 && known.has(referrer.digest)) return;
    known.set(referrer.digest, known.get(referrer.digest) ?? referrer);
    const present = new Set(manifests.map((d) => d.digest));
    if ([...known.keys()].every((digest) => present.has(digest))) {
      if (++stable >= 3) return;
    } else {
      stable = 0;
      const next: Index = { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: [...manifests, ...[...known.values()].filter((d) => !present.has(d.digest))] };
      const bytes = encodeJson(next);
      const desc = descriptorFor(MediaType.ImageIndex, bytes);
      await store.push(desc, Readable.from([bytes]));
      await store.tag(desc, tag);
    }
    await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 200));
  }
  throw new RegistryError("LOCK_TIMEOUT", `could not add ${referrer.digest} to the referrers index ${tag} of ${store.name}: too many concurrent writers`);
}
