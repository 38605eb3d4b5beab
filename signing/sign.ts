// Signing an artifact: a sigstore bundle v0.3 (DSSE envelope over the
// statement of statement.ts) pushed as an OCI 1.1 referrer of the manifest,
// shaped as cosign stores `--new-bundle-format` signatures (docs/architecture.md "Formats and media types").
// https://github.com/sigstore/cosign/blob/main/specs/BUNDLE_SPEC.md
import { Readable } from "node:stream";
import { BUNDLE_V03_MEDIA_TYPE, bundleToJSON } from "@sigstore/bundle";
import { DSSEBundleBuilder } from "@sigstore/sign";
import {
  Annotation,
  descriptorFor,
  EMPTY_CONFIG,
  encodeJson,
  MediaType,
  referrerDescriptor,
  storeEmptyConfig,
  type Descriptor,
  type Manifest,
  type Target,
} from "../registry/index.js";
import type { KeySigner } from "./signer.js";
import { COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE, signingStatement } from "./statement.js";

export const SIGSTORE_BUNDLE_TYPE = BUNDLE_V03_MEDIA_TYPE;

export const SignatureAnnotation = {
  BundleContent: "dev.sigstore.bundle.content",
  PredicateType: "dev.sigstore.bundle.predicateType",
} as const;

export interface SignedArtifact {
  /** The signature manifest (the referrer). */
  referrer: Descriptor;
  /** The sigstore bundle, as JSON bytes. */
  bundle: Buffer;
  hint: string;
}

/**
 * Signs the manifest `subject` held in `target` and stores the signature
 * beside it. `name` is the repository the statement names (informational;
 * the digest is what verifiers check).
 */
export async function signArtifact(target: Target, subject: Descriptor, signer: KeySigner, name: string): Promise<SignedArtifact> {
  const builder = new DSSEBundleBuilder({ signer, witnesses: [] });
  const bundle = await builder.create({ data: signingStatement(subject.digest, name), type: IN_TOTO_PAYLOAD_TYPE });
  const stored = await storeSignatureBundle(target, subject, Buffer.from(JSON.stringify(bundleToJSON(bundle))));
  return { ...stored, hint: signer.hint };
}

/**
 * Stores a sigstore bundle (key-signed or keyless) as a referrer of
 * `subject`, in the manifest shape cosign gives `--new-bundle-format` signatures.
 */
export async function storeSignatureBundle(target: Target, subject: Descriptor, bundleBytes: Buffer): Promise<{ referrer: Descriptor; bundle: Buffer }> {
  const layer = descriptorFor(SIGSTORE_BUNDLE_TYPE, bundleBytes);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType: SIGSTORE_BUNDLE_TYPE,
    config: EMPTY_CONFIG,
    layers: [layer],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: {
      [SignatureAnnotation.BundleContent]: "dsse-envelope",
      [SignatureAnnotation.PredicateType]: COSIGN_SIGN_PREDICATE,
      [Annotation.Created]: new Date().toISOString(),
    },
  };
  const manifestBytes = encodeJson(manifest);
  const referrer = descriptorFor(MediaType.ImageManifest, manifestBytes);
  await storeEmptyConfig(target);
  await target.push(layer, Readable.from([bundleBytes]));
  await target.push(referrer, Readable.from([manifestBytes]));
  await target.indexReferrer(subject, referrerDescriptor(referrer, manifest));
  return { referrer, bundle: bundleBytes };
}
