// A cosign "legacy" signature, as `cosign sign --key` writes it without the
// new bundle format: the simple-signing payload as the only layer, the
// signature over its exact bytes in the layer's annotation, and the manifest
// tagged sha256-<hex>.sig beside its subject.
// https://github.com/sigstore/cosign/blob/main/specs/SIGNATURE_SPEC.md
import { sign, type KeyObject } from "node:crypto";
import { Readable } from "node:stream";
import { descriptorFor, EMPTY_CONFIG, encodeJson, MediaType, referrersTag, storeEmptyConfig, type Descriptor, type Target } from "../../registry/index.js";

/** Signs `subject` with `key` (ECDSA over SHA-256, or Ed25519) the legacy way and pushes it to `target`; returns the signature manifest. */
export async function pushCosignSignature(target: Target, subject: Descriptor, key: KeyObject, dockerReference: string): Promise<Descriptor> {
  const payload = Buffer.from(
    JSON.stringify({
      critical: { identity: { "docker-reference": dockerReference }, image: { "docker-manifest-digest": subject.digest }, type: "cosign container image signature" },
      optional: null,
    }),
  );
  const signature = sign(key.asymmetricKeyType === "ed25519" ? null : "sha256", payload, key).toString("base64");
  const layer = { ...descriptorFor("application/vnd.dev.cosign.simplesigning.v1+json", payload), annotations: { "dev.cosignproject.cosign/signature": signature } };
  await storeEmptyConfig(target);
  await target.push(layer, Readable.from([payload]));
  const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, config: EMPTY_CONFIG, layers: [layer] });
  const manifest = descriptorFor(MediaType.ImageManifest, bytes);
  await target.push(manifest, Readable.from([bytes]));
  await target.tag(manifest, `${referrersTag(subject)}.sig`);
  return manifest;
}
