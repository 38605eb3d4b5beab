// Push and pull of policy artifacts, both through registry/copy (a bundle
// file's layer and the empty config through the destination's Ingester first).
import { open } from "node:fs/promises";
import { PassThrough, type Readable } from "node:stream";
import {
  copy,
  EMPTY_CONFIG,
  ingestEmptyConfig,
  isNotFound,
  MAX_MANIFEST_SIZE,
  MediaType,
  MemoryTarget,
  parseManifest,
  readAll,
  type AbortOptions,
  type CopyEvent,
  type CopyOptions,
  type Deleter,
  type Descriptor,
  type Ingester,
  type Manifest,
  type ReadOnlyTarget,
  type Target,
} from "../registry/index.js";
import { InputError } from "../errors.js";
import { quote } from "../util/index.js";
import { packArtifact, packArtifactFor, storeArtifact, storeManifest, type PackedArtifact } from "./artifact.js";
import { land } from "./landing.js";
import { readBundlePolicy, unpackBundle, type Unpacked } from "./read.js";
import { BundleError } from "./errors.js";
import { BUNDLE_LIMITS } from "./tar.js";
import type { Policy } from "../policy/index.js";

/** Pushes a bundle as an artifact to `dst`, tagged `tag` if given. */
export async function pushBundle(bytes: Buffer, policy: Policy, dst: Target, tag?: string, options?: CopyOptions): Promise<PackedArtifact> {
  const artifact = packArtifact(bytes, policy);
  const staging = new MemoryTarget("bundle");
  await storeArtifact(staging, bytes, artifact);
  await copy(staging, artifact.manifest.digest, dst, tag, options);
  return artifact;
}

/**
 * Bytes read from a bundle file at a time. createReadStream's default of
 * 64 KiB made a 50 MiB push take ~0.42 s instead of ~0.36 s (each chunk a
 * round trip through libuv's thread pool, the tee and the socket); 256 KiB
 * was no faster than 128 KiB and peaked 2-3 MiB higher, and 512 KiB at
 * 80-88 MiB (its spent chunks outlive the minor GCs of util/spent-buffers.ts).
 */
const READ_BUFFER = 128 * 1024;

/**
 * Pushes a bundle file as an artifact, reading it once. Its bytes stream
 * from disk both into the bundle reader, which checks the bundle (zstd, the
 * strict tar reader, the caps) and validates its policy, the only part held
 * in memory, and into `dst`'s Ingester, which hashes and writes them. The
 * layer is committed under the digest learned only once the bundle has
 * proved valid: a bad bundle, a file that changes size as it is read, or an
 * abort drops the write, and nothing is stored. The empty config goes up
 * beside it the same way (its upload opened at the start, committed first,
 * so a failed commit of it stores no layer), and the manifest follows
 * through `copy`, told both are stored. `onProgress` counts the
 * file's bytes as they are read (and sent: the upload paces the reading) of
 * its size; `onEvent` sees copy's events.
 */
export async function pushBundleFile(path: string, dst: Target & Ingester, tag?: string, options: CopyOptions = {}): Promise<{ artifact: PackedArtifact; policy: Policy }> {
  const { signal, onProgress } = options;
  // Opened before anything else: a file that stat() can see but this user cannot read is the user's input, named.
  const handle = await open(path, "r").catch((err: unknown) => {
    throw new InputError("FILE_NOT_FOUND", `${path}: cannot read bundle file`, { cause: err });
  });
  let size: number;
  try {
    size = (await handle.stat()).size;
    // What pull would refuse is not sent.
    if (size > MAX_LAYER_SIZE) throw new BundleError("BUNDLE_TOO_LARGE", `${path} is ${size} bytes, over the bundle cap of ${MAX_LAYER_SIZE}`);
  } catch (err) {
    await handle.close();
    throw err;
  }
  // The size and the bytes come from the same open file.
  const file = handle.createReadStream({ highWaterMark: READ_BUFFER, signal });
  let read = 0;
  if (onProgress) file.on("data", (chunk: string | Buffer) => onProgress((read += chunk.length), size));
  const [toUpload, toDecode] = tee(file);
  const written = dst.ingest(MediaType.PolicyLayer, size, toUpload, { signal }).catch((err: unknown) => {
    // Nothing will take the bytes any more: stop reading them.
    file.destroy();
    toDecode.destroy(err as Error);
    throw err;
  });
  // Whatever the reader leaves unread once it is done flows on, so the upload always gets every byte;
  // a bad bundle stops the file, so the upload breaks off (and is cancelled) instead of sending the rest.
  const decoded = readBundlePolicy(toDecode, path).then(
    (policy) => (toDecode.resume(), policy),
    (err: unknown) => {
      file.destroy(err as Error);
      throw err;
    },
  );
  // The empty config's upload goes beside the layer's, and both are committed together once the bundle has proved valid.
  const configWritten = ingestEmptyConfig(dst, { signal });
  const [ingest, decode, config] = await Promise.allSettled([written, decoded, configWritten]);
  file.destroy();
  if (ingest.status === "rejected" || decode.status === "rejected" || config.status === "rejected" || signal?.aborted) {
    // Both undone (best effort) before the error is reported; an abort that fails does not hide the error that caused it.
    await Promise.allSettled([ingest, config].map((outcome) => (outcome.status === "fulfilled" ? outcome.value?.abort() : undefined)));
    signal?.throwIfAborted();
    // The bundle's own fault first: a bad bundle also fails the upload it stopped.
    throw [decode, ingest, config].find((outcome): outcome is PromiseRejectedResult => outcome.status === "rejected")!.reason;
  }
  // The empty config first: if its commit fails, the layer's upload is dropped and no blob is stored that nothing names.
  await config.value?.commit().catch(async (err: unknown) => {
    await ingest.value.abort().catch(() => {});
    throw err;
  });
  await ingest.value.commit();
  const artifact = packArtifactFor(ingest.value.desc, decode.value);
  const staging = new MemoryTarget("bundle");
  await storeManifest(staging, artifact);
  await copy(staging, artifact.manifest.digest, dst, tag, { ...options, onProgress: undefined, stored: [artifact.layer, EMPTY_CONFIG] });
  return { artifact, policy: decode.value };
}

