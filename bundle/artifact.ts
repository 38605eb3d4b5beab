// A bundle as an OCI artifact (docs/architecture.md "Formats and media types"): an image manifest
// with artifactType application/vnd.aegis.policy.v1, the empty config and
// one layer, shaped as `oras push --artifact-type` makes it. The manifest
// has no timestamps, so the same bundle always gives the same digest.
// https://github.com/opencontainers/image-spec/blob/main/manifest.md#guidelines-for-artifact-usage
import { Readable } from "node:stream";
import { Annotation, descriptorFor, EMPTY_CONFIG, encodeJson, MediaType, storeEmptyConfig, type Descriptor, type Manifest, type Target } from "../registry/index.js";
import type { Policy } from "../policy/index.js";

export const LAYER_TITLE = "policy.tar.zst";

/** Policy facts the assigner serves as the seed's `metadata`, carried as annotations. */
export const PolicyAnnotation = {
  Type: "dev.aegis.policy.type",
  Direction: "dev.aegis.policy.direction",
  Protocol: "dev.aegis.policy.protocol",
  TargetIp: "dev.aegis.policy.target_ip",
  Rules: "dev.aegis.policy.rules",
  Program: "dev.aegis.policy.program",
} as const;

export interface PackedArtifact {
  manifest: Descriptor;
  manifestBytes: Buffer;
  layer: Descriptor;
}

/** The manifest annotations Aegis writes for a policy: the seed's fields and metadata. */
export function policyAnnotations(policy: Policy): Record<string, string> {
  const actions = new Set(policy.rules.map((r) => r.action));
  const protocols = [...new Set(policy.rules.map((r) => r.protocol))].sort();
  const firstDst = policy.rules.find((r) => r.dst)?.dst;
  return {
    [Annotation.Title]: policy.name,
    [Annotation.Version]: policy.version,
    [Annotation.Description]: policy.description,
    [PolicyAnnotation.Type]: actions.size === 1 && actions.has("drop") ? "network_block" : actions.size === 1 ? "network_allow" : "network_mixed",
    [PolicyAnnotation.Direction]: policy.attach.direction,
    [PolicyAnnotation.Protocol]: protocols.join(","),
    ...(firstDst ? { [PolicyAnnotation.TargetIp]: firstDst.replace(/\/(32|128)$/, "") } : {}),
    [PolicyAnnotation.Rules]: String(policy.rules.length),
    [PolicyAnnotation.Program]: policy.program,
  };
}

export function packArtifact(bundleBytes: Buffer, policy: Policy): PackedArtifact {
  return packArtifactFor(descriptorFor(MediaType.PolicyLayer, bundleBytes), policy);
}

/** The artifact of a bundle known by its digest and size (hashed as it streamed from a file), not its bytes. */
export function packArtifactFor(bundle: Pick<Descriptor, "digest" | "size">, policy: Policy): PackedArtifact {
  const layer: Descriptor = {
    mediaType: MediaType.PolicyLayer,
    digest: bundle.digest,
    size: bundle.size,
    annotations: { [Annotation.Title]: LAYER_TITLE },
  };
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType: MediaType.PolicyArtifact,
    config: EMPTY_CONFIG,
    layers: [layer],
    annotations: policyAnnotations(policy),
  };
  const manifestBytes = encodeJson(manifest);
  return { manifest: descriptorFor(MediaType.ImageManifest, manifestBytes), manifestBytes, layer };
}

/** Stores the artifact's blobs and manifest in `target` (typically a MemoryTarget to copy from). */
export async function storeArtifact(target: Target, bundleBytes: Buffer, artifact: PackedArtifact): Promise<void> {
  await target.push(artifact.layer, Readable.from([bundleBytes]));
  await storeManifest(target, artifact);
}

/** Stores the artifact's empty config and manifest, not its layer (a bundle file's layer goes to the destination on its own). */
export async function storeManifest(target: Target, artifact: PackedArtifact): Promise<void> {
  await storeEmptyConfig(target);
  await target.push(artifact.manifest, Readable.from([artifact.manifestBytes]));
}
