// Artifacts as the assigner sees them: registered from a registry reference
// (or pushed from the seed's base64 upload), described in the seed's JSON,
// and streamed to agents from the registry, verified on the way.
import { Readable } from "node:stream";
import { decodeBundle, PolicyAnnotation, pushBundle, readPolicyManifest } from "../bundle/index.js";
import { AegisError } from "../errors.js";
import {
  formatReference,
  isNotFound,
  MediaType,
  openReference,
  RegistryError,
  sha256,
  type Descriptor,
  type RepositoryOptions,
  type Target,
} from "../registry/index.js";
import { SignatureError, verifyArtifact, type TrustPolicy } from "../signing/index.js";
import { AssignerError } from "./errors.js";
import type { ArtifactRecord } from "./store/store.js";
import type { z } from "zod";
import type { ArtifactJson, RegisterArtifactUpload } from "./schemas.js";

export interface ArtifactSourceOptions {
  /** Where uploads go: host/repo or oci:<dir>. */
  uploadRepository: string;
  trust?: TrustPolicy;
  registryOptions?: RepositoryOptions;
}

/** The seed's metadata keys, from the artifact's annotations (bundle/artifact.ts). */
const METADATA_KEYS: Record<string, string> = {
  [PolicyAnnotation.Type]: "policy_type",
  [PolicyAnnotation.TargetIp]: "target_ip",
  [PolicyAnnotation.Protocol]: "protocol",
  [PolicyAnnotation.Direction]: "direction",
  [PolicyAnnotation.Rules]: "rules",
  [PolicyAnnotation.Program]: "program",
};

export function toArtifactJson(record: ArtifactRecord): z.infer<typeof ArtifactJson> {
  return {
    id: record.id,
    name: record.name,
    version: record.version,
    description: record.description,
    signature: record.signature,
    size: record.size,
    checksum: record.layerDigest.replace(":", "-"),
    metadata: record.metadata,
    reference: record.reference,
  };
}

/** Registry failures as HTTP answers: unknown content is the caller's 4xx, an unreachable registry a 502. */
function asHttpError(err: unknown, what: string): never {
  if (err instanceof AssignerError) throw err;
  if (isNotFound(err)) throw new AssignerError("NOT_FOUND", `${what}: ${(err as Error).message}`, { cause: err });
  if (err instanceof RegistryError && (err.code === "DIGEST_MISMATCH" || err.code === "SIZE_MISMATCH")) {
    throw new AssignerError("BAD_GATEWAY", `${what}: registry content failed verification: ${err.message}`, { cause: err });
  }
  if (err instanceof RegistryError) throw new AssignerError("BAD_GATEWAY", `${what}: ${err.message}`, { cause: err });
  if (err instanceof AegisError) throw new AssignerError("BAD_REQUEST", `${what}: ${err.message}`, { cause: err });
  throw err;
}

export class ArtifactSource {
  constructor(private readonly options: ArtifactSourceOptions) {}

  private open(reference: string) {
    return openReference(reference, this.options.registryOptions);
  }

  /** Reads an artifact that is in a registry by digest and makes its record. */
  async fromReference(text: string): Promise<ArtifactRecord> {
    let opened;
    try {
      opened = this.open(text);
    } catch (err) {
      throw new AssignerError("BAD_REQUEST", (err as Error).message, { cause: err });
    }
    const { ref, target } = opened;
    if (!ref.digest) {
      // Never trust a tag: say what it points at now, and ask for that digest.
      const hint = ref.tag ? await target.resolve(ref.tag).then((d) => ` (${ref.tag} currently resolves to ${formatReference(ref, d.digest)})`, () => "") : "";
      throw new AssignerError("BAD_REQUEST", `reference "${text}" has no digest: register host/repo@sha256:…${hint}`);
    }
    try {
      const manifest = await target.resolve(ref.digest);
      return await this.describe(target, manifest, formatReference(ref, ref.digest));
    } catch (err) {
      asHttpError(err, `cannot read ${text}`);
    }
  }

  /** The seed's upload: a base64 bundle, pushed to the upload repository. */
  async fromUpload(body: z.infer<typeof RegisterArtifactUpload>): Promise<ArtifactRecord> {
    const bytes = Buffer.from(body.data, "base64");
    if (body.checksum && body.checksum !== sha256(bytes).replace(":", "-")) {
      throw new AssignerError("BAD_REQUEST", `checksum ${body.checksum} does not match the data (${sha256(bytes).replace(":", "-")})`);
    }
    let policy;
    try {
      ({ policy } = await decodeBundle(Readable.from([bytes]), "data"));
    } catch (err) {
      throw new AssignerError("BAD_REQUEST", `data is not an Aegis bundle: ${(err as Error).message}`, { cause: err });
    }
    if (policy.name !== body.name || policy.version !== body.version) {
      throw new AssignerError("BAD_REQUEST", `name/version ${body.name} ${body.version} do not match the bundle's policy (${policy.name} ${policy.version})`);
    }
    const { ref, target } = this.open(this.options.uploadRepository);
    try {
      const artifact = await pushBundle(bytes, policy, target, `${policy.name}-${policy.version}`);
      return await this.describe(target, artifact.manifest, formatReference(ref, artifact.manifest.digest));
    } catch (err) {
      asHttpError(err, `cannot store the upload in ${this.options.uploadRepository}`);
    }
  }

  private async describe(target: Target, manifestDesc: Descriptor, reference: string): Promise<ArtifactRecord> {
    const { manifest, layer } = await readPolicyManifest(target, manifestDesc);
    const annotations = manifest.annotations ?? {};
    const metadata: Record<string, string> = {};
    for (const [key, name] of Object.entries(METADATA_KEYS)) if (annotations[key] !== undefined) metadata[name] = annotations[key];
    let signature = "";
    let signer: string | undefined;
    if (this.options.trust) {
      try {
        const verified = await verifyArtifact(target, manifestDesc.digest, this.options.trust);
        signature = verified.value;
        signer = verified.key.name;
      } catch (err) {
        // Unsigned or untrusted artifacts are registered with an empty signature; agents refuse them.
        if (!(err instanceof SignatureError)) throw err;
      }
    }
    return {
      id: manifestDesc.digest,
      reference,
      name: annotations["org.opencontainers.image.title"] ?? "",
      version: annotations["org.opencontainers.image.version"] ?? "",
      description: annotations["org.opencontainers.image.description"] ?? "",
      size: layer.size,
      layerDigest: layer.digest,
      metadata,
      signature,
      ...(signer ? { signer } : {}),
      createdAt: new Date().toISOString(),
    };
  }

  /** The binary (bundle layer) as a stream that fails if the registry's bytes do not match. */
  async binary(record: ArtifactRecord): Promise<Readable> {
    const { target } = this.open(record.reference);
    try {
      return await target.fetch({ mediaType: MediaType.PolicyLayer, digest: record.layerDigest, size: record.size });
    } catch (err) {
      asHttpError(err, `cannot read the binary of ${record.id}`);
    }
  }

  /** Whether the upload registry answers, for /healthz. */
  async reachable(): Promise<boolean> {
    const { target } = this.open(this.options.uploadRepository);
    try {
      await target.resolve("aegis-healthz-probe");
      return true;
    } catch (err) {
      return isNotFound(err);
    }
  }
}