/**
 * Two streams of `content`'s bytes, read once: it flows at the pace of the
 * slower branch. A failure of `content` fails both; each branch's consumer
 * reports what goes wrong, so nothing is also an uncaught event.
 */
function tee(content: Readable): [Readable, Readable] {
  const branches: [PassThrough, PassThrough] = [new PassThrough(), new PassThrough()];
  for (const branch of branches) branch.on("error", () => {});
  content.on("error", (err) => {
    for (const branch of branches) branch.destroy(err);
  });
  for (const branch of branches) content.pipe(branch);
  return branches;
}

export interface PulledArtifact {
  manifest: Descriptor;
  layer: Descriptor;
  annotations: Record<string, string>;
  policy: Policy;
  /** The files written into the output directory. */
  files: string[];
  /** The layer was in the cache (and verified again as it was unpacked). */
  cached: boolean;
}

/**
 * Reads an artifact's manifest from `store` and checks it is an Aegis policy
 * whose layers fit the bundle cap: a layer over it is refused before a byte
 * of it is fetched.
 */
export async function readPolicyManifest(store: ReadOnlyTarget, desc: Descriptor, options: AbortOptions = {}): Promise<{ manifest: Manifest; layer: Descriptor }> {
  const where = `${store.name}@${desc.digest}`;
  const bytes = await readAll(await store.fetch(desc, options), MAX_MANIFEST_SIZE, `manifest ${desc.digest}`);
  const doc = parseManifest(bytes, desc.mediaType);
  if ("manifests" in doc || doc.artifactType !== MediaType.PolicyArtifact) {
    const type = "manifests" in doc ? "an index" : quote(doc.artifactType ?? doc.config.mediaType);
    throw new BundleError("NOT_A_POLICY", `${desc.digest} is not an Aegis policy artifact (it is ${type})`);
  }
  const layer = doc.layers.find((l) => l.mediaType === MediaType.PolicyLayer);
  if (!layer) throw new BundleError("NOT_A_POLICY", `${desc.digest} has no ${MediaType.PolicyLayer} layer`);
  const total = [doc.config, ...doc.layers].reduce((sum, d) => sum + d.size, 0);
  if (total > MAX_LAYER_SIZE) {
    throw new BundleError("BUNDLE_TOO_LARGE", `${where}: its layers claim ${total} bytes, over the bundle cap of ${MAX_LAYER_SIZE}`);
  }
  return { manifest: doc, layer };
}

export interface PullOptions extends CopyOptions {
  /** Called once the manifest names the policy layer, before a byte of it is read (from the cache or the source). */
  onLayer?: (layer: Descriptor) => void;
}

/** Largest policy layer (a tar.zst) fetched: the bundle's decompressed cap plus zstd framing. */
const MAX_LAYER_SIZE = BUNDLE_LIMITS.maxTotalSize + 64 * 1024;

/**
 * Pulls the artifact that `reference` names from `src` and writes its files
 * into `output`. The root manifest is read first: anything but an Aegis
 * policy (an index with thousands of children, an image) and a layer over
 * the bundle cap are refused before a byte is written. The layer streams
 * through hashing, zstd and the tar reader straight into files, in a temp
 * directory moved into place only once the digest has been verified
 * (landing.ts): nothing unverified is left, and memory stays bounded
 * whatever the size.
 *
 * A layer already in `cache` is read from it once, hashed as it is unpacked:
 * that one pass is the re-verification (nothing is trusted for its name, size
 * or date). A cached layer that no longer matches its digest is deleted and
 * fetched again. Otherwise `copy` brings the artifact into the cache and the
 * layer is unpacked as it is stored, from the same bytes, which the cache's
 * push verifies. `options.signal` cancels the whole pull.
 */
