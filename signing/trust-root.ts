// The trust root as an OCI artifact (`aegis trust push`): a Sigstore
// trusted_root.json, and optionally the trust policy that goes with it (keys
// inline, keyless identities, `require`), in one manifest that carries a
// version and is signed by an operator key like any policy (a sigstore bundle
// referrer), so it is promoted, mirrored (`copy -r`) and pinned by digest the
// same way. Agents follow it (agent/trust-root.ts), verifying the operator
// signature and refusing a version older than the one they hold.
//
//   manifest  artifactType application/vnd.aegis.trust-root.v1+json
//             annotations  dev.aegis.trust-root.version: "<integer>"
//   layer 0   application/vnd.dev.sigstore.trustedroot+json;version=0.1   (trusted_root.json)
//   layer 1   application/vnd.aegis.trust-policy.v1+json                  (optional)
import { Readable } from "node:stream";
import {
  Annotation,
  cancellable,
  descriptorFor,
  EMPTY_CONFIG,
  encodeJson,
  MAX_MANIFEST_SIZE,
  MediaType,
  openReference,
  parseManifest,
  readAll,
  storeEmptyConfig,
  type AbortOptions,
  type Descriptor,
  type Manifest,
  type ReadOnlyTarget,
  type RepositoryOptions,
  type Target,
} from "../registry/index.js";
import { quote } from "../util/index.js";
import { SignatureError } from "./errors.js";
import { signArtifact } from "./sign.js";
import type { KeySigner } from "./signer.js";
import { trustFromDocument, type TrustedRootFetcher, type TrustPolicy } from "./trust.js";
import { MAX_TRUSTED_ROOT_SIZE, parseTrustedRoot, TRUSTED_ROOT_MEDIA_TYPE, type TrustedRootMaterial } from "./trusted-root.js";
import { verifyArtifact, type VerifiedSignature } from "./verify.js";

export const TRUST_ROOT_ARTIFACT_TYPE = "application/vnd.aegis.trust-root.v1+json";
export const TRUST_POLICY_MEDIA_TYPE = "application/vnd.aegis.trust-policy.v1+json";
export const TRUST_ROOT_VERSION_ANNOTATION = "dev.aegis.trust-root.version";

export interface TrustRootArtifact {
  /** The manifest digest. */
  digest: string;
  version: number;
  root: TrustedRootMaterial;
  /** The trust policy shipped with the root (its identities are checked against this root). */
  policy?: TrustPolicy;
  /** The exact layer bytes, so a holder can keep them (agent/trust-root.ts). */
  rootBytes: Buffer;
  policyBytes?: Buffer;
  /** The operator signature that was verified, when one was required. */
  signature?: VerifiedSignature;
}

export interface PushTrustRootOptions {
  /** Monotonic: agents refuse a lower one than they hold. Default: now, in seconds since the epoch. */
  version?: number;
  /** A trust file document (keys inline as PEM) shipped beside the root; checked before anything is pushed. */
  policy?: Record<string, unknown>;
  tag?: string;
  /** The operator key that signs the artifact. */
  signer: KeySigner;
}

/** Pushes and signs a trust root; its bytes are checked first (nothing is pushed for a broken root). */
export async function pushTrustRoot(target: Target, rootBytes: Buffer, options: PushTrustRootOptions): Promise<{ manifest: Descriptor; version: number; signature: Descriptor }> {
  const root = parseTrustedRoot(rootBytes, "trusted root");
  const version = options.version ?? Math.floor(Date.now() / 1000);
  if (!Number.isSafeInteger(version) || version < 0) throw new SignatureError("TRUST_ROOT_INVALID", `trust root version ${version} is not a non-negative integer`);
  const layers: Descriptor[] = [descriptorFor(TRUSTED_ROOT_MEDIA_TYPE, rootBytes)];
  const blobs: Buffer[] = [rootBytes];
  if (options.policy) {
    const policyBytes = Buffer.from(JSON.stringify({ ...options.policy, trustedRoot: undefined }));
    await parsePolicy(policyBytes, root, "trust policy");
    layers.push(descriptorFor(TRUST_POLICY_MEDIA_TYPE, policyBytes));
    blobs.push(policyBytes);
  }
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType: TRUST_ROOT_ARTIFACT_TYPE,
    config: EMPTY_CONFIG,
    layers,
    annotations: { [TRUST_ROOT_VERSION_ANNOTATION]: String(version), [Annotation.Created]: new Date().toISOString() },
  };
  const manifestBytes = encodeJson(manifest);
  const desc = descriptorFor(MediaType.ImageManifest, manifestBytes);
  await storeEmptyConfig(target);
  for (const [i, layer] of layers.entries()) await target.push(layer, Readable.from([blobs[i]!]));
  await target.push(desc, Readable.from([manifestBytes]));
  if (options.tag) await target.tag(desc, options.tag);
  const signed = await signArtifact(target, desc, options.signer, target.name);
  return { manifest: desc, version, signature: signed.referrer };
}

