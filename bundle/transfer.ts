// Push and pull of policy artifacts, both through registry/copy.
import {
  copy,
  MAX_MANIFEST_SIZE,
  MediaType,
  MemoryTarget,
  parseManifest,
  readAll,
  type AbortOptions,
  type CopyOptions,
  type Descriptor,
  type Manifest,
  type ReadOnlyStorage,
  type ReadOnlyTarget,
  type Target,
} from "../registry/index.js";
import { packArtifact, storeArtifact, type PackedArtifact } from "./artifact.js";
import { decodeBundle, type Bundle } from "./build.js";
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

export interface PulledArtifact {
  manifest: Descriptor;
  layer: Descriptor;
  annotations: Record<string, string>;
  bundle: Bundle;
}

/** Reads an artifact's manifest from `store` and checks it is an Aegis policy. */
export async function readPolicyManifest(store: ReadOnlyStorage, desc: Descriptor, options: AbortOptions = {}): Promise<{ manifest: Manifest; layer: Descriptor }> {
  const bytes = await readAll(await store.fetch(desc, options), MAX_MANIFEST_SIZE, `manifest ${desc.digest}`);
  const doc = parseManifest(bytes, desc.mediaType);
  if ("manifests" in doc || doc.artifactType !== MediaType.PolicyArtifact) {
    const type = "manifests" in doc ? "an index" : (doc.artifactType ?? doc.config.mediaType);
    throw new BundleError("NOT_A_POLICY", `${desc.digest} is not an Aegis policy artifact (it is ${type})`);
  }
  const layer = doc.layers.find((l) => l.mediaType === MediaType.PolicyLayer);
  if (!layer) throw new BundleError("NOT_A_POLICY", `${desc.digest} has no ${MediaType.PolicyLayer} layer`);
  return { manifest: doc, layer };
}

/** Largest policy layer (a tar.zst) fetched: the bundle's decompressed cap plus zstd framing. */
const MAX_LAYER_SIZE = BUNDLE_LIMITS.maxTotalSize + 64 * 1024;

/**
 * Copies the artifact that `reference` names from `src` into `cache` (every
 * byte verified on the way), then decodes its bundle from the cache. The
 * root manifest is read first: anything but an Aegis policy (an index with
 * thousands of children, an image) and a layer over the bundle cap are
 * refused before a byte is written. `options.signal` cancels the whole pull.
 */
export async function pullBundle(src: ReadOnlyTarget, reference: string, cache: Target, options: CopyOptions = {}): Promise<PulledArtifact> {
  const { signal } = options;
  const desc = await src.resolve(reference, { signal });
  const checked = await readPolicyManifest(src, desc, { signal });
  const total = [checked.manifest.config, ...checked.manifest.layers].reduce((sum, d) => sum + d.size, 0);
  if (total > MAX_LAYER_SIZE) {
    throw new BundleError("BUNDLE_TOO_LARGE", `${src.name}@${desc.digest}: its layers claim ${total} bytes, over the bundle cap of ${MAX_LAYER_SIZE}`);
  }
  // By digest, so what is copied is what was just checked even if the tag moves.
  const root = await copy(src, desc.digest, cache, undefined, options);
  const { manifest, layer } = await readPolicyManifest(cache, root, { signal });
  const bundle = await decodeBundle(await cache.fetch(layer, { signal }), `${src.name}@${root.digest}`);
  return { manifest: root, layer, annotations: manifest.annotations ?? {}, bundle };
}
