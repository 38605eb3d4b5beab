// The referrers tag schema, for stores without the referrers API: an image
// index tagged `sha256-<hex>` lists the manifests that refer to sha256:<hex>.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#referrers-tag-schema
import { backoffDelay, sleep } from "../util/index.js";
import { isNotFound, RegistryError } from "./errors.js";
import { descriptorFor, readAll } from "./digest.js";
import { encodeJson, MAX_MANIFEST_SIZE, MediaType, parseManifest, referrerDescriptor, referrerEntries, type Descriptor, type Index } from "./oci.js";
import type { AbortOptions, Fetcher, Pusher, Resolver, Tagger } from "./storage.js";
import { Readable } from "node:stream";

type TagStore = Fetcher & Pusher & Resolver & Tagger & { readonly name: string };

export function referrersTag(subject: Descriptor): string {
  return subject.digest.replace(":", "-");
}

/** The fallback index's well-formed entries (referrerEntries: a malformed one is skipped), or none when there is no index. */
async function readFallbackIndex(store: TagStore, subject: Descriptor, options: AbortOptions = {}): Promise<Descriptor[] | undefined> {
  let desc: Descriptor;
  try {
    desc = await store.resolve(referrersTag(subject), options);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  const bytes = await readAll(await store.fetch(desc, options), MAX_MANIFEST_SIZE, "referrers index");
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw new RegistryError("INVALID_MANIFEST", `referrers index ${desc.digest} in ${store.name} is not valid JSON`, { cause: err });
  }
  return referrerEntries(doc);
}

export async function fallbackReferrers(store: TagStore, subject: Descriptor, artifactType?: string, options: AbortOptions = {}): Promise<Descriptor[]> {
  const all = (await readFallbackIndex(store, subject, options)) ?? [];
  return artifactType ? all.filter((d) => d.artifactType === artifactType) : all;
}

/**
 * The tag that marks one referrer of `subject`: sha256-<subject hex>.<first
 * 32 hex of the referrer's digest>.ref. Tags are separate keys in every
 * registry, so concurrent writers adding different tags never lose one.
 */
export function referrerMarkTag(subject: Descriptor, referrer: Descriptor): string {
  return `${referrersTag(subject)}.${referrer.digest.slice("sha256:".length, "sha256:".length + 32)}.ref`;
}

/**
 * Adds `referrer` to the subject's fallback index. The index is a
 * read-modify-write with no compare-and-swap, so a writer whose read was
 * stale can drop another's entry. Each referrer is therefore first marked by
 * its own tag (referrerMarkTag); then a writer writes the index until a read
 * made after its last write shows every marked referrer in it. Whoever
 * writes last thus repairs what any stale writer dropped.
 */
export async function addFallbackReferrer(store: TagStore, subject: Descriptor, referrer: Descriptor): Promise<void> {
  await store.tag(referrer, referrerMarkTag(subject, referrer));
  const prefix = `${referrersTag(subject)}.`;
  const known = new Map<string, Descriptor>([[referrer.digest, referrer]]);
  // What each mark resolved to (undefined: nothing yet), kept across attempts:
  // a store whose index writes never stick would otherwise have every mark (up
  // to a tag list's 100,000) resolved again on each of the 100 attempts.
  const resolved = new Map<string, Descriptor | undefined>();
  const resolveMark = async (mark: string): Promise<Descriptor | undefined> => {
    const found = await store.resolve(mark).catch((err: unknown) => {
      if (isNotFound(err)) return undefined;
      throw err;
    });
    resolved.set(mark, found);
    return found;
  };
  for (let attempt = 0; attempt < 100; attempt++) {
    const manifests = (await readFallbackIndex(store, subject)) ?? [];
    const present = new Set(manifests.map((d) => d.digest));
    // A mark names its referrer by the first 128 bits of its digest: one already indexed needs no resolve.
    const indexed = new Set(manifests.map((d) => referrerMarkTag(subject, d)));
    const marks = (await store.tags()).filter((t) => t.startsWith(prefix) && t.endsWith(".ref") && !indexed.has(t));
    const missing: Descriptor[] = [];
    const add = async (desc: Descriptor | undefined): Promise<void> => {
      if (!desc || present.has(desc.digest)) return;
      let entry = known.get(desc.digest);
      if (!entry) {
        const doc = parseManifest(await readAll(await store.fetch(desc), MAX_MANIFEST_SIZE, `referrer ${desc.digest}`), desc.mediaType);
        entry = referrerDescriptor(desc, doc);
        known.set(desc.digest, entry);
      }
      missing.push(entry);
    };
    const absentBefore: string[] = [];
    for (const mark of marks) {
      if (!resolved.has(mark)) await add(await resolveMark(mark));
      else if (resolved.get(mark)) await add(resolved.get(mark));
      else absentBefore.push(mark);
    }
    // A registry may list a tag whose write is still under way; its writer
    // has yet to run this loop and will index it then. That holds only for a
    // mark still absent after our last write (a writer that began earlier may
    // have finished before a stale write of ours dropped its entry), so a mark
    // absent in an earlier attempt is asked again by the check that would end
    // the call, and only by it.
    if (missing.length === 0) for (const mark of absentBefore) await add(await resolveMark(mark));
    if (missing.length === 0) return;
    const next: Index = { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: [...manifests, ...missing] };
    const bytes = encodeJson(next);
    const desc = descriptorFor(MediaType.ImageIndex, bytes);
    await store.push(desc, Readable.from([bytes]));
    await store.tag(desc, referrersTag(subject));
    // Spread out writers that collided, so one of them settles the index.
    await sleep(backoffDelay(1, { baseMs: 100, maxMs: 100 }));
  }
  throw new RegistryError("LOCK_TIMEOUT", `could not add ${referrer.digest} to the referrers index ${referrersTag(subject)} of ${store.name}: too many concurrent writers`);
}