async function parsePolicy(bytes: Buffer, root: TrustedRootMaterial, source: string): Promise<TrustPolicy> {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw new SignatureError("TRUST_ROOT_INVALID", `${source}: not JSON: ${(err as Error).message}`, { cause: err });
  }
  // Keys travel inline: a path would name a file of whichever host reads it.
  const keys = (doc as { keys?: { key?: unknown }[] } | null)?.keys ?? [];
  if (Array.isArray(keys) && keys.some((k) => typeof k?.key === "string" && !k.key.includes("-----BEGIN"))) {
    throw new SignatureError("TRUST_ROOT_INVALID", `${source}: keys must be inline PEM in a trust root artifact`);
  }
  return trustFromDocument(doc, source, "/", { root });
}

/**
 * Reads the trust root artifact `digest` from `source`. With `operator`, a
 * signature by one of its keys must verify first (before any layer is read).
 * `options.signal` cancels every read.
 */
export async function fetchTrustRoot(from: ReadOnlyTarget, digest: string, operator?: TrustPolicy, options: AbortOptions = {}): Promise<TrustRootArtifact> {
  const source = cancellable(from, options.signal);
  const where = `${source.name}@${digest}`;
  const desc = await source.resolve(digest);
  const signature = operator ? await verifyArtifact(source, desc.digest, { keys: operator.keys, require: "key" }, options) : undefined;
  const doc = parseManifest(await readAll(await source.fetch(desc), MAX_MANIFEST_SIZE, `manifest ${desc.digest}`), desc.mediaType);
  if ("manifests" in doc || doc.artifactType !== TRUST_ROOT_ARTIFACT_TYPE) {
    throw new SignatureError("TRUST_ROOT_INVALID", `${where} is not a trust root artifact (artifactType ${"manifests" in doc ? "index" : doc.artifactType === undefined ? "none" : quote(doc.artifactType)}, expected ${TRUST_ROOT_ARTIFACT_TYPE})`);
  }
  const versionText = doc.annotations?.[TRUST_ROOT_VERSION_ANNOTATION] ?? "";
  const version = /^\d{1,15}$/.test(versionText) ? Number(versionText) : NaN;
  if (Number.isNaN(version)) throw new SignatureError("TRUST_ROOT_INVALID", `${where}: annotation ${TRUST_ROOT_VERSION_ANNOTATION} ${quote(versionText)} is not an integer`);
  const read = async (layer: Descriptor) => {
    if (layer.size > MAX_TRUSTED_ROOT_SIZE) throw new SignatureError("TRUST_ROOT_INVALID", `${where}: layer ${layer.digest} is ${layer.size} bytes, over ${MAX_TRUSTED_ROOT_SIZE}`);
    return readAll(await source.fetch(layer), layer.size, `layer ${layer.digest}`);
  };
  const rootLayer = doc.layers.find((l) => l.mediaType === TRUSTED_ROOT_MEDIA_TYPE);
  if (!rootLayer) throw new SignatureError("TRUST_ROOT_INVALID", `${where} has no ${TRUSTED_ROOT_MEDIA_TYPE} layer`);
  const rootBytes = await read(rootLayer);
  const root = parseTrustedRoot(rootBytes, where);
  const policyLayer = doc.layers.find((l) => l.mediaType === TRUST_POLICY_MEDIA_TYPE);
  const artifact: TrustRootArtifact = { digest: desc.digest, version, root, rootBytes, ...(signature ? { signature } : {}) };
  if (policyLayer) {
    artifact.policyBytes = await read(policyLayer);
    artifact.policy = await parsePolicy(artifact.policyBytes, root, `${where} trust policy`);
  }
  return artifact;
}

/** Rebuilds a held trust root from its kept bytes (checked again, as when it was fetched). */
export async function trustRootFromBytes(digest: string, version: number, rootBytes: Buffer, policyBytes?: Buffer): Promise<TrustRootArtifact> {
  const root = parseTrustedRoot(rootBytes, digest);
  const artifact: TrustRootArtifact = { digest, version, root, rootBytes };
  if (policyBytes) {
    artifact.policyBytes = policyBytes;
    artifact.policy = await parsePolicy(policyBytes, root, `${digest} trust policy`);
  }
  return artifact;
}

/** For trust files whose `trustedRoot` is `host/repo@sha256:…`: the digest pins the artifact, so no signature is needed. */
export function trustedRootFetcher(repository: RepositoryOptions = {}): TrustedRootFetcher {
  return async (reference) => {
    const { target, selector } = openReference(reference, repository);
    return (await fetchTrustRoot(target, selector!)).root;
  };
}
