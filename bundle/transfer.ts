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

/**
 * Copies the artifact that `reference` names from `src` into `cache` (every
 * byte verified on the way), then decodes its bundle from the cache.
 * `options.signal` cancels the whole pull.
 */
export async function pullBundle(src: ReadOnlyTarget, reference: string, cache: Target, options: CopyOptions = {}): Promise<PulledArtifact> {
  const root = await copy(src, reference, cache, undefined, options);
  const { signal } = options;
  const { manifest, layer } = await readPolicyManifest(cache, root, { signal });
  const bundle = await decodeBundle(await cache.fetch(layer, { signal }), `${src.name}@${root.digest}`);
  return { manifest: root, layer, annotations: manifest.annotations ?? {}, bundle };
}