export async function pullBundle(src: ReadOnlyTarget, reference: string, cache: Target & Deleter, output: string, options: PullOptions = {}): Promise<PulledArtifact> {
  const { signal, onLayer } = options;
  const desc = await src.resolve(reference, { signal });
  const { manifest, layer } = await readPolicyManifest(src, desc, { signal });
  onLayer?.(layer);
  const where = `${src.name}@${desc.digest}`;
  const result = (unpacked: Unpacked, cached: boolean): PulledArtifact => ({ manifest: desc, layer, annotations: manifest.annotations ?? {}, ...unpacked, cached });

  // The cache is asked first: a miss costs no temp directory.
  const cached = await cache.fetch(layer, { signal }).catch((err: unknown) => {
    if (isNotFound(err)) return undefined;
    throw err;
  });
  const hit =
    cached &&
    (await land(output, async (dir) => {
      try {
        return await unpackBundle(cached, dir, where);
      } catch (err) {
        if (!AT_REST.has((err as { code?: string }).code ?? "")) throw err;
        await cache.delete(layer);
        return undefined;
      }
    }).finally(() => cached.destroy()));
  if (hit) return result(hit, true);

  const fetched = await land(output, async (dir) => {
    const target = new UnpackingTarget(cache, layer, (content) => unpackBundle(content, dir, where));
    // By digest, so what is copied is what was just checked even if the tag moves.
    await copy(src, desc.digest, target, undefined, { ...options, onEvent: (event) => (whileWaiting(event, layer), options.onEvent?.(event)) });
    return target.unpacked ?? missingLayer(where);
  });
  return result(fetched, false);
}

/** Layers below this size load the policy checks' code while the registry answers (whileWaiting); larger ones after the download. */
export const PRELOAD_BELOW = 8 * 1024 * 1024;

/**
 * Once the small layer's request is on its way (setImmediate: after the
 * event loop's I/O phase wrote it), the policy checks' code (zod's core,
 * ~7 ms to load) loads while the registry answers, instead of after the
 * download. A large layer leaves it for after (read.ts): its memory is not
 * resident while the bulk of a pull flows.
 */
function whileWaiting(event: CopyEvent, layer: Descriptor): void {
  if (event.kind !== "start" || event.desc.digest !== layer.digest || layer.size >= PRELOAD_BELOW) return;
  setImmediate(() => void import("../policy/policy.js").catch(() => undefined));
}

/** A cached blob that fails verification: altered at rest, to be fetched again. */
const AT_REST = new Set(["DIGEST_MISMATCH", "SIZE_MISMATCH"]);

function missingLayer(where: string): never {
  throw new BundleError("NOT_A_POLICY", `${where}: copy did not store the policy layer`);
}

/**
 * The cache as copy()'s destination, except that the policy layer is also
 * unpacked while it is stored: the bytes go both to the cache's push (which
 * verifies them) and to the unpacker, so they are fetched and hashed once.
 * The unpacked files count only when the push succeeded.
 */
class UnpackingTarget implements Target {
  readonly name: string;
  unpacked: Unpacked | undefined;

  constructor(
    private readonly cache: Target,
    private readonly layer: Descriptor,
    private readonly unpack: (content: Readable) => Promise<Unpacked>,
  ) {
    this.name = cache.name;
  }

  async push(desc: Descriptor, content: Readable, options?: AbortOptions): Promise<void> {
    if (desc.digest !== this.layer.digest) return this.cache.push(desc, content, options);
    const [toCache, toUnpack] = tee(content);
    const stored = this.cache.push(desc, toCache, options).catch((err: unknown) => {
      // Not the bundle: stop unpacking it.
      content.destroy();
      toUnpack.destroy(err as Error);
      throw err;
    });
    // The unpacker reads its copy to the end even when the content is bad, so the push always finishes.
    const [pushed, unpacked] = await Promise.allSettled([stored, this.unpack(toUnpack)]);
    if (pushed.status === "rejected") throw pushed.reason;
    if (unpacked.status === "rejected") throw unpacked.reason;
    this.unpacked = unpacked.value;
  }

  /** The layer is fetched even if stored (the caller found it missing or altered): everything else as the cache says. */
  exists(desc: Descriptor, options?: AbortOptions): Promise<boolean> {
    return desc.digest === this.layer.digest ? Promise.resolve(false) : this.cache.exists(desc, options);
  }

  fetch(desc: Descriptor, options?: AbortOptions): Promise<Readable> {
    return this.cache.fetch(desc, options);
  }

  resolve(reference: string, options?: AbortOptions): Promise<Descriptor> {
    return this.cache.resolve(reference, options);
  }

  tags(options?: AbortOptions): Promise<string[]> {
    return this.cache.tags(options);
  }

  tag(desc: Descriptor, tag: string): Promise<void> {
    return this.cache.tag(desc, tag);
  }

  referrers(subject: Descriptor, artifactType?: string, options?: AbortOptions): Promise<Descriptor[]> {
    return this.cache.referrers(subject, artifactType, options);
  }

  indexReferrer(subject: Descriptor, referrer: Descriptor): Promise<void> {
    return this.cache.indexReferrer(subject, referrer);
  }
}
