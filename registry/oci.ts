// OCI image-spec shapes the project reads and writes.
// https://github.com/opencontainers/image-spec/blob/main/manifest.md
// https://github.com/opencontainers/image-spec/blob/main/image-index.md
import { RegistryError } from "./errors.js";
import { quote } from "../util/index.js";
import { checkDigest } from "./digest.js";

export const MediaType = {
  ImageManifest: "application/vnd.oci.image.manifest.v1+json",
  ImageIndex: "application/vnd.oci.image.index.v1+json",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  Empty: "application/vnd.oci.empty.v1+json",
  PolicyArtifact: "application/vnd.aegis.policy.v1",
  PolicyLayer: "application/vnd.aegis.policy.layer.v1.tar+zstd",
} as const;

export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaType.ImageManifest,
  MediaType.ImageIndex,
  MediaType.DockerManifest,
  MediaType.DockerManifestList,
];

export function isManifestType(mediaType: string): boolean {
  return MANIFEST_MEDIA_TYPES.includes(mediaType);
}

export const Annotation = {
  Title: "org.opencontainers.image.title",
  Version: "org.opencontainers.image.version",
  Description: "org.opencontainers.image.description",
  Created: "org.opencontainers.image.created",
  RefName: "org.opencontainers.image.ref.name",
} as const;

/** The 2-byte `{}` config of artifacts: https://github.com/opencontainers/image-spec/blob/main/manifest.md#guidance-for-an-empty-descriptor */
export const EMPTY_CONFIG: Descriptor = {
  mediaType: MediaType.Empty,
  digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
  size: 2,
  data: "e30=",
};

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
  data?: string;
  urls?: string[];
  platform?: Record<string, unknown>;
}

export interface Manifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface Index {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** Largest manifest we accept; distribution's own limit is 4 MiB. */
export const MAX_MANIFEST_SIZE = 4 * 1024 * 1024;

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * A digest in the grammar of the spec, of an algorithm other than sha256
 * (whose encoding checkDigest checks); otherDigest takes one of at most 1 KiB.
 * https://github.com/opencontainers/image-spec/blob/main/descriptor.md#digests
 */
const OTHER_DIGEST = /^(?!sha256:)[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

function otherDigest(digest: string): boolean {
  return digest.length <= 1024 && OTHER_DIGEST.test(digest);
}

function checkDescriptor(value: unknown, where: string, otherAlgorithms = false): Descriptor {
  if (!isRecord(value) || typeof value.mediaType !== "string" || typeof value.digest !== "string" || typeof value.size !== "number" || !Number.isSafeInteger(value.size) || value.size < 0) {
    throw new RegistryError("INVALID_MANIFEST", `${where} is not a valid descriptor`);
  }
  if (!(otherAlgorithms && otherDigest(value.digest))) checkDigest(value.digest);
  return value as unknown as Descriptor;
}

export interface ParseOptions {
  /**
   * Takes an index's entries whose digest is of another algorithm than
   * sha256 (sha512, say): an OCI layout's index.json, which other tools
   * write too, stays readable with one; it can be listed and kept, never
   * fetched or verified (checkDigest refuses it there).
   */
  otherAlgorithms?: boolean;
}

/** Parses manifest or index bytes, checking the fields copy and pull rely on. */
export function parseManifest(bytes: Uint8Array, mediaType: string, options: ParseOptions = {}): Manifest | Index {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw new RegistryError("INVALID_MANIFEST", `manifest is not valid JSON`, { cause: err });
  }
  if (!isRecord(doc) || doc.schemaVersion !== 2) {
    throw new RegistryError("INVALID_MANIFEST", `manifest has no schemaVersion 2`);
  }
  if (typeof doc.mediaType === "string" && doc.mediaType !== mediaType) {
    throw new RegistryError("INVALID_MANIFEST", `manifest says mediaType ${quote(doc.mediaType)}, its descriptor says ${mediaType}`);
  }
  if (doc.subject !== undefined) checkDescriptor(doc.subject, "manifest subject");
  if (mediaType === MediaType.ImageIndex || mediaType === MediaType.DockerManifestList) {
    if (!Array.isArray(doc.manifests)) throw new RegistryError("INVALID_MANIFEST", "index has no manifests list");
    doc.manifests.forEach((m, i) => checkDescriptor(m, `manifests[${i}]`, options.otherAlgorithms));
    return doc as unknown as Index;
  }
  checkDescriptor(doc.config, "manifest config");
  if (!Array.isArray(doc.layers)) throw new RegistryError("INVALID_MANIFEST", "manifest has no layers list");
  doc.layers.forEach((l, i) => checkDescriptor(l, `layers[${i}]`));
  // An image manifest's children are its config and layers: a "manifests" list in one is an unknown field, which
  // the spec says to ignore (successors() must not take it, unchecked, for an index's).
  const { manifests: _ignored, ...manifest } = doc;
  return manifest as unknown as Manifest;
}

/**
 * The well-formed descriptors of a referrers list (the referrers API's answer
 * or a fallback index), parsed from JSON. A malformed entry (null, a bad
 * digest) is skipped, never fatal: one broken referrer must not hide a good
 * signature beside it.
 */
export function referrerEntries(doc: unknown): Descriptor[] {
  if (!isRecord(doc) || !Array.isArray(doc.manifests)) return [];
  return doc.manifests.flatMap((entry, i) => {
    try {
      return [checkDescriptor(entry, `manifests[${i}]`)];
    } catch {
      return [];
    }
  });
}

/** The nodes a manifest points at (not its subject), in push order. */
export function successors(doc: Manifest | Index): Descriptor[] {
  return "manifests" in doc ? doc.manifests : [doc.config, ...doc.layers];
}

/** The descriptor of a referrer as listed in a referrers index. */
export function referrerDescriptor(desc: Descriptor, doc: Manifest | Index): Descriptor {
  const artifactType = doc.artifactType ?? ("config" in doc ? doc.config.mediaType : undefined);
  return {
    mediaType: desc.mediaType,
    digest: desc.digest,
    size: desc.size,
    ...(artifactType ? { artifactType } : {}),
    ...(doc.annotations ? { annotations: doc.annotations } : {}),
  };
}

/** Serializes JSON we create ourselves. Manifests read from elsewhere are never re-serialized. */
export function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), "utf8");
}
