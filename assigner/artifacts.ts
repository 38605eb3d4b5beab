// Artifacts as the assigner sees them: registered from a registry reference
// (or pushed from the seed's base64 upload), described in the seed's JSON,
// and streamed to agents from the registry, verified on the way.
import { Readable } from "node:stream";
import { decodeBundle, policyAnnotations, PolicyAnnotation, pushBundle, readPolicyManifest } from "../bundle/index.js";
import {
  formatReference,
  Annotation,
  MAX_MANIFEST_SIZE,
  parseManifest,
  readAll,
  isContentFault,
  isNotFound,
  MediaType,
  openReference,
  RegistryError,
  type Descriptor,
  type RepositoryOptions,
  type Target,
} from "../registry/index.js";
import { listSignatures, MAX_SIGNATURE_SIZE, SignatureError, verifyArtifact, type TrustPolicy } from "../signing/index.js";
import { AssignerError, type ArtifactJson, type RegisterArtifactUpload } from "./api/index.js";
import { toAssignerError } from "./errors.js";
import type { Upload } from "./upload.js";
import type { ArtifactRecord } from "./store/store.js";
import type { z } from "zod";


export interface ArtifactSourceOptions {
  /** Where uploads go: host/repo or oci:<dir>. */
  uploadRepository: string;
  trust?: TrustPolicy;
  registryOptions?: RepositoryOptions;
}

/**
 * How long one answer of the upload registry serves /healthz (ms): the route
 * is public, so its callers together cost the registry a request per second
 * at most, not one each.
 */
const REACHABLE_REUSE_MS = 1000;

/** The seed writes digests as sha256-<hex>. */
export function dashDigest(digest: string): string {
  return digest.replace(":", "-");
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
    checksum: dashDigest(record.layerDigest),
    metadata: record.metadata,
    reference: record.reference,
  };
}

/** A valid tag for an upload: name-version, with semver's "+" (not allowed in tags) as "_", at most 128 characters. */
function uploadTag(name: string, version: string): string {
  return `${name}-${version}`.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 128);
}

/** The registry failure among an error's causes, if any (verifyArtifact wraps a signature it could not read). */
function registryCause(err: Error): RegistryError | undefined {
  for (let cause = err.cause, depth = 0; cause instanceof Error && depth < 5; cause = cause.cause, depth++) {
    if (cause instanceof RegistryError) return cause;
  }
  return undefined;
}

export class ArtifactSource {
  /** The last probe of the upload registry (shared while under way), and when it was asked. */
  private probe: { at: number; reachable: Promise<boolean> } | undefined;

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
      throw toAssignerError(err, `cannot read ${text}`);
    }
  }

  /** The seed's upload: a base64 bundle, decoded as it arrived (upload.ts), pushed to the upload repository. */
  async fromUpload(body: z.infer<typeof RegisterArtifactUpload>, upload: Upload | undefined): Promise<ArtifactRecord> {
    if (!upload || upload.size === 0) throw new AssignerError("BAD_REQUEST", "body.data: the bundle is empty");
    const bytes = upload.bytes;
    const checksum = dashDigest(upload.digest);
    // The seed writes sha256-<hex>; sha256:<hex> (OCI's form) is the same digest.
    if (body.checksum && dashDigest(body.checksum.toLowerCase()) !== checksum) {
      throw new AssignerError("BAD_REQUEST", `body.checksum: ${body.checksum} does not match the data (${checksum})`);
    }
    // 0 is a Go client's unset size: a bundle is never empty.
    if (body.size && body.size !== upload.size) {
      throw new AssignerError("BAD_REQUEST", `body.size: ${body.size} does not match the data (${upload.size} bytes)`);
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
      const artifact = await pushBundle(bytes, policy, target, uploadTag(policy.name, policy.version));
      return await this.describe(target, artifact.manifest, formatReference(ref, artifact.manifest.digest));
    } catch (err) {
      throw toAssignerError(err, `cannot store the upload in ${this.options.uploadRepository}`);
    }
  }

  private async describe(target: Target, manifestDesc: Descriptor, reference: string): Promise<ArtifactRecord> {
    const { manifest, layer } = await readPolicyManifest(target, manifestDesc);
    // `oras push --artifact-type …` writes none of our annotations: then the
    // facts come from the bundle's policy.json (bytes verified as they are read).
    const annotations = manifest.annotations?.[Annotation.Title]
      ? manifest.annotations
      : policyAnnotations((await decodeBundle(await target.fetch(layer), `${reference} layer`)).policy);
    const metadata: Record<string, string> = {};
    for (const [key, name] of Object.entries(METADATA_KEYS)) if (annotations[key] !== undefined) metadata[name] = annotations[key];
    let signature = "";
    if (this.options.trust) signature = await this.trustedSignature(target, manifestDesc.digest, this.options.trust);
    return {
      id: manifestDesc.digest,
      reference,
      name: annotations[Annotation.Title] ?? "",
      version: annotations[Annotation.Version] ?? "",
      description: annotations[Annotation.Description] ?? "",
      size: layer.size,
      layerDigest: layer.digest,
      metadata,
      signature,
      createdAt: new Date().toISOString(),
    };
  }

  /**
   * The trusted signature, or "" when verification fails: unsigned or
   * untrusted artifacts are registered with an empty signature (agents refuse
   * them), and registering again after signing fills it in. Only a verdict
   * (a SignatureError that no registry failure caused) means "unsigned"; a
   * registry that cannot be read fails the registration (502), so an outage
   * is never recorded as "unsigned".
   */
  private async trustedSignature(target: Target, digest: string, trust: TrustPolicy): Promise<string> {
    try {
      return (await verifyArtifact(target, digest, trust)).value;
    } catch (err) {
      if (!(err instanceof SignatureError)) throw err;
      // A signature that could not be read for a registry failure is not a verdict.
      const registryFailure = registryCause(err);
      if (registryFailure) throw registryFailure;
      return "";
    }
  }

  /** The binary (bundle layer) as a stream that fails if the registry's bytes do not match. */
  async binary(record: ArtifactRecord): Promise<Readable> {
    const { target } = this.open(record.reference);
    try {
      return await target.fetch({ mediaType: MediaType.PolicyLayer, digest: record.layerDigest, size: record.size });
    } catch (err) {
      throw toAssignerError(err, `cannot read the binary of ${record.id}`);
    }
  }

  /** The artifact's manifest, exactly as stored (verified against its digest as it is read). */
  async manifest(record: ArtifactRecord): Promise<{ mediaType: string; bytes: Buffer }> {
    const { target } = this.open(record.reference);
    try {
      const desc = await target.resolve(record.id);
      return { mediaType: desc.mediaType, bytes: await readAll(await target.fetch(desc), MAX_MANIFEST_SIZE, `manifest ${record.id}`) };
    } catch (err) {
      throw toAssignerError(err, `cannot read the manifest of ${record.id}`);
    }
  }

  /**
   * The artifact's sigstore bundle referrers as stored: each signature
   * manifest's exact bytes and its one layer's. An agent that cannot reach
   * a registry verifies these exactly as it would the registry's (it
   * recomputes every digest), so the assigner is trusted with nothing.
   */
  async signatures(record: ArtifactRecord): Promise<{ manifest: Buffer; bundle: Buffer }[]> {
    const { target } = this.open(record.reference);
    try {
      const subject = await target.resolve(record.id);
      const referrers = await listSignatures(target, subject);
      const signatures: { manifest: Buffer; bundle: Buffer }[] = [];
      for (const referrer of referrers) {
        try {
          const manifest = await readAll(await target.fetch(referrer), MAX_MANIFEST_SIZE, `signature ${referrer.digest}`);
          const doc = parseManifest(manifest, referrer.mediaType);
          const layer = "layers" in doc && doc.layers.length === 1 ? doc.layers[0]! : undefined;
          if (!layer) continue;
          signatures.push({ manifest, bundle: await readAll(await target.fetch(layer), MAX_SIGNATURE_SIZE, `signature bundle ${layer.digest}`) });
        } catch (err) {
          // One malformed or tampered signature must not hide the others (the agent refuses it anyway).
          if (isContentFault(err)) continue;
          throw err;
        }
      }
      return signatures;
    } catch (err) {
      throw toAssignerError(err, `cannot read the signatures of ${record.id}`);
    }
  }

  /** Whether the upload registry answers, for /healthz: asked at most once in REACHABLE_REUSE_MS. */
  reachable(): Promise<boolean> {
    const now = Date.now();
    if (!this.probe || now - this.probe.at >= REACHABLE_REUSE_MS) this.probe = { at: now, reachable: this.probeRegistry() };
    return this.probe.reachable;
  }

  private async probeRegistry(): Promise<boolean> {
    // One quick try: a health check must answer fast, not retry for minutes.
    const { target } = openReference(this.options.uploadRepository, { ...this.options.registryOptions, maxAttempts: 1, timeoutMs: 2000 });
    try {
      await target.resolve("aegis-healthz-probe");
      return true;
    } catch (err) {
      return isNotFound(err);
    }
  }
}
